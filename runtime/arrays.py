"""Image arrays (layouts, dtypes: README, "Inputs"): checks, float32 [b, 1, H, W], the reader protocol ``ImageSource``
and its sources. Files are read, never memory-mapped (SIGBUS if cut meanwhile): one cut short is an ``InputError``."""

import math
import os
import stat
import sys
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from aeflow.errors import InputError
from aeflow.runtime.contract import IMAGE_SHAPE as DEFAULT_SHAPE, MAX_SIDE, MIN_SIDE

_SLACK = 1e-6  # float32 rounding of x / 255 may land a hair beyond 1
_OVERSHOOT = 1 / 3  # how far a resize (bicubic, Lanczos) or noise takes [0, 1] pixels beyond: at most about this
_MNIST_LO, _MNIST_HI = -0.1307 / 0.3081, (1 - 0.1307) / 0.3081  # MNIST-standardised pixels span -0.4242..2.8215


def read_errors() -> tuple[type[Exception], ...]:
    """What damaged data raises while read: zipfile's error too once zipfile is loaded (only it raises that)."""
    zf = sys.modules.get("zipfile")
    return (OSError, EOFError, zlib.error, RuntimeError, NotImplementedError) + ((zf.BadZipFile,) if zf else ())


def size(shape) -> str:
    """(H, W) -> 'HxW' (height x width), as messages write image sizes."""
    return "x".join(str(int(d)) for d in shape)


def accepted(image_shape=DEFAULT_SHAPE) -> str:
    """The accepted layouts for ``image_shape`` (H, W), for messages."""
    h, w = image_shape
    return f"[N, 1, {h}, {w}], [N, {h}, {w}] or [N, {h * w}] (uint8 0..255 or float in [0, 1])"


def check_image_shape(image_shape, name: str) -> tuple[int, int]:
    """``image_shape`` as (H, W) ints; one-line ``InputError`` unless two sides of ``MIN_SIDE..MAX_SIDE`` pixels."""
    hw = tuple(int(d) for d in image_shape)
    if len(hw) != 2 or not all(MIN_SIDE <= d <= MAX_SIDE for d in hw):
        raise InputError(f"{name}: images of {size(hw)} pixels; aeflow reads greyscale images of "
                         f"{MIN_SIDE} to {MAX_SIDE:,} pixels a side")
    return hw


def _dtype_problem(dtype: np.dtype) -> str | None:
    if dtype == np.uint8 or dtype.kind == "f":
        return None
    if dtype.kind in "iu":
        return f"dtype {dtype}: pass uint8 (0..255) or float32 in [0, 1], e.g. x.astype(np.uint8) for 0..255 values"
    kind = {"b": "dtype bool (a mask?)", "c": f"complex values (dtype {dtype})", "O": "dtype object (Python objects)",
            "U": f"strings (dtype {dtype})", "S": f"strings (dtype {dtype})"}.get(dtype.kind, f"dtype {dtype}")
    return f"{kind}: pass real uint8 (0..255) or float32 in [0, 1] pixels"


