"""IDX files (the MNIST format), plain or gzip-compressed: their headers, and writing them (tests and
data preparation). ``aeflow.runtime.inputs.open_source`` reads them a batch at a time.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data. Images have 3 dimensions [N, H, W] (magic 2051),
labels 1 (magic 2049).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aeflow.errors import InputError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass(frozen=True)
class IdxHeader:
    """An IDX header: ``shape`` of the array, ``offset`` of the first data byte, ``gzipped``."""

    shape: tuple[int, ...]
    offset: int
    gzipped: bool

    @property
    def magic(self) -> int:
        return (_UBYTE << 8) | len(self.shape)


def read_idx_header(path: str | os.PathLike) -> IdxHeader:
    """The checked header of an IDX file; ``InputError`` for a missing file, a bad magic number, an
    unsupported type code or a header that promises more bytes than a raw file holds."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == _GZIP_MAGIC
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4:
                raise InputError(f"{path}: too short to be an IDX file (expected a 4-byte magic number)")
            zero, code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or code != _UBYTE or not 1 <= ndim <= 4:
                raise InputError(f"{path}: bad IDX magic number {struct.unpack('>I', head)[0]:#010x}; expected "
                                 f"{IMAGES_MAGIC:#010x} (images) or {LABELS_MAGIC:#010x} (labels) - is this an IDX file?")
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise InputError(f"{path}: IDX header is truncated; the file is incomplete")
    except _ERRORS as e:
        raise InputError(f"{path}: cannot read the IDX header ({e}); the file is corrupted") from None
    header = IdxHeader(struct.unpack(f">{ndim}I", dims), 4 + 4 * ndim, gz)
    # numpy refuses shapes whose non-zero dimensions multiply beyond 2**63, even with a zero among them
    if math.prod(d for d in header.shape if d) >= 2**62:
        raise InputError(f"{path}: IDX header gives an impossible shape {header.shape}; the file is corrupted")
    have = path.stat().st_size - header.offset
    if not gz and have < math.prod(header.shape):  # Python ints: a crafted header must not overflow int64
        raise InputError(f"{path}: IDX header promises {math.prod(header.shape)} data bytes {header.shape} but the "
                         f"file holds {have}; the file is truncated")
    return header


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array (1 to 4 dimensions) as an IDX file; gzip when ``compress`` or the
    name ends in ``.gz``."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 4:
        raise ValueError("write_idx takes a uint8 array with 1 to 4 dimensions")
    payload = struct.pack(f">HBB{array.ndim}I", 0, _UBYTE, array.ndim, *array.shape) + array.tobytes()
    compress = Path(path).suffix == ".gz" if compress is None else compress
    Path(path).write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
