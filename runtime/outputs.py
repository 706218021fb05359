"""Writing score results: CSV, JSON, NPY or Parquet (chosen by the extension), atomically, or
rows to standard output (CSV or JSON lines, for ``-o -``).

Every format holds one row per image with the columns ``COLUMNS``: ``index`` (the image's
position in its input, from 0), ``score`` (float32, the mean squared reconstruction error),
``normalized_score`` (``min(score / (2 * threshold), 1)``, ``aeflow.metrics.normalized_scores``),
``predicted_anomaly`` (``score > threshold``), ``label_anomaly`` (the input's own label; empty,
null or -1 where unknown) and ``source`` (the input; for a folder of PNGs the image's own file).
JSON wraps the rows with the threshold and provider used; NPY is a structured array; Parquet
(pyarrow) has index int64, score and normalized_score float32, predicted_anomaly bool,
label_anomaly bool (null where unknown), source string (dictionary-encoded), and the JSON context
in the schema metadata under the key ``aeflow``.
"""

from __future__ import annotations

import csv
import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from aeflow.errors import OutputError, UsageError
from aeflow.files import atomic_path, check_target, describe_os_error, printable_name
from aeflow.metrics import normalized_scores
from aeflow.optional import require

FORMATS = (".csv", ".json", ".npy", ".parquet")
COLUMNS = ("index", "score", "normalized_score", "predicted_anomaly", "label_anomaly", "source")


@dataclass
class ScoredInput:
    """The results for one input: its ``name``, scores float32 [n], the ``threshold`` they were
    judged against, the input's own labels (bool [n], True = anomaly) or None, and ``files``
    (a PNG folder's file per row) or None (every row is ``name``)."""

    name: str
    scores: np.ndarray
    threshold: float
    labels: np.ndarray | None = None
    files: list[str] | None = None

    @property
    def sources(self) -> list[str]:
        """The ``source`` of each row, str [n]."""
        return self.files if self.files is not None else [self.name] * len(self.scores)

    @property
    def flags(self) -> np.ndarray:
        """The predictions, bool [n]: score > threshold."""
        return self.scores > self.threshold

    @property
    def normalized(self) -> np.ndarray:
        """float32 [n] in [0, 1], the threshold at 0.5 (``aeflow.metrics.normalized_scores``)."""
        return normalized_scores(self.scores, self.threshold)

    def __post_init__(self):
        # every format is UTF-8 text or holds Unicode: stray bytes of a file name are escaped
        self.name = printable_name(self.name)
        if self.files is not None:
            if len(self.files) != len(self.scores):
                raise ValueError(f"{len(self.files)} file names for {len(self.scores)} scores")
            self.files = [printable_name(f) for f in self.files]


