"""Reading and writing IDX files (the MNIST format), plain or gzip-compressed, with numpy only.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data. Images have 3 dimensions (magic 2051),
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


@dataclass(frozen=True)
class IdxHeader:
    """An IDX header: ``shape`` of the array, ``offset`` of the first data byte, ``gzipped``."""

    shape: tuple[int, ...]
    offset: int
    gzipped: bool

    @property
    def magic(self) -> int:
        return (_UBYTE << 8) | len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape)  # Python ints: a crafted header must not overflow int64


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes (whatever its extension)."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _open(path: Path, gzipped: bool):
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx_header(path: str | os.PathLike) -> IdxHeader:
    """Parse and check the header of an IDX file.

    Returns an ``IdxHeader``; raises ``InputError`` for a missing file, a bad magic number, an
    unsupported type code or a header that promises more bytes than the file holds (raw files).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    try:
        gz = is_gzip(path)
        with _open(path, gz) as f:
            head = f.read(4)
            if len(head) < 4:
                raise InputError(f"{path}: too short to be an IDX file (expected a 4-byte magic number)")
            zero, code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or code != _UBYTE or not 1 <= ndim <= 4:
                magic = struct.unpack(">I", head)[0]
                raise InputError(
                    f"{path}: bad IDX magic number {magic:#010x}; expected {IMAGES_MAGIC:#010x} "
                    f"(images) or {LABELS_MAGIC:#010x} (labels) - is this an IDX file?"
                )
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise InputError(f"{path}: IDX header is truncated; the file is incomplete")
            shape = struct.unpack(f">{ndim}I", dims)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"{path}: cannot read the IDX header ({e}); the file is corrupted") from None
    header = IdxHeader(shape=tuple(int(d) for d in shape), offset=4 + 4 * ndim, gzipped=gz)
    # numpy refuses shapes whose non-zero dimensions multiply beyond 2**63, even with a zero among them
    if math.prod(d for d in header.shape if d) >= 2**62:
        raise InputError(f"{path}: IDX header gives an impossible shape {header.shape}; the file is corrupted")
    if not gz:
        have = path.stat().st_size - header.offset
        if have < header.nbytes:
            raise InputError(
                f"{path}: IDX header promises {header.nbytes} data bytes {header.shape} but the "
                f"file holds {have}; the file is truncated"
            )
    return header


def read_idx(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read a whole IDX file into a uint8 array of the shape its header gives.

    ``mmap=True`` memory-maps a raw (uncompressed) file instead of reading it; gzip files are
    always decompressed into memory. Raises ``InputError`` for anything unreadable.
    """
    path = Path(path)
    header = read_idx_header(path)
    if not header.gzipped:
        if mmap:
            return np.memmap(path, dtype=np.uint8, mode="r", offset=header.offset, shape=header.shape)
        with open(path, "rb") as f:
            f.seek(header.offset)
            data = np.fromfile(f, dtype=np.uint8, count=header.nbytes)
        return data.reshape(header.shape)
    try:
        with gzip.open(path, "rb") as f:
            f.seek(header.offset)
            # read what is there, up to what the header promises (a crafted header may promise terabytes)
            parts, left = [], header.nbytes
            while left:
                part = f.read(min(left, 1 << 24))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
            raw = b"".join(parts)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: cannot decompress ({e}); the .gz file is corrupted or truncated") from None
    if len(raw) < header.nbytes:
        raise InputError(
            f"{path}: IDX header promises {header.nbytes} data bytes {header.shape} but the "
            f"file holds {len(raw)}; the file is truncated"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(header.shape)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array (1 to 4 dimensions) as an IDX file; gzip when ``compress`` or the
    name ends in ``.gz``."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 4:
        raise ValueError("write_idx takes a uint8 array with 1 to 4 dimensions")
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    payload = struct.pack(">HBB", 0, _UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.tobytes()
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
