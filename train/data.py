"""The user's own training data: images for the autoencoder, real values for the flow.

Images are read with the runtime's readers (``aeflow.runtime.inputs.open_source``: every format
``aeflow score`` reads); ``image_shape_of`` is the one place that infers (H, W) from a batch.
Values are read from a 1-D .npy, a CSV or Parquet column, or a text file of one value a line.
Every problem is one ``DataError`` line.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from aeflow.errors import DataError
from aeflow.runtime.arrays import check_values
from aeflow.runtime.inputs import open_source

MIN_SIDE, MAX_SIDE, MAX_PIXELS = 4, 1024, 1 << 16  # 256x256: fc1 alone holds 16.8M weights
MIN_VALUES = 20
BATCH = 4096


def image_shape_of(shape: tuple[int, ...], name: str) -> tuple[int, int]:
    """(H, W) of a batch of greyscale images shaped [b, H, W], [b, 1, H, W] or [b, H, W, 1]
    ([b, 784] reads as 28x28); ``DataError`` for an absurd size."""
    if len(shape) == 2 and shape[1] == 784:
        return 28, 28
    dims = shape[1:]
    if len(dims) == 3 and dims[0] == 1:
        dims = dims[1:]
    elif len(dims) == 3 and dims[2] == 1:
        dims = dims[:2]
    if len(dims) != 2:
        raise DataError(f"{name}: shape {tuple(shape)} is not a batch of greyscale images [N, H, W]")
    h, w = int(dims[0]), int(dims[1])
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE and h * w <= MAX_PIXELS):
        raise DataError(f"{name}: images of {h}x{w} pixels; aeflow trains on sides of {MIN_SIDE} to {MAX_SIDE} "
                        f"pixels (at most {MAX_PIXELS:,} in all)")
    return h, w


def _as_float(batch: np.ndarray, shape: tuple[int, int], name: str, offset: int) -> np.ndarray:
    """A batch as float32 [b, 1, H, W] in [0, 1] (uint8 / 255, floats checked)."""
    x = batch.reshape(len(batch), 1, *shape)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    x = x.astype(np.float32)
    check_values(x, name, offset)
    return x


def read_images(paths: list[str | os.PathLike], column: str | None = None) -> tuple[np.ndarray, dict]:
    """Every image in ``paths`` as float32 [N, 1, H, W] in [0, 1], all of one size, and a
    description ``{"name", "sha256" (of the float32 pixels), "images", "image_shape"}``.
    ``DataError`` (one line) for mixed sizes, images labelled anomalous, or no images."""
    parts, shape, digest = [], None, hashlib.sha256()
    for path in paths:
        with open_source(path, column=column) as source:
            if source.labels is not None and bool(np.any(source.labels)):
                raise DataError(f"{source.name}: {int(source.labels.sum())} of its images are labelled anomalous "
                                f"(is_anomaly); train on normal images only - drop them first")
            offset = 0
            for batch in source.batches(BATCH):
                here = image_shape_of(batch.shape, source.name)
                if shape is not None and here != shape:
                    raise DataError(f"{source.name}: images of {here[0]}x{here[1]} pixels among images of "
                                    f"{shape[0]}x{shape[1]}; train on images of one size")
                shape = here
                parts.append(_as_float(batch, shape, source.name, offset))
                digest.update(parts[-1].tobytes())
                offset += len(batch)
    if not parts:
        raise DataError("no images to train on")
    images = np.concatenate(parts)
    name = ", ".join(str(p) for p in paths)
    return images, {"name": name[:1000], "sha256": digest.hexdigest(), "images": len(images),
                    "image_shape": list(shape)}


def _column(table: dict, column: str | None, name: str) -> np.ndarray:
    if column is None:
        if len(table) != 1:
            raise DataError(f"{name}: {len(table)} columns ({', '.join(list(table)[:5])}); pick one with --column")
        column = next(iter(table))
    if column not in table:
        raise DataError(f"{name}: no column {column!r} (columns: {', '.join(list(table)[:10])})")
    return np.asarray(table[column])


def read_values(path: str | os.PathLike, column: str | None = None) -> np.ndarray:
    """Real values from a 1-D .npy, a CSV column (``column``: its header name), a Parquet column or
    a text file of one value a line, as float64 [N] (``checked_values``); ``DataError`` (one line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            raw = np.load(p, allow_pickle=False)
        elif suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise DataError("reading Parquet needs pyarrow: pip install 'aeflow[distributed]'") from None
            raw = _column(pq.read_table(p).to_pydict(), column, str(path))
        elif suffix == ".csv":
            with open(p, newline="") as f:
                rows = list(csv.DictReader(f))
            raw = _column({k: [r[k] for r in rows] for k in (rows[0] if rows else {})}, column, str(path))
        else:
            raw = np.array([line for line in p.read_text().split() if line])
        values = np.asarray(raw, dtype=np.float64)
    except DataError:
        raise
    except (ValueError, TypeError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: not a list of numbers ({str(e).splitlines()[0][:80]})") from None
    return checked_values(values, str(path))


def checked_values(values, name: str) -> np.ndarray:
    """``values`` as float64 [N], or ``DataError``: not 1-D numbers, NaN/Inf, fewer than ``MIN_VALUES``,
    or all equal."""
    try:
        values = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise DataError(f"{name}: not a list of numbers") from None
    if values.ndim != 1:
        raise DataError(f"{name}: shape {values.shape}; the flow fits 1-D values, pass an array [N]")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"{name}: {bad.size} values are NaN or infinite (first at row {int(bad[0])}); drop them")
    if values.size < MIN_VALUES:
        raise DataError(f"{name}: {values.size} values; the flow needs at least {MIN_VALUES}")
    if not values.std() > 0:
        raise DataError(f"{name}: all {values.size} values are equal; the flow needs values that vary")
    return values


def as_images(x, name: str = "array") -> np.ndarray:
    """An array of greyscale images ([N, H, W], [N, 1, H, W] or [N, H, W, 1]; uint8 0..255 or float
    in [0, 1]) as float32 [N, 1, H, W] in [0, 1]; ``DataError`` otherwise."""
    x = np.asarray(x)
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise DataError(f"{name}: dtype {x.dtype}; pass uint8 0..255 or float in [0, 1]")
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"{name}: shape {x.shape} is not a batch of greyscale images [N, H, W]")
    return _as_float(x, image_shape_of(x.shape, name), name, 0)
