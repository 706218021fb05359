"""Image inputs for scoring: checks on arrays, and readers that stream batches from files.

Accepted arrays (``check_layout``): shape ``[N, 1, 28, 28]``, ``[N, 28, 28]``, ``[N, 28, 28, 1]``
or ``[N, 784]`` with N >= 1, dtype uint8 (0..255, scaled by 1/255) or float16/32/64 in [0, 1].
A single ``[28, 28]`` image is refused: add the batch dimension (``x[None]``), so that a
mislaid array never passes as one image.

The reader protocol, ``ImageSource``:

- ``name``: what tables and output files call it (the path as given, or "array");
- ``n``: the number of images (known before reading: every format here records it);
- ``labels``: bool [n] (``True`` = anomaly) when the file carries them, else ``None``;
- ``batches(size)``: yields arrays ``[b, ...]`` of the source's own dtype, b <= size, in file
  order, n images in all; values are not checked yet (``to_float32`` does that per batch);
- ``close()``; sources are context managers;
- ``window(start, stop)``, on the sources that can be split cheaply (arrays, uncompressed files,
  PNG folders, Parquet): the images [start, stop) as a source of their own.

``open_source(path)`` picks the reader: a folder -> PNG folder; ``.npy``; ``.npz`` (array
``images``, or its only array; optional ``is_anomaly``); ``.png``; ``.parquet`` (by suffix or
magic; ``aeflow.runtime.parquet``); anything else by its first bytes: gzip -> gzipped IDX, else
raw IDX. Large files are never read whole, and never through a memory map (a file truncated
while it is read would kill the process with SIGBUS): ``.npy``, raw IDX and ``.npz`` members are
read one batch at a time with plain reads (gzip and compressed members decompressed as they go),
so a file that is cut short meanwhile is an ``InputError``. Every problem is a one-line
``InputError``.

Values on a likely wrong scale (``scale_problem``: uint8 holding only 0/1, floats at most 1/255)
are accepted, but the scorer warns (``aeflow.errors.ScaleWarning``).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from aeflow.checks import available_memory
from aeflow.errors import InputError
from aeflow.idx import is_gzip, read_idx_header
from aeflow.runtime import pngfiles

SIDE = 28
PIXELS = SIDE * SIDE
ACCEPTED = "[N, 1, 28, 28], [N, 28, 28] or [N, 784] (uint8 0..255 or float in [0, 1])"
_ACCEPTED_SAMPLES = {(1, SIDE, SIDE), (SIDE, SIDE), (SIDE, SIDE, 1), (PIXELS,)}
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_RANGE_SLACK = 1e-6  # float32 rounding of x / 255 may land a hair beyond 1
_SHOW = 5  # image indices named in an error message


# ---------------------------------------------------------------- array checks

def _dtype_problem(dtype: np.dtype) -> str | None:
    if dtype == np.uint8 or dtype.kind == "f":
        return None
    if dtype.kind == "b":
        return "dtype bool (a mask?): pass pixels as uint8 0..255 or float32 in [0, 1]"
    if dtype.kind in "iu":
        return (f"dtype {dtype}: pass uint8 (0..255) or float32 in [0, 1], "
                f"e.g. x.astype(np.uint8) when the values are 0..255")
    if dtype.kind == "c":
        return f"complex values (dtype {dtype}): pass real uint8 or float32 images"
    if dtype.kind == "O":
        return "dtype object (Python objects): pass a numeric uint8 or float32 array"
    if dtype.kind in "US":
        return f"strings (dtype {dtype}): pass a numeric uint8 or float32 array"
    return f"dtype {dtype}: pass a numeric uint8 or float32 array"


def _shape_problem(shape: tuple[int, ...]) -> str | None:
    if len(shape) >= 2 and tuple(shape[1:]) in _ACCEPTED_SAMPLES:
        return None if shape[0] > 0 else f"no images (shape {shape})"
    found = f"shape {shape}"
    if shape == (SIDE, SIDE):
        hint = "a single 28x28 image: add a batch dimension, x[None] (shape [1, 28, 28])"
    elif len(shape) <= 1:
        k = shape[0] if shape else 1
        hint = (f"a 1-D array of {k} values: reshape flat pixels with x.reshape(-1, 28, 28)" if k and k % PIXELS == 0
                else f"a {'scalar' if not shape else '1-D array'}: pass a batch of 28x28 images")
    elif len(shape) == 4 and (shape[1] in (3, 4) or shape[3] in (3, 4)):
        hint = "colour images: aeflow scores greyscale, convert them to one channel"
    elif len(shape) in (3, 4) and shape[-2:] != (SIDE, SIDE) and shape[-1] != 1:
        hint = f"images of {shape[-1]}x{shape[-2]} pixels: resize them to 28x28"
    elif len(shape) == 2:
        hint = f"rows of {shape[1]} values: each image needs 784 pixels"
    else:
        hint = "not a batch of 28x28 greyscale images"
    return f"{found} ({hint}); expected {ACCEPTED}"


def check_layout(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    """Raise a one-line ``InputError`` naming ``name`` unless ``shape``/``dtype`` is an accepted
    batch of images (see the module docstring)."""
    problem = _dtype_problem(np.dtype(dtype)) or _shape_problem(tuple(int(d) for d in shape))
    if problem:
        raise InputError(f"{name}: {problem}")


def _indices(bad: np.ndarray, offset: int) -> str:
    shown = ", ".join(str(int(i) + offset) for i in bad[:_SHOW])
    more = f" and {bad.size - _SHOW} more ({bad.size} in all)" if bad.size > _SHOW else ""
    return f"image{'s' if bad.size > 1 else ''} {shown}{more}"


def _range_hint(lo: float, hi: float) -> str:
    if lo >= 0 and 1 < hi <= 255:
        return "they look like 0..255: pass uint8 or divide by 255"
    if lo >= -1 - _RANGE_SLACK and hi <= 1 + _RANGE_SLACK:
        return "they look like [-1, 1] normalisation: pass (x + 1) / 2"
    if -5 < lo < 0 and 1 < hi < 10:
        return "they look standardised (mean/std): undo it (for MNIST x * 0.3081 + 0.1307)"
    return "rescale the pixels to [0, 1]"


def check_values(x: np.ndarray, name: str, offset: int = 0) -> None:
    """Raise ``InputError`` when float images ``x`` [b, ...] hold NaN or Inf (naming the image
    indices, counted from ``offset``) or values outside [0, 1] (naming the range found and the
    rescaling that fits)."""
    lo, hi = float(x.min()), float(x.max())
    if np.isfinite(lo) and np.isfinite(hi) and lo >= -_RANGE_SLACK and hi <= 1 + _RANGE_SLACK:
        return
    flat = x.reshape(len(x), -1)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad.size:
        raise InputError(f"{name}: NaN or Inf in {_indices(bad, offset)}; fix or drop those images")
    first = int(np.flatnonzero(((flat < -_RANGE_SLACK) | (flat > 1 + _RANGE_SLACK)).any(axis=1))[0]) + offset
    raise InputError(f"{name}: pixel values span {lo:g}..{hi:g} (first at image {first}), expected [0, 1]; "
                     f"{_range_hint(lo, hi)}")


def scale_problem(images: np.ndarray, dtype: np.dtype, name: str, offset: int = 0) -> str | None:
    """A one-line warning when a converted batch (float32 [b, 1, 28, 28] in [0, 1], converted from
    ``dtype``) is on a likely wrong scale, else None: its brightest pixel is above 0 but at most
    1/255, which a uint8 batch holding only 0 and 1 (a binarised mask) or floats divided by 255
    twice give. Such images score as blank ones and anomalies among them go unnoticed."""
    hi = float(images.max()) if images.size else 0.0
    if not 0.0 < hi <= 1.0 / 255.0 + _RANGE_SLACK:
        return None
    where = f"images {offset}..{offset + len(images) - 1}"
    if np.dtype(dtype) == np.uint8:
        return (f"{name}: uint8 pixels hold only 0 and 1 in {where} (a binarised mask?); uint8 is read as "
                f"0..255, so these score as blank images - pass x * 255 if 1 means white")
    return (f"{name}: the brightest pixel is {hi:.3g} in {where} (divided by 255 twice?); these score as "
            f"blank images - pass x * 255 if so")


def to_float32(batch: np.ndarray, name: str, offset: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """A checked batch ([b, ...] of an accepted layout) as C-contiguous float32 [b, 1, 28, 28] in
    [0, 1]. uint8 is divided by 255 (as in training); float32 C-contiguous input is returned
    without a copy; everything else is converted into ``out`` (float32 [>= b, 1, 28, 28]) when
    given, else into a new array."""
    b = len(batch)
    flat = batch.reshape(b, PIXELS)
    if batch.dtype == np.float32 and flat.flags.c_contiguous:
        result = flat.reshape(b, 1, SIDE, SIDE)
        check_values(result, name, offset)
        return result
    dest = (out[:b] if out is not None else np.empty((b, 1, SIDE, SIDE), dtype=np.float32))
    dest2 = dest.reshape(b, PIXELS)
    if batch.dtype == np.uint8:
        np.divide(flat, np.float32(255.0), out=dest2, dtype=np.float32)
        return dest
    np.copyto(dest2, flat, casting="unsafe")
    check_values(dest, name, offset)
    return dest


# ---------------------------------------------------------------- sources

class ImageSource:
    """Base of the readers: see the module docstring for the protocol."""

    name: str = "images"
    n: int = 0
    labels: np.ndarray | None = None

    def batches(self, size: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n={self.n})"


def _check_labels(labels, n: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype != np.bool_:
        if labels.dtype.kind not in "iu" or not np.isin(labels, (0, 1)).all():
            raise InputError(f"{name}: 'is_anomaly' must be bool (or 0/1), found dtype {labels.dtype}; fix or drop it")
        labels = labels.astype(bool)
    if labels.shape != (n,):
        raise InputError(f"{name}: 'is_anomaly' has shape {labels.shape} but there are {n} images; fix or drop it")
    return labels


class ArraySource(ImageSource):
    """Images already in an array, checked at construction."""

    def __init__(self, array: np.ndarray, name: str = "array", labels: np.ndarray | None = None):
        if not isinstance(array, np.ndarray):
            try:
                array = np.asarray(array)
            except (ValueError, TypeError) as e:
                raise InputError(f"{name}: cannot make an array of it ({e}); pass a numpy array {ACCEPTED}") from None
        check_layout(array.shape, array.dtype, name)
        self.array, self.name, self.n = array, name, int(array.shape[0])
        self.labels = None if labels is None else _check_labels(labels, self.n, name)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.n, size):
            yield self.array[start:start + size]

    def window(self, start: int, stop: int) -> "ArraySource":
        """Images [start, stop) of this source (a view: nothing is copied)."""
        labels = None if self.labels is None else self.labels[start:stop]
        return ArraySource(self.array[start:stop], self.name, labels)


class StreamSource(ImageSource):
    """Fixed-size C-ordered records read from a file object one batch at a time (raw files,
    gzip, zip members); ``opener()`` returns the object positioned at the first record. Reading
    on to the end makes gzip and zip check their CRC."""

    def __init__(self, opener, name: str, shape: tuple[int, ...], dtype: np.dtype, what: str,
                 labels: np.ndarray | None = None, check_end: bool = True):
        check_layout(shape, dtype, name)
        self._opener, self.name, self.n, self._check_end = opener, name, int(shape[0]), check_end
        self.sample_shape, self.dtype, self._what = tuple(shape[1:]), np.dtype(dtype), what
        self.labels = labels

    def batches(self, size: int) -> Iterator[np.ndarray]:
        record = self.dtype.itemsize * int(np.prod(self.sample_shape))
        done = 0
        try:
            with self._opener() as f:
                while done < self.n:
                    b = min(size, self.n - done)
                    data = f.read(b * record)
                    if len(data) < b * record:
                        got = done + len(data) // record
                        raise InputError(f"{self.name}: header promises {self.n} images but the {self._what} "
                                         f"holds {got}; the file is truncated")
                    done += b
                    yield np.frombuffer(data, dtype=self.dtype).reshape((b, *self.sample_shape))
                while self._check_end and f.read(1 << 20):  # gzip and zip check their CRC at the end
                    pass
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError) as e:
            raise InputError(f"{self.name}: cannot read the {self._what} ({str(e) or type(e).__name__}); "
                             f"the file is corrupted or truncated") from None


def not_regular(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file, or None for a regular file (or a link to one)
    and for a folder: 'a dangling link to X', 'a FIFO (named pipe)', 'a character device', ..."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"a dangling link (to {target}, which does not exist)"
        return "missing (removed meanwhile?)"
    except OSError as e:
        return f"not readable ({e.strerror or e})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return f"{kind}{' (through a link)' if path.is_symlink() else ''}"


class RawFileSource(StreamSource):
    """C-ordered records at byte ``data_at`` of an uncompressed file (.npy, raw IDX), read a batch
    at a time with plain reads; any window of it opens at its own offset."""

    def __init__(self, path: Path, data_at: int, name: str, shape: tuple[int, ...], dtype: np.dtype,
                 labels: np.ndarray | None = None):
        def opener():
            f = open(path, "rb")
            f.seek(data_at)
            return f

        super().__init__(opener, name, shape, dtype, "file", labels, check_end=False)
        self._path, self._data_at = path, data_at

    def window(self, start: int, stop: int) -> "RawFileSource":
        """Images [start, stop) of this file, read from their own offset."""
        record = self.dtype.itemsize * math.prod(self.sample_shape)
        labels = None if self.labels is None else self.labels[start:stop]
        return RawFileSource(self._path, self._data_at + start * record, self.name,
                             (stop - start, *self.sample_shape), self.dtype, labels)


class PngFolderSource(ImageSource):
    """A folder of 28x28 greyscale PNGs (see ``aeflow.runtime.pngfiles``), read in name order.
    Files are read and decoded with Pillow by a pool of ``threads`` threads (default: up to 4),
    the next batch while the caller works on the current one; a file that is not an accepted
    PNG stops the reading with one ``InputError`` naming it."""

    def __init__(self, folder: Path, name: str | None = None, threads: int | None = None):
        self.name = name or str(folder)
        try:
            entries = sorted(folder.iterdir(), key=lambda p: p.name)
        except OSError as e:
            raise InputError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
        visible = [p for p in entries if not p.name.startswith(".")]
        odd = [(p.name, why) for p in visible if (why := not_regular(p))]
        if odd:
            shown = "; ".join(f"{n} is {why}" for n, why in odd[:3]) + (f"; and {len(odd) - 3} more" if len(odd) > 3 else "")
            raise InputError(f"{folder}: holds entries that are not regular files ({shown}); aeflow reads only "
                             f"regular PNG files - move them out")
        files = [p for p in visible if p.is_file()]
        self.files = [p for p in files if p.suffix.lower() == ".png"]
        others = [p.name for p in files if p.suffix.lower() != ".png"]
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise InputError(f"{folder}: holds files that are not PNG images ({shown}); "
                             f"move them out or pass the PNG files themselves")
        if not self.files:
            subdirs = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
            hint = (f"; it has sub-folders ({', '.join(subdirs[:3])}): pass those" if subdirs
                    else "; pass a folder of 28x28 greyscale PNGs")
            raise InputError(f"{folder}: no PNG images in the folder{hint}")
        pngfiles.pillow()  # a missing Pillow is said before any work
        self.n = len(self.files)
        self._threads = threads or min(4, os.cpu_count() or 1)

    def window(self, start: int, stop: int) -> "PngFolderSource":
        """Files [start, stop) of this folder (in name order)."""
        clone = object.__new__(PngFolderSource)
        clone.__dict__.update(self.__dict__, files=self.files[start:stop])
        clone.n = len(clone.files)
        return clone

    def _decode(self, chunk: list[Path]) -> np.ndarray:
        # files are named under the folder's name as given (a worker may open it by another path)
        return pngfiles.decode_many([_read(p) for p in chunk], [os.path.join(self.name, p.name) for p in chunk])

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


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            parts = [os.read(fd, 1 << 16)]
            while len(parts[-1]) == 1 << 16:
                parts.append(os.read(fd, 1 << 20))
        finally:
            os.close(fd)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})") from None


def _head(path: Path, k: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(k)
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})") from None


# ---------------------------------------------------------------- formats

def _npy_header(f, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read a .npy header from ``f``; leaves ``f`` at the first data byte."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except Exception as e:  # numpy's parser of an untrusted header: ValueError, SyntaxError, TokenError, ...
        raise InputError(f"{name}: not a readable .npy array ({' '.join(str(e).split())[:120]}); "
                         f"the file is corrupted or not saved with numpy.save") from None
    return tuple(shape), fortran, dtype


def _check_size(have: int, shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    need = math.prod(shape) * dtype.itemsize  # Python ints: a crafted header must not overflow int64
    if have < need:
        raise InputError(f"{name}: header promises {need} data bytes {shape} but the file holds {have}; "
                         f"the file is truncated")


def _read_errors():
    return (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError)


def _fortran_source(opener, name: str, shape: tuple[int, ...], dtype: np.dtype, labels, what: str) -> ArraySource:
    """A Fortran-ordered array, whose images are not consecutive records: read whole (it must fit
    in memory), through ``opener()`` positioned at its first data byte."""
    need = math.prod(shape) * dtype.itemsize
    avail = available_memory()
    if avail is not None and need > avail // 2:
        raise InputError(f"{name}: a Fortran-ordered array of {need:,} bytes cannot be read a batch at a time and "
                         f"does not fit in memory; save it C-ordered: np.save(f, np.ascontiguousarray(x))")
    try:
        with opener() as f:
            data = f.read(need)
    except _read_errors() as e:
        raise InputError(f"{name}: cannot read the {what} ({str(e) or type(e).__name__}); the file is corrupted "
                         f"or truncated") from None
    if len(data) < need:
        raise InputError(f"{name}: header promises {need} data bytes {shape} but the {what} holds {len(data)}; "
                         f"the file is truncated")
    return ArraySource(np.frombuffer(data, dtype=dtype).reshape(shape, order="F"), name, labels)


def open_npy(path: Path, name: str) -> ImageSource:
    """A .npy file, read one batch at a time."""
    if _head(path, 6) != _NPY_MAGIC:
        raise InputError(f"{name}: not a .npy file (bad magic bytes); save arrays with numpy.save")
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = _npy_header(f, name)
            data_at = f.tell()
    except OSError as e:
        raise InputError(f"{name}: cannot read it ({e.strerror or e})") from None
    check_layout(shape, dtype, name)
    _check_size(path.stat().st_size - data_at, shape, dtype, name)
    if fortran:
        def opener():
            f = open(path, "rb")
            f.seek(data_at)
            return f

        return _fortran_source(opener, name, shape, dtype, None, "file")
    return RawFileSource(path, data_at, name, shape, dtype)


_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _check_member(info: zipfile.ZipInfo, name: str) -> None:
    """InputError for a zip member numpy (and aeflow) cannot read: encrypted, or compressed with a
    method Python's zipfile does not know."""
    if info.flag_bits & 0x1:
        raise InputError(f"{name}: member {info.filename} is encrypted; numpy and aeflow read only archives "
                         f"without a password - save it again with np.savez")
    if info.compress_type not in _ZIP_METHODS:
        raise InputError(f"{name}: member {info.filename} uses zip compression method {info.compress_type}, which "
                         f"numpy and aeflow cannot read; save it again with np.savez or np.savez_compressed")


