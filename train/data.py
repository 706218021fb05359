"""The user's training data: images (the runtime's readers, size from the data) and real values
(1-D .npy, CSV or Parquet column, text of one value a line); every problem is one ``DataError`` line."""

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from aeflow.errors import DataError
from aeflow.optional import require
from aeflow.runtime import inputs
from aeflow.runtime.arrays import to_float32
from aeflow.runtime.contract import MAX_PIXELS, MAX_SIDE, MIN_SIDE

MIN_VALUES, MAX_VALUE, RESOLVED = 20, 1e30, 100  # |values| well inside float32's 3.4e38; std spans >= 100 float32 steps


def _training_shape(h: int, w: int) -> tuple[int, int]:
    if h * w > MAX_PIXELS:  # the readers refused sides outside MIN_SIDE..MAX_SIDE, training's limit too
        raise DataError(f"images of {h}x{w} pixels; aeflow trains on sides of {MIN_SIDE} to {MAX_SIDE:,} "
                        f"pixels (at most {MAX_PIXELS:,} in all)")
    return h, w


def read_images(paths: list[str | os.PathLike]) -> tuple[np.ndarray, dict]:
    """Every image in ``paths`` (any format ``aeflow score`` reads) as float32 [N, 1, H, W] in [0, 1], and ``{"name",
    "sha256" (of the pixels)}``; one-line errors for mixed or absurd sizes, images labelled anomalous, or none."""
    images, labels, (h, w) = inputs.read_images(paths, image_shape=None)
    if labels is not None and labels.any():
        raise DataError(f"{int(labels.sum())} of the images are labelled anomalous (is_anomaly); "
                        f"train on normal images only - drop them first")
    x = to_float32(images, "images", image_shape=_training_shape(h, w))
    return x, {"name": ", ".join(map(str, paths))[:1000], "sha256": hashlib.sha256(x.tobytes()).hexdigest()}


def _column(table: dict, column: str | None, name: str) -> list:
    if column is None and len(table) != 1:
        raise DataError(f"{name}: {len(table)} columns ({', '.join(list(table)[:5])}); pick one with --column")
    if column is not None and column not in table:
        raise DataError(f"{name}: no column {column!r} (columns: {', '.join(list(table)[:10])})")
    return table[column if column is not None else next(iter(table))]


def _csv_table(p: Path, name: str) -> dict[str, list[str]]:
    """A CSV's columns by their header names (stripped; blank lines skipped); ``DataError`` for a first line of
    numbers (no header: the first value would be taken for a name), names that repeat, or a row of another length."""
    with open(p, newline="", encoding="utf-8-sig") as f:  # an Excel CSV starts with a byte order mark
        reader = csv.reader(f)
        rows = [(reader.line_num, r) for r in reader if len(r) > 1 or "".join(r).strip()]  # (line, fields)
    header = [h.strip() for h in rows.pop(0)[1]] if rows else []
    if not header:
        raise DataError(f"{name}: empty; a CSV needs a header line naming its columns, then the values")
    if any(_is_number(h) for h in header):
        raise DataError(f"{name}: the first line holds numbers ({', '.join(header[:3])}), not column names; add a "
                        f"header line, or pass the values one a line in a .txt file")
    if len(set(header)) != len(header):
        raise DataError(f"{name}: column names repeat ({', '.join(sorted({h for h in header if header.count(h) > 1}))})")
    if bad := next(((i, r) for i, r in rows if len(r) != len(header)), None):
        raise DataError(f"{name}: line {bad[0]} has {len(bad[1])} fields, the header {len(header)}")
    return {h: [r[i] for _, r in rows] for i, h in enumerate(header)}


