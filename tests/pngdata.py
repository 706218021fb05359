"""Test-only PNG writer with explicit row filters (the runtime reads PNGs with Pillow; this makes
files whose every filter type and header field the tests choose)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTERS = {"none": 0, "sub": 1, "up": 2, "average": 3, "paeth": 4}


def _filter_rows(image: np.ndarray, kinds: list[int]) -> bytes:
    img = image.astype(np.int16)
    height, width = img.shape
    out = bytearray()
    prev = np.zeros(width, dtype=np.int16)
    for y in range(height):
        kind = kinds[y % len(kinds)]
        cur = img[y]
        left = np.concatenate([[0], cur[:-1]])
        upleft = np.concatenate([[0], prev[:-1]])
        if kind == 0:
            line = cur
        elif kind == 1:
            line = cur - left
        elif kind == 2:
            line = cur - prev
        elif kind == 3:
            line = cur - ((left + prev) >> 1)
        else:
            p = left + prev - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            line = cur - pred
        out.append(kind)
        out += (line & 0xFF).astype(np.uint8).tobytes()
        prev = cur
    return bytes(out)


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png(image: np.ndarray, filters: str | list[str] = "none", split_idat: int = 0) -> bytes:
    """uint8 [height, width] as an 8-bit greyscale PNG; ``filters``: one name for every row or a
    list applied in turn; ``split_idat`` > 0 splits the image data into IDAT chunks of that size."""
    image = np.asarray(image)
    assert image.dtype == np.uint8 and image.ndim == 2
    names = [filters] if isinstance(filters, str) else list(filters)
    height, width = image.shape
    data = zlib.compress(_filter_rows(image, [FILTERS[n] for n in names]))
    parts = [data[i:i + split_idat] for i in range(0, len(data), split_idat)] if split_idat else [data]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", ihdr) + b"".join(chunk(b"IDAT", p) for p in parts) + chunk(b"IEND", b"")


def encode_adam7(image: np.ndarray) -> bytes:
    """uint8 [height, width] as an interlaced (Adam7) 8-bit greyscale PNG, rows unfiltered."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        sub = image[y0::dy, x0::dx]
        if sub.size:
            for row in sub:
                raw += b"\x00" + row.tobytes()
    height, width = image.shape
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    return SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


def write_png(path: str | os.PathLike, image: np.ndarray, filters: str | list[str] = "none") -> None:
    """Write uint8 [height, width] to ``path`` as an 8-bit greyscale PNG."""
    Path(path).write_bytes(encode_png(image, filters))
