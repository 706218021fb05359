"""The reader protocol, ``ImageSource``, and the sources the file formats build on.

A source has ``name`` (the path as given, or "array"), ``n`` images (known before reading),
``image_shape`` (H, W), ``labels`` (bool [n], True = anomaly, or None), ``batches(size)`` (arrays
[b, ...] of its own dtype, b <= size, in file order; values are checked by ``arrays.to_float32``),
``close()`` (sources are context managers) and, where it splits cheaply (arrays, uncompressed
files, PNG folders, Parquet), ``window(start, stop)``: images [start, stop) as a source. Files are
read a batch at a time with plain reads, never memory-mapped (a file truncated meanwhile would
kill the process with SIGBUS): a file cut short while it is read is an ``InputError``.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from aeflow.errors import InputError
from aeflow.runtime.arrays import DEFAULT_SHAPE, accepted, check_layout

READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError)


class ImageSource:
    """Base of the readers: see the module docstring for the protocol."""

    name: str = "images"
    n: int = 0
    image_shape: tuple[int, int] = DEFAULT_SHAPE
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
    if labels.dtype != np.bool_:
        if labels.dtype.kind not in "iu" or not np.isin(labels, (0, 1)).all():
            raise InputError(f"{name}: 'is_anomaly' must be bool (or 0/1), found dtype {labels.dtype}; fix or drop it")
        labels = labels.astype(bool)
    if labels.shape != (n,):
        raise InputError(f"{name}: 'is_anomaly' has shape {labels.shape} but there are {n} images; fix or drop it")
    return labels


class ArraySource(ImageSource):
    """Images already in an array (any accepted layout of ``image_shape`` images), checked at
    construction; ``np.matrix`` is read as the 2-D array [N, H*W] it holds."""

    def __init__(self, array, name: str = "array", labels=None, image_shape=DEFAULT_SHAPE):
        masked = sys.modules.get("numpy.ma")  # np.ma itself costs ~10 ms of every cold start; none exists without it
        if masked is not None and isinstance(array, masked.MaskedArray):
            raise InputError(f"{name}: a masked array; fill the masked pixels first, e.g. x.filled(0)")
        if type(array) is not np.ndarray:
            try:
                array = np.asarray(array)  # np.matrix too: a plain 2-D array, which reshapes like one
            except (ValueError, TypeError) as e:
                raise InputError(f"{name}: cannot make an array of it ({e}); pass a numpy array "
                                 f"{accepted(image_shape or DEFAULT_SHAPE)}") from None
        self.image_shape = check_layout(array.shape, array.dtype, name, image_shape)
        self.array, self.name, self.n = array, name, int(array.shape[0])
        self.labels = None if labels is None else check_labels(labels, self.n, name)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.n, size):
            yield self.array[start:start + size]

    def window(self, start: int, stop: int) -> "ArraySource":
        """Images [start, stop) of this source (a view: nothing is copied)."""
        labels = None if self.labels is None else self.labels[start:stop]
        return ArraySource(self.array[start:stop], self.name, labels, self.image_shape)


class StreamSource(ImageSource):
    """Fixed-size C-ordered records read from a file object one batch at a time (gzip, zip
    members); ``opener()`` returns the object positioned at the first record. Reading on to the
    end makes gzip and zip check their CRC."""

    check_end = True

    def __init__(self, opener, name: str, shape: tuple[int, ...], dtype: np.dtype, what: str,
                 labels: np.ndarray | None = None, image_shape=DEFAULT_SHAPE):
        self.image_shape = check_layout(shape, dtype, name, image_shape)
        self._opener, self.name, self.n = opener, name, int(shape[0])
        self.shape, self.dtype, self._what, self.labels = tuple(shape), np.dtype(dtype), what, labels

    def batches(self, size: int) -> Iterator[np.ndarray]:
        record = self.dtype.itemsize * math.prod(self.shape[1:])
        done = 0
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
                while self.check_end and f.read(1 << 20):  # gzip and zip check their CRC at the end
                    pass
        except READ_ERRORS as e:
            raise InputError(f"{self.name}: cannot read the {self._what} ({str(e) or type(e).__name__}); "
                             f"the file is corrupted or truncated") from None


class RawFileSource(StreamSource):
    """C-ordered records at byte ``data_at`` of an uncompressed file (.npy, raw IDX), read a batch
    at a time with plain reads; any window of it opens at its own offset."""

    check_end = False

    def __init__(self, path: Path, data_at: int, name: str, shape: tuple[int, ...], dtype: np.dtype,
                 labels: np.ndarray | None = None, image_shape=DEFAULT_SHAPE):
        super().__init__(lambda: opened_at(path, data_at), name, shape, dtype, "file", labels, image_shape)
        self._path, self._data_at = path, data_at

    def window(self, start: int, stop: int) -> "RawFileSource":
        """Images [start, stop) of this file, read from their own offset."""
        record = self.dtype.itemsize * math.prod(self.shape[1:])
        labels = None if self.labels is None else self.labels[start:stop]
        return RawFileSource(self._path, self._data_at + start * record, self.name,
                             (stop - start, *self.shape[1:]), self.dtype, labels, self.image_shape)


def opened_at(path: Path, offset: int, gzipped: bool = False):
    """``path`` opened for reading (decompressed as it goes when ``gzipped``) at byte ``offset``."""
    f = gzip.open(path, "rb") if gzipped else open(path, "rb")
    f.seek(offset)
    return f


def not_regular(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file, or None for a regular file (or a link to one)
    and for a folder: 'a dangling link to X', 'a FIFO (named pipe)', 'a character device', ..."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not path.is_symlink():
            return "missing (removed meanwhile?)"
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"a dangling link (to {target}, which does not exist)"
    except OSError as e:
        return f"not readable ({e.strerror or e})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return f"{kind}{' (through a link)' if path.is_symlink() else ''}"


def read_bytes(path: Path, limit: int = -1) -> bytes:
    """The bytes of ``path`` (at most ``limit``) with plain reads (os.read: a small PNG costs one
    system call); one-line ``InputError`` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = limit if limit >= 0 else 1 << 16
            parts = [os.read(fd, size)]
            while limit < 0 and len(parts[-1]) == size:  # a short read is the end of a regular file
                size = 1 << 20
                parts.append(os.read(fd, size))
        finally:
            os.close(fd)
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)
