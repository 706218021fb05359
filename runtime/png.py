"""A small PNG codec for 8-bit greyscale images, with zlib + numpy only.

``decode_png`` reads non-interlaced 8-bit greyscale PNGs (all five row filters) and rejects every
other mode (RGB, palette, alpha, 16-bit, 1/2/4-bit, interlaced) with an ``InputError`` that says
what it found and what is needed. ``encode_png`` writes 8-bit greyscale PNGs (used by tests and
for saving reconstructions).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from aeflow.errors import InputError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTERS = {"none": 0, "sub": 1, "up": 2, "average": 3, "paeth": 4}
_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
_NEED = "an 8-bit greyscale, non-interlaced PNG"


def _mode_name(bit_depth: int, colour_type: int) -> str:
    return f"{bit_depth}-bit {_COLOUR_TYPES.get(colour_type, f'colour type {colour_type}')}"


def read_header(data: bytes, name: str = "PNG") -> tuple[int, int, int, int, int]:
    """Check the signature and the IHDR chunk at the start of ``data`` (at least 33 bytes).

    Returns ``(width, height, bit_depth, colour_type, interlace)``; raises ``InputError`` when
    ``data`` is not a PNG."""
    if len(data) < 8 or data[:8] != SIGNATURE:
        raise InputError(f"{name}: not a PNG file (bad signature); pass {_NEED}")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InputError(f"{name}: PNG header is truncated or missing; the file is corrupted")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if width >= 2**31 or height >= 2**31:  # the PNG specification's limit
        raise InputError(f"{name}: PNG header gives {width}x{height} pixels, beyond the format's limit; "
                         f"the file is corrupted")
    return width, height, depth, colour, interlace


def check_mode(header: tuple[int, int, int, int, int], name: str,
               shape: tuple[int, int] | None = None) -> None:
    """Raise ``InputError`` unless the header (from ``read_header``) is 8-bit greyscale,
    non-interlaced and, when ``shape`` = (height, width) is given, of that size."""
    width, height, depth, colour, interlace = header
    if depth != 8 or colour != 0:
        raise InputError(f"{name}: {_mode_name(depth, colour)} PNG; aeflow needs {_NEED} "
                         f"(convert it, e.g. with ImageMagick: convert IN -colorspace Gray -depth 8 OUT.png)")
    if interlace != 0:
        raise InputError(f"{name}: interlaced (Adam7) PNG; aeflow needs {_NEED} (save it without interlacing)")
    if shape is not None and (height, width) != tuple(shape):
        raise InputError(f"{name}: image of {width}x{height} pixels; aeflow scores {shape[1]}x{shape[0]} "
                         f"greyscale images - resize it to {shape[1]}x{shape[0]}")


def _chunks(data: bytes, name: str):
    pos = 8
    while pos < len(data):
        if pos + 8 > len(data):
            raise InputError(f"{name}: PNG is truncated (incomplete chunk header); the file is corrupted")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise InputError(f"{name}: PNG is truncated (chunk {kind!r} runs past the end); the file is corrupted")
        body = data[pos + 8:end]
        (crc,) = struct.unpack(">I", data[end:end + 4])
        if zlib.crc32(kind + body) != crc:
            raise InputError(f"{name}: PNG chunk {kind.decode('latin-1')!r} fails its CRC check; the file is corrupted")
        yield kind, body
        if kind == b"IEND":
            return
        pos = end + 4
    raise InputError(f"{name}: PNG has no IEND chunk; the file is truncated")


def _unfilter(raw: np.ndarray, height: int, width: int, name: str) -> np.ndarray:
    """Undo the per-row filters of 8-bit greyscale scanlines (1 byte per pixel)."""
    rows = raw.reshape(height, width + 1)
    out = np.zeros((height, width), dtype=np.uint8)
    prev = np.zeros(width, dtype=np.uint8)
    for y in range(height):
        kind, line = int(rows[y, 0]), rows[y, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 1:  # Sub: running sum modulo 256 along the row
            cur = np.cumsum(line, dtype=np.uint8)
        elif kind == 2:  # Up
            cur = line + prev
        elif kind in (3, 4):  # Average and Paeth depend on the pixel just decoded: one pass in Python
            a_line, up = line.tolist(), prev.tolist()
            vals = [0] * width
            left = upleft = 0
            for x in range(width):
                b = up[x]
                if kind == 3:
                    pred = (left + b) >> 1
                else:
                    p = left + b - upleft
                    pa, pb, pc = abs(p - left), abs(p - b), abs(p - upleft)
                    pred = left if pa <= pb and pa <= pc else (b if pb <= pc else upleft)
                left = (a_line[x] + pred) & 0xFF
                vals[x] = left
                upleft = b
            cur = np.array(vals, dtype=np.uint8)
        else:
            raise InputError(f"{name}: PNG row {y} has unknown filter type {kind}; the file is corrupted")
        out[y] = cur
        prev = cur
    return out


def decode_png(data: bytes, name: str = "PNG", shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an 8-bit greyscale PNG from ``data`` into uint8 [height, width].

    ``shape`` = (height, width), when given, is required. Anything else (other modes, wrong
    size, truncation, bad CRC, broken zlib stream) raises a one-line ``InputError`` naming
    ``name``."""
    header = read_header(data, name)
    check_mode(header, name, shape)
    width, height = header[0], header[1]
    if width == 0 or height == 0:
        raise InputError(f"{name}: PNG of {width}x{height} pixels holds no image")
    idat = b"".join(body for kind, body in _chunks(data, name) if kind == b"IDAT")
    if not idat:
        raise InputError(f"{name}: PNG has no image data (IDAT); the file is corrupted")
    need = height * (width + 1)
    try:
        d = zlib.decompressobj()
        raw = d.decompress(idat, need)
    except zlib.error as e:
        raise InputError(f"{name}: PNG image data does not decompress ({e}); the file is corrupted") from None
    if len(raw) < need:
        raise InputError(f"{name}: PNG image data holds {len(raw)} of {need} bytes; the file is truncated")
    return _unfilter(np.frombuffer(raw, dtype=np.uint8), height, width, name)


def read_png(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an 8-bit greyscale PNG file into uint8 [height, width] (see ``decode_png``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})") from None
    return decode_png(data, str(path), shape)


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


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png(image: np.ndarray, filters: str | list[str] = "none") -> bytes:
    """Encode uint8 [height, width] as an 8-bit greyscale PNG (bytes).

    ``filters``: one filter name ("none", "sub", "up", "average", "paeth") for every row, or a
    list applied to the rows in turn."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2 or 0 in image.shape:
        raise ValueError("encode_png takes a non-empty uint8 array [height, width]")
    names = [filters] if isinstance(filters, str) else list(filters)
    kinds = [FILTERS[n] for n in names]
    height, width = image.shape
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(_filter_rows(image, kinds)))
            + _chunk(b"IEND", b""))


def write_png(path: str | os.PathLike, image: np.ndarray, filters: str | list[str] = "none") -> None:
    """Write uint8 [height, width] to ``path`` as an 8-bit greyscale PNG."""
    Path(path).write_bytes(encode_png(image, filters))
