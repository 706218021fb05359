"""Training figures (matplotlib, Agg backend): every plot titled, axes labelled, legends shown."""

from __future__ import annotations

import os

import numpy as np

from aeflow.plotting import pyplot, save_png


def plot_ae_loss(losses: list[float], path: str | os.PathLike, iters_per_epoch: int) -> None:
    """Per-iteration training loss with a per-epoch mean."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    it = np.arange(1, len(losses) + 1)
    ax.plot(it, losses, color="tab:red", alpha=0.5, lw=0.8, label="training loss (per iteration)")
    if iters_per_epoch and len(losses) >= iters_per_epoch:
        n = len(losses) // iters_per_epoch
        means = np.asarray(losses[: n * iters_per_epoch]).reshape(n, iters_per_epoch).mean(axis=1)
        ax.plot(np.arange(1, n + 1) * iters_per_epoch, means, color="black", lw=1.5, label="epoch mean")
    ax.set_yscale("log")
    ax.set_title("Autoencoder training loss (MSE)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend()
    save_png(fig, path)


def _figure(plt, path, title: str, xlabel: str, ylabel: str, curves) -> str:
    """One titled, labelled figure of ``curves`` [(x, y, style, label)] saved at ``path``."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for x, y, style, label in curves:
        ax.plot(x, y, style, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    save_png(fig, path)
    return os.path.basename(path)


def plot_flow_figures(out_dir: str | os.PathLike, train_x: np.ndarray, test_x: np.ndarray,
                      history: dict, grid: np.ndarray, model_log_prob: np.ndarray, z_grid: np.ndarray,
                      true_log_prob: np.ndarray | None) -> list[str]:
    """The homework's four flow figures (no true density for the user's data); returns the file
    names written in ``out_dir``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, data, title in ((axes[0], train_x, "Training data"), (axes[1], test_x, "Test data")):
        ax.hist(data, bins=50, color="tab:blue", label=f"{len(data)} points")
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.set_ylabel("count")
        ax.legend()
    save_png(fig, os.path.join(out_dir, "flow_data.png"))
    epochs = np.arange(1, len(history["train_nll"]) + 1)
    truth = [] if true_log_prob is None else [(grid, np.exp(true_log_prob), "--", "true mixture density")]
    return ["flow_data.png",
            _figure(plt, os.path.join(out_dir, "flow_loss.png"), "Flow negative log-likelihood", "epoch",
                    "NLL (nats per point)", [(epochs, history["train_nll"], "-", "train NLL"),
                                             (epochs, history["test_nll"], "-", "test NLL")]),
            _figure(plt, os.path.join(out_dir, "flow_density.png"), "Learned distribution", "x", "p(x)",
                    [(grid, np.exp(model_log_prob), "-", "learned density")] + truth),
            _figure(plt, os.path.join(out_dir, "flow_map.png"), "Flow map x -> z", "x", "z",
                    [(grid, z_grid, "-", "z = f(x)")])]
