"""Image inputs: ``open_source`` picks the reader for a path (IDX, .npy and .npz here, whose headers are
checked against the bytes they hold before anything is allocated); ``read_images`` reads whole files."""

import contextlib
import math
import os
import struct
from pathlib import Path

import numpy as np

from aeflow.checks import expand_inputs
from aeflow.errors import InputError, one_line
from aeflow.runtime.arrays import DEFAULT_SHAPE, ArraySource, ImageSource, RawFileSource, StreamSource, check_labels, \
    check_layout, not_regular, opened_at, read_bytes, read_errors, scale_problem, to_float32
from aeflow.runtime.pngfiles import SIGNATURE, PngFolderSource, open_png

__all__ = ["ArraySource", "ImageSource", "PngFolderSource", "check_layout", "open_source", "read_images",
           "scale_problem", "to_float32"]
# the IDX data types other than uint8 (0x08), which aeflow does not read
IDX_TYPES = {b"\x09": "int8", b"\x0b": "int16", b"\x0c": "int32", b"\x0d": "float32", b"\x0e": "float64"}


def read_idx_header(path: Path) -> tuple[tuple[int, ...], int, bool]:
    """(shape, offset of the first data byte, gzipped) of an IDX file (raw or gzip: bytes 00 00 08 NDIM, a big-endian
    uint32 per dimension, uint8 data); ``InputError`` for a bad magic, an impossible shape, a raw file's wrong size."""
    try:
        gz = read_bytes(path, 2) == b"\x1f\x8b"
        with opened_at(path, 0, gz) as f:
            head = f.read(20)  # the magic number, at most 4 dimensions
    except read_errors() as e:
        raise InputError(f"{path}: cannot read the IDX header ({e}); the file is corrupted") from None
    ndim = head[3] if len(head) >= 4 and head[:2] == b"\x00\x00" and 1 <= head[3] <= 4 else 0
    if ndim and head[2:3] in IDX_TYPES:
        raise InputError(f"{path}: an IDX file of {IDX_TYPES[head[2:3]]} values; aeflow reads IDX images of uint8 "
                         f"(type 0x08): convert it, or save the images as .npy")
    if not ndim or head[2] != 8:
        raise InputError(f"{path}: bad IDX magic number {int.from_bytes(head[:4], 'big'):#010x}; expected 0x00000803 "
                         f"(images) or 0x00000801 (labels) - is this an IDX file?")
    if len(head) < 4 + 4 * ndim:
        raise InputError(f"{path}: IDX header is truncated; the file is incomplete")
    shape = struct.unpack_from(f">{ndim}I", head, 4)
    if math.prod(d for d in shape if d) >= 2**62:  # numpy cannot describe it, even with a zero among them
        raise InputError(f"{path}: IDX header gives an impossible shape {shape}; the file is corrupted")
    if not gz and (have := path.stat().st_size - 4 - 4 * ndim) != (need := math.prod(shape)):  # Python ints
        raise InputError(f"{path}: holds {max(have, 0)} data bytes, the IDX header promises {need} {shape}; the file "
                         f"is {'truncated' if have < need else 'corrupted (data beyond its header count)'}")
    return shape, 4 + 4 * ndim, gz


def open_idx(path: Path, name: str, image_shape=DEFAULT_SHAPE) -> ImageSource:
    """An IDX images file [N, H, W] (raw or gzip), read a batch at a time; ``image_shape=None``: its (H, W)."""
    shape, offset, gzipped = read_idx_header(path)
    if len(shape) != 3:
        hint = " - a labels file? pass the images file" if len(shape) == 1 else ""
        raise InputError(f"{name}: IDX file of shape {shape}{hint}; expected images [N, H, W]")
    if not gzipped:  # image_shape=None: check_layout takes (H, W) from the shape
        return RawFileSource(path, offset, name, shape, np.uint8, image_shape)
    return StreamSource(lambda: opened_at(path, offset, True), name, shape, np.uint8, ".gz data", None, image_shape,
                        "exact")


