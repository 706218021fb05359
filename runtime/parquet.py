"""Parquet files of images, read in streamed batches with pyarrow (imported lazily; ``pip install
'aeflow[distributed]'`` brings it).

Schema: one row per image, the image in one column (``column``; default ``image``, else the only
column of an image type):

- ``binary`` / ``large_binary``: each value a PNG file's bytes (read as ``aeflow.runtime.pngfiles``
  reads PNG files) or exactly 784 bytes of uint8 pixels in row-major order;
- ``fixed_size_binary(784)``: raw pixels;
- ``list<uint8>``, ``large_list<uint8>``, ``fixed_size_list<uint8, 784>``: raw pixels, 784 each.

An optional ``is_anomaly`` column (bool, or integers 0/1) gives labels, as in ``.npz`` files. A
null image, a value of another length, or another column type is refused with one ``InputError``
naming the file, the column and the row.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from aeflow.errors import InputError, UsageError
from aeflow.runtime import pngfiles
from aeflow.runtime.inputs import PIXELS, SIDE, ImageSource, _check_labels

DEFAULT_COLUMN = "image"
LABEL_COLUMN = "is_anomaly"
_EXTRA = "pip install 'aeflow[distributed]' (or pip install pyarrow)"


def pyarrow():
    """(pyarrow, pyarrow.parquet), or ``UsageError`` saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"Parquet files need pyarrow: {_EXTRA}") from None
    return pa, pq


def _image_kind(t, pa) -> str | None:
    """"binary", "fixed" (fixed_size_binary(784)), "list" (lists of uint8), or None."""
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_fixed_size_binary(t):
        return "fixed" if t.byte_width == PIXELS else None
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
            and pa.types.is_uint8(t.value_type):
        return "list"
    return None


class ParquetSource(ImageSource):
    """A Parquet file of images (schema in the module docstring), read ``size`` rows at a time;
    ``window(start, stop)`` restricts it to rows [start, stop)."""

    def __init__(self, path: str | os.PathLike, name: str | None = None, column: str | None = None,
                 start: int = 0, stop: int | None = None):
        pa, pq = pyarrow()
        self.path, self.name = Path(path), name or str(path)
        try:
            self._file = pq.ParquetFile(self.path)
            schema = self._file.schema_arrow
        except (OSError, ValueError, pa.ArrowException) as e:
            why = " ".join(str(e).split())[:160]
            raise InputError(f"{self.name}: not a readable Parquet file ({why}); the file is corrupted or truncated") \
                from None
        kinds = {f.name: _image_kind(f.type, pa) for f in schema}
        if column is None:
            usable = [c for c, k in kinds.items() if k]
            if DEFAULT_COLUMN in kinds:
                column = DEFAULT_COLUMN
            elif len(usable) == 1:
                column = usable[0]
            else:
                found = ", ".join(f"{f.name} ({f.type})" for f in schema) or "no columns"
                raise InputError(f"{self.name}: no column named {DEFAULT_COLUMN!r} and {len(usable)} image-typed "
                                 f"columns among {found}; name the image column (column= / --column)")
        if column not in kinds:
            raise InputError(f"{self.name}: no column {column!r}; it has {', '.join(kinds) or 'no columns'}")
        self.column, self._kind = column, kinds[column]
        if self._kind is None:
            raise InputError(f"{self.name}: column {column!r} is {schema.field(column).type}; images must be binary "
                             f"(PNG bytes or 784 raw bytes), fixed_size_binary(784) or list<uint8> of 784")
        total = self._file.metadata.num_rows
        self._start, self._stop = start, total if stop is None else min(stop, total)
        self.n = max(0, self._stop - self._start)
        if total == 0:
            raise InputError(f"{self.name}: the Parquet file holds no rows")
        self.labels = None
        if LABEL_COLUMN in kinds and LABEL_COLUMN != column:
            try:
                labels = self._file.read(columns=[LABEL_COLUMN]).column(0)
            except (OSError, ValueError, pa.ArrowException) as e:
                raise InputError(f"{self.name}: cannot read {LABEL_COLUMN!r} ({' '.join(str(e).split())[:120]})") \
                    from None
            if labels.null_count:
                raise InputError(f"{self.name}: {LABEL_COLUMN!r} has {labels.null_count} nulls; fix or drop it")
            self.labels = _check_labels(labels.to_numpy(zero_copy_only=False), total, self.name)[self._start:self._stop]

    def close(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None and hasattr(f, "close"):
            f.close()

    def window(self, start: int, stop: int) -> "ParquetSource":
        """The same file restricted to its rows [start, stop) (counted in this source's rows)."""
        return ParquetSource(self.path, self.name, self.column, self._start + start, self._start + stop)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        pa, _ = pyarrow()
        row = 0  # position in the file
        try:
            for batch in self._file.iter_batches(batch_size=size, columns=[self.column]):
                k = batch.num_rows
                lo, hi = max(self._start, row), min(self._stop, row + k)
                if lo < hi:
                    values = batch.column(0).slice(lo - row, hi - lo)
                    for part in _split(self._to_uint8(values, lo), size):
                        yield part
                row += k
                if row >= self._stop:
                    break
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{self.name}: cannot read row group data ({' '.join(str(e).split())[:160]}); "
                             f"the file is corrupted or truncated") from None

    def _where(self, row: int) -> str:
        return f"{self.name} (column {self.column!r}, row {row})"

    def _to_uint8(self, values, first: int) -> np.ndarray:
        """An arrow array of b images starting at file row ``first`` -> uint8 [b, 28, 28]."""
        b = len(values)
        if values.null_count:
            bad = int(np.flatnonzero(np.asarray(values.is_null()))[0])
            raise InputError(f"{self._where(first + bad)}: null image; drop or fill the row")
        if self._kind == "fixed":
            return np.frombuffer(values.buffers()[1], np.uint8, b * PIXELS, values.offset * PIXELS).reshape(b, SIDE, SIDE)
        if self._kind == "list":
            if hasattr(values, "value_lengths"):
                lengths = np.asarray(values.value_lengths())
            else:  # fixed_size_list
                lengths = np.full(b, values.type.list_size)
            wrong = np.flatnonzero(lengths != PIXELS)
            if wrong.size:
                raise InputError(f"{self._where(first + int(wrong[0]))}: a list of {int(lengths[wrong[0]])} values; "
                                 f"each image needs 784 uint8 pixels")
            flat = values.flatten()
            if flat.null_count:
                raise InputError(f"{self.name} (column {self.column!r}): null pixels in rows {first}..{first + b - 1}")
            return flat.to_numpy(zero_copy_only=False).reshape(b, SIDE, SIDE)
        # binary: PNG bytes or 784 raw bytes, value by value
        blobs = values.to_pylist()
        out = np.empty((b, SIDE, SIDE), dtype=np.uint8)
        png_rows = [i for i, v in enumerate(blobs) if v[:8] == pngfiles.SIGNATURE]
        is_png = np.zeros(b, dtype=bool)
        is_png[png_rows] = True
        for i in np.flatnonzero(~is_png):
            if len(blobs[i]) != PIXELS:
                raise InputError(f"{self._where(first + int(i))}: {len(blobs[i])} bytes, neither a PNG nor 784 raw "
                                 f"pixels")
            out[i] = np.frombuffer(blobs[i], np.uint8).reshape(SIDE, SIDE)
        if png_rows:
            out[png_rows] = pngfiles.decode_many([blobs[i] for i in png_rows],
                                                 [self._where(first + i) for i in png_rows])
        return out


def _split(x: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(x), size):
        yield x[i:i + size]


