"""IDX files (the MNIST format), plain or gzip-compressed: their headers, and writing them. Two zero
bytes, type code 0x08 (unsigned byte), the number of dimensions, a big-endian uint32 per dimension,
the data: images [N, H, W] (magic 2051), labels [N] (magic 2049)."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aeflow.errors import InputError


class IdxHeader(NamedTuple):
    """An IDX header: ``shape`` of the array, ``offset`` of the first data byte, ``gzipped``."""

    shape: tuple[int, ...]
    offset: int
    gzipped: bool


def read_idx_header(path: str | os.PathLike) -> IdxHeader:
    """The checked header of an IDX file; one-line ``InputError`` for a missing file, a bad magic
    number, an impossible shape or a raw file holding fewer bytes than its header promises."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            head = f.read(4)
            ndim = head[3] if len(head) == 4 and head[:3] == b"\x00\x00\x08" and 1 <= head[3] <= 4 else 0
            dims = f.read(4 * ndim)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path") from None
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: cannot read the IDX header ({e}); the file is corrupted") from None
    if not ndim:
        raise InputError(f"{path}: bad IDX magic number {int.from_bytes(head, 'big'):#010x}; expected 0x00000803 "
                         f"(images) or 0x00000801 (labels) - is this an IDX file?")
    if len(dims) < 4 * ndim:
        raise InputError(f"{path}: IDX header is truncated; the file is incomplete")
    shape = struct.unpack(f">{ndim}I", dims)
    if math.prod(d for d in shape if d) >= 2**62:  # numpy cannot describe it, even with a zero among them
        raise InputError(f"{path}: IDX header gives an impossible shape {shape}; the file is corrupted")
    if not gz and path.stat().st_size - 4 - 4 * ndim < math.prod(shape):
        raise InputError(f"{path}: IDX header promises {math.prod(shape)} data bytes {shape} but the file holds "
                         f"{path.stat().st_size - 4 - 4 * ndim}; the file is truncated")
    return IdxHeader(shape, 4 + 4 * ndim, gz)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array (1 to 4 dimensions) as an IDX file; gzip when ``compress`` or the name ends in ``.gz``."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 4:
        raise ValueError("write_idx takes a uint8 array with 1 to 4 dimensions")
    payload = struct.pack(f">HBB{array.ndim}I", 0, 8, array.ndim, *array.shape) + array.tobytes()
    compress = Path(path).suffix == ".gz" if compress is None else compress
    Path(path).write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
