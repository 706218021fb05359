"""Training the autoencoder (homework Problem 1): Adam, MSE, batches of 100, on MNIST or your images."""

import hashlib
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from aeflow.checks import check_batch, check_float, check_int
from aeflow.datasets import load_images, split_indices, to_float
from aeflow.errors import ArtifactError, ScaleWarning
from aeflow.plotting import line_png
from aeflow.train.checkpoint import run_epochs, save_checkpoint
from aeflow.train.data import read_images
from aeflow.train.models import Autoencoder

MAX_EPOCHS = 1_000_000
BYTES_PER_IMAGE = 64 * 1024  # one training image's activations, gradients and optimizer scratch
MIN_VALIDATION = 20  # below it the std behind the threshold has a standard error of 1/6 of it or more


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


def check_ae_config(config: AEConfig, flags: dict[str, str] | None = None) -> None:
    """Each field in its canonical type (an int seed), else ``UsageError``; ``flags``: the CLI's names of fields."""
    name = lambda f: (flags or {}).get(f, f)  # noqa: E731
    config.epochs = check_int(config.epochs, name("epochs"), 1, MAX_EPOCHS)
    config.lr = check_float(config.lr, name("lr"), 0.0, above=True)
    config.batch_size = check_batch(config.batch_size, name("batch_size"), BYTES_PER_IMAGE)
    config.seed = check_int(config.seed, name("seed"), 0, 2**63 - 1)
    config.val_fraction = check_float(config.val_fraction, name("val_fraction"), 0.0, 0.99, above=True)


def training_images(config: AEConfig, images: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``images`` (float32 [N, 1, H, W] in [0, 1]), else those ``config`` names, and the seeded split (train_idx,
    val_idx); sets ``config``'s data fields, ``ArtifactError`` where its data changed."""
    if images is not None:
        config.data_source, config.data_sha256 = "array", hashlib.sha256(images.tobytes()).hexdigest()
    elif config.data:
        images, info = read_images(config.data)
        if config.data_sha256 and info["sha256"] != config.data_sha256:
            raise ArtifactError(f"{info['name'][:200]}: the images differ from those the autoencoder was trained on "
                                f"(sha256 of the pixels); pass the same files")
        config.data_source, config.data_sha256 = info["name"], info["sha256"]
    else:
        images = to_float(load_images("mnist", "train", config.data_dir))
        config.data_source = f"IDX files in {config.data_dir}" if config.data_dir else "torchvision download"
        if (sha256 := hashlib.sha256(images.tobytes()).hexdigest()) != (config.data_sha256 or sha256):
            raise ArtifactError(f"{config.data_source}: the MNIST training images differ from those the autoencoder "
                                f"was trained on (sha256 of the pixels); pass data_dir=DIR, the folder it was "
                                f"trained from")
        config.data_sha256 = sha256
    train_idx, val_idx = split_indices(len(images), config.seed, config.val_fraction)
    config.n_train, config.n_val, config.image_shape = len(train_idx), len(val_idx), list(images.shape[-2:])
    if config.n_val < MIN_VALIDATION:
        warnings.warn(f"only {config.n_val} validation images: the threshold, mean + 3 std of their scores, is a "
                      f"rough estimate; train on more images, or raise the validation fraction, or calibrate on "
                      f"more normal images later", ScaleWarning, stacklevel=3)  # fit's caller
    return images, train_idx, val_idx


def train_autoencoder_on(train_images: np.ndarray, config: AEConfig, quiet: bool = False) -> tuple[Autoencoder, dict]:
    """Train on float32 [N, 1, H, W] images in [0, 1]: the model and {"loss": per batch, "epoch_loss": per epoch}."""
    torch.manual_seed(config.seed)
    model, mse = Autoencoder(train_images.shape[-2:]), torch.nn.MSELoss()
    epochs, _ = run_epochs(model, torch.from_numpy(np.ascontiguousarray(train_images)), lambda x: mse(model(x), x),
                           config, "autoencoder", quiet)
    return model.eval(), {"loss": [v for e in epochs for v in e], "epoch_loss": [float(np.mean(e)) for e in epochs]}


def train_autoencoder(out_dir: str | os.PathLike, config: AEConfig, quiet: bool = False, force: bool = False) -> dict:
    """Train on ``config``'s images, write ae.pt and ae_loss.png into ``out_dir`` (none if it diverges): the history."""
    images, train_idx, val_idx = training_images(config)
    model, history = train_autoencoder_on(images[train_idx], config, quiet)
    losses, steps = history["loss"], len(history["loss"]) // config.epochs
    figure = line_png("Autoencoder training loss (MSE)", "iteration", "loss", log=True, curves=[
        (range(1, len(losses) + 1), losses, dict(color="tab:red", alpha=0.5, lw=0.8, label="training loss (per iteration)")),
        (np.arange(1, config.epochs + 1) * steps, history["epoch_loss"], dict(color="black", lw=1.5, label="epoch mean"))])
    save_checkpoint(Path(out_dir) / "ae.pt", "autoencoder", model, asdict(config), history, force,
                    figures={"ae_loss.png": figure})
    return history
