"""The reader protocol, ``ImageSource``, and the sources the file formats build on. Files are read a
batch at a time with plain reads, never memory-mapped (a file truncated meanwhile would kill the
process with SIGBUS): a file cut short while it is read is an ``InputError``.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from aeflow.errors import InputError
from aeflow.runtime.arrays import DEFAULT_SHAPE, accepted, check_layout

READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError)


class ImageSource:
    """A reader: ``name``, ``n`` images, ``image_shape`` (H, W), ``labels`` (bool [n], True = anomaly,
    or None), ``batches(size)`` (arrays [b <= size, ...] of the file's dtype, in order; values checked
    by ``to_float32``), a context manager; ``window(start, stop)`` where it splits cheaply."""

    name: str
    n: int
    image_shape: tuple[int, int]
    labels: np.ndarray | None = None

    def batches(self, size: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
        if isinstance(array, np.ma.MaskedArray):
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

    def window(self, start: int, stop: int) -> "ArraySource":
        """Images [start, stop) of this source (a view: nothing is copied)."""
        labels = None if self.labels is None else self.labels[start:stop]
        return ArraySource(self.array[start:stop], self.name, labels, self.image_shape)


class StreamSource(ImageSource):
    """C-ordered records of ``shape``/``dtype`` read a batch at a time from ``opener()``, a file
    object at the first record (gzip, zip members). Reading on to the end makes them check their CRC."""

    check_end = True

    def __init__(self, opener, name: str, shape: tuple[int, ...], dtype: np.dtype, what: str,
                 labels: np.ndarray | None = None, image_shape=DEFAULT_SHAPE):
        self.image_shape = check_layout(shape, dtype, name, image_shape)
        self._opener, self.name, self.n, self._what, self.labels = opener, name, int(shape[0]), what, labels
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
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
                while self.check_end and f.read(1 << 20):
                    pass
        except READ_ERRORS as e:
            raise InputError(f"{self.name}: cannot read the {self._what} ({str(e) or type(e).__name__}); "
                             f"the file is corrupted or truncated") from None


class RawFileSource(StreamSource):
    """Records at byte ``data_at`` of an uncompressed file (.npy, raw IDX); a window opens at its own offset."""

    check_end = False

    def __init__(self, path: Path, data_at: int, name: str, shape: tuple[int, ...], dtype: np.dtype,
                 labels: np.ndarray | None = None, image_shape=DEFAULT_SHAPE):
        super().__init__(lambda: opened_at(path, data_at), name, shape, dtype, "file", labels, image_shape)
        self._path, self._data_at = path, data_at

    def window(self, start: int, stop: int) -> "RawFileSource":
        """Images [start, stop) of this file."""
        labels = None if self.labels is None else self.labels[start:stop]
        return RawFileSource(self._path, self._data_at + start * self._record, self.name,
                             (stop - start, *self.shape[1:]), self.dtype, labels, self.image_shape)


def opened_at(path: Path, offset: int, gzipped: bool = False):
    """``path`` opened for reading (decompressed as it goes when ``gzipped``) at byte ``offset``."""
    f = gzip.open(path, "rb") if gzipped else open(path, "rb")
    f.seek(offset)
    return f


def not_regular(path: Path) -> str | None:
    """Why ``path`` cannot be read ('a dangling link (to X, ...)', 'a FIFO (named pipe)', ...), or
    None for a regular file or folder (or a link to one)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"a dangling link (to {os.readlink(path)}, which does not exist)" if path.is_symlink() else "missing"
    except OSError as e:
        return f"not readable ({e.strerror or e})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    kind = next((k for test, k in kinds if test(mode)), "not a regular file")
    return kind + (" (through a link)" if path.is_symlink() else "")


def read_bytes(path: Path, limit: int = -1) -> bytes:
    """The bytes of ``path`` (at most ``limit``) with unbuffered reads; one-line ``InputError`` otherwise."""
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read(limit)
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})") from None