def _one_member(infos: list[zipfile.ZipInfo], key: str, name: str) -> zipfile.ZipInfo | None:
    """The member whose name (without folders and ".npy") is ``key``; InputError when several are."""
    found = [i for i in infos if Path(i.filename).stem == key]
    if len(found) > 1:
        listed = ", ".join(i.filename for i in found[:3])
        raise InputError(f"{name}: {len(found)} members match '{key}' ({listed}); the archive is ambiguous - "
                         f"save it again with one array named '{key}'")
    return found[0] if found else None


def open_npz(path: Path, name: str) -> ImageSource:
    """A .npz file: member ``images`` or the only array, labels ``is_anomaly`` when present, read
    one batch at a time through zipfile (stored or compressed; the CRC is checked at the end).
    Refused like ``np.load`` refuses them: members whose header promises more data than they
    hold, encrypted members, unknown compression; and, unlike it, two members that match."""
    try:
        zf = zipfile.ZipFile(path)
        infos = [i for i in zf.infolist() if i.filename.endswith(".npy")]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise InputError(f"{name}: not a readable .npz archive ({e}); the file is corrupted or truncated") from None
    with zf:
        info = _one_member(infos, "images", name)
        if info is None:
            if len(infos) != 1:
                found = ", ".join(sorted(Path(i.filename).stem for i in infos)) or "nothing"
                raise InputError(f"{name}: holds {found}; expected an array named 'images' (or a single array)")
            info = infos[0]
        label_info = _one_member(infos, "is_anomaly", name)
        labels = None
        if label_info is not None and label_info is not info:
            _check_member(label_info, name)
            try:
                with zf.open(label_info) as f:
                    labels = np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, *_read_errors()) as e:
                raise InputError(f"{name}: cannot read 'is_anomaly' ({e}); the file is corrupted") from None
        _check_member(info, name)
        try:
            with zf.open(info) as f:
                shape, fortran, dtype = _npy_header(f, name)
                header_bytes = f.tell()
        except _read_errors() as e:
            raise InputError(f"{name}: cannot read {info.filename} ({e}); the file is corrupted or truncated") from None
    check_layout(shape, dtype, name)
    need = math.prod(shape) * dtype.itemsize
    if header_bytes + need > info.file_size:
        raise InputError(f"{name}: member {info.filename}'s header promises {need} data bytes {shape} but the "
                         f"member holds {max(0, info.file_size - header_bytes)}; the archive is corrupted")
    if labels is not None:
        labels = _check_labels(labels, int(shape[0]), name)

    def opener():
        z = zipfile.ZipFile(path)
        try:
            f = z.open(info)
            _npy_header(f, name)
        except BaseException:
            z.close()
            raise
        return _Closing(f, z)

    if fortran:
        return _fortran_source(opener, name, shape, dtype, labels, ".npz member")
    return StreamSource(opener, name, shape, dtype, ".npz member", labels)


