"""Training the 1-D flow (homework Problem 2) by maximum likelihood against N(0, 1)."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from aeflow.checks import check_batch, check_float, check_int, check_seed
from aeflow.progress import progress_bar
from aeflow.train.checkpoint import MAX_COMPONENTS, check_finite, diverged, save_checkpoint
from aeflow.datasets import mixture_log_density, mixture_of_gaussians, split_indices
from aeflow.errors import ArtifactError
from aeflow.train.data import read_values
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
    data: str | None = None  # the user's values (``--data``); None: the three-Gaussian mixture
    column: str | None = None
    data_sha256: str = ""
    loc: float = 0.0  # the data's mean and spread: the scale the flow was trained at
    scale: float = 1.0


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


HELD_OUT = 1 / 6  # the share of the user's values held out for the test NLL


def flow_data(config: FlowConfig) -> tuple[np.ndarray, np.ndarray]:
    """The seeded train and test sets (float32 [n_train], [n_test]): the user's values
    (``config.data``, split with ``config.seed``; sets n_train, n_test, loc, scale and data_sha256),
    else the three-Gaussian mixture."""
    if config.data is None:
        return mixture_of_gaussians(config.n_train, config.seed), mixture_of_gaussians(config.n_test, config.seed + 1)
    return split_values(read_values(config.data, config.column), config)


def split_values(values: np.ndarray, config: FlowConfig) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 values [N] split with ``config.seed`` (1/6 held out) into float32 train and
    test sets; sets n_train, n_test, loc, scale and data_sha256 of ``config``."""
    sha = hashlib.sha256(values.tobytes()).hexdigest()
    if config.data_sha256 and sha != config.data_sha256:
        raise ArtifactError(f"{config.data}: the values differ from those the flow was trained on; pass the same file")
    spread = float(values.std())
    train_idx, test_idx = split_indices(values.size, config.seed, HELD_OUT)
    config.n_train, config.n_test, config.data_sha256 = len(train_idx), len(test_idx), sha
    config.loc, config.scale = float(values.mean()), spread
    return values[train_idx].astype(np.float32), values[test_idx].astype(np.float32)


def standardized(flow_x: np.ndarray, config: FlowConfig) -> np.ndarray:
    """(x - loc) / scale in float64, as float32: the flow trains at unit scale whatever the data's."""
    return ((flow_x.astype(np.float64) - config.loc) / config.scale).astype(np.float32)


def init_from_data(flow: Flow1d, u: np.ndarray) -> None:
    """Start the components from standardized data ``u``: mus at its quantiles (k + 1/2) / K,
    sigmas at the spread between neighbouring quantiles (at least 0.1), weights as the homework."""
    k = flow.mus.numel()
    q = np.quantile(u.astype(np.float64), (np.arange(k) + 0.5) / k)
    gap = np.diff(np.quantile(u.astype(np.float64), np.arange(k + 1) / k)) if k > 1 else np.array([1.0])
    with torch.no_grad():
        flow.mus.copy_(torch.from_numpy(q))
        flow.log_sigmas.copy_(torch.from_numpy(np.log(np.maximum(gap, 0.1))))


def to_data_scale(flow: Flow1d, history: dict, loc: float, scale: float) -> None:
    """A flow trained on (x - loc) / scale made a flow of x: mu -> loc + scale mu, sigma -> scale
    sigma (z unchanged, log p(x) = log p(u) - log scale); the NLLs move by + log scale."""
    with torch.no_grad():
        flow.mus.copy_((loc + scale * flow.mus.double()).float())
        flow.log_sigmas.add_(math.log(scale))
    for key in history:
        history[key] = [v + math.log(scale) for v in history[key]]


def _start(config: FlowConfig, train_x: np.ndarray):
    """The seeded flow, its Adam optimizer and, on the user's data (components started from the
    standardized data), a cosine decay of the rate to 0, so the fit ends at a minimum, not in SGD noise."""
    torch.manual_seed(config.seed)
    flow = Flow1d(config.n_components)
    if config.data is None:
        return flow, torch.optim.Adam(flow.parameters(), lr=config.lr), None
    init_from_data(flow, standardized(train_x, config))
    optimizer = torch.optim.Adam(flow.parameters(), lr=config.lr)
    return flow, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)


def train_flow_on(train_x: np.ndarray, test_x: np.ndarray, config: FlowConfig, quiet: bool = False
                  ) -> tuple[Flow1d, dict]:
    """Train by minimising the NLL (on the user's data: at unit scale, from ``init_from_data``, then
    ``to_data_scale``); returns the model and per-epoch ``train_nll``/``test_nll``
    (train: mean over the epoch's batches; test: exact over the whole test set)."""
    flow, optimizer, decay = _start(config, train_x)
    if config.data is not None:
        train_x, test_x = standardized(train_x, config), standardized(test_x, config)
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
            if decay is not None:
                decay.step()
            bar.update(1, f"epoch {epoch + 1}/{config.epochs} test NLL {history['test_nll'][-1]:.4f}")
    check_finite(flow, "flow", config.lr)
    if config.data is not None:
        to_data_scale(flow, history, config.loc, config.scale)
    flow.eval()
    return flow, history


def train_flow(out_dir: str | os.PathLike, config: FlowConfig, quiet: bool = False, force: bool = False) -> Path:
    """Train the flow (on ``config.data`` or the mixture) and write ``flow.pt`` plus its four figures into ``out_dir``. ``UsageError``
    for a config that cannot train, ``TrainingError`` (nothing written) when the loss or the
    parameters stop being finite; without ``force`` a flow.pt that appeared meanwhile is kept."""
    check_flow_config(config)
    train_x, test_x = flow_data(config)
    flow, history = train_flow_on(train_x, test_x, config, quiet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "flow.pt"
    save_checkpoint(path, "flow", flow, asdict(config), history, force)
    grid = np.linspace(-3, 3, 1000, dtype=np.float32) * np.float32(config.scale) + np.float32(config.loc)
    with torch.no_grad():
        z, _, log_prob = flow(torch.from_numpy(grid))
    truth = mixture_log_density(grid) if config.data is None else None
    plot_flow_figures(out, train_x, test_x, history, grid, log_prob.numpy(), z.numpy(), truth)
    return path
