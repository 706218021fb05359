"""PNG images with Pillow (imported only when a PNG is read): one file, or a folder of them.

Accepted (PNG's rule: a d-bit sample means value / (2^d - 1)), each image H x W (``image_shape``):
8-bit greyscale as is; 1-, 2-, 4-bit greyscale scaled exactly to 0..255; 16-bit greyscale whose
values are all 8-bit levels widened (v = 257 u) as u (other 16-bit images are refused: reducing
them would round); palettes of greys only; interlaced files of these. A tRNS chunk (a grey level or
palette entries marked transparent) is ignored: every pixel's grey value is well defined and read.
Refused in one line naming the file: another size (naming both), colour, an alpha channel, other
modes, corrupted or truncated files. ``decode_many`` takes a short road for the common case (8-bit
greyscale, not interlaced): chunks walked here (CRCs checked), zlib streams inflated, and the
scanlines of a whole batch unfiltered by Pillow's "zip" row decoder in one call, each image after
a blank filter-0 row so it starts from a zero "previous row" as in its own file (same pixels as
``Image.open``, tested, for a fraction of its ~50 us per file).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from aeflow.errors import InputError
from aeflow.optional import require
from aeflow.runtime.arrays import DEFAULT_SHAPE, check_image_shape, size
from aeflow.runtime.sources import ArraySource, ImageSource, not_regular, read_bytes

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
_CONVERT = "convert it to 8-bit greyscale, e.g. ImageMagick: convert IN -colorspace Gray -depth 8 OUT.png"


def pillow():
    """The ``PIL.Image`` module, or ``UsageError`` saying how to install Pillow."""
    return require("PIL.Image", None, "reading PNG images")


def header_shape(head: bytes, name: str) -> tuple[int, int]:
    """(H, W) of a PNG from its first 33 bytes (signature and IHDR chunk); ``InputError`` unless it
    is a PNG of a greyscale or palette colour type."""
    if len(head) < 8 or head[:8] != SIGNATURE:
        raise InputError(f"{name}: not a PNG file (bad signature); pass greyscale PNGs")
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise InputError(f"{name}: PNG header is truncated or missing; the file is corrupted")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour not in (0, 3):
        found = _COLOUR_TYPES.get(colour, f"colour type {colour}")
        raise InputError(f"{name}: {depth}-bit {found} PNG; aeflow reads greyscale images ({_CONVERT})")
    return height, width


def _check_size(found, image_shape, name: str) -> None:
    if tuple(found) != tuple(image_shape):
        raise InputError(f"{name}: image of {size(found)} pixels (height x width), this run's images are "
                         f"{size(image_shape)}; resize it to {size(image_shape)}")


def _pixels(im, name: str) -> np.ndarray:
    """A loaded Pillow image -> uint8 [H, W] by the rules in the module docstring."""
    mode = im.mode
    if mode in ("L", "1"):
        return np.asarray(im if mode == "L" else im.convert("L"), dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        v = np.asarray(im).astype(np.int64)
        if v.min() < 0 or v.max() > 65535 or np.any(v % 257):
            raise InputError(f"{name}: 16-bit greyscale PNG with values that are not 8-bit levels (v = 257 u); "
                             f"reducing it would round - {_CONVERT}")
        return (v // 257).astype(np.uint8)
    if mode == "P":
        index = np.asarray(im, dtype=np.uint8)
        palette = np.asarray(im.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
        used = np.unique(index)
        if used.size and (used[-1] >= len(palette) or np.any(palette[used].min(axis=1) != palette[used].max(axis=1))):
            raise InputError(f"{name}: palette PNG with colours (not only greys); aeflow reads greyscale images "
                             f"({_CONVERT})")
        return palette[index, 0]
    raise InputError(f"{name}: PNG of mode {mode}; aeflow reads greyscale images ({_CONVERT})")


def _chunks(data: bytes, name: str) -> tuple[list[tuple[int, int]], list[bytes]]:
    """The (start, end) of every chunk's type and data up to IEND (CRC-checked by the caller), and
    the IDAT data; ``InputError`` for a truncated file."""
    chunks, idat, pos = [], [], 8
    while True:
        if pos + 12 > len(data):
            raise InputError(f"{name}: PNG is truncated (no IEND chunk); the file is corrupted or truncated")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            raise InputError(f"{name}: PNG is truncated (chunk {kind!r} runs past the end); the file is corrupted")
        chunks.append((pos + 4, end))
        if kind == b"IEND":
            return chunks, idat
        idat += [data[pos + 8:end]] if kind == b"IDAT" else []
        pos = end + 4


def _fast_scanlines(data: bytes, name: str, raw: int) -> bytes | None:
    """The inflated scanlines (``raw`` bytes) of a PNG whose header was accepted, when it is 8-bit
    greyscale and not interlaced; None for any other PNG (``decode_png`` reads those).
    ``InputError`` for a truncated or corrupted file."""
    if data[24] != 8 or data[25] != 0 or data[28] != 0:  # depth, colour type, interlace
        return None
    length = int.from_bytes(data[33:37], "big")
    if data[37:41] == b"IDAT" and 57 + length == len(data) and data[-8:] == b"IEND\xaeB`\x82":
        chunks, idat = [(12, 29), (37, 41 + length)], [data[41:41 + length]]  # IHDR IDAT IEND: no walk
    else:
        chunks, idat = _chunks(data, name)
    for start, end in chunks:
        if zlib.crc32(data[start:end]) != int.from_bytes(data[end:end + 4], "big"):
            kind = data[start:start + 4].decode("latin-1")
            raise InputError(f"{name}: PNG chunk {kind!r} fails its CRC check; the file is corrupted")
    try:  # a stream may be a zip bomb: inflate no more than one byte too many
        d = zlib.decompressobj()
        lines = d.decompress(b"".join(idat), raw + 1)
        if len(lines) == raw and not d.eof:
            raise zlib.error("incomplete or truncated stream")
    except zlib.error as e:
        raise InputError(f"{name}: PNG image data does not decompress ({e}); the file is corrupted "
                         f"or truncated") from None
    if len(lines) != raw:
        what = "more" if len(lines) > raw else f"{len(lines)} of {raw}"
        raise InputError(f"{name}: PNG image data holds {what} bytes of scanlines; the file is corrupted")
    return lines


def decode_many(blobs: list[bytes], names: list[str], image_shape=DEFAULT_SHAPE) -> np.ndarray:
    """Decode PNG files' bytes, each of ``image_shape`` (H, W), into uint8 [n, H, W] (see the module
    docstring: the common case in one Pillow call for the batch, the rest one by one); one-line
    ``InputError`` naming the first bad file."""
    Image = pillow()
    (h, w), n = image_shape, len(blobs)
    out = np.empty((n, h, w), dtype=np.uint8)
    fast, where = [], []
    for i, (data, name) in enumerate(zip(blobs, names)):
        _check_size(header_shape(data, name), image_shape, name)
        lines = _fast_scanlines(data, name, h * (w + 1))
        if lines is None:
            out[i] = decode_png(data, name, image_shape)
        else:
            fast.append(lines)
            where.append(i)
    if fast:
        blank = bytes(w + 1)  # filter 0, w zeros: the "previous row" of each image's first row
        stream = zlib.compress(blank + blank.join(fast), 0)
        try:
            rows = np.asarray(Image.frombytes("L", (w, (h + 1) * len(fast)), stream, "zip", "L"))
        except (OSError, ValueError) as e:  # an unknown filter type in some row
            bad = next((names[i] for i, r in zip(where, fast) if any(r[k] > 4 for k in range(0, len(r), w + 1))),
                       names[where[0]])
            raise InputError(f"{bad}: PNG scanlines cannot be decoded ({e}); the file is corrupted") from None
        out[where] = rows.reshape(len(fast), h + 1, w)[:, 1:]
    return out


def decode_png(data: bytes | os.PathLike | str, name: str, image_shape=DEFAULT_SHAPE) -> np.ndarray:
    """Decode one PNG (its bytes, or a path) of ``image_shape`` (H, W) into uint8 [H, W]; one-line
    ``InputError`` naming ``name`` otherwise (see the module docstring for what is accepted)."""
    Image = pillow()
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with Image.open(source, formats=["PNG"]) as im:
            _check_size(im.size[::-1], image_shape, name)
            if im.mode in ("LA", "PA", "RGBA", "La"):
                raise InputError(f"{name}: PNG with an alpha channel; aeflow reads greyscale images ({_CONVERT})")
            im.load()
            return _pixels(im, name)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{name}: no such file; check the path") from None
    except Image.DecompressionBombError:
        raise InputError(f"{name}: PNG header claims a huge image; aeflow reads greyscale images") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{name}: not a PNG file (or one Pillow cannot identify); pass greyscale PNGs") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, MemoryError) as e:
        # Pillow: OSError (truncated, broken data stream), SyntaxError (bad chunk, CRC), ValueError
        why = " ".join(str(e).split())[:120] or type(e).__name__
        raise InputError(f"{name}: PNG cannot be decoded ({why}); the file is corrupted or truncated") from None


def open_png(path: Path, name: str, image_shape=DEFAULT_SHAPE) -> ArraySource:
    """One greyscale PNG of ``image_shape`` (H, W; None: its own), as a batch of one (uint8 [1, H, W])."""
    data = read_bytes(path)
    image_shape = image_shape or check_image_shape(header_shape(data, name), name)
    return ArraySource(decode_many([data], [name], image_shape), name, None, image_shape)


def _listing(folder: Path) -> list[Path]:
    """The PNG files of ``folder`` in name order; one-line ``InputError`` for anything else in it."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise InputError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    visible = [p for p in entries if not p.name.startswith(".")]
    odd = [f"{p.name} is {why}" for p in visible if (why := not_regular(p))]
    others = [p.name for p in visible if p.is_file() and p.suffix.lower() != ".png"]
    if odd or others:
        what = ("entries that are not regular files", "aeflow reads only regular PNG files - move them out") if odd \
            else ("files that are not PNG images", "move them out or pass the PNG files themselves")
        shown = "; ".join((odd or others)[:3]) + (f"; and {len(odd or others) - 3} more" if len(odd or others) > 3 else "")
        raise InputError(f"{folder}: holds {what[0]} ({shown}); {what[1]}")
    files = [p for p in visible if p.is_file()]
    if not files:
        subdirs = [p.name for p in visible if p.is_dir()]
        hint = f"; it has sub-folders ({', '.join(subdirs[:3])}): pass those" if subdirs else "; pass a folder of PNGs"
        raise InputError(f"{folder}: no PNG images in the folder{hint}")
    return files


