"""Reading 28x28 greyscale PNGs with Pillow (a dependency of aeflow, imported only when a PNG is read).

What is read, and how (PNG's own rule: a sample of bit depth d means value / (2^d - 1)):

- 8-bit greyscale: as is, uint8.
- 1-, 2- and 4-bit greyscale: scaled to 0..255 exactly (x 255, 85, 17), as Pillow does.
- 16-bit greyscale whose every value is an 8-bit level widened (v = 257 u, what converters write
  when they store an 8-bit image in 16 bits): u, exactly. Other 16-bit images are refused, since
  reducing them to 8 bits would round; convert them with the rounding you want.
- palette images whose colours are all grey (R = G = B): the grey value of each pixel's entry.
- interlaced (Adam7) files of the above: decoded like the others.

Refused, with one ``InputError`` line that names the file and what to do: any other size than
28x28, colour (RGB, a coloured palette), alpha or transparency, other modes, files that are not
PNG, truncated or corrupted files (bad chunk CRC, broken zlib stream, wrong amount of data).

Speed (``decode_many``): a tiny PNG costs Pillow's ``Image.open`` about 50 us of Python work, far
more than scoring it. The common case, 8-bit greyscale without interlacing or transparency, takes
a shorter road: the chunks are walked here (CRCs checked), each image's zlib stream is inflated,
and the scanlines of a whole batch go through Pillow's PNG row decoder (the "zip" decoder, which
undoes the five PNG filters) in one call, each image's rows after a blank filter-0 row, so every
image starts from a zero "previous row" exactly as in its own file. Every other file goes through
``Image.open``. Both roads give the same pixels (tested).
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from aeflow.errors import InputError, UsageError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIDE = 28
_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
_CONVERT = "convert it to 8-bit greyscale, e.g. ImageMagick: convert IN -colorspace Gray -depth 8 OUT.png"


def pillow():
    """The ``PIL.Image`` module, or ``UsageError`` saying how to install Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise UsageError("reading PNG images needs Pillow, which aeflow depends on: pip install pillow") from None
    return Image


def check_header(head: bytes, name: str) -> None:
    """Before decoding anything: ``InputError`` unless ``head`` (a file's bytes, at least its
    first 33) starts with a PNG signature and IHDR chunk of a 28x28 image in a greyscale or palette colour type."""
    if len(head) < 8 or head[:8] != SIGNATURE:
        raise InputError(f"{name}: not a PNG file (bad signature); pass 28x28 greyscale PNGs")
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise InputError(f"{name}: PNG header is truncated or missing; the file is corrupted")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour not in (0, 3):
        found = _COLOUR_TYPES.get(colour, f"colour type {colour}")
        raise InputError(f"{name}: {depth}-bit {found} PNG; aeflow reads greyscale images ({_CONVERT})")
    if (width, height) != (SIDE, SIDE):
        raise InputError(f"{name}: image of {width}x{height} pixels; aeflow scores 28x28 greyscale images - "
                         f"resize it to 28x28")


def _pixels(im, name: str) -> np.ndarray:
    """A loaded Pillow image -> uint8 [28, 28] by the rules in the module docstring."""
    if im.size != (SIDE, SIDE):
        raise InputError(f"{name}: image of {im.size[0]}x{im.size[1]} pixels; aeflow scores 28x28 greyscale "
                         f"images - resize it to 28x28")
    if "transparency" in im.info or im.mode in ("LA", "PA", "RGBA", "La"):
        raise InputError(f"{name}: PNG with transparency; aeflow reads opaque greyscale images ({_CONVERT})")
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8)
    if mode == "1":
        return np.asarray(im.convert("L"), dtype=np.uint8)
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


_RAW = SIDE * (SIDE + 1)  # bytes of 8-bit greyscale scanlines: a filter byte + 28 pixels per row
_SMALL_STREAM = 4096
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: empty, so always these 12 bytes


