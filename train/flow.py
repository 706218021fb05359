"""Training the 1-D flow (homework Problem 2) by maximum likelihood, on the mixture or your values."""

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from aeflow.checks import check_batch, check_float, check_int
from aeflow.datasets import mixture_log_density, mixture_of_gaussians, split_indices
from aeflow.errors import DataError, UsageError
from aeflow.plotting import line_png, png_bytes, pyplot
from aeflow.train.checkpoint import run_epochs, save_checkpoint
from aeflow.train.data import read_values
from aeflow.train.models import Flow1d

MAX_EPOCHS, MAX_COMPONENTS = 1_000_000, 10_000
BYTES_PER_POINT = 1024  # one training point's activations over the components, gradients, scratch
HELD_OUT = 1 / 6  # the share of the user's values held out for the test NLL
CHUNK = 2**22  # points x components in one forward pass of a whole set's NLL (tensors of 16 MiB)


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


def check_flow_config(config: FlowConfig, flags: dict[str, str] | None = None) -> None:
    """Each field in its canonical type (an int seed), else ``UsageError``; ``flags``: the CLI's names of fields."""
    name = lambda f: (flags or {}).get(f, f)  # noqa: E731
    config.n_components = check_int(config.n_components, name("n_components"), 1, MAX_COMPONENTS)
    config.epochs = check_int(config.epochs, name("epochs"), 1, MAX_EPOCHS)
    config.lr = check_float(config.lr, name("lr"), 0.0, above=True)
    for f in ("batch_size", "n_train", "n_test"):
        setattr(config, f, check_batch(getattr(config, f), name(f), BYTES_PER_POINT, "points"))
    config.seed = check_int(config.seed, name("seed"), 0, 2**63 - 2)  # the test set uses seed + 1
    if config.column is not None and config.data is None:
        raise UsageError(f"{name('column')} names a column of your data file: pass {name('data')} FILE too")


def flow_data(config: FlowConfig) -> tuple[np.ndarray, np.ndarray]:
    """The seeded train and test sets, float32 [n_train], [n_test]: the user's values, else the mixture."""
    if config.data is None:
        return mixture_of_gaussians(config.n_train, config.seed), mixture_of_gaussians(config.n_test, config.seed + 1)
    return split_values(read_values(config.data, config.column), config, config.data)


def split_values(values: np.ndarray, config: FlowConfig, name: str = "values") -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 values [N] split with ``config.seed`` (1/6 held out) into float32 train and test sets, the
    data's fields of ``config`` set; ``DataError`` where a component would collapse onto a value (no maximum)."""
    k, (distinct, counts) = config.n_components, np.unique(values, return_counts=True)
    if distinct.size <= k:
        raise DataError(f"{name}: only {distinct.size} distinct values for {k} components; the flow "
                        f"models continuous values (each component would collapse onto one): pass more varied values")
    if (most := int(counts.max())) >= max(3, values.size / k):
        raise DataError(f"{name}: {most} of the {values.size} values equal {distinct[counts.argmax()]:.6g}, at least "
                        f"a component's share (1/{k}); a component would collapse onto it: add dequantisation noise "
                        f"(e.g. uniform within the values' rounding step) or drop the repeats")
    train_idx, test_idx = split_indices(values.size, config.seed, HELD_OUT)
    config.n_train, config.n_test = len(train_idx), len(test_idx)
    config.loc, config.scale = float(values.mean()), float(values.std())
    config.data_sha256 = hashlib.sha256(values.tobytes()).hexdigest()
    return values[train_idx].astype(np.float32), values[test_idx].astype(np.float32)


