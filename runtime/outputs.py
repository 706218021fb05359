"""What ``aeflow score`` and ``aeflow.distributed`` report (``InputResult``) and write: one row per image
(``COLUMNS``) as CSV, JSON, NPY or Parquet (by extension, atomically) or on standard output (``-o -``)."""

import errno
import json
import os
import re
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from aeflow.errors import OutputError, UsageError
from aeflow.files import atomic_path, describe_os_error, printable_name
from aeflow.metrics import above_threshold, normalized_scores
from aeflow.optional import require
from aeflow.targets import check_target

FORMATS = (".csv", ".json", ".npy", ".parquet")
PART_NAME, PART = "part-{:05d}.parquet", re.compile(r"part-[0-9]{5,}\.parquet")  # a Dask dataset's parts, one per task
COLUMNS = ("index", "score", "normalized_score", "p_value", "predicted_anomaly", "label_anomaly", "source")


class InputResult:
    """One input's outcome: images, flagged, seconds, scores float32 [n] (when kept), labels bool [n]
    or None and, where labelled, normal images, false alarms, anomalies, misses."""

    def __init__(self, name: str, images: int, flagged: int = 0, seconds: float = 0.0,
                 labels: np.ndarray | None = None, scores: np.ndarray | None = None, normal: int = 0,
                 false_alarms: int = 0, anomalous: int = 0, misses: int = 0):
        self.name = printable_name(name)  # the report is UTF-8: stray bytes of a file name are escaped
        self.images, self.flagged, self.seconds, self.labels, self.scores = images, flagged, seconds, labels, scores
        self.normal, self.false_alarms, self.anomalous, self.misses = normal, false_alarms, anomalous, misses

    def add(self, start: int, scores: np.ndarray, threshold: float, seconds: float) -> None:
        """Account for the float32 scores of images [start, start + len(scores)), flagged above ``threshold``."""
        flags = above_threshold(scores, threshold)
        self.flagged += int(flags.sum())
        self.seconds += seconds
        if self.scores is not None:
            self.scores[start:start + len(scores)] = scores
        if self.labels is not None:
            lab = self.labels[start:start + len(scores)]
            self.normal += int((~lab).sum())
            self.false_alarms += int((flags & ~lab).sum())
            self.anomalous += int(lab.sum())
            self.misses += int((~flags & lab).sum())

    def row(self) -> dict:
        """This input's row of the report (``aeflow score``'s table and its --json "inputs")."""
        n, normal, anomalous = self.images, self.normal, self.anomalous
        return {"name": self.name, "images": n, "flagged": self.flagged,
                "share": self.flagged / n if n else float("nan"), "seconds": self.seconds,
                "images_per_s": n / self.seconds if self.seconds > 0 else None,
                "type_i": {"rate": self.false_alarms / normal, "n": normal, "flagged": self.false_alarms}
                if normal else None,
                "type_ii": {"rate": self.misses / anomalous, "n": anomalous, "missed": self.misses}
                if anomalous else None}


def total(results: list[InputResult], seconds: float | None = None) -> InputResult:
    """The sum of ``results`` named "total"; ``seconds``: the wall time (default: theirs added)."""
    sums = {c: sum(getattr(r, c) for r in results)
            for c in ("images", "flagged", "seconds", "normal", "false_alarms", "anomalous", "misses")}
    return InputResult("total", **(sums if seconds is None else sums | {"seconds": seconds}))


def output_context(scorer) -> dict:
    """What the outputs' metadata records of ``scorer`` (an ``AnomalyScorer``), the artifacts folder absolute."""
    return {"artifacts": os.path.abspath(scorer.directory), "graph": scorer.graph.name,
            "precision": scorer.precision, "provider": scorer.provider, "batch_size": scorer.batch_size,
            "threshold": scorer.threshold}


