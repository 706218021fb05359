"""Image inputs: ``open_source`` picks the reader for a path (the formats live in ``npyfiles``,
``pngfiles`` and ``parquet``, imported only for a Parquet file), ``read_images`` reads whole files."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from aeflow.errors import InputError
from aeflow.idx import read_idx_header
from aeflow.runtime.arrays import DEFAULT_SHAPE, SIDE, accepted, check_image_shape, check_layout, scale_problem, \
    to_float32
from aeflow.runtime.npyfiles import NPY_MAGIC, open_npy, open_npz
from aeflow.runtime.pngfiles import SIGNATURE, PngFolderSource, open_png
from aeflow.runtime.sources import ArraySource, ImageSource, RawFileSource, StreamSource, not_regular, opened_at, \
    read_bytes

__all__ = ["SIDE", "ArraySource", "ImageSource", "PngFolderSource", "accepted", "check_layout", "expand_paths",
           "open_source", "read_images", "scale_problem", "to_float32"]


def open_idx(path: Path, name: str, image_shape=DEFAULT_SHAPE) -> ImageSource:
    """An IDX images file [N, H, W] (raw or gzip), read a batch at a time; ``image_shape=None``: its (H, W)."""
    header = read_idx_header(path)
    if len(header.shape) != 3:
        hint = " - a labels file? pass the images file" if len(header.shape) == 1 else ""
        raise InputError(f"{name}: IDX file of shape {header.shape}{hint}; expected images [N, H, W]")
    image_shape = image_shape or check_image_shape(header.shape[1:], name)
    if not header.gzipped:
        return RawFileSource(path, header.offset, name, header.shape, np.dtype(np.uint8), None, image_shape)
    return StreamSource(lambda: opened_at(path, header.offset, True), name, header.shape, np.dtype(np.uint8),
                        ".gz data", None, image_shape)


def open_source(path: str | os.PathLike, name: str | None = None, column: str | None = None,
                image_shape=DEFAULT_SHAPE) -> ImageSource:
    """The reader for ``path`` (a PNG folder, .npy, .npz, .png, .parquet with its image ``column``, IDX),
    of ``image_shape`` (H, W) images (None: the file's size), labelled ``name`` (default: the path);
    one-line ``InputError`` for anything missing, empty, unreadable, of another layout or size."""
    p, name = Path(path), name or str(path)
    if p.is_dir():
        return PngFolderSource(p, name, image_shape=image_shape)
    if not p.exists() and not p.is_symlink():
        raise InputError(f"{name}: no such file or folder; check the path")
    if why := not_regular(p):
        raise InputError(f"{name}: is {why}; aeflow reads regular files and folders of PNGs")
    head, suffix = read_bytes(p, 8), p.suffix.lower()
    if not head:
        raise InputError(f"{name}: the file is empty")
    magics = {".npy": NPY_MAGIC, ".npz": b"PK\x03\x04", ".png": SIGNATURE, ".parquet": b"PAR1"}
    kind = suffix if suffix in magics else next((k for k, m in magics.items() if head.startswith(m)), None)
    if kind == ".parquet":
        from aeflow.runtime.parquet import ParquetSource

        return ParquetSource(p, name, column, image_shape=image_shape)
    if kind:
        return {".npy": open_npy, ".npz": open_npz, ".png": open_png}[kind](p, name, image_shape)
    if head[:2] not in (b"\x1f\x8b", b"\x00\x00"):
        raise InputError(f"{name}: unknown format; pass .npy, .npz, .parquet, IDX (raw or .gz), a .png or a folder "
                         f"of PNGs")
    return open_idx(p, name, image_shape)


def expand_paths(patterns) -> list[Path]:
    """Paths as given, glob patterns (``*``, ``?``, ``[``, ``**``) that are not existing paths expanded in
    sorted order; ``InputError`` for a pattern that matches nothing."""
    paths: list[Path] = []
    for text in map(str, [patterns] if isinstance(patterns, (str, os.PathLike)) else patterns):
        found = sorted(glob.glob(text, recursive=True)) if glob.has_magic(text) and not Path(text).exists() else [text]
        if not found:
            raise InputError(f"{text}: no file or folder matches the pattern")
        paths.extend(map(Path, found))
    return paths


def read_images(paths, image_shape=None, column: str | None = None, batch_size: int = 4096):
    """Every image of ``paths`` (files, folders, glob patterns) in memory: ``(images, labels, (H, W))``:
    uint8 [N, H, W] if every file holds uint8, else float32 in [0, 1]; bool [N] ``is_anomaly`` if some
    file has them (else None). ``image_shape=None``: the first file's size, which every file must have."""
    parts, labels, known, shape = [], [], False, image_shape
    for path in expand_paths(paths):
        with open_source(path, column=column, image_shape=shape) as src:
            shape, done = src.image_shape, 0
            for batch in src.batches(batch_size):
                x = batch if batch.dtype == np.uint8 else to_float32(batch, src.name, done, image_shape=shape)
                parts.append(np.array(x).reshape(-1, *shape))
                done += len(x)
            labels.append(np.zeros(src.n, dtype=bool) if src.labels is None else src.labels)
            known |= src.labels is not None
    if not parts:
        raise InputError("no images: pass at least one file or folder")
    if any(p.dtype != np.uint8 for p in parts):
        parts = [p / np.float32(255) if p.dtype == np.uint8 else p for p in parts]
    return np.concatenate(parts), np.concatenate(labels) if known else None, tuple(shape)