def _fast_scanlines(data: bytes, name: str) -> bytes | None:
    """The inflated scanlines (``_RAW`` bytes) of a PNG whose header ``check_header`` accepted,
    when it is 8-bit greyscale, not interlaced, without transparency; None for any other PNG
    (``decode_png`` reads those). ``InputError`` for a truncated or corrupted file."""
    depth, colour, interlace = data[24], data[25], data[28]
    if depth != 8 or colour != 0 or interlace != 0:
        return None
    end_of_file = len(data)
    length = int.from_bytes(data[33:37], "big")
    if data[37:41] == b"IDAT" and 57 + length == end_of_file and data[-12:] == _IEND:
        # the usual layout, IHDR IDAT IEND (what Pillow, libpng and numpy-based writers produce)
        if zlib.crc32(data[12:29]) != int.from_bytes(data[29:33], "big"):
            raise InputError(f"{name}: PNG chunk 'IHDR' fails its CRC check; the file is corrupted")
        if zlib.crc32(data[37:41 + length]) != int.from_bytes(data[41 + length:45 + length], "big"):
            raise InputError(f"{name}: PNG chunk 'IDAT' fails its CRC check; the file is corrupted")
        return _inflate(data[41:41 + length], name)
    idat, pos = [], 8
    while True:
        if pos + 12 > end_of_file:
            raise InputError(f"{name}: PNG is truncated (no IEND chunk); the file is corrupted or truncated")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        if end + 4 > end_of_file:
            raise InputError(f"{name}: PNG is truncated (chunk {kind!r} runs past the end); the file is corrupted")
        if zlib.crc32(data[pos + 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            raise InputError(f"{name}: PNG chunk {kind.decode('latin-1')!r} fails its CRC check; the file is corrupted")
        if kind == b"IDAT":
            idat.append(data[pos + 8:end])
        elif kind == b"tRNS":
            return None  # transparency: decode_png says no
        elif kind == b"IEND":
            break
        pos = end + 4
    return _inflate(idat[0] if len(idat) == 1 else b"".join(idat), name)


def _inflate(stream: bytes, name: str) -> bytes:
    """The ``_RAW`` bytes of scanlines a PNG's zlib ``stream`` holds; ``InputError`` otherwise."""
    try:
        if len(stream) <= _SMALL_STREAM:  # at most ~1000x expansion: inflate it whole
            raw = zlib.decompress(stream, bufsize=_RAW + 1)
        else:  # a larger stream may be a zip bomb: inflate no more than one byte too many
            d = zlib.decompressobj()
            raw = d.decompress(stream, _RAW + 1)
            if len(raw) == _RAW and not d.eof:
                raise zlib.error("incomplete or truncated stream")
    except zlib.error as e:
        raise InputError(f"{name}: PNG image data does not decompress ({e}); the file is corrupted "
                         f"or truncated") from None
    if len(raw) != _RAW:
        what = "more" if len(raw) > _RAW else f"{len(raw)} of {_RAW}"
        raise InputError(f"{name}: PNG image data holds {what} bytes of 28x28 scanlines; the file is corrupted")
    return raw


def decode_many(blobs: list[bytes], names: list[str]) -> np.ndarray:
    """Decode PNG files' bytes into uint8 [n, 28, 28] (see the module docstring: the common case
    in one Pillow call for the batch, the rest one by one); one-line ``InputError`` naming the
    first bad file."""
    Image = pillow()
    out = np.empty((len(blobs), SIDE, SIDE), dtype=np.uint8)
    fast, where = [], []
    for i, (data, name) in enumerate(zip(blobs, names)):
        check_header(data, name)
        raw = _fast_scanlines(data, name)
        if raw is None:
            out[i] = decode_png(data, name)
        else:
            fast.append(raw)
            where.append(i)
    if fast:
        blank = bytes(SIDE + 1)  # filter 0, 28 zeros: the "previous row" of each image's first row
        stream = zlib.compress(blank + blank.join(fast), 0)
        try:
            rows = np.asarray(Image.frombytes("L", (SIDE, (SIDE + 1) * len(fast)), stream, "zip", "L"))
        except (OSError, ValueError) as e:  # an unknown filter type in some row
            bad = next((names[i] for i, r in zip(where, fast) if any(r[k] > 4 for k in range(0, _RAW, SIDE + 1))),
                       names[where[0]])
            raise InputError(f"{bad}: PNG scanlines cannot be decoded ({e}); the file is corrupted") from None
        out[where] = rows.reshape(len(fast), SIDE + 1, SIDE)[:, 1:]
    return out


def decode_png(data: bytes | os.PathLike | str, name: str) -> np.ndarray:
    """Decode one PNG (its bytes, or a path) into uint8 [28, 28]; one-line ``InputError`` naming
    ``name`` otherwise (see the module docstring for what is accepted)."""
    Image = pillow()
    import io

    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with Image.open(source, formats=["PNG"]) as im:
            im.load()
            return _pixels(im, name)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{name}: no such file; check the path") from None
    except Image.DecompressionBombError:
        raise InputError(f"{name}: PNG header claims a huge image; aeflow scores 28x28 greyscale images") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{name}: not a PNG file (or one Pillow cannot identify); pass 28x28 greyscale PNGs") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, MemoryError) as e:
        # Pillow: OSError (truncated, broken data stream), SyntaxError (bad chunk, CRC), ValueError
        why = " ".join(str(e).split())[:120] or type(e).__name__
        raise InputError(f"{name}: PNG cannot be decoded ({why}); the file is corrupted or truncated") from None