class ScoredInput:
    """One input's rows: scores float32 [n], labels bool [n] (True = anomaly) or None, ``files`` (a PNG folder's
    file per row; None: every row is ``name``), conformal ``p_values`` float64 [n] or None (unknown)."""

    def __init__(self, name: str, scores: np.ndarray, threshold: float, labels: np.ndarray | None = None,
                 files: list[str] | None = None, p_values: np.ndarray | None = None):
        # every format is UTF-8 text or Unicode: stray bytes of a name are escaped
        self.name, self.files = printable_name(name), None if files is None else [printable_name(f) for f in files]
        self.scores, self.threshold, self.labels, self.p_values = scores, threshold, labels, p_values

    @property
    def sources(self) -> list[str]:
        return self.files if self.files is not None else [self.name] * len(self.scores)


def check_output_path(path: str | os.PathLike, force: bool = False, inputs=(), artifacts=(), dask: bool = False,
                      what: str = "--output") -> str:
    """"file" or "folder": the one decision, before any work, on where scoring writes (a file of a known extension;
    with ``dask`` a .parquet file or a dataset folder: ``DIR/``, a folder, a name without extension), else
    ``UsageError``; then ``aeflow.targets.check_target``; a dataset folder is no link and holds only our parts."""
    text, path = str(path), Path(path)
    kind = "folder" if dask and (text.endswith(("/", os.sep)) or os.path.isdir(path) or not path.suffix) else "file"
    if dask or path.suffix.lower() == ".parquet":
        require("pyarrow.parquet", "distributed", "writing Parquet")  # a missing pyarrow is said before any work
    if kind == "file" and path.suffix.lower() not in ((".parquet",) if dask else FORMATS):
        raise UsageError(f"{what} {text}: distributed scoring writes Parquet: name a .parquet file or a folder (DIR/)"
                         if dask else f"{what} {path}: unknown format {path.suffix or '(no extension)'!r}; "
                         f"end the name in {', '.join(FORMATS)}")
    check_target(text, kind, what=what, force=force, inputs=inputs, artifacts=artifacts)
    if kind == "file":
        return kind
    if Path.cwd().resolve().is_relative_to(path.resolve()):  # a rename would move it away
        raise UsageError(f"{what} {text}: the current folder (or one holding it) cannot become the dataset; "
                         f"name a new folder, e.g. {what} scores/")
    if path.is_symlink():  # publishing would replace the link, not the folder it names
        raise UsageError(f"{what} {text}: a link to {os.readlink(path)}; pass that folder itself")
    # --force replaces a dataset of ours, never a folder of the user's files (a part-named folder or link is not ours)
    others = sorted(p.name for p in path.iterdir() if not (PART.fullmatch(p.name) and p.is_file())) \
        if path.is_dir() else []
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise UsageError(f"{what} {text}: the folder holds more than an earlier run's Parquet parts ({shown}); "
                         f"choose a new or empty folder")
    return kind


def columns(results: list[ScoredInput], first_index: int = 0) -> dict[str, np.ndarray]:
    """The ``COLUMNS`` but source: index int64 (from ``first_index``), score and normalized_score float32,
    p_value float64 (NaN unknown), predicted_anomaly bool, label_anomaly int8 (1 anomaly, 0 normal, -1 unknown)."""
    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)

    n = [len(r.scores) for r in results]
    return {"index": cat([np.arange(first_index, first_index + k) for k in n], np.int64),
            "score": cat([r.scores for r in results], np.float32),
            "normalized_score": cat([normalized_scores(r.scores, r.threshold) for r in results], np.float32),
            "p_value": cat([np.full(k, np.nan) if r.p_values is None else r.p_values for k, r in zip(n, results)],
                           np.float64),
            "predicted_anomaly": cat([above_threshold(r.scores, r.threshold) for r in results], bool),
            "label_anomaly": cat([np.full(k, -1) if r.labels is None else r.labels.astype(int)
                                  for k, r in zip(n, results)], np.int8)}


