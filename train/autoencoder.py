"""Training the MNIST autoencoder (homework Problem 1): Adam, MSE, batches of 100."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from aeflow.checks import check_batch, check_float, check_int, check_seed
from aeflow.progress import progress_bar
from aeflow.train.checkpoint import check_finite, diverged, save_checkpoint
from aeflow.datasets import load_images, split_indices, to_float
from aeflow.train.models import Autoencoder
from aeflow.train.plots import plot_ae_loss


@dataclass
class AEConfig:
    """Everything that decides the trained weights; stored in the checkpoint."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 100
    seed: int = 0
    val_fraction: float = 1 / 6
    data_dir: str | None = None
    n_train: int = 0
    n_val: int = 0
    data_source: str = ""


MAX_EPOCHS = 1_000_000
BYTES_PER_IMAGE = 64 * 1024  # one training image's activations, gradients and optimizer scratch


def check_ae_config(config: AEConfig, flags: dict[str, str] | None = None) -> None:
    """``UsageError`` for any field that cannot train: epochs, lr, batch_size, seed, val_fraction.
    ``flags`` names the fields as the caller spells them (the CLI passes {"lr": "--lr", ...})."""
    name = (flags or {}).get
    check_int(config.epochs, name("epochs", "epochs"), 1, MAX_EPOCHS)
    check_float(config.lr, name("lr", "lr"), 0.0, above=True)
    check_batch(config.batch_size, name("batch_size", "batch_size"), BYTES_PER_IMAGE)
    check_seed(config.seed, name("seed", "seed"))
    check_float(config.val_fraction, name("val_fraction", "val_fraction"), 0.0, 0.99, above=True)


def data_source(data_dir: str | os.PathLike | None) -> str:
    """How the training data is named in artifacts."""
    return f"IDX files in {data_dir}" if data_dir else "torchvision download"


def train_autoencoder_on(train_images: np.ndarray, config: AEConfig, quiet: bool = False
                         ) -> tuple[Autoencoder, dict]:
    """Train on uint8 [N, 28, 28] images; returns the model (eval mode) and
    ``{"loss": per-iteration losses, "epoch_loss": per-epoch means}``."""
    torch.manual_seed(config.seed)
    model = Autoencoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = torch.nn.MSELoss()
    x_all = torch.from_numpy(to_float(train_images))
    n = x_all.shape[0]
    gen = torch.Generator().manual_seed(config.seed)
    steps = (n + config.batch_size - 1) // config.batch_size
    losses: list[float] = []
    epoch_loss: list[float] = []
    model.train()
    with progress_bar(config.epochs * steps, "training autoencoder", quiet,
                      show=lambda s: s) as bar:
        for epoch in range(config.epochs):
            perm = torch.randperm(n, generator=gen)
            start = len(losses)
            for b in range(steps):
                images = x_all[perm[b * config.batch_size:(b + 1) * config.batch_size]]
                loss = loss_fn(model(images), images)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                if not math.isfinite(losses[-1]):
                    raise diverged("autoencoder", epoch, losses[-1], config.lr)
                bar.update(1, f"epoch {epoch + 1}/{config.epochs} loss {losses[-1]:.6f}")
            epoch_loss.append(float(np.mean(losses[start:])))
    check_finite(model, "autoencoder", config.lr)
    model.eval()
    return model, {"loss": losses, "epoch_loss": epoch_loss}


def train_autoencoder(out_dir: str | os.PathLike, config: AEConfig, quiet: bool = False, force: bool = False) -> Path:
    """Load MNIST (``config.data_dir`` or torchvision), split it with ``config.seed``, train,
    and write ``ae.pt`` and ``ae_loss.png`` into ``out_dir``. Returns the checkpoint path.
    ``UsageError`` for a config that cannot train, ``TrainingError`` (nothing written) when the
    loss or the weights stop being finite; without ``force`` an ae.pt that appeared meanwhile is
    kept (``OutputError``)."""
    check_ae_config(config)
    images = load_images("mnist", "train", config.data_dir)
    train_idx, val_idx = split_indices(len(images), config.seed, config.val_fraction)
    config.n_train, config.n_val = len(train_idx), len(val_idx)
    config.data_source = data_source(config.data_dir)
    model, history = train_autoencoder_on(images[train_idx], config, quiet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = asdict(config)
    cfg["data_dir"] = str(config.data_dir) if config.data_dir else None
    path = out / "ae.pt"
    save_checkpoint(path, "autoencoder", model, cfg, history, force)
    plot_ae_loss(history["loss"], out / "ae_loss.png", (config.n_train + config.batch_size - 1) // config.batch_size)
    return path
