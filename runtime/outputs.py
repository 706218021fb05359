"""Writing score results: CSV, JSON or NPY (chosen by the extension), atomically.

Every format holds one row per image with the columns ``index`` (the image's position in its
input), ``score`` (float32), ``is_anomaly`` (score > threshold) and ``source`` (the input it came
from). JSON wraps the rows with the threshold and provider used; NPY is a structured array.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aeflow.errors import OutputError, UsageError
from aeflow.files import atomic_path, check_writable

FORMATS = (".csv", ".json", ".npy")


@dataclass
class ScoredInput:
    """The results for one input: its ``name``, scores float32 [n], flags bool [n]."""

    name: str
    scores: np.ndarray
    flags: np.ndarray


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Check before any work that ``path`` can be written: a known extension (else
    ``UsageError``), an existing writable parent folder, and no existing file unless ``force``
    (else ``OutputError``). Returns it as a Path."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"--output {path}: unknown format {path.suffix or '(no extension)'!r}; "
                         f"end the name in {', '.join(FORMATS)}")
    return check_writable(path, force)


def results_array(results: list[ScoredInput]) -> np.ndarray:
    """All rows as a structured array with fields index int64, score float32, is_anomaly bool,
    source str."""
    width = max([1] + [len(r.name) for r in results])
    dtype = np.dtype([("index", "<i8"), ("score", "<f4"), ("is_anomaly", "?"), ("source", f"<U{width}")])
    out = np.empty(sum(len(r.scores) for r in results), dtype=dtype)
    at = 0
    for r in results:
        n = len(r.scores)
        rows = out[at:at + n]
        rows["index"] = np.arange(n)
        rows["score"] = r.scores
        rows["is_anomaly"] = r.flags
        rows["source"] = r.name
        at += n
    return out


def _write_csv(tmp: Path, results: list[ScoredInput]) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "score", "is_anomaly", "source"])
        for r in results:
            # 9 significant digits round-trip a float32 exactly
            scores = [f"{v:.9g}" for v in r.scores.tolist()]
            flags = np.where(r.flags, "true", "false").tolist()
            w.writerows(zip(range(len(scores)), scores, flags, [r.name] * len(scores)))


def _write_json(tmp: Path, results: list[ScoredInput], context: dict) -> None:
    rows = [{"index": i, "score": float(f"{s:.9g}"), "is_anomaly": bool(a), "source": r.name}
            for r in results for i, (s, a) in enumerate(zip(r.scores.tolist(), r.flags.tolist()))]
    tmp.write_text(json.dumps(dict(context, rows=rows)) + "\n", encoding="utf-8")


def write_results(path: str | os.PathLike, results: list[ScoredInput], context: dict | None = None) -> Path:
    """Write ``results`` to ``path`` in the format its extension names, atomically (the file is
    complete or absent, also after Ctrl-C). ``context`` (threshold, provider, ...) goes into the
    JSON document. Check the path first with ``check_output_path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--output {path}: unknown format {suffix!r}; end the name in {', '.join(FORMATS)}")
    try:
        with atomic_path(path) as tmp:
            if suffix == ".csv":
                _write_csv(tmp, results)
            elif suffix == ".json":
                _write_json(tmp, results, context or {})
            else:
                with open(tmp, "wb") as f:  # np.save on a name would append ".npy"
                    np.save(f, results_array(results), allow_pickle=False)
    except OSError as e:
        raise OutputError(f"--output {path}: cannot write it ({e.strerror or e}); no output written") from None
    return path
