"""Image data sets as uint8 arrays: torchvision downloads (online) or IDX files in a data-dir, one
folder per set with the standard names, gzipped or not (``mnist/train-images-idx3-ubyte.gz``)."""

import os
from pathlib import Path

import numpy as np

from aeflow.errors import DataError
from aeflow.runtime.inputs import read_images

DATASETS = ("mnist", "kmnist", "fashion-mnist")
_TORCHVISION_CLASS = {"mnist": "MNIST", "kmnist": "KMNIST", "fashion-mnist": "FashionMNIST"}
DEFAULT_ROOT = Path.home() / ".cache" / "aeflow" / "data"
MEANS, STD = np.array([-1.0, 0.2, 1.5]), 0.25  # the homework's mixture: three equally weighted components


def idx_file(name: str, split: str) -> str:
    """Where a set's images lie under a data-dir: ``("kmnist", "test")`` -> ``"kmnist/t10k-images-idx3-ubyte"``."""
    return f"{name}/{'train' if split == 'train' else 't10k'}-images-idx3-ubyte"


def idx_path(data_dir: str | os.PathLike, name: str, split: str) -> Path | None:
    """The IDX images (or ``.gz``) of ``name``/``split`` in ``data_dir/name/`` (sets share file names), or None."""
    path = Path(data_dir) / idx_file(name, split)
    return next((p for p in (path, path.with_name(path.name + ".gz")) if p.is_file()), None)


def available(name: str, split: str, data_dir: str | os.PathLike | None) -> bool:
    """Whether ``load_images`` can find the set without downloading (always True online)."""
    return data_dir is None or idx_path(data_dir, name, split) is not None


def load_images(name: str, split: str, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """A data set's images, uint8 [N, 28, 28]: from the IDX files of ``data_dir``, or without it
    downloaded by torchvision (internet needed once); ``DataError`` saying what to do otherwise."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"data folder {data_dir} does not exist; pass --data-dir DIR holding IDX files")
        if (path := idx_path(data_dir, name, split)) is None:
            raise DataError(f"no {name} {split} images in {data_dir}: expected {idx_file(name, split)}[.gz]")
        return read_images([path], image_shape=(28, 28))[0]
    try:
        from torchvision import datasets
    except ImportError:
        raise DataError("torchvision is missing: pip install 'aeflow[train]', or pass --data-dir DIR") from None
    try:
        ds = getattr(datasets, _TORCHVISION_CLASS[name])(root=str(DEFAULT_ROOT), train=split == "train", download=True)
    except Exception as e:  # torchvision raises many kinds (URLError, RuntimeError, OSError)
        raise DataError(f"could not download {name} ({type(e).__name__}); without internet pass --data-dir DIR "
                        f"holding {idx_file(name, split)}[.gz] (see README)") from None
    return np.ascontiguousarray(ds.data.numpy().astype(np.uint8))


def split_indices(n: int, seed: int, val_fraction: float = 1 / 6) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)``: sorted int64 ``(train_idx, val_idx)``, ``round(n * val_fraction)`` in val."""
    n_val = int(round(n * val_fraction))
    if not 2 <= n_val < n:
        raise DataError(f"cannot split {n} images with validation fraction {val_fraction:.4f}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] -> float32 [N, 1, H, W] in [0, 1], as transforms.ToTensor()."""
    return (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]


def mixture_of_gaussians(n: int, seed: int) -> np.ndarray:
    """The homework's 1-D data, float32 [n], shuffled: n // 3 points of two components each, the rest of the third."""
    rng, k = np.random.default_rng(seed), n // 3
    parts = [rng.normal(MEANS[0], STD, k), rng.normal(MEANS[1], STD, k), rng.normal(MEANS[2], STD, n - 2 * k)]
    return rng.permutation(np.concatenate(parts)).astype(np.float32)


def mixture_log_density(x: np.ndarray) -> np.ndarray:
    """Log density of the true mixture at ``x`` (float64, the shape of ``x``)."""
    x = np.asarray(x, dtype=np.float64)[..., None]
    comp = np.log(np.full(3, 1 / 3)) - 0.5 * ((x - MEANS) / STD) ** 2 - np.log(STD) - 0.5 * np.log(2 * np.pi)
    top = comp.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(comp - top).sum(axis=-1, keepdims=True)))[..., 0]
