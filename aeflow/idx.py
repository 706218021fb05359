"""IDX headers (the MNIST format, plain or gzip-compressed): two zero bytes, type code 0x08 (unsigned byte),
the number of dimensions, a big-endian uint32 per dimension; then the data (images [N, H, W], labels [N])."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

from aeflow.errors import InputError


def read_idx_header(path: str | os.PathLike) -> tuple[tuple[int, ...], int, bool]:
    """(shape, offset of the first data byte, gzipped) of an IDX file; one-line ``InputError`` for a missing
    file, a bad magic number, an impossible shape or a raw file holding fewer bytes than its header promises."""
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
    return shape, 4 + 4 * ndim, gz
