"""Writing score results: CSV, JSON, NPY or Parquet (chosen by the extension), atomically, or
rows to a stream (CSV or JSON lines, for ``-o -``).

Every format holds one row per image with the columns (``COLUMNS``):

- ``index``: the image's position in its input, from 0;
- ``score``: the raw anomaly score (float32, mean squared reconstruction error);
- ``normalized_score``: the score in [0, 1] with the threshold at 0.5,
  ``min(score / (2 * threshold), 1)`` (``aeflow.metrics.normalized_scores``);
- ``predicted_anomaly``: aeflow's decision, ``score > threshold``;
- ``label_anomaly``: the input's own label (a .npz file's ``is_anomaly``), empty / null / -1
  where the input has no labels;
- ``source``: the input the image came from; for a folder of PNGs, the image's own file
  (``folder/name.png``), so a flagged row leads straight to its file.

JSON wraps the rows with the threshold and provider used; NPY is a structured array; Parquet
(pyarrow: ``pip install 'aeflow[distributed]'``) has the columns index int64, score float32,
normalized_score float32, predicted_anomaly bool, label_anomaly bool (null where unknown), source
string (dictionary-encoded), and the JSON context (threshold, provider, ...) in the schema
metadata under the key ``aeflow``.
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

FORMATS = (".csv", ".json", ".npy", ".parquet")


COLUMNS = ("index", "score", "normalized_score", "predicted_anomaly", "label_anomaly", "source")


@dataclass
class ScoredInput:
    """The results for one input: its ``name``, scores float32 [n], the ``threshold`` they were
    judged against, and the input's own labels (bool [n], True = anomaly) or None."""

    name: str
    scores: np.ndarray
    threshold: float
    labels: np.ndarray | None = None
    files: list[str] | None = None  # per-image sources (a PNG folder's files), else every row is ``name``

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
        from aeflow.runtime.parquet import pyarrow

        pyarrow()  # a missing pyarrow is said before any work
    return check_target(path, "file", force=force, inputs=inputs, artifacts=artifacts)


def results_array(results: list[ScoredInput]) -> np.ndarray:
    """All rows as a structured array with the fields of ``COLUMNS``: index int64, score float32,
    normalized_score float32, predicted_anomaly bool, label_anomaly int8 (1 anomaly, 0 normal,
    -1 unknown), source str."""
    width = max([1] + [len(s) for r in results for s in ([r.name] if r.files is None else r.files)])
    dtype = np.dtype([("index", "<i8"), ("score", "<f4"), ("normalized_score", "<f4"), ("predicted_anomaly", "?"),
                      ("label_anomaly", "i1"), ("source", f"<U{width}")])
    out = np.empty(sum(len(r.scores) for r in results), dtype=dtype)
    at = 0
    for r in results:
        n = len(r.scores)
        rows = out[at:at + n]
        rows["index"] = np.arange(n)
        rows["score"] = r.scores
        rows["normalized_score"] = r.normalized
        rows["predicted_anomaly"] = r.flags
        rows["label_anomaly"] = -1 if r.labels is None else r.labels.astype(np.int8)
        rows["source"] = r.name if r.files is None else r.files
        at += n
    return out


def results_table(results: list[ScoredInput], context: dict | None = None, first_index: int = 0):
    """The rows of ``results`` as a pyarrow Table with the columns of ``COLUMNS`` (types in the
    module docstring); ``first_index``: the index of each result's first row (when a result is a
    chunk of a larger input)."""
    from aeflow.runtime.parquet import pyarrow

    pa, _ = pyarrow()
    n = [len(r.scores) for r in results]

    def joined(values, dtype):
        return np.concatenate(values) if values else np.empty(0, dtype)

    labels = [np.zeros(k, bool) if r.labels is None else r.labels for k, r in zip(n, results)]
    unknown = [np.full(k, r.labels is None) for k, r in zip(n, results)]
    if any(r.files is not None for r in results):
        source = pa.array([s for r in results for s in r.sources], pa.string()).dictionary_encode()
    else:
        source = pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(results), dtype=np.int32), n)),
                                                pa.array([r.name for r in results], pa.string()))
    table = pa.table({
        "index": pa.array(joined([np.arange(first_index, first_index + k, dtype=np.int64) for k in n], np.int64)),
        "score": pa.array(joined([r.scores for r in results], np.float32), pa.float32()),
        "normalized_score": pa.array(joined([r.normalized for r in results], np.float32), pa.float32()),
        "predicted_anomaly": pa.array(joined([r.flags for r in results], bool), pa.bool_()),
        "label_anomaly": pa.array(joined(labels, bool), pa.bool_(), mask=joined(unknown, bool)),
        "source": source,
    })
    return table.replace_schema_metadata({"aeflow": json.dumps(context or {}, default=str)})


