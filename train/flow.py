"""Training the 1-D flow (homework Problem 2) by maximum likelihood against N(0, 1)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from aeflow.checks import check_batch, check_float, check_int, check_seed
from aeflow.progress import progress_bar
from aeflow.train.checkpoint import MAX_COMPONENTS, check_finite, diverged, save_checkpoint
from aeflow.datasets import mixture_log_density, mixture_of_gaussians
from aeflow.train.models import Flow1d, nll
from aeflow.train.plots import plot_flow_figures


@dataclass
class FlowConfig:
    """Everything that decides the trained flow; stored in the checkpoint."""

    n_components: int = 5
    epochs: int = 100
    lr: float = 5e-2
    batch_size: int = 128
    n_train: int = 5000
    n_test: int = 1000
    seed: int = 0


MAX_EPOCHS = 1_000_000
BYTES_PER_POINT = 1024  # one training point's activations over the components, gradients, scratch


def check_flow_config(config: FlowConfig, flags: dict[str, str] | None = None) -> None:
    """``UsageError`` for any field that cannot train: n_components, epochs, lr, batch_size,
    n_train, n_test, seed. ``flags`` names the fields as the caller spells them."""
    name = (flags or {}).get
    check_int(config.n_components, name("n_components", "n_components"), 1, MAX_COMPONENTS)
    check_int(config.epochs, name("epochs", "epochs"), 1, MAX_EPOCHS)
    check_float(config.lr, name("lr", "lr"), 0.0, above=True)
    check_batch(config.batch_size, name("batch_size", "batch_size"), BYTES_PER_POINT, "points")
    check_batch(config.n_train, name("n_train", "n_train"), BYTES_PER_POINT, "points")
    check_batch(config.n_test, name("n_test", "n_test"), BYTES_PER_POINT, "points")
    check_seed(config.seed, name("seed", "seed"))
    check_int(config.seed, name("seed", "seed"), 0, 2**63 - 2)  # the test set uses seed + 1


def flow_data(config: FlowConfig) -> tuple[np.ndarray, np.ndarray]:
    """The seeded train and test sets (float32 [n_train], [n_test]) of the three-Gaussian mixture."""
    return mixture_of_gaussians(config.n_train, config.seed), mixture_of_gaussians(config.n_test, config.seed + 1)


def train_flow_on(train_x: np.ndarray, test_x: np.ndarray, config: FlowConfig, quiet: bool = False
                  ) -> tuple[Flow1d, dict]:
    """Train by minimising the NLL; returns the model and per-epoch ``train_nll``/``test_nll``
    (train: mean over the epoch's batches; test: exact over the whole test set)."""
    torch.manual_seed(config.seed)
    flow = Flow1d(config.n_components)
    optimizer = torch.optim.Adam(flow.parameters(), lr=config.lr)
    x_train = torch.from_numpy(train_x)
    x_test = torch.from_numpy(test_x)
    gen = torch.Generator().manual_seed(config.seed)
    n = len(x_train)
    steps = (n + config.batch_size - 1) // config.batch_size
    history: dict[str, list[float]] = {"train_nll": [], "test_nll": []}
    with progress_bar(config.epochs, "training flow", quiet, show=lambda s: s) as bar:
        for epoch in range(config.epochs):
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for b in range(steps):
                loss = nll(flow(x_train[perm[b * config.batch_size:(b + 1) * config.batch_size]])[2])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
                if not math.isfinite(total):
                    raise diverged("flow", epoch, loss.item(), config.lr)
            history["train_nll"].append(total / steps)
            with torch.no_grad():
                history["test_nll"].append(float(nll(flow(x_test)[2])))
            bar.update(1, f"epoch {epoch + 1}/{config.epochs} test NLL {history['test_nll'][-1]:.4f}")
    check_finite(flow, "flow", config.lr)
    flow.eval()
    return flow, history


def train_flow(out_dir: str | os.PathLike, config: FlowConfig, quiet: bool = False, force: bool = False) -> Path:
    """Train the flow and write ``flow.pt`` plus its four figures into ``out_dir``. ``UsageError``
    for a config that cannot train, ``TrainingError`` (nothing written) when the loss or the
    parameters stop being finite; without ``force`` a flow.pt that appeared meanwhile is kept."""
    check_flow_config(config)
    train_x, test_x = flow_data(config)
    flow, history = train_flow_on(train_x, test_x, config, quiet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "flow.pt"
    save_checkpoint(path, "flow", flow, asdict(config), history, force)
    grid = np.linspace(-3, 3, 1000, dtype=np.float32)
    with torch.no_grad():
        z, _, log_prob = flow(torch.from_numpy(grid))
    plot_flow_figures(out, train_x, test_x, history, grid, log_prob.numpy(), z.numpy(), mixture_log_density(grid))
    return path