def results_table(results: list[ScoredInput], context: dict | None = None, first_index: int = 0):
    """The rows (from ``first_index``) as a pyarrow Table: label_anomaly bool with nulls, source a dictionary."""
    pa = require("pyarrow", "distributed", "writing Parquet")
    cols = columns(results, first_index)
    if any(r.files is not None for r in results):
        source = pa.array([s for r in results for s in r.sources], pa.string()).dictionary_encode()
    else:
        n = [len(r.scores) for r in results]
        source = pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(results), dtype=np.int32), n)),
                                                pa.array([r.name for r in results], pa.string()))
    label, p = cols.pop("label_anomaly"), cols["p_value"]
    cols["p_value"] = pa.array(p, pa.float64(), mask=np.isnan(p))
    table = pa.table({**{k: pa.array(v) for k, v in cols.items()},
                      "label_anomaly": pa.array(label == 1, pa.bool_(), mask=label < 0), "source": source})
    return table.replace_schema_metadata({"aeflow": json.dumps(context or {}, default=str)})


def iter_rows(results: list[ScoredInput]):
    """One dict per image (keys ``COLUMNS``): score exact (the float32 as the float64 the threshold is compared
    with, so a reader deciding ``score > threshold`` again agrees with ``predicted_anomaly``), normalized_score
    to 4 decimals, p_value float (17 digits: exact) or None, label_anomaly bool or None."""
    cols = {k: v.tolist() for k, v in columns(results).items()}
    for i, source in enumerate(s for r in results for s in r.sources):
        p, label = cols["p_value"][i], cols["label_anomaly"][i]
        yield {"index": cols["index"][i], "score": cols["score"][i],
               "normalized_score": round(cols["normalized_score"][i], 4), "p_value": None if np.isnan(p) else p,
               "predicted_anomaly": cols["predicted_anomaly"][i], "label_anomaly": None if label < 0 else bool(label),
               "source": source}


def write_csv_rows(stream: TextIO, results: list[ScoredInput]) -> None:
    """A header and one CSV row per image: booleans true/false, an unknown label empty."""
    import csv

    def text(v) -> str:
        return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)  # floats: exact

    w = csv.writer(stream, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows([text(row[c]) for c in COLUMNS] for row in iter_rows(results))


def write_stdout(results: list[ScoredInput], as_json: bool = False) -> None:
    """``-o -``: the rows on stdout as CSV or JSON lines; ``OutputError`` if it is closed, full or a broken pipe."""
    try:
        if sys.stdout is None:
            raise OSError(errno.EBADF, "it is closed")
        if as_json:
            sys.stdout.writelines(json.dumps(row) + "\n" for row in iter_rows(results))
        else:
            write_csv_rows(sys.stdout, results)
        sys.stdout.flush()
    except OSError as e:
        raise OutputError(f"cannot write to standard output ({describe_os_error(e)})") from None


def write_results(path: str | os.PathLike, results: list[ScoredInput], context: dict | None = None,
                  force: bool = False) -> Path:
    """``results`` to ``path`` (checked by ``check_output_path``) in its extension's format, atomically: complete
    or absent; without ``force`` a file that appeared meanwhile stays."""
    path, suffix = Path(path), Path(path).suffix.lower()
    with atomic_path(path, replace=force, what="--output") as tmp:  # OSError -> OutputError there
        if suffix == ".parquet":
            pq = require("pyarrow.parquet", "distributed", "writing Parquet")
            pq.write_table(results_table(results, context), tmp)
        elif suffix == ".npy":  # a structured array with the fields of COLUMNS (source str)
            cols = dict(columns(results), source=np.array([s for r in results for s in r.sources], dtype=str))
            with open(tmp, "wb") as f:  # np.save on a name would append ".npy"
                np.save(f, np.rec.fromarrays(list(cols.values()), names=list(cols)), allow_pickle=False)
        else:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                if suffix == ".csv":
                    write_csv_rows(f, results)
                else:
                    f.write(json.dumps(dict(context or {}, rows=list(iter_rows(results)))) + "\n")
    return path
