"""The user's training data: images (the runtime's readers, size from the data) and real values
(1-D .npy, CSV or Parquet column, text of one value a line); every problem is one ``DataError`` line."""

import array
import collections
import contextlib
import csv
import hashlib
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aeflow.checks import shorten
from aeflow.errors import DataError, ScaleWarning
from aeflow.optional import require
from aeflow.runtime import inputs
from aeflow.runtime.arrays import scale_problem, to_float32
from aeflow.runtime.contract import MAX_PIXELS, MAX_SIDE, MIN_SIDE

MIN_VALUES, MAX_VALUE, RESOLVED = 20, 1e30, 100  # |values| well inside float32's 3.4e38; std spans >= 100 float32 steps
MIN_SPREAD = 1e-30  # the middle half's spread: the flow's 1 / sigma and dz/dx stay well inside float32's range
FEW_SET_SCALE = 200  # std / middle half's spread beyond which the flow (trained at the std's scale) missed the bulk


def _training_shape(h: int, w: int) -> tuple[int, int]:
    if h * w > MAX_PIXELS:  # the readers refused sides outside MIN_SIDE..MAX_SIDE, training's limit too
        raise DataError(f"images of {h}x{w} pixels; aeflow trains on sides of {MIN_SIDE} to {MAX_SIDE:,} "
                        f"pixels (at most {MAX_PIXELS:,} in all)")
    return h, w


def _warn_scale(x: np.ndarray, dtype: np.dtype, name: str) -> None:
    """Scoring's ``ScaleWarning`` for training images ``x`` (float32 [N, 1, H, W] from ``dtype``) that read as blank."""
    if problem := scale_problem(x, dtype, name):
        warnings.warn(problem, ScaleWarning, stacklevel=4)  # the caller of fit (or of read_images)


def read_images(paths: list[str | os.PathLike]) -> tuple[np.ndarray, dict]:
    """Every image in ``paths`` (any format ``aeflow score`` reads) as float32 [N, 1, H, W] in [0, 1], and ``{"name",
    "sha256" (of the pixels)}``; ``DataError`` for images labelled anomalous, ``ScaleWarning`` for blank ones."""
    images, labels, (h, w) = inputs.read_images(paths, image_shape=None)
    if labels is not None and labels.any():
        raise DataError(f"{int(labels.sum())} of the images are labelled anomalous (is_anomaly); "
                        f"train on normal images only - drop them first")
    x = to_float32(images, "images", image_shape=_training_shape(h, w))
    _warn_scale(x, images.dtype, shorten(", ".join(map(str, paths)), 200))
    return x, {"name": ", ".join(map(str, paths))[:1000], "sha256": hashlib.sha256(x.tobytes()).hexdigest()}


def _pick(names: list[str], column: str | None, name: str) -> int:
    """The index of ``column`` (None: the only column) among a table's column ``names``; empty names may
    repeat (a CSV's trailing commas), the picked one may not."""
    counts = collections.Counter(names)
    if column is None and len(names) != 1:
        if repeats := sorted(h for h, n in counts.items() if h and n > 1):
            raise DataError(f"{name}: column names repeat ({', '.join(repeats)})")
        raise DataError(f"{name}: {len(names)} columns ({', '.join(names[:5])}{', ...' * (len(names) > 5)}); pick "
                        f"one with --column")
    if column is not None and column not in counts:
        raise DataError(f"{name}: no column {column!r} (columns: {', '.join(names[:10])}{', ...' * (len(names) > 10)})")
    if counts[column] > 1:
        raise DataError(f"{name}: column names repeat ({column})")
    return names.index(column) if column is not None else 0


def _parquet_column(p: Path, column: str | None, name: str):
    """The picked column of a Parquet file (only that one read) as a numpy array; ``DataError`` for a null."""
    pq = require("pyarrow.parquet", "distributed", "reading Parquet")
    names = pq.read_schema(p).names
    picked = names[_pick(names, column, name)]
    values = pq.read_table(p, columns=[picked]).column(0)
    if values.null_count:
        row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{name}: row {row}: no value in column {picked!r}; fill it in or drop the row")
    return values.to_numpy()


def _csv_cells(p: Path, column: str | None, name: str) -> Iterator[tuple[int, str]]:
    """(line, text) of the picked column's values, empty rows skipped; ``DataError`` for a first line of numbers
    (no header), a row of another length or an empty value."""
    with open(p, newline="", encoding="utf-8-sig") as f:  # an Excel CSV starts with a byte order mark
        reader = csv.reader(f)
        header = [h.strip() for h in next((r for r in reader if "".join(r).strip()), [])]
        if not header:
            raise DataError(f"{name}: empty; a CSV needs a header line naming its columns, then the values")
        with contextlib.suppress(ValueError):  # all numbers, one finite (NaN or Infinity alone may name columns)
            if any(math.isfinite(v) for v in [float(h) for h in header]):
                raise DataError(f"{name}: the first line holds numbers ({', '.join(header[:3])}), not column "
                                f"names; add a header line, or pass the values one a line in a .txt file")
        i, width = _pick(header, column, name), len(header)
        for row in reader:
            if len(row) == width and row[i].strip():
                yield reader.line_num, row[i]
            elif "".join(row).strip() or row == [""]:  # [""]: a one-column CSV's explicit empty value
                if len(row) != width:
                    raise DataError(f"{name}: line {reader.line_num} has {len(row)} fields, the header {width}")
                raise DataError(f"{name}: line {reader.line_num}: no value in column {header[i]!r}; fill it in "
                                f"or drop the row")


