"""Training the MNIST autoencoder (homework Problem 1): Adam, MSE, batches of 100."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from aeflow.errors import ArtifactError
from aeflow.checks import check_batch, check_float, check_int, check_seed
from aeflow.progress import progress_bar
from aeflow.train.checkpoint import check_finite, diverged, save_checkpoint
from aeflow.datasets import load_images, split_indices, to_float
from aeflow.train.data import read_images
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
    data: list[str] | None = None  # the user's image files (``--data``); None: MNIST
    data_sha256: str = ""
    image_shape: list[int] = field(default_factory=lambda: [28, 28])


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


def training_images(config: AEConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The images ``config`` names (its ``data`` files, else MNIST's training set from ``data_dir``)
    and the seeded split: (float32 [N, 1, H, W] in [0, 1], train_idx, val_idx). Sets the data
    fields of ``config``; ``ArtifactError`` when files recorded at training changed since."""
    if config.data:
        images, info = read_images(config.data)
        if config.data_sha256 and info["sha256"] != config.data_sha256:
            raise ArtifactError(f"{info['name'][:200]}: the images differ from those the autoencoder was trained on "
                                f"(sha256 of the pixels); pass the same files")
        config.data_source, config.data_sha256, config.image_shape = info["name"], info["sha256"], info["image_shape"]
    else:
        images = to_float(load_images("mnist", "train", config.data_dir))
        config.data_source = data_source(config.data_dir)
        config.data_sha256 = config.data_sha256 or hashlib.sha256(images.tobytes()).hexdigest()
    train_idx, val_idx = split_indices(len(images), config.seed, config.val_fraction)
    return images, train_idx, val_idx


def train_autoencoder_on(train_images: np.ndarray, config: AEConfig, quiet: bool = False
                         ) -> tuple[Autoencoder, dict]:
    """Train on float32 [N, 1, H, W] images in [0, 1] (uint8 [N, H, W] is scaled by 1/255); returns
    the model (eval mode) and ``{"loss": per-iteration losses, "epoch_loss": per-epoch means}``."""
    if train_images.dtype == np.uint8:
        train_images = to_float(train_images)
    torch.manual_seed(config.seed)
    model = Autoencoder(train_images.shape[-2:])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = torch.nn.MSELoss()
    x_all = torch.from_numpy(np.ascontiguousarray(train_images))
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
    """Load the images (``config.data``, else MNIST from ``config.data_dir`` or torchvision),
    split them with ``config.seed``, train, and write ``ae.pt`` and ``ae_loss.png`` into ``out_dir``. Returns the checkpoint path.
    ``UsageError`` for a config that cannot train, ``TrainingError`` (nothing written) when the
    loss or the weights stop being finite; without ``force`` an ae.pt that appeared meanwhile is
    kept (``OutputError``)."""
    check_ae_config(config)
    images, train_idx, val_idx = training_images(config)
    config.n_train, config.n_val = len(train_idx), len(val_idx)
    model, history = train_autoencoder_on(images[train_idx], config, quiet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = asdict(config)
    cfg["data_dir"] = str(config.data_dir) if config.data_dir else None
    path = out / "ae.pt"
    save_checkpoint(path, "autoencoder", model, cfg, history, force)
    plot_ae_loss(history["loss"], out / "ae_loss.png", (config.n_train + config.batch_size - 1) // config.batch_size)
    return path