def iter_rows(results: list[ScoredInput]):
    """Yield one dict per image with the keys of ``COLUMNS``: index int, score float (9
    significant digits, which round-trip a float32), normalized_score float (4 decimals),
    predicted_anomaly bool, label_anomaly bool or None, source str."""
    for r in results:
        scores = [float(f"{v:.9g}") for v in r.scores.tolist()]
        normalized = [round(v, 4) for v in r.normalized.tolist()]
        flags = r.flags.tolist()
        labels = r.labels.tolist() if r.labels is not None else [None] * len(scores)
        for i, (s, z, f, lab, src) in enumerate(zip(scores, normalized, flags, labels, r.sources)):
            yield {"index": i, "score": s, "normalized_score": z, "predicted_anomaly": f,
                   "label_anomaly": lab, "source": src}


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.9g}"
    return str(v)


def write_csv_rows(stream: TextIO, results: list[ScoredInput]) -> None:
    """Write a header (``COLUMNS``) and one CSV row per image to a text stream: booleans as
    true/false, an unknown label as an empty field."""
    w = csv.writer(stream, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in iter_rows(results):
        w.writerow([_csv_value(row[c]) for c in COLUMNS])


def write_json_lines(stream: TextIO, results: list[ScoredInput]) -> None:
    """Write one JSON object per line and image (keys ``COLUMNS``; an unknown label is null)."""
    for row in iter_rows(results):
        stream.write(json.dumps(row) + "\n")


def write_stdout(results: list[ScoredInput], as_json: bool = False) -> None:
    """``-o -``: the rows to standard output as CSV (``write_csv_rows``) or JSON lines, flushed.
    ``OutputError`` (one line) where stdout is closed, full or a pipe whose reader quit."""
    import sys

    stream = sys.stdout
    try:
        if stream is None:
            raise OSError(errno.EBADF, "it is closed")
        (write_json_lines if as_json else write_csv_rows)(stream, results)
        stream.flush()
    except OSError as e:
        reason = "the reader quit" if isinstance(e, BrokenPipeError) else describe_os_error(e)
        raise OutputError(f"cannot write to standard output ({reason})") from None


def _write_csv(tmp: Path, results: list[ScoredInput]) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        write_csv_rows(f, results)


def _write_json(tmp: Path, results: list[ScoredInput], context: dict) -> None:
    tmp.write_text(json.dumps(dict(context, rows=list(iter_rows(results)))) + "\n", encoding="utf-8")


def write_results(path: str | os.PathLike, results: list[ScoredInput], context: dict | None = None,
                  force: bool = False) -> Path:
    """Write ``results`` to ``path`` in the format its extension names, atomically (the file is
    complete or absent, also after Ctrl-C or a full disk). ``context`` (threshold, provider, ...)
    goes into the JSON document. Without ``force`` a file that appeared at ``path`` meanwhile is
    never replaced (``OutputError``). Check the path first with ``check_output_path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--output {path}: unknown format {suffix!r}; end the name in {', '.join(FORMATS)}")
    with atomic_path(path, replace=force, what="--output") as tmp:  # OSError -> OutputError there
        if suffix == ".csv":
            _write_csv(tmp, results)
        elif suffix == ".json":
            _write_json(tmp, results, context or {})
        elif suffix == ".parquet":
            from aeflow.runtime.parquet import pyarrow

            pyarrow()[1].write_table(results_table(results, context), tmp)
        else:
            with open(tmp, "wb") as f:  # np.save on a name would append ".npy"
                np.save(f, results_array(results), allow_pickle=False)
    return path
