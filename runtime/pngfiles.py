"""Greyscale PNG files and folders, decoded with Pillow. 8-bit files that are not interlaced take a short road (a
third of ``Image.open``'s time): chunks CRC-checked and inflated here, a batch's scanlines unfiltered in one call."""

import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from aeflow.errors import InputError, one_line
from aeflow.optional import require
from aeflow.runtime.arrays import DEFAULT_SHAPE, ArraySource, ImageSource, check_image_shape, not_regular, read_bytes, \
    size

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
_PURE_PIXELS = 1 << 14  # up to this many pixels in a batch, no Pillow (8-bit, not interlaced)
_CONVERT = "convert it to 8-bit greyscale, e.g. ImageMagick: convert IN -colorspace Gray -depth 8 OUT.png"


def header_shape(head: bytes, name: str) -> tuple[int, int]:
    """(H, W) of a PNG from its first 33 bytes; ``InputError`` unless a greyscale PNG."""
    if head[:8] != SIGNATURE:
        raise InputError(f"{name}: not a PNG file (bad signature); pass greyscale PNGs")
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise InputError(f"{name}: PNG header is truncated or missing; the file is corrupted")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour != 0:
        found = _COLOUR_TYPES.get(colour, f"colour type {colour}")
        raise InputError(f"{name}: {depth}-bit {found} PNG; aeflow reads greyscale images ({_CONVERT})")
    return height, width


def _check_size(found, image_shape, name: str) -> None:
    if tuple(found) != tuple(image_shape):
        raise InputError(f"{name}: image of {size(found)} pixels (height x width), this run's images are "
                         f"{size(image_shape)}; resize it to {size(image_shape)}")