class _Closing(io.BufferedIOBase):
    def __init__(self, f, *others):
        self._f, self._others = f, others

    def read(self, n=-1):
        return self._f.read(n)

    def close(self):
        self._f.close()
        for o in self._others:
            o.close()
        super().close()


def _idx_shape_check(shape: tuple[int, ...], name: str) -> None:
    if len(shape) != 3:
        hint = " - a labels file? pass the images file" if len(shape) == 1 else ""
        raise InputError(f"{name}: IDX file of shape {shape}{hint}; expected images [N, 28, 28]")


def open_idx(path: Path, name: str) -> ImageSource:
    """An IDX images file, read a batch at a time (gzipped ones decompressed as they go)."""
    header = read_idx_header(path)
    _idx_shape_check(header.shape, name)

    if not header.gzipped:
        return RawFileSource(path, header.offset, name, header.shape, np.dtype(np.uint8))

    def opener():
        f = gzip.open(path, "rb")
        f.read(header.offset)
        return f

    return StreamSource(opener, name, header.shape, np.dtype(np.uint8), ".gz data")


def open_png(path: Path, name: str) -> ArraySource:
    """One 28x28 greyscale PNG (see ``aeflow.runtime.pngfiles``), as a batch of one."""
    return ArraySource(pngfiles.decode_many([_read(path)], [name]), name)