def _image_sizes(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The (H, W) a batch of ``shape`` holds, grey or colour (which ``_shape_problem`` refuses by name), else None."""
    if len(shape) == 4 and 1 in (shape[1], shape[3]):
        return shape[2:] if shape[1] == 1 else shape[1:3]
    if len(shape) == 4 and (shape[1] in (3, 4) or shape[3] in (3, 4)):
        return shape[1:3] if shape[3] in (3, 4) else shape[2:]
    return shape[1:] if len(shape) == 3 else None


def _shape_problem(shape: tuple[int, ...], image_shape) -> str | None:
    h, w = image_shape
    if len(shape) >= 2 and tuple(shape[1:]) in {(1, h, w), (h, w), (h, w, 1), (h * w,)}:
        return None if shape[0] > 0 else f"no images (shape {shape})"
    k = shape[0] if shape else 1
    if shape == (h, w):
        hint = f"a single {size(image_shape)} image: add a batch dimension, x[None] (shape [1, {h}, {w}])"
    elif len(shape) <= 1:
        hint = (f"a 1-D array of {k} values: reshape flat pixels with x.reshape(-1, {h}, {w})" if k and k % (h * w) == 0
                else f"a {'scalar' if not shape else '1-D array'}: pass a batch of {size(image_shape)} images")
    elif len(shape) == 4 and (shape[1] in (3, 4) or shape[3] in (3, 4)):
        hint = "colour images: aeflow scores greyscale, convert them to one channel"
    elif _image_sizes(shape):
        hint = f"images of {size(_image_sizes(shape))} pixels, this run's are {size(image_shape)}: resize them"
    elif len(shape) == 2:
        hint = f"rows of {shape[1]} values: each image needs {h * w} pixels ({size(image_shape)})"
    else:
        hint = f"not a batch of {size(image_shape)} greyscale images"
    return f"shape {shape} ({hint}); expected {accepted(image_shape)}"


def check_layout(shape: tuple[int, ...], dtype: np.dtype, name: str, image_shape=DEFAULT_SHAPE) -> tuple[int, int]:
    """The (H, W) of a batch of ``shape``/``dtype`` holding ``image_shape`` images (None: the size its shape says;
    a flat [N, D] batch does not say it); one-line ``InputError`` naming ``name``."""
    shape = tuple(int(d) for d in shape)
    problem = _dtype_problem(np.dtype(dtype))
    if problem is None and image_shape is None and (image_shape := _image_sizes(shape)) is None:
        raise InputError(f"{name}: shape {shape} does not say the image size; reshape it to [N, H, W] (flat rows of "
                         f"H*W pixels need the size given, image_shape=(H, W))" if len(shape) <= 2 else  # not others:
                         f"{name}: shape {shape} (not a batch of greyscale images); expected [N, 1, H, W], [N, H, W] "
                         f"or [N, H, W, 1] (uint8 0..255 or float in [0, 1])")  # a reshape would interleave channels
    image_shape = check_image_shape(image_shape or DEFAULT_SHAPE, name)
    if problem := problem or _shape_problem(shape, image_shape):
        raise InputError(f"{name}: {problem}")
    return image_shape


def check_values(x: np.ndarray, name: str, offset: int = 0) -> None:
    """``InputError`` for NaN or Inf in float images ``x`` [b, ...] (named from ``offset``) or values outside [0, 1]."""
    lo, hi = float(x.min()), float(x.max())
    if -_SLACK <= lo and hi <= 1 + _SLACK:  # False for NaN and Inf too
        return
    flat = x.reshape(len(x), -1)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1)) + offset
    if bad.size:
        more = f" and {bad.size - 5} more ({bad.size} in all)" if bad.size > 5 else ""
        raise InputError(f"{name}: NaN or Inf (or beyond float32's range) in image{'s' if bad.size > 1 else ''} "
                         f"{', '.join(map(str, bad[:5]))}{more}; fix or drop those images")
    out = (flat < -_SLACK) | (flat > 1 + _SLACK)
    first = int(np.flatnonzero(out.any(axis=1))[0]) + offset
    raise InputError(f"{name}: pixel values span {lo:g}..{hi:g} (first at image {first}), expected [0, 1]; "
                     f"{_range_hint(lo, hi, float(out.mean()))}")


def _range_hint(lo: float, hi: float, share_out: float) -> str:
    """Advice for finite pixels spanning ``lo..hi`` (``share_out`` outside [0, 1]) that gives [0, 1] images again."""
    if lo >= 0 and 10 < hi <= 255:
        return "they look like 0..255: pass uint8 or divide by 255"
    if lo >= -_OVERSHOOT and hi <= 1 + _OVERSHOOT and share_out < 0.5:  # shifted data have most pixels beyond
        return "a small overshoot of [0, 1] (a resize or noise?): clip them, np.clip(x, 0, 1)"
    if -1 - _SLACK <= lo <= -0.5 and hi <= 1 + _SLACK:
        return "they look like [-1, 1] normalisation: pass (x + 1) / 2"
    if abs(lo - _MNIST_LO) < 5e-3 and hi <= _MNIST_HI + 5e-3:
        return "they look MNIST-standardised (mean/std): undo it, x * 0.3081 + 0.1307"
    if -5 < lo < 0 and 1 < hi < 10:
        return "they look standardised (mean/std): undo it with the mean and std used, x * std + mean"
    return "rescale the pixels to [0, 1]"


def scale_problem(images: np.ndarray, dtype: np.dtype, name: str, offset: int = 0) -> str | None:
    """A one-line warning when converted images (float32 [b, 1, H, W] from ``dtype``) have their brightest
    pixel in (0, 1/255], else None."""
    hi = float(images.max()) if images.size else 0.0
    if not 0.0 < hi <= 1.0 / 255.0 + _SLACK:
        return None
    where = f"images {offset}..{offset + len(images) - 1}"
    if np.dtype(dtype) == np.uint8:
        return (f"{name}: uint8 pixels hold only 0 and 1 in {where} (a binarised mask?); uint8 is read as "
                f"0..255, so these read as blank images - pass x * 255 if 1 means white")
    return (f"{name}: the brightest pixel is {hi:.3g} in {where} (divided by 255 twice?); these read as "
            f"blank images - pass x * 255 if so")


def to_float32(batch: np.ndarray, name: str, offset: int = 0, out: np.ndarray | None = None,
               image_shape=DEFAULT_SHAPE) -> np.ndarray:
    """A batch [b, ...] of an accepted layout as C-contiguous float32 [b, 1, H, W] in [0, 1] (values
    checked; uint8 / 255). float32 C-contiguous input is not copied; else written into ``out`` if given."""
    b, (h, w) = len(batch), image_shape
    flat = batch.reshape(b, h * w)
    if batch.dtype == np.float32 and flat.flags.c_contiguous:
        dest = flat.reshape(b, 1, h, w)
    else:
        dest = out[:b] if out is not None else np.empty((b, 1, h, w), dtype=np.float32)
        if batch.dtype == np.uint8:
            np.divide(flat, np.float32(255.0), out=dest.reshape(b, h * w), dtype=np.float32)
            return dest
        with np.errstate(over="ignore"):  # beyond float32's range: inf, which check_values names
            np.copyto(dest.reshape(b, h * w), flat, casting="unsafe")
    check_values(dest, name, offset)
    return dest


class ImageSource:
    """A reader: ``name``, ``n`` images, ``image_shape`` (H, W), ``labels`` (bool [n] or None), ``batches(size)``
    ([b <= size, ...] of the file's dtype, in order), a context manager; ``window(start, stop)`` if it splits."""

    labels: np.ndarray | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def check_labels(labels, n: int, name: str) -> np.ndarray:
    """``is_anomaly`` labels as bool [n]; one-line ``InputError`` unless bool or 0/1 of shape [n]."""
    labels = np.asarray(labels)
    if labels.dtype != np.bool_ and (labels.dtype.kind not in "iu" or not np.isin(labels, (0, 1)).all()):
        raise InputError(f"{name}: 'is_anomaly' must be bool (or 0/1), found dtype {labels.dtype}; fix or drop it")
    if labels.shape != (n,):
        raise InputError(f"{name}: 'is_anomaly' has shape {labels.shape} but there are {n} images; fix or drop it")
    return labels.astype(bool, copy=False)


class ArraySource(ImageSource):
    """Images in an array of an accepted layout, checked here; ``np.matrix`` reads as its 2-D array."""

    def __init__(self, array, name: str = "array", labels=None, image_shape=DEFAULT_SHAPE):
        masked = sys.modules.get("numpy.ma")  # np.ma itself costs ~10 ms of every cold start; none exists without it
        if masked is not None and isinstance(array, masked.MaskedArray):
            raise InputError(f"{name}: a masked array; fill the masked pixels first, e.g. x.filled(0)")
        try:
            array = np.asarray(array)
        except (ValueError, TypeError) as e:
            raise InputError(f"{name}: cannot make an array of it ({e}); pass a numpy array "
                             f"{accepted(image_shape or DEFAULT_SHAPE)}") from None
        self.image_shape = check_layout(array.shape, array.dtype, name, image_shape)
        self.array, self.name, self.n = array, name, int(array.shape[0])
        self.labels = None if labels is None else check_labels(labels, self.n, name)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        return (self.array[start:start + size] for start in range(0, self.n, size))


class StreamSource(ImageSource):
    """C-ordered records of ``shape``/``dtype`` read a batch at a time from ``opener()`` (a file at the first record).
    ``end``: "read" reads to the end (where gzip and zip check CRCs), "exact" also refuses data after the records,
    None stops at the last record."""

    def __init__(self, opener, name: str, shape: tuple[int, ...], dtype: np.dtype, what: str,
                 labels: np.ndarray | None = None, image_shape=DEFAULT_SHAPE, end: str | None = "read"):
        self.image_shape = check_layout(shape, dtype, name, image_shape)
        self._opener, self.name, self.n, self._what, self.labels = opener, name, int(shape[0]), what, labels
        self.shape, self.dtype, self._end = tuple(shape), np.dtype(dtype), end
        self._record = self.dtype.itemsize * math.prod(self.shape[1:])

    def batches(self, size: int) -> Iterator[np.ndarray]:
        done, record = 0, self._record
        try:
            with self._opener() as f:
                while done < self.n:
                    b = min(size, self.n - done)
                    data = f.read(b * record)
                    if len(data) < b * record:
                        raise InputError(f"{self.name}: header promises {self.n} images but the {self._what} holds "
                                         f"{done + len(data) // record}; the file is truncated")
                    done += b
                    yield np.frombuffer(data, dtype=self.dtype).reshape((b, *self.shape[1:]))
                while self._end and f.read(1 << 20):
                    if self._end == "exact":
                        raise InputError(f"{self.name}: the {self._what} holds data after the {self.n} images its "
                                         f"header promises; the file is corrupted (or its header count is wrong)")
        except read_errors() as e:
            raise InputError(f"{self.name}: cannot read the {self._what} ({str(e) or type(e).__name__}); "
                             f"the file is corrupted or truncated") from None


class RawFileSource(StreamSource):
    """Records at byte ``data_at`` of an uncompressed file (.npy, raw IDX); a window opens at its own offset."""

    def __init__(self, path: Path, data_at: int, name: str, shape: tuple[int, ...], dtype, image_shape=DEFAULT_SHAPE):
        super().__init__(lambda: opened_at(path, data_at), name, shape, dtype, "file", None, image_shape, None)
        self._path, self._data_at = path, data_at

    def window(self, start: int, stop: int) -> "RawFileSource":
        """Images [start, stop) of this file."""
        return RawFileSource(self._path, self._data_at + start * self._record, self.name,
                             (stop - start, *self.shape[1:]), self.dtype, self.image_shape)


def opened_at(path: Path, offset: int, gzipped: bool = False):
    """``path`` opened for reading (decompressed as it goes when ``gzipped``) at byte ``offset``."""
    if gzipped:
        import gzip
    f = gzip.open(path, "rb") if gzipped else open(path, "rb")
    f.seek(offset)
    return f


def not_regular(path: Path) -> str | None:
    """Why ``path`` cannot be read ('missing', 'a dangling link (to X, ...)', 'a FIFO (named pipe)', ...), else None."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # NotADirectoryError: a file on the way, as in file.npy/x
        return f"a dangling link (to {os.readlink(path)}, which does not exist)" if path.is_symlink() else "missing"
    except OSError as e:
        return f"not readable ({e.strerror or e})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
            stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "not a regular file")
    return kind + (" (through a link)" if path.is_symlink() else "")


def read_bytes(path: Path, limit: int = -1) -> bytes:
    """The bytes of ``path`` (at most ``limit``) with unbuffered reads; one-line ``InputError`` otherwise."""
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read(limit)
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})") from None
