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


def plot_flow_figures(out_dir: str | os.PathLike, train_x: np.ndarray, test_x: np.ndarray,
                      history: dict, grid: np.ndarray, model_log_prob: np.ndarray, z_grid: np.ndarray,
                      true_log_prob: np.ndarray | None) -> list[str]:
    """The homework's four flow figures (no true density for the user's data); returns the file names written in ``out_dir``."""
    plt = pyplot()
    names = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, data, title in ((axes[0], train_x, "Training data"), (axes[1], test_x, "Test data")):
        ax.hist(data, bins=50, color="tab:blue", label=f"{len(data)} points")
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.set_ylabel("count")
        ax.legend()
    save_png(fig, os.path.join(out_dir, "flow_data.png"))
    names.append("flow_data.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(history["train_nll"]) + 1), history["train_nll"], label="train NLL")
    ax.plot(np.arange(1, len(history["test_nll"]) + 1), history["test_nll"], label="test NLL")
    ax.set_title("Flow negative log-likelihood")
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL (nats per point)")
    ax.legend()
    save_png(fig, os.path.join(out_dir, "flow_loss.png"))
    names.append("flow_loss.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(grid, np.exp(model_log_prob), label="learned density")
    if true_log_prob is not None:
        ax.plot(grid, np.exp(true_log_prob), "--", label="true mixture density")
    ax.set_title("Learned distribution")
    ax.set_xlabel("x")
    ax.set_ylabel("p(x)")
    ax.legend()
    save_png(fig, os.path.join(out_dir, "flow_density.png"))
    names.append("flow_density.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(grid, z_grid, label="z = f(x)")
    ax.set_title("Flow map x -> z")
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.legend()
    save_png(fig, os.path.join(out_dir, "flow_map.png"))
    names.append("flow_map.png")
    return names