def open_source(path: str | os.PathLike, name: str | None = None, column: str | None = None) -> ImageSource:
    """The reader for ``path``: a folder of PNGs, .npy, .npz, .png, .parquet (``column``: its image
    column, see ``aeflow.runtime.parquet``), or IDX (raw or gzip, by content). ``name`` (default:
    the path as given) labels it in tables and outputs. Raises a one-line ``InputError`` for
    anything missing, empty, unreadable or of the wrong layout."""
    p = Path(path)
    name = name or str(path)
    if p.is_dir():
        return PngFolderSource(p, name)
    if not p.exists() and not p.is_symlink():
        raise InputError(f"{name}: no such file or folder; check the path")
    why = not_regular(p)
    if why:
        raise InputError(f"{name}: is {why}; aeflow reads regular files and folders of PNGs")
    head = _head(p, 8)
    if not head:
        raise InputError(f"{name}: the file is empty")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return open_npy(p, name)
    if suffix == ".npz":
        return open_npz(p, name)
    if suffix == ".png":
        return open_png(p, name)
    if suffix == ".parquet" or head.startswith(b"PAR1"):
        from aeflow.runtime.parquet import ParquetSource

        return ParquetSource(p, name, column)
    if head.startswith(_NPY_MAGIC):
        return open_npy(p, name)
    if head.startswith(_ZIP_MAGIC):
        return open_npz(p, name)
    if head.startswith(pngfiles.SIGNATURE):
        return open_png(p, name)
    if not is_gzip(p) and len(head) >= 4 and head[:2] != b"\x00\x00":
        raise InputError(f"{name}: unknown format; pass .npy, .npz, .parquet, IDX (raw or .gz), a .png or a folder "
                         f"of PNGs")
    return open_idx(p, name)