def _scanlines(data: bytes, name: str, raw: int) -> bytes | None:
    """The ``raw`` inflated scanline bytes of an 8-bit, non-interlaced greyscale PNG (CRCs checked), else None."""
    if data[24] != 8 or data[25] != 0 or data[28] != 0:  # depth, colour type, interlace
        return None
    idat, pos, kind = [], 8, b""
    while kind != b"IEND":
        if pos + 12 > len(data):
            raise InputError(f"{name}: PNG is truncated (no IEND chunk); the file is corrupted or truncated")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            raise InputError(f"{name}: PNG is truncated (chunk {kind!r} runs past the end); the file is corrupted")
        if zlib.crc32(data[pos + 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            raise InputError(f"{name}: PNG chunk {kind.decode('latin-1')!r} fails its CRC check; the file is corrupted")
        idat += [data[pos + 8:end]] if kind == b"IDAT" else []
        pos = end + 4
    try:  # a stream may be a zip bomb: inflate no more than one byte too many
        d = zlib.decompressobj()
        lines = d.decompress(b"".join(idat), raw + 1)
    except zlib.error as e:
        raise InputError(f"{name}: PNG image data does not decompress ({e}); the file is corrupted") from None
    if len(lines) != raw or not d.eof:
        raise InputError(f"{name}: PNG image data is not the {raw} bytes of scanlines its header says; the file "
                         f"is corrupted or truncated")
    return lines


def _unfilter(lines: bytes, h: int, w: int, name: str) -> np.ndarray:
    """An 8-bit greyscale image's inflated scanlines (a filter byte, ``w`` bytes) unfiltered into uint8 [h, w]: numpy
    for None, Sub and Up, a pixel loop for Average and Paeth; ``InputError`` for an unknown filter type."""
    rows, out = np.frombuffer(lines, np.uint8).reshape(h, w + 1), np.zeros((h + 1, w), np.uint8)
    for y, (kind, x) in enumerate(zip(rows[:, 0].tolist(), rows[:, 1:])):
        if kind in (0, 1, 2):
            out[y + 1] = np.cumsum(x, dtype=np.uint8) if kind == 1 else x + out[y] if kind == 2 else x
            continue
        if kind > 4:
            raise InputError(f"{name}: PNG scanlines cannot be decoded (filter type {kind} in row {y}); the file "
                             f"is corrupted")
        left, up, row = 0, [0] + out[y].tolist(), []
        for b, c, value in zip(up[1:], up, x.tolist()):
            if kind == 3:
                left = (value + ((left + b) >> 1)) & 255
            else:  # Paeth: the neighbour (left, up, up-left) nearest to left + up - up-left, in that order
                pa, pb, pc = abs(b - c), abs(left - c), abs(left + b - 2 * c)
                left = (value + (left if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            row.append(left)
        out[y + 1] = row
    return out[1:]


def decode_many(blobs: list[bytes], names: list[str], image_shape=DEFAULT_SHAPE) -> np.ndarray:
    """PNG files' bytes, each of ``image_shape`` (H, W), as uint8 [n, H, W]: the short road in one Pillow call (none
    for a few images), the rest one by one; one-line ``InputError`` naming the first bad file."""
    (h, w), fast = image_shape, {}
    out = np.empty((len(blobs), h, w), dtype=np.uint8)
    for i, (data, name) in enumerate(zip(blobs, names)):
        _check_size(header_shape(data, name), image_shape, name)
        if (lines := _scanlines(data, name, h * (w + 1))) is None:
            out[i] = decode_png(data, name, image_shape)
        else:
            fast[i] = lines
    if len(fast) * h * w > _PURE_PIXELS:  # else no Pillow import (a tenth of a cold start)
        Image = require("PIL.Image", None, "reading PNG images")
        blank = bytes(w + 1)  # filter 0, w zeros: the "previous row" of each image's first row
        try:
            rows = Image.frombytes("L", (w, (h + 1) * len(fast)), zlib.compress(blank + blank.join(fast.values()), 0),
                                   "zip", "L")
            out[list(fast)] = np.asarray(rows).reshape(len(fast), h + 1, w)[:, 1:]
            return out
        except (OSError, ValueError):  # an unknown filter type in some row: _unfilter names the file and the row
            pass
    for i, lines in fast.items():
        out[i] = _unfilter(lines, h, w, names[i])
    return out


def decode_png(data: bytes, name: str, image_shape=DEFAULT_SHAPE) -> np.ndarray:
    """One greyscale PNG's bytes (1, 2, 4 or 8 bits, scaled to 0..255; interlaced or not) of ``image_shape``
    (H, W) decoded by ``Image.open`` into uint8 [H, W]; one-line ``InputError`` naming ``name`` otherwise."""
    import io

    Image = require("PIL.Image", None, "reading PNG images")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            _check_size(im.size[::-1], image_shape, name)
            if im.mode not in ("L", "1"):
                what = "16-bit greyscale PNG" if im.mode.startswith("I") else f"PNG of mode {im.mode}"
                raise InputError(f"{name}: {what}; aeflow reads 1, 2, 4 and 8-bit greyscale images ({_CONVERT})")
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
            MemoryError) as e:  # UnidentifiedImageError is an OSError
        raise InputError(f"{name}: PNG cannot be decoded ({one_line(e, 120)}); the file is corrupted or "
                         f"truncated") from None


def open_png(path: Path, name: str, image_shape=DEFAULT_SHAPE) -> ArraySource:
    """One greyscale PNG of ``image_shape`` (H, W; None: its own), as a batch of one (uint8 [1, H, W])."""
    data = read_bytes(path)
    image_shape = image_shape or check_image_shape(header_shape(data, name), name)
    return ArraySource(decode_many([data], [name], image_shape), name, None, image_shape)


def _listing(folder: Path) -> list[Path]:
    """The PNG files of ``folder`` in name order (hidden ones skipped); ``InputError`` for anything else."""
    try:
        visible = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as e:
        raise InputError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    files = [p for p in visible if p.is_file()]
    bad = [f"{p.name} is {why}" for p in visible if (why := not_regular(p))] or \
        [f"{p.name} is {'a sub-folder' if p.is_dir() else 'not a .png file'}" for p in visible
         if (p.is_dir() and files) or (p.is_file() and p.suffix.lower() != ".png")]
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise InputError(f"{folder}: holds what aeflow does not read ({shown}); move it out or pass the PNG files")
    if not files:
        subdirs = ", ".join(p.name for p in visible[:3])
        hint = f"; it has sub-folders ({subdirs}): pass those" if subdirs else "; pass a folder of PNGs"
        raise InputError(f"{folder}: no PNG images in the folder{hint}")
    return files


class PngFolderSource(ImageSource):
    """A folder of greyscale PNGs of ``image_shape`` (H, W; None: the first file's), read in name order
    by ``threads`` threads (default: up to 4), the next batch while the caller works on the current one."""

    def __init__(self, folder: Path, name: str | None = None, threads: int | None = None, image_shape=DEFAULT_SHAPE):
        self.name, self.files = name or str(folder), _listing(folder)
        first = os.path.join(self.name, self.files[0].name)
        self.image_shape = check_image_shape(image_shape or header_shape(read_bytes(self.files[0], 33), first), first)
        require("PIL.Image", None, "reading PNG images")  # a missing Pillow is said before any work
        self.n, self._threads = len(self.files), threads or min(4, os.cpu_count() or 1)

    def window(self, start: int, stop: int) -> "PngFolderSource":
        """Files [start, stop) of this folder (in name order)."""
        clone = object.__new__(PngFolderSource)
        clone.__dict__.update(self.__dict__, files=self.files[start:stop], n=len(self.files[start:stop]))
        return clone

    def batches(self, size: int) -> Iterator[np.ndarray]:
        from concurrent.futures import ThreadPoolExecutor

        def decode(chunk: list[Path]) -> np.ndarray:  # named under the folder's name as given
            return decode_many([read_bytes(p) for p in chunk], [os.path.join(self.name, p.name) for p in chunk],
                               self.image_shape)

        def submit(pool, start):
            chunk = self.files[start:start + size]
            step = max(64, -(-len(chunk) // self._threads))
            return [pool.submit(decode, chunk[i:i + step]) for i in range(0, len(chunk), step)]

        pool = ThreadPoolExecutor(self._threads, thread_name_prefix="aeflow-png")
        try:
            pending = submit(pool, 0)
            for start in range(0, self.n, size):
                parts = [f.result() for f in pending]
                pending = submit(pool, start + size)  # none after the last batch
                yield np.concatenate(parts) if len(parts) > 1 else parts[0]
        finally:
            pool.shutdown(cancel_futures=True)