class PngFolderSource(ImageSource):
    """A folder of greyscale PNGs of ``image_shape`` (H, W), read in name order (hidden files are
    skipped; anything else that is not a PNG file is refused). Files are read and decoded with
    Pillow by a pool of ``threads`` threads (default: up to 4), the next batch while the caller
    works on the current one; a file that is not an accepted PNG stops the reading with one
    ``InputError`` naming it."""

    def __init__(self, folder: Path, name: str | None = None, threads: int | None = None, image_shape=DEFAULT_SHAPE):
        self.name, self.files = name or str(folder), _listing(folder)
        first = os.path.join(self.name, self.files[0].name)
        self.image_shape = check_image_shape(image_shape or header_shape(read_bytes(self.files[0], 33), first), first)
        pillow()  # a missing Pillow is said before any work
        self.n, self._threads = len(self.files), threads or min(4, os.cpu_count() or 1)

    def window(self, start: int, stop: int) -> "PngFolderSource":
        """Files [start, stop) of this folder (in name order)."""
        clone = object.__new__(PngFolderSource)
        clone.__dict__.update(self.__dict__, files=self.files[start:stop], n=len(self.files[start:stop]))
        return clone

    def _decode(self, chunk: list[Path]) -> np.ndarray:
        # files are named under the folder's name as given (a worker may open it by another path)
        return decode_many([read_bytes(p) for p in chunk], [os.path.join(self.name, p.name) for p in chunk],
                           self.image_shape)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        def submit(pool, start):
            chunk = self.files[start:start + size]
            step = max(64, -(-len(chunk) // self._threads))
            return [pool.submit(self._decode, chunk[i:i + step]) for i in range(0, len(chunk), step)]

        with ThreadPoolExecutor(self._threads, thread_name_prefix="aeflow-png") as pool:
            pending = submit(pool, 0)
            try:
                for start in range(0, self.n, size):
                    parts = [f.result() for f in pending]
                    pending = submit(pool, start + size) if start + size < self.n else []
                    yield np.concatenate(parts) if len(parts) > 1 else parts[0]
            finally:
                for f in pending:
                    f.cancel()