def _header(f, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Read a .npy header from ``f``, leaving ``f`` at the first data byte: (shape, dtype) of a C-ordered array."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except Exception as e:  # numpy's parser of an untrusted header: ValueError, SyntaxError, TokenError, ...
        raise InputError(f"{name}: not a readable .npy array ({one_line(e, 120)}); "
                         f"the file is corrupted or not saved with numpy.save") from None
    if fortran and len(shape) > 1:  # its images are not consecutive records
        raise InputError(f"{name}: a Fortran-ordered array cannot be read a batch at a time; save it C-ordered: "
                         f"np.save(f, np.ascontiguousarray(x))")
    return tuple(shape), dtype


def _check_size(have: int, shape: tuple[int, ...], dtype: np.dtype, name: str, what: str) -> None:
    need = math.prod(shape) * dtype.itemsize  # Python ints: a crafted header must not overflow int64
    if have < need:
        raise InputError(f"{name}: {what} header promises {need} data bytes {shape} but holds {max(have, 0)}; "
                         f"the file is truncated or corrupted")


def open_npy(path: Path, name: str, image_shape=DEFAULT_SHAPE) -> ImageSource:
    """A .npy file of images, read a batch at a time."""
    try:
        with open(path, "rb") as f:
            shape, dtype = _header(f, name)
            data_at = f.tell()
    except OSError as e:
        raise InputError(f"{name}: cannot read it ({e.strerror or e})") from None
    image_shape = check_layout(shape, dtype, name, image_shape)
    _check_size(path.stat().st_size - data_at, shape, dtype, name, "the")
    return RawFileSource(path, data_at, name, shape, dtype, image_shape)


def _member(zf, infos: list, key: str, name: str):
    """(info, shape, dtype) of the one member named ``key`` (no folder, no ".npy"), or None; ``InputError`` if bad."""
    found = [i for i in infos if Path(i.filename).stem == key]
    if len(found) > 1:
        raise InputError(f"{name}: {len(found)} members match '{key}' ({', '.join(i.filename for i in found[:3])}); "
                         f"the archive is ambiguous - save it again with one array named '{key}'")
    if not found:
        return None
    info = found[0]
    if info.flag_bits & 0x1:
        raise InputError(f"{name}: member {info.filename} is encrypted; numpy and aeflow read only archives "
                         f"without a password - save it again with np.savez")
    if info.compress_type not in (0, 8, 12, 14):  # zipfile reads: stored, deflated, bzip2, lzma
        raise InputError(f"{name}: member {info.filename} uses zip compression method {info.compress_type}, which "
                         f"numpy and aeflow cannot read; save it again with np.savez or np.savez_compressed")
    try:
        with zf.open(info) as f:
            shape, dtype = _header(f, name)
            _check_size(info.file_size - f.tell(), shape, dtype, name, f"member {info.filename}'s")
    except read_errors() as e:
        raise InputError(f"{name}: cannot read {info.filename} ({e}); the file is corrupted or truncated") from None
    return info, shape, dtype


@contextlib.contextmanager
def _member_data(path: Path, info, name: str):
    """The member ``info`` of the archive at ``path``, at its first data byte (closing the archive with it)."""
    import zipfile

    with zipfile.ZipFile(path) as z, z.open(info) as f:
        _header(f, name)
        yield f


def open_npz(path: Path, name: str, image_shape=DEFAULT_SHAPE) -> ImageSource:
    """A .npz file: member ``images`` or the only array, labels ``is_anomaly`` when present, read a
    batch at a time through zipfile (stored or compressed; the CRC is checked at the end)."""
    import zipfile

    try:
        zf = zipfile.ZipFile(path)
        infos = [i for i in zf.infolist() if i.filename.endswith(".npy")]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise InputError(f"{name}: not a readable .npz archive ({e}); the file is corrupted or truncated") from None
    with zf:
        images = _member(zf, infos, "images", name)
        if images is None and len(infos) != 1:
            found = ", ".join(sorted(Path(i.filename).stem for i in infos)) or "nothing"
            raise InputError(f"{name}: holds {found}; expected an array named 'images' (or a single array)")
        info, shape, dtype = images or _member(zf, infos, Path(infos[0].filename).stem, name)
        image_shape = check_layout(shape, dtype, name, image_shape)
        found, labels = _member(zf, infos, "is_anomaly", name), None
        if found is not None and found[0] is not info:
            if found[1] != (shape[0],):  # before reading it: the header may claim terabytes
                raise InputError(f"{name}: 'is_anomaly' has shape {found[1]} but there are {shape[0]} images; "
                                 f"fix or drop it")
            try:
                with zf.open(found[0]) as f:
                    labels = check_labels(np.lib.format.read_array(f, allow_pickle=False), shape[0], name)
            except (ValueError, *read_errors()) as e:
                raise InputError(f"{name}: cannot read 'is_anomaly' ({e}); the file is corrupted") from None
    return StreamSource(lambda: _member_data(path, info, name), name, shape, dtype, ".npz member", labels, image_shape)


MAGICS = {".npy": b"\x93NUMPY", ".npz": b"PK\x03\x04", ".png": SIGNATURE, ".parquet": b"PAR1"}


def file_kind(path: Path, head: bytes | None = None) -> str | None:
    """The format of ``path`` (a key of ``MAGICS``) by its suffix, else by its first bytes ``head``, or None (IDX)."""
    suffix = path.suffix.lower()
    if suffix in MAGICS:
        return suffix
    head = read_bytes(path, 8) if head is None else head
    return next((k for k, m in MAGICS.items() if head.startswith(m)), None)


def open_source(path: str | os.PathLike, name: str | None = None, column: str | None = None,
                image_shape=DEFAULT_SHAPE) -> ImageSource:
    """The reader for ``path`` (a PNG folder, .npy, .npz, .png, .parquet with its image ``column``, IDX) of
    ``image_shape`` (H, W) images (None: the file's), named ``name`` (default: the path); else ``InputError``."""
    p, name = Path(path), name or str(path)
    if p.is_dir():
        return PngFolderSource(p, name, image_shape=image_shape)
    if why := not_regular(p):
        raise InputError(f"{name}: no such file or folder; check the path" if why == "missing" else
                         f"{name}: is {why}; aeflow reads regular files and folders of PNGs")
    head = read_bytes(p, 8)
    if not head:
        raise InputError(f"{name}: the file is empty")
    kind = file_kind(p, head)
    if kind == ".parquet":
        from aeflow.runtime.parquet import ParquetSource

        return ParquetSource(p, name, column, image_shape=image_shape)
    if kind:
        return {".npy": open_npy, ".npz": open_npz, ".png": open_png}[kind](p, name, image_shape)
    if head[:2] not in (b"\x1f\x8b", b"\x00\x00"):
        raise InputError(f"{name}: unknown format; pass .npy, .npz, .parquet, IDX (raw or .gz), a .png or a folder "
                         f"of PNGs")
    return open_idx(p, name, image_shape)


def read_images(paths, image_shape=None, column: str | None = None):
    """Every image of ``paths`` (files, folders, glob patterns) in memory: ``(images, labels, (H, W))``:
    uint8 [N, H, W] if every file holds uint8, else float32 in [0, 1]; bool [N] ``is_anomaly`` if some
    file has them (else None). ``image_shape=None``: the first file's size, which every file must have."""
    parts, labels, known, shape = [], [], False, image_shape
    for path in expand_inputs([paths] if isinstance(paths, (str, os.PathLike)) else paths):
        with open_source(path, column=column, image_shape=shape) as src:
            shape, done = src.image_shape, 0
            for batch in src.batches(4096):
                x = batch if batch.dtype == np.uint8 else to_float32(batch, src.name, done, image_shape=shape)
                parts.append(x.reshape(-1, *shape))  # np.concatenate copies them once
                done += len(x)
            labels.append(np.zeros(src.n, dtype=bool) if src.labels is None else src.labels)
            known |= src.labels is not None
    if not parts:
        raise InputError("no images: pass at least one file or folder")
    if any(p.dtype != np.uint8 for p in parts):
        parts = [p / np.float32(255) if p.dtype == np.uint8 else p for p in parts]
    return np.concatenate(parts), np.concatenate(labels) if known else None, tuple(shape)
