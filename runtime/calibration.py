"""Calibration: the anomaly threshold set from the user's own normal images, written into
threshold.json through the artifact contract (``aeflow.runtime.contract``).

Two rules: ``k``: ``mean + k * std`` of the scores (ddof 1, float64,
``aeflow.metrics.threshold_from_scores``, as export sets it with k = 3); ``false_alarm_rate`` P:
the r-th smallest score, r = n + 1 - floor(P (n + 1)) (``threshold_for_false_alarm_rate``), whose
false-alarm rate on new normal images is at most P (split-conformal; needs n >= ``min_n_for_rate``).
The record states the achieved rate (flagged / n), its exact Clopper-Pearson interval (also a
distribution-free interval for the long-run rate) and a prediction interval for the false alarms
among the next n normal images. ``write_calibration``, the one writer of a calibrated
threshold.json, keeps every field export wrote and replaces ``threshold`` (``int8.threshold``),
adding the ``calibration`` record, which the contract validates and seals.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aeflow import __version__
from aeflow.checks import CONFIDENCE, check_rule
from aeflow.errors import ArtifactError, UsageError
from aeflow.files import check_target, locked, same_file, sha256_file, staged_folder
from aeflow.metrics import (clopper_pearson, false_alarm_prediction, min_n_for_rate, threshold_for_false_alarm_rate,
                            threshold_from_scores)
from aeflow.runtime import contract
from aeflow.runtime.inputs import ImageSource

# the artifact files a calibrated copy of a folder needs beside its new threshold.json
COPIED = (contract.AE_FILE, contract.INT8_FILE, contract.GOLDEN_FILE, contract.FLOW_JSON, contract.FLOW_FILE,
          contract.SAMPLER_FILE, contract.AE_CHECKPOINT, contract.FLOW_CHECKPOINT, "demo.npz", "ae_loss.png",
          "flow_loss.png", "flow_data.png", "flow_density.png", "flow_map.png")


@dataclass(frozen=True)
class Calibration:
    """A threshold set on normal images: ``threshold`` and threshold.json's ``calibration`` record
    (``record``: rule, its parameters, n, flagged, achieved rate and interval, data, date,
    previous threshold, versions)."""

    threshold: float
    record: dict


def calibrate_scores(scores: np.ndarray, data: list[dict], previous_threshold: float, k: float | None = None,
                     false_alarm_rate: float | None = None, confidence: float = CONFIDENCE) -> Calibration:
    """The threshold for the normal images' ``scores`` (float [n]) by rule ``k`` or
    ``false_alarm_rate`` (see the module; k = 3 when neither is given), with its record.
    ``data``: what the scores came from (``data_entry``; their n add up to n);
    ``previous_threshold``: the threshold in force before. ``UsageError`` (one line) when n is
    too small for the rule, or the threshold would not be positive."""
    k, rate = check_rule(k, false_alarm_rate, confidence)
    s = np.asarray(scores, dtype=np.float64).ravel()
    n = int(s.size)
    if not np.all(np.isfinite(s)):
        raise UsageError("the scores hold NaN or Inf")
    value, record = _rule(s, k, rate)
    if not value > 0:
        raise UsageError(f"the calibrated threshold would be {value!r}; a threshold must be positive - "
                         f"are the images blank?")
    flagged = int(np.sum(s > value))
    lower, upper = clopper_pearson(flagged, n, confidence)
    low_count, high_count = false_alarm_prediction(flagged, n, n, confidence)
    record.update(
        n=n, flagged=flagged, achieved_false_alarm_rate=flagged / n,
        interval={"method": "Clopper-Pearson (exact binomial; distribution-free for new normal images)",
                  "confidence": float(confidence), "lower": lower, "upper": upper},
        prediction={"method": "Beta-Binomial order-statistic bound (distribution-free)", "images": n,
                    "confidence": float(confidence), "lower": low_count, "upper": high_count},
        data=data, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        previous_threshold=float(previous_threshold),
        versions={"aeflow": __version__, "numpy": np.__version__, "onnxruntime": _ort_version()},
    )
    return Calibration(float(value), record)


def _rule(s: np.ndarray, k: float | None, rate: float | None) -> tuple[float, dict]:
    """The threshold for the float64 scores ``s`` by rule ``k`` or ``rate``, and the rule's part of
    the record; ``UsageError`` for too few scores."""
    n = int(s.size)
    if rate is not None:
        if n < min_n_for_rate(rate):
            raise UsageError(f"a false-alarm rate of {rate:g} needs at least {min_n_for_rate(rate):,} normal images "
                             f"(the threshold is the ceil((1 - rate) (n + 1))-th smallest score), got {n:,}; "
                             f"pass more images or a larger rate")
        q = threshold_for_false_alarm_rate(s, rate)
        return q.value, {"rule": "false-alarm rate", "false_alarm_rate": rate, "rank": q.rank}
    if n < 2:
        raise UsageError(f"mean + k std needs at least 2 normal images, got {n}")
    th = threshold_from_scores(s, k)
    return th.value, {"rule": "mean + k std", "k": th.k, "mean": th.mean, "std": th.std, "ddof": 1}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


# ---------------------------------------------------------------- what the scores came from

def data_entry(name: str, kind: str, sha256: str, n: int) -> dict:
    """One entry of ``calibration.data``: ``kind`` "file" (sha256 of the file, as ``sha256sum``
    prints it), "folder" (sha256 of the lines ``"<sha256>  <name>\\n"`` of the PNG files scored,
    sorted by name, as ``cd DIR && sha256sum *.png | LC_ALL=C sort -k2`` prints them) or "array"
    (sha256 of the images' bytes in C order, dtype as given)."""
    return {"name": str(name)[:1000], "kind": kind, "sha256": sha256, "n": int(n)}


def path_entry(path: str | os.PathLike, n: int, name: str | None = None, files=None) -> dict:
    """``data_entry`` for an input file, or a folder of which the ``files`` (paths) were scored
    (default: its regular files, hidden ones excluded), of ``n`` images."""
    p = Path(path)
    if p.is_dir():
        files = files if files is not None else [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
        listing = "".join(f"{sha256_file(f)}  {Path(f).name}\n" for f in sorted(files, key=lambda f: os.fsencode(Path(f).name)))
        return data_entry(name or str(path), "folder", hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest(), n)
    return data_entry(name or str(path), "file", sha256_file(p), n)


def array_entry(x, name: str = "array") -> dict:
    """``data_entry`` for images given as an array, or an ``ImageSource`` (its batches' bytes)."""
    h = hashlib.sha256()
    if isinstance(x, ImageSource):
        n = x.n
        for batch in x.batches(4096):
            h.update(np.ascontiguousarray(batch).tobytes())
    else:
        a = np.ascontiguousarray(np.asarray(x))
        n = int(a.shape[0]) if a.ndim else 1
        h.update(a.tobytes())
    return data_entry(name, "array", h.hexdigest(), n)


# ---------------------------------------------------------------- writing threshold.json

def calibration_target(directory: str | os.PathLike, out: str | os.PathLike | None = None, force: bool = False,
                       inputs=(), cli: bool = False) -> Path | None:
    """Before any work, where a calibration of ``directory`` may go (``aeflow.files.check_target``):
    None for threshold.json in ``directory`` itself (``out`` None or that folder; never the
    bundled one), else ``out``, a new or empty folder (anything with ``force``) that is not one of
    ``inputs`` nor inside or around ``directory``. One-line ``UsageError`` / ``OutputError``
    naming the CLI's options where ``cli``."""
    directory = Path(directory)
    if out is None or (Path(out).is_dir() and same_file(out, directory)):
        what = ("--output" if cli else "out") if out is not None else ("--artifacts" if cli else "artifacts")
        check_target(directory / contract.THRESHOLD_JSON, what=what, force=True,
                     inputs=inputs, hint="pass -o OUTDIR, another folder, for a calibrated copy" if cli else "pass out=DIR for a copy")
        return None
    return check_target(out, "folder", what="--output" if cli else "out", force=force, inputs=inputs,
                        artifacts=[directory])


def write_calibration(directory: str | os.PathLike, calibrations: dict[str, Calibration],
                      out: str | os.PathLike | None = None) -> Path:
    """Write threshold.json with the calibrated thresholds (``calibrations``: graph -> Calibration,
    graph "ae" for ae.onnx, "int8" for ae.int8.onnx; their ``previous_threshold`` is set to the
    one replaced), through the contract's validator, atomically; check first with
    ``calibration_target``. ``out`` None: threshold.json in ``directory`` is replaced in one step,
    under a lock on the folder (``aeflow.files.locked``), so that two calibrations at once follow
    one another and the second records the first's threshold as previous. Else ``out`` receives
    copies of the artifact files (``COPIED``) and the new threshold.json, published together
    (``aeflow.files.staged_folder``), and ``directory`` is left as it was. Returns the path of
    the new threshold.json.

    The old threshold.json must pass its content_sha256 check even where scoring ran with
    verify=False: the new file is sealed again, and must not bless an edited one."""
    directory = Path(directory)
    with locked(directory):
        doc = copy.deepcopy(contract.read_threshold(directory, verify=True))
        for which, cal in calibrations.items():
            entry = contract.entry_of(doc, which)
            if entry is None:
                raise ArtifactError(f"no {contract.GRAPHS[which].file} entry in {directory / contract.THRESHOLD_JSON} "
                                    f"to calibrate")
            cal.record["previous_threshold"] = float(entry["threshold"])
            entry["threshold"] = cal.threshold
            entry["calibration"] = cal.record
        if out is None:
            contract.write_metadata(directory / contract.THRESHOLD_JSON, doc)
            return directory / contract.THRESHOLD_JSON
        with staged_folder(out, last=(contract.THRESHOLD_JSON,), what="out") as tmp:
            for name in COPIED:
                if (directory / name).is_file():
                    shutil.copyfile(directory / name, tmp / name)  # copies: editing one never edits the other
            contract.write_metadata(tmp / contract.THRESHOLD_JSON, doc)
    return Path(out) / contract.THRESHOLD_JSON


def threshold_origin(entry: dict) -> str:
    """How the threshold of a checked threshold.json entry (the top level, or its "int8" entry)
    was set, in words: export's rule on its validation scores, or the calibration's."""
    cal = entry.get("calibration")
    if cal is None:
        return f"mean + {entry['k']:g} std of {entry['validation']['n']:,} validation scores, at export"
    rule = f"mean + {cal['k']:g} std" if cal["rule"] == "mean + k std" else f"false-alarm rate {cal['false_alarm_rate']:g}"
    return f"calibrated {cal['date'][:10]}: {rule} of {cal['n']:,} normal images"