def _one_a_line(text: str, name: str) -> list[str]:
    """The values of a text file of one value a line (blank lines skipped); ``DataError`` for a line holding more."""
    rows = [line.split() for line in text.splitlines()]
    if bad := next((i for i, r in enumerate(rows, 1) if len(r) > 1), None):
        raise DataError(f"{name}: line {bad} holds {len(rows[bad - 1])} values; a text file of values holds one a "
                        f"line - for a table, pass a CSV with a header line and pick the column with --column")
    return [r[0] for r in rows if r]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_values(path: str | os.PathLike, column: str | None = None) -> np.ndarray:
    """Real values from a 1-D .npy, a CSV column (``column``: its header name), a Parquet column or
    a text file of one value a line, as float64 [N] (``checked_values``); ``DataError`` (one line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: {'a folder, not a file' if p.is_dir() else 'no such file'}; pass one file of values")
    suffix = p.suffix.lower()
    if column is not None and suffix not in (".csv", ".parquet"):
        raise DataError(f"{path}: --column picks a column of a CSV or Parquet file; this file has no named "
                        f"columns - drop --column")
    try:
        if suffix == ".npy":
            raw = np.load(p, allow_pickle=False)
        elif suffix == ".parquet":
            pq = require("pyarrow.parquet", "distributed", "reading Parquet")
            raw = _column(pq.read_table(p).to_pydict(), column, str(path))
        elif suffix == ".csv":
            raw = _column(_csv_table(p, str(path)), column, str(path))
        else:
            raw = _one_a_line(p.read_text(encoding="utf-8-sig"), str(path))
        values = as_real(raw, str(path))
    except (ValueError, TypeError, UnicodeDecodeError, OSError, EOFError) as e:  # EOFError: an empty .npy
        raise DataError(f"{path}: not a list of numbers ({str(e).splitlines()[0][:80]})") from None
    return checked_values(values, str(path))


def as_real(values, name: str) -> np.ndarray:
    """``values`` (numbers or their text) as float64, never cast silently: ``DataError`` (one line) for
    complex values or another dtype that is not real numbers; ``ValueError`` / ``TypeError`` for text."""
    array = np.asarray(values)
    if array.dtype.kind not in "iufUSO":  # bool too: True/False are not measurements
        what = f"complex values (dtype {array.dtype})" if array.dtype.kind == "c" else f"dtype {array.dtype}"
        raise DataError(f"{name}: {what}; the flow fits real numbers, pass those")
    return array.astype(np.float64, copy=False)  # read_values' array, then checked_values: one conversion


def checked_values(values, name: str) -> np.ndarray:
    """``values`` as float64 [N], or ``DataError``: not 1-D real numbers, NaN/Inf, beyond ``MAX_VALUE``, fewer
    than ``MIN_VALUES``, all equal, or spread by less than ``RESOLVED`` float32 steps (1e8 + N(0, 1))."""
    try:
        values = as_real(values, name)
    except (ValueError, TypeError):
        raise DataError(f"{name}: not a list of numbers") from None
    if values.ndim != 1:
        raise DataError(f"{name}: shape {values.shape}; the flow fits 1-D values, pass an array [N]")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"{name}: {bad.size} values are NaN or infinite (first at row {int(bad[0])}); drop them")
    if (top := float(np.abs(values).max(initial=0.0))) > MAX_VALUE:
        raise DataError(f"{name}: values up to {top:.3g}; the exported flow computes in float32 (range 3.4e38): "
                        f"rescale them to at most {MAX_VALUE:g}")
    if values.size < MIN_VALUES:
        raise DataError(f"{name}: {values.size} values; the flow needs at least {MIN_VALUES}")
    if not values.std() > 0:
        raise DataError(f"{name}: all {values.size} values are equal; the flow needs values that vary")
    step = float(np.spacing(np.float32(top)))  # float32's resolution at the largest value
    if not values.std() >= RESOLVED * step:
        raise DataError(f"{name}: values spread by {values.std():.3g} (std) around {values.mean():.6g}, where "
                        f"float32 (the exported flow's precision) resolves only steps of {step:.3g}; subtract an "
                        f"offset or rescale first")
    return values


def as_images(x, name: str = "images", image_shape=None) -> np.ndarray:
    """Greyscale images ([N, H, W], [N, 1, H, W] or [N, H, W, 1]; uint8 or float in [0, 1]; of ``image_shape``
    (H, W) if given, then [N, H*W] too, as ``AnomalyScorer`` reads them) as float32 [N, 1, H, W] in [0, 1];
    one-line ``DataError`` / ``InputError`` otherwise."""
    source = inputs.ArraySource(x, name, image_shape=image_shape)
    return to_float32(source.array, name, image_shape=_training_shape(*source.image_shape))
