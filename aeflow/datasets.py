"""Image data sets as uint8 numpy arrays: torchvision downloads (online) or IDX folders (offline).

A data-dir holds one folder per data set (``mnist/``, ``kmnist/``, ``fashion-mnist/``) with the
standard IDX file names, gzipped or not, e.g. ``mnist/train-images-idx3-ubyte.gz``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aeflow.errors import DataError
from aeflow.runtime.inputs import read_images

DATASETS = ("mnist", "kmnist", "fashion-mnist")
_TORCHVISION_CLASS = {"mnist": "MNIST", "kmnist": "KMNIST", "fashion-mnist": "FashionMNIST"}
DEFAULT_ROOT = Path(os.environ.get("AEFLOW_DATA_ROOT", Path.home() / ".cache" / "aeflow" / "data"))


def idx_file(name: str, split: str, kind: str = "images") -> str:
    """Where a set's IDX file lies under a data-dir, for paths and hints alike:
    ``idx_file("fashion-mnist", "test")`` -> ``"fashion-mnist/t10k-images-idx3-ubyte"`` (or ``.gz``)."""
    return f"{name}/{'train' if split == 'train' else 't10k'}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"


def idx_path(data_dir: str | os.PathLike, name: str, split: str, kind: str = "images") -> Path | None:
    """The IDX file for ``name``/``split`` ("train" or "test") in ``data_dir/name/``, or None.

    Each set has its own folder: the files of different sets share their names, so a flat folder
    would let one set stand in for another (e.g. MNIST test read as "fashion-mnist-test")."""
    stem = Path(idx_file(name, split, kind)).name
    for folder in (Path(data_dir) / name, Path(data_dir) / name.replace("-", "_")):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def available(name: str, split: str, data_dir: str | os.PathLike | None) -> bool:
    """Whether ``load_images`` can find the set without downloading (always True online)."""
    return data_dir is None or idx_path(data_dir, name, split) is not None


def load_images(name: str, split: str, data_dir: str | os.PathLike | None = None,
                root: str | os.PathLike = DEFAULT_ROOT) -> np.ndarray:
    """Load a data set's images as uint8 [N, 28, 28].

    With ``data_dir`` the IDX files are read from it; without, torchvision downloads the set
    into ``root`` (needs internet once). Raises ``DataError`` with what to do when neither works.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"data folder {data_dir} does not exist; pass --data-dir DIR holding IDX files")
        path = idx_path(data_dir, name, split)
        if path is None:
            raise DataError(f"no {name} {split} images in {data_dir}: expected {idx_file(name, split)}[.gz]")
        return read_images([path], image_shape=(28, 28))[0]
    try:
        from torchvision import datasets
    except ImportError:
        raise DataError("torchvision is missing: pip install 'aeflow[train]', or pass --data-dir DIR") from None
    cls = getattr(datasets, _TORCHVISION_CLASS[name])
    try:
        ds = cls(root=str(root), train=(split == "train"), download=True)
    except Exception as e:  # torchvision raises many kinds (URLError, RuntimeError, OSError)
        raise DataError(f"could not download {name} ({type(e).__name__}); without internet pass --data-dir DIR "
                        f"holding {idx_file(name, split)}[.gz] (see README)") from None
    return np.ascontiguousarray(ds.data.numpy().astype(np.uint8))


def split_indices(n: int, seed: int, val_fraction: float = 1 / 6) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of ``range(n)``: ``(train_idx, val_idx)``, int64.

    ``round(n * val_fraction)`` images go to validation (10,000 of MNIST's 60,000)."""
    n_val = int(round(n * val_fraction))
    if not 2 <= n_val < n:
        raise DataError(f"cannot split {n} images with validation fraction {val_fraction:.4f}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] -> float32 [N, 1, H, W] in [0, 1], as transforms.ToTensor()."""
    return (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]


def mixture_of_gaussians(n: int, seed: int, means=(-1.0, 0.2, 1.5), std: float = 0.25) -> np.ndarray:
    """The homework's 1-D data: n // 3 points from each of the first two components, the rest
    from the third; float32 [n], shuffled, seeded."""
    rng = np.random.default_rng(seed)
    k = n // 3
    parts = [rng.normal(means[0], std, k), rng.normal(means[1], std, k), rng.normal(means[2], std, n - 2 * k)]
    x = np.concatenate(parts)
    return rng.permutation(x).astype(np.float32)


def mixture_log_density(x: np.ndarray, means=(-1.0, 0.2, 1.5), std: float = 0.25,
                        weights=(1 / 3, 1 / 3, 1 / 3)) -> np.ndarray:
    """Log density of the true mixture at x (float64)."""
    x = np.asarray(x, dtype=np.float64)[..., None]
    m, w = np.asarray(means), np.asarray(weights)
    comp = np.log(w) - 0.5 * ((x - m) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    top = comp.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(comp - top).sum(axis=-1, keepdims=True)))[..., 0]