def train_flow_on(train_x: np.ndarray, test_x: np.ndarray, config: FlowConfig, quiet: bool = False
                  ) -> tuple[Flow1d, dict]:
    """Train on float32 [N] values by minimising the NLL: the model of x and per-epoch ``train_nll``, ``test_nll``
    (of each whole set). The user's data train standardized, from quantiles, the rate decaying to 0 (cosine)."""
    torch.manual_seed(config.seed)
    flow = Flow1d(config.n_components)
    if config.data is not None:  # train on (x - loc) / scale in float64, as float32
        train_x, test_x = (((v.astype(np.float64) - config.loc) / config.scale).astype(np.float32)
                           for v in (train_x, test_x))
        k, u = config.n_components, train_x.astype(np.float64)  # sigmas at the gap to the next quantile, >= 0.1
        gap = np.diff(np.quantile(u, np.arange(k + 1) / k)) if k > 1 else np.array([1.0])
        with torch.no_grad():
            flow.mus.copy_(torch.from_numpy(np.quantile(u, (np.arange(k) + 0.5) / k)))
            flow.log_sigmas.copy_(torch.from_numpy(np.log(np.maximum(gap, 0.1))))
    sets = {"train_nll": torch.from_numpy(train_x), "test_nll": torch.from_numpy(test_x)}
    _, history = run_epochs(flow, sets["train_nll"], lambda x: -flow(x)[2].mean(), config, "flow", quiet,
                            measure=lambda: {k: _mean_nll(flow, x) for k, x in sets.items()},
                            decay=config.data is not None)
    if config.data is not None:  # mu -> loc + scale mu, sigma -> scale sigma: z unchanged, NLLs + log scale
        with torch.no_grad():
            flow.mus.copy_((config.loc + config.scale * flow.mus.double()).float())
            flow.log_sigmas.add_(math.log(config.scale))
        history = {k: [v + math.log(config.scale) for v in h] for k, h in history.items()}
    return flow.eval(), history


def _mean_nll(flow: Flow1d, x: torch.Tensor) -> float:
    """The flow's mean NLL of the values ``x`` float32 [N]: log p summed in float64 over chunks of ``CHUNK``."""
    step = max(1, CHUNK // flow.mus.numel())
    return -sum(float(flow(part)[2].double().sum()) for part in x.split(step)) / len(x)


def train_flow(out_dir: str | os.PathLike, config: FlowConfig, quiet: bool = False, force: bool = False) -> dict:
    """Train with ``config``, write flow.pt and its four figures into ``out_dir`` (none if it diverges): the history."""
    train_x, test_x = flow_data(config)
    flow, history = train_flow_on(train_x, test_x, config, quiet)
    save_checkpoint(Path(out_dir) / "flow.pt", "flow", flow, asdict(config), history, force,
                    figures=_figures(flow, train_x, test_x, history, config))
    return history


def _bins(data: np.ndarray, n: int = 50) -> np.ndarray:
    """``n`` equal histogram bins (float64 edges [n + 1]) over ``data``, widened where numpy would find none."""
    lo, hi = float(data.min()), float(data.max())
    pad = 0.0 if np.all(np.diff(np.linspace(lo, hi, n + 1)) > 0) else max(abs(lo), abs(hi), 1.0) * 1e-3
    return np.linspace(lo - pad, hi + pad, n + 1)


def _figures(flow: Flow1d, train_x: np.ndarray, test_x: np.ndarray, history: dict, config: FlowConfig
             ) -> dict[str, bytes]:
    """The homework's four flow figures as PNG bytes by file name (no true density for the user's data)."""
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4))
    for ax, data, title in ((axes[0], train_x, "Training data"), (axes[1], test_x, "Test data")):
        ax.hist(data.astype(np.float64), bins=_bins(data), color="tab:blue", label=f"{len(data)} points")
        ax.set(title=title, xlabel="x", ylabel="count")
        ax.legend()
    figures = {"flow_data.png": png_bytes(fig)}
    grid = np.linspace(-3, 3, 1000, dtype=np.float32) * np.float32(config.scale) + np.float32(config.loc)
    with torch.no_grad():
        z, _, log_prob = (v.numpy() for v in flow(torch.from_numpy(grid)))
    truth = [(grid, np.exp(mixture_log_density(grid)), dict(ls="--", label="true mixture density"))] \
        if config.data is None else []
    figures["flow_loss.png"] = line_png("Flow negative log-likelihood", "epoch", "NLL (nats per point)", [
        (range(1, config.epochs + 1), history[k], dict(label=k.replace("_nll", " NLL"))) for k in history])
    figures["flow_density.png"] = line_png("Learned distribution", "x", "p(x)",
                                           [(grid, np.exp(log_prob), dict(label="learned density"))] + truth)
    figures["flow_map.png"] = line_png("Flow map x -> z", "x", "z", [(grid, z, dict(label="z = f(x)"))])
    return figures