def check_output_path(path: str | os.PathLike, force: bool = False, inputs=(), artifacts=()) -> Path:
    """Check before any work that ``path`` can be written: a known extension (else
    ``UsageError``), pyarrow for .parquet, and ``aeflow.files.check_target`` (not one of
    ``inputs`` or in the ``artifacts`` folders, an existing writable parent, no existing file
    unless ``force``). Returns it as a Path."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"--output {path}: unknown format {path.suffix or '(no extension)'!r}; "
                         f"end the name in {', '.join(FORMATS)}")
    if path.suffix.lower() == ".parquet":
        require("pyarrow.parquet", "distributed", "writing Parquet")  # a missing pyarrow is said before any work
    return check_target(path, "file", force=force, inputs=inputs, artifacts=artifacts)


def columns(results: list[ScoredInput], first_index: int = 0) -> dict[str, np.ndarray]:
    """Every row's fields by ``COLUMNS`` (but ``source``): index int64 (each result's rows from
    ``first_index``), score and normalized_score float32, predicted_anomaly bool, label_anomaly
    int8 (1 anomaly, 0 normal, -1 unknown)."""
    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)

    n = [len(r.scores) for r in results]
    return {"index": cat([np.arange(first_index, first_index + k) for k in n], np.int64),
            "score": cat([r.scores for r in results], np.float32),
            "normalized_score": cat([r.normalized for r in results], np.float32),
            "predicted_anomaly": cat([r.flags for r in results], bool),
            "label_anomaly": cat([np.full(k, -1) if r.labels is None else r.labels.astype(int)
                                  for k, r in zip(n, results)], np.int8)}


def results_array(results: list[ScoredInput]) -> np.ndarray:
    """All rows as a structured array with the fields of ``COLUMNS`` (``columns``; source str)."""
    sources = [s for r in results for s in r.sources]
    cols = dict(columns(results), source=np.array(sources, dtype=f"<U{max([1] + [len(s) for s in sources])}"))
    out = np.empty(len(sources), dtype=[(k, v.dtype) for k, v in cols.items()])
    for k, v in cols.items():
        out[k] = v
    return out


def results_table(results: list[ScoredInput], context: dict | None = None, first_index: int = 0):
    """The rows of ``results`` as a pyarrow Table with the columns of ``COLUMNS`` (types in the
    module docstring); ``first_index``: see ``columns`` (a result that is a chunk of an input)."""
    pa = require("pyarrow", "distributed", "writing Parquet")
    cols = columns(results, first_index)
    if any(r.files is not None for r in results):
        source = pa.array([s for r in results for s in r.sources], pa.string()).dictionary_encode()
    else:
        n = [len(r.scores) for r in results]
        source = pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(results), dtype=np.int32), n)),
                                                pa.array([r.name for r in results], pa.string()))
    label = cols.pop("label_anomaly")
    table = pa.table({**{k: pa.array(v) for k, v in cols.items()},
                      "label_anomaly": pa.array(label == 1, pa.bool_(), mask=label < 0), "source": source})
    return table.replace_schema_metadata({"aeflow": json.dumps(context or {}, default=str)})


def iter_rows(results: list[ScoredInput]):
    """Yield one dict per image with the keys of ``COLUMNS``: index int, score float (9
    significant digits, which round-trip a float32), normalized_score float (4 decimals),
    predicted_anomaly bool, label_anomaly bool or None, source str."""
    cols = {k: v.tolist() for k, v in columns(results).items()}
    for i, source in enumerate(s for r in results for s in r.sources):
        label = cols["label_anomaly"][i]
        yield {"index": cols["index"][i], "score": float(f"{cols['score'][i]:.9g}"),
               "normalized_score": round(cols["normalized_score"][i], 4),
               "predicted_anomaly": cols["predicted_anomaly"][i], "label_anomaly": None if label < 0 else bool(label),
               "source": source}


def write_csv_rows(stream: TextIO, results: list[ScoredInput]) -> None:
    """Write a header (``COLUMNS``) and one CSV row per image to a text stream: booleans as
    true/false, an unknown label as an empty field, scores with 9 significant digits."""
    def text(v) -> str:
        return "" if v is None else ("true" if v else "false") if isinstance(v, bool) else f"{v:.9g}" \
            if isinstance(v, float) else str(v)

    w = csv.writer(stream, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in iter_rows(results):
        w.writerow([text(row[c]) for c in COLUMNS])


def write_json_lines(stream: TextIO, results: list[ScoredInput]) -> None:
    """Write one JSON object per line and image (keys ``COLUMNS``; an unknown label is null)."""
    for row in iter_rows(results):
        stream.write(json.dumps(row) + "\n")


def write_stdout(results: list[ScoredInput], as_json: bool = False) -> None:
    """``-o -``: the rows to standard output as CSV (``write_csv_rows``) or JSON lines, flushed.
    ``OutputError`` (one line) where stdout is closed, full or a pipe whose reader quit."""
    import sys

    try:
        if sys.stdout is None:
            raise OSError(errno.EBADF, "it is closed")
        (write_json_lines if as_json else write_csv_rows)(sys.stdout, results)
        sys.stdout.flush()
    except OSError as e:
        reason = "the reader quit" if isinstance(e, BrokenPipeError) else describe_os_error(e)
        raise OutputError(f"cannot write to standard output ({reason})") from None


def write_results(path: str | os.PathLike, results: list[ScoredInput], context: dict | None = None,
                  force: bool = False) -> Path:
    """Write ``results`` to ``path`` in the format its extension names, atomically (the file is
    complete or absent, also after Ctrl-C or a full disk; ``aeflow.files.atomic_path``).
    ``context`` (threshold, provider, ...) goes into JSON and Parquet. Without ``force`` a file
    that appeared at ``path`` meanwhile is never replaced. Check first with ``check_output_path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--output {path}: unknown format {suffix!r}; end the name in {', '.join(FORMATS)}")
    with atomic_path(path, replace=force, what="--output") as tmp:  # OSError -> OutputError there
        if suffix == ".parquet":
            pq = require("pyarrow.parquet", "distributed", "writing Parquet")
            pq.write_table(results_table(results, context), tmp)
            return path
        with open(tmp, "wb" if suffix == ".npy" else "w", **({} if suffix == ".npy" else
                                                             {"newline": "", "encoding": "utf-8"})) as f:
            if suffix == ".csv":
                write_csv_rows(f, results)
            elif suffix == ".json":
                f.write(json.dumps(dict(context or {}, rows=list(iter_rows(results)))) + "\n")
            else:  # np.save on a name would append ".npy"
                np.save(f, results_array(results), allow_pickle=False)
    return path
