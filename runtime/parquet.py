"""Parquet files of images (one row per image; column types: README, "Parquet"), read in streamed
batches with pyarrow; only ``open_source`` imports this module, and only for a Parquet file."""

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from aeflow.errors import InputError, one_line
from aeflow.optional import require
from aeflow.runtime.arrays import DEFAULT_SHAPE, ImageSource, check_image_shape, check_labels, size
from aeflow.runtime.pngfiles import SIGNATURE, decode_many, header_shape


def _image_kind(t, pa) -> str | None:
    """"binary", "fixed" (fixed_size_binary), "list" (lists of uint8), or None."""
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_fixed_size_binary(t):
        return "fixed"
    lists = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    return "list" if lists and pa.types.is_uint8(t.value_type) else None


class ParquetSource(ImageSource):
    """A Parquet file of images, rows [start, stop); ``image_shape=None`` takes the size from the first
    row's PNG (raw pixels do not say their size: give it)."""

    def __init__(self, path: str | os.PathLike, name: str | None = None, column: str | None = None,
                 start: int = 0, stop: int | None = None, image_shape=DEFAULT_SHAPE):
        pa = require("pyarrow", "distributed", "reading Parquet files")
        self.path, self.name = Path(path), name or str(path)
        try:
            self._file = require("pyarrow.parquet", "distributed", "reading Parquet files").ParquetFile(self.path)
            schema, total = self._file.schema_arrow, self._file.metadata.num_rows
            kinds = {f.name: _image_kind(f.type, pa) for f in schema}
            usable = [c for c, k in kinds.items() if k]
            column = column or ("image" if "image" in kinds else usable[0] if len(usable) == 1 else None)
            if column is None:
                found = ", ".join(f"{f.name} ({f.type})" for f in schema) or "no columns"
                raise InputError(f"{self.name}: no column named 'image' and {len(usable)} image-typed columns among "
                                 f"{found}; name the image column (column= / --column)")
            if column not in kinds:
                raise InputError(f"{self.name}: no column {column!r}; it has {', '.join(kinds) or 'no columns'}")
            self.column, self._kind, t = column, kinds[column], schema.field(column).type
            if self._kind is None:
                raise InputError(f"{self.name}: column {column!r} is {t}; images must be binary (PNG bytes or H*W raw "
                                 f"bytes), fixed_size_binary(H*W) or list<uint8> of H*W")
            if total == 0:
                raise InputError(f"{self.name}: the Parquet file holds no rows")
            (h, w) = self.image_shape = check_image_shape(image_shape or self._first_png_shape(), self.name)
            labelled = "is_anomaly" in kinds.keys() - {column}
            labels = self._file.read(columns=["is_anomaly"]).column(0) if labelled else None
        except (OSError, ValueError, pa.ArrowException) as e:
            raise InputError(f"{self.name}: not a readable Parquet file ({one_line(e)}); the file is corrupted or "
                             f"truncated") from None
        if (width := t.byte_width if pa.types.is_fixed_size_binary(t) else getattr(t, "list_size", h * w)) != h * w:
            raise InputError(f"{self.name}: column {column!r} holds {width} pixels per image, this run's images are "
                             f"{size(self.image_shape)} = {h * w} pixels")
        self._start, self._stop = start, total if stop is None else min(stop, total)
        self.n = max(0, self._stop - self._start)
        if labelled and labels.null_count:
            raise InputError(f"{self.name}: 'is_anomaly' has {labels.null_count} nulls; fix or drop it")
        self.labels = check_labels(labels.to_numpy(zero_copy_only=False), total, self.name)[start:self._stop] \
            if labelled else None

    def _first_png_shape(self) -> tuple[int, int]:
        first = next(self._file.iter_batches(batch_size=1, columns=[self.column])).column(0)[0].as_py()
        if self._kind != "binary" or not first or first[:8] != SIGNATURE:
            raise InputError(f"{self.where(0)}: raw pixels do not say the image size; store PNG bytes, or give the "
                             f"size in Python (image_shape=(H, W))")
        return header_shape(first, self.where(0))

    def __exit__(self, *exc) -> None:
        self._file.close()

    def window(self, start: int, stop: int) -> "ParquetSource":
        """The same file restricted to its rows [start, stop) (counted in this source's rows)."""
        return ParquetSource(self.path, self.name, self.column, self._start + start, self._start + stop,
                             self.image_shape)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        import pyarrow as pa

        row = 0  # position in the file
        try:
            for batch in self._file.iter_batches(batch_size=size, columns=[self.column]):
                lo, hi = max(self._start, row), min(self._stop, row + batch.num_rows)
                if lo < hi:  # batches hold at most size rows
                    yield self._to_uint8(batch.column(0).slice(lo - row, hi - lo), lo)
                row += batch.num_rows
                if row >= self._stop:
                    break
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{self.name}: cannot read row group data ({one_line(e)}); the file is corrupted or "
                             f"truncated") from None

    def where(self, row: int) -> str:
        """The file, column and ``row`` (counted in the file), for messages."""
        return f"{self.name} (column {self.column!r}, row {row})"

    def _to_uint8(self, values, first: int) -> np.ndarray:
        """An arrow array of b images starting at file row ``first`` -> uint8 [b, H, W]."""
        (h, w), b = self.image_shape, len(values)
        if values.null_count:
            raise InputError(f"{self.where(first + int(np.flatnonzero(np.asarray(values.is_null()))[0]))}: null "
                             f"image; drop or fill the row")
        if self._kind == "fixed":
            return np.frombuffer(values.buffers()[1], np.uint8, b * h * w, values.offset * h * w).reshape(b, h, w)
        if self._kind == "list":
            lengths = np.asarray(values.value_lengths()) if hasattr(values, "value_lengths") \
                else np.full(b, values.type.list_size)
            if (wrong := np.flatnonzero(lengths != h * w)).size:
                raise InputError(f"{self.where(first + int(wrong[0]))}: a list of {int(lengths[wrong[0]])} values; "
                                 f"each image needs {h * w} uint8 pixels ({size(self.image_shape)})")
            flat = values.flatten()
            if flat.null_count:
                raise InputError(f"{self.name} (column {self.column!r}): null pixels in rows {first}..{first + b - 1}")
            return flat.to_numpy(zero_copy_only=False).reshape(b, h, w)
        blobs = values.to_pylist()  # binary: PNG bytes or H*W raw bytes, value by value
        out, png_rows = np.empty((b, h, w), dtype=np.uint8), [i for i, v in enumerate(blobs) if v[:8] == SIGNATURE]
        for i in (i for i, v in enumerate(blobs) if v[:8] != SIGNATURE):
            if len(blobs[i]) != h * w:
                raise InputError(f"{self.where(first + i)}: {len(blobs[i])} bytes, neither a PNG nor {h * w} raw "
                                 f"pixels ({size(self.image_shape)})")
            out[i] = np.frombuffer(blobs[i], np.uint8).reshape(h, w)
        out[png_rows] = decode_many([blobs[i] for i in png_rows], [self.where(first + i) for i in png_rows],
                                    self.image_shape)
        return out
