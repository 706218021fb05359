""".npy arrays and .npz archives, read a batch at a time; every header is checked against the bytes
it holds before anything is allocated (a crafted header claiming 10^13 entries is one ``InputError``)."""

from __future__ import annotations

import contextlib
import functools
import math
import zipfile
from pathlib import Path

import numpy as np

from aeflow.checks import available_memory
from aeflow.errors import InputError
from aeflow.runtime.arrays import DEFAULT_SHAPE, check_layout
from aeflow.runtime.sources import READ_ERRORS, ArraySource, ImageSource, RawFileSource, StreamSource, check_labels, \
    opened_at, read_bytes

NPY_MAGIC = b"\x93NUMPY"
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _header(f, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read a .npy header from ``f``, leaving ``f`` at the first data byte: (shape, fortran, dtype)."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except Exception as e:  # numpy's parser of an untrusted header: ValueError, SyntaxError, TokenError, ...
        raise InputError(f"{name}: not a readable .npy array ({' '.join(str(e).split())[:120]}); "
                         f"the file is corrupted or not saved with numpy.save") from None
    return tuple(shape), fortran, dtype


def _check_size(have: int, shape: tuple[int, ...], dtype: np.dtype, name: str, what: str) -> None:
    need = math.prod(shape) * dtype.itemsize  # Python ints: a crafted header must not overflow int64
    if have < need:
        raise InputError(f"{name}: {what} header promises {need} data bytes {shape} but holds {max(have, 0)}; "
                         f"the file is truncated or corrupted")


def _fortran(opener, name: str, shape: tuple[int, ...], dtype: np.dtype, labels, image_shape) -> ArraySource:
    """A Fortran-ordered array (images are not consecutive records) read whole from ``opener()``."""
    need, avail = math.prod(shape) * dtype.itemsize, available_memory()
    if avail is not None and need > avail // 2:
        raise InputError(f"{name}: a Fortran-ordered array of {need:,} bytes cannot be read a batch at a time and "
                         f"does not fit in memory; save it C-ordered: np.save(f, np.ascontiguousarray(x))")
    try:
        with opener() as f:
            data = f.read(need)
    except READ_ERRORS as e:
        raise InputError(f"{name}: cannot read it ({e}); the file is corrupted or truncated") from None
    _check_size(len(data), shape, dtype, name, "the")
    return ArraySource(np.frombuffer(data, dtype=dtype).reshape(shape, order="F"), name, labels, image_shape)


def open_npy(path: Path, name: str, image_shape=DEFAULT_SHAPE) -> ImageSource:
    """A .npy file of images (C-ordered: read a batch at a time)."""
    if read_bytes(path, 6) != NPY_MAGIC:
        raise InputError(f"{name}: not a .npy file (bad magic bytes); save arrays with numpy.save")
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = _header(f, name)
            data_at = f.tell()
    except OSError as e:
        raise InputError(f"{name}: cannot read it ({e.strerror or e})") from None
    image_shape = check_layout(shape, dtype, name, image_shape)
    _check_size(path.stat().st_size - data_at, shape, dtype, name, "the")
    if fortran:
        return _fortran(lambda: opened_at(path, data_at), name, shape, dtype, None, image_shape)
    return RawFileSource(path, data_at, name, shape, dtype, None, image_shape)


def _member(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], key: str, name: str):
    """(info, shape, fortran, dtype) of the member named ``key`` (without folders and ".npy"), or None;
    ``InputError`` when several match, encrypted, of an unknown compression, or shorter than its header says."""
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
    if info.compress_type not in _ZIP_METHODS:
        raise InputError(f"{name}: member {info.filename} uses zip compression method {info.compress_type}, which "
                         f"numpy and aeflow cannot read; save it again with np.savez or np.savez_compressed")
    try:
        with zf.open(info) as f:
            shape, fortran, dtype = _header(f, name)
            _check_size(info.file_size - f.tell(), shape, dtype, name, f"member {info.filename}'s")
    except READ_ERRORS as e:
        raise InputError(f"{name}: cannot read {info.filename} ({e}); the file is corrupted or truncated") from None
    return info, shape, fortran, dtype


@contextlib.contextmanager
def _member_data(path: Path, info: zipfile.ZipInfo, name: str):
    """The member ``info`` of the archive at ``path``, at its first data byte (closing the archive with it)."""
    with zipfile.ZipFile(path) as z, z.open(info) as f:
        _header(f, name)
        yield f


def open_npz(path: Path, name: str, image_shape=DEFAULT_SHAPE) -> ImageSource:
    """A .npz file: member ``images`` or the only array, labels ``is_anomaly`` when present, read a
    batch at a time through zipfile (stored or compressed; the CRC is checked at the end)."""
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
        info, shape, fortran, dtype = images or _member(zf, infos, Path(infos[0].filename).stem, name)
        image_shape = check_layout(shape, dtype, name, image_shape)
        found, labels = _member(zf, infos, "is_anomaly", name), None
        if found is not None and found[0] is not info:
            if found[1] != (shape[0],):  # before reading it: the header may claim terabytes
                raise InputError(f"{name}: 'is_anomaly' has shape {found[1]} but there are {shape[0]} images; "
                                 f"fix or drop it")
            try:
                with zf.open(found[0]) as f:
                    labels = check_labels(np.lib.format.read_array(f, allow_pickle=False), shape[0], name)
            except (ValueError, *READ_ERRORS) as e:
                raise InputError(f"{name}: cannot read 'is_anomaly' ({e}); the file is corrupted") from None
    opener = functools.partial(_member_data, path, info, name)
    if fortran:
        return _fortran(opener, name, shape, dtype, labels, image_shape)
    return StreamSource(opener, name, shape, dtype, ".npz member", labels, image_shape)