def _text_cells(p: Path, column: None, name: str) -> Iterator[tuple[int, str]]:
    """(line, text) of each value in a text file of one value a line (blanks and '#' comments skipped)."""
    with open(p, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            fields = text.partition("#")[0].split()
            if len(fields) == 1:
                yield line, fields[0]
            elif fields:
                raise DataError(f"{name}: line {line} holds {len(fields)} values; a text file of values holds one "
                                f"a line - for a table, pass a CSV with a header line and pick the column with "
                                f"--column")


def _converted(cells: Iterator[tuple[int, str]], name: str) -> np.ndarray:
    """float64 [N] of the (line, text) ``cells``; ``DataError`` naming the line of one that is not a finite number."""
    values, first = array.array("d"), None
    for line, text in cells:
        try:
            values.append(float(text))
        except ValueError:
            raise DataError(f"{name}: line {line} holds {shorten(repr(text))}, not a number; fix or drop "
                            f"it") from None
        if first is None and not math.isfinite(values[-1]):
            first = line, text
    x = np.frombuffer(values, np.float64)
    if first is not None:
        line, text = first
        if text.strip().lstrip("+-")[:3].lower() not in ("nan", "inf"):
            raise DataError(f"{name}: line {line} holds {shorten(text)}, beyond float64's range; rescale the "
                            f"values to at most {MAX_VALUE:g}")
        raise DataError(f"{name}: {int((~np.isfinite(x)).sum())} values are NaN or infinite (first at line {line}); "
                        f"drop them")
    return x


def read_values(path: str | os.PathLike, column: str | None = None) -> np.ndarray:
    """Real values from a 1-D .npy, a CSV column (``column``: its header name), a Parquet column or
    a text file of one value a line, as float64 [N] (``checked_values``); ``DataError`` (one line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: {'a folder, not a file' if p.is_dir() else 'no such file'}; pass one file of values")
    suffix, name = p.suffix.lower(), str(path)
    suffix = suffix if suffix in (".csv", ".txt") else inputs.file_kind(p) or suffix  # else its first bytes may say
    if suffix in (".npz", ".png"):
        raise DataError(f"{path}: {'an .npz archive' if suffix == '.npz' else 'a PNG image'}, not a list of values; "
                        f"save them as a 1-D .npy (np.save), a CSV column or a text file of one value a line")
    if column is not None and suffix not in (".csv", ".parquet"):
        raise DataError(f"{path}: --column picks a column of a CSV or Parquet file; this file has no named "
                        f"columns - drop --column")
    try:
        if suffix == ".npy":
            values = as_real(np.load(p, allow_pickle=False), name)
        elif suffix == ".parquet":
            values = as_real(_parquet_column(p, column, name), name)
        else:
            cells = _csv_cells if suffix == ".csv" else _text_cells
            values = _converted(cells(p, column, name), name)
    except (ValueError, TypeError, OSError, EOFError, csv.Error) as e:  # EOFError: an empty .npy
        raise DataError(f"{path}: not a list of numbers ({str(e).splitlines()[0][:80]})") from None
    return checked_values(values, name)


def as_real(values, name: str) -> np.ndarray:
    """``values`` as float64: ``DataError`` for complex or other non-real dtypes, ``ValueError`` for text."""
    array = np.asarray(values)
    if array.dtype.kind not in "iufUSO":  # bool too: True/False are not measurements
        what = f"complex values (dtype {array.dtype})" if array.dtype.kind == "c" else f"dtype {array.dtype}"
        raise DataError(f"{name}: {what}; the flow fits real numbers, pass those")
    return array.astype(np.float64, copy=False)  # read_values' array, then checked_values: one conversion


def checked_values(values, name: str) -> np.ndarray:
    """``values`` as float64 [N], or ``DataError`` where the flow cannot fit them in float32 (each check says why);
    a ``ScaleWarning`` where a few far values set the scale (std over ``FEW_SET_SCALE`` times the middle half's)."""
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
    middle = float(np.subtract(*np.percentile(np.unique(values), [75, 25])))  # outliers and repeats cannot set it
    if not middle >= MIN_SPREAD:
        raise DataError(f"{name}: the middle half of the values spans only {middle:.3g}; the exported flow computes in "
                        f"float32: rescale them to spread by at least {MIN_SPREAD:g}")
    if not middle >= RESOLVED * step:
        raise DataError(f"{name}: the middle half of the values spans {middle:.3g} but they reach {top:.3g}, where "
                        f"float32 (the exported flow's precision) resolves only steps of {step:.3g}; drop or clip "
                        f"the outliers, or log-transform the values")
    if (std := float(values.std())) > FEW_SET_SCALE * middle:
        warnings.warn(f"{name}: std {std:.3g} is {std / middle:.0f} times the middle half's spread ({middle:.3g}): a "
                      f"few values far from the rest set the scale the flow trains at, and it may miss the rest; "
                      f"drop or clip the outliers, or log-transform the values", ScaleWarning, stacklevel=2)
    return values


def as_images(x, name: str = "images", image_shape=None, training: bool = False) -> np.ndarray:
    """Greyscale images as ``AnomalyScorer`` reads them (of ``image_shape`` if given) as float32 [N, 1, H, W] in
    [0, 1]; ``training``: a ``ScaleWarning`` for images that read as blank."""
    source = inputs.ArraySource(x, name, image_shape=image_shape)
    images = to_float32(source.array, name, image_shape=_training_shape(*source.image_shape))
    if training:
        _warn_scale(images, source.array.dtype, name)
    return images
