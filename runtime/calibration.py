"""Calibration: the anomaly threshold set from the user's own normal images, and written into
threshold.json through the artifact contract (``aeflow.runtime.contract``).

An edge device never sees exactly the validation data; calibration scores a set of the device's
own normal images and sets the threshold by one of two rules:

* ``k`` ("mean + k std"): ``mean + k * std`` of the scores, std with ddof 1, computed in float64
  by ``aeflow.metrics.threshold_from_scores``, exactly as ``aeflow export`` sets it (k = 3);
* ``false_alarm_rate`` P ("false-alarm rate"): the empirical quantile, the r-th smallest score
  with r = n + 1 - floor(P (n + 1)) (``aeflow.metrics.threshold_for_false_alarm_rate``), whose
  false-alarm rate on new normal images is at most P (split-conformal); it needs
  n >= ``aeflow.metrics.min_n_for_rate(P)`` images.

Either way the record states the achieved rate on the calibration images (flagged / n), the
exact Clopper-Pearson interval for it (``aeflow.metrics.clopper_pearson``), which is also a
distribution-free interval for the long-run false-alarm rate on new normal images like them, and
a prediction interval for the number of false alarms among the next n normal images
(``aeflow.metrics.false_alarm_prediction``), which also covers the noise of a finite new set.

``write_calibration`` is the one place that writes a calibrated threshold.json: it keeps every
field export wrote (the graph's sha256, ``validation`` and ``k`` included), replaces
``threshold`` (and ``int8.threshold``) and adds the ``calibration`` record, which the contract
validates and seals (``artifacts.write_metadata``). The scorer loads it like any threshold.json.
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
from aeflow.errors import ArtifactError, InputError, OutputError, UsageError
from aeflow.files import check_output_folder, sha256_file, staged_folder
from aeflow.metrics import (clopper_pearson, false_alarm_prediction, min_n_for_rate, threshold_for_false_alarm_rate,
                            threshold_from_scores)
from aeflow.runtime import contract
from aeflow.runtime.artifacts import artifacts_dir, read_threshold, write_metadata
from aeflow.runtime.inputs import ImageSource

CONFIDENCE = 0.95
DEFAULT_K = 3.0
# the artifact files a calibrated copy of a folder needs beside its new threshold.json
COPIED = (contract.AE_FILE, contract.INT8_FILE, contract.GOLDEN_FILE, contract.FLOW_JSON, contract.FLOW_FILE,
          contract.SAMPLER_FILE, contract.AE_CHECKPOINT, contract.FLOW_CHECKPOINT)


@dataclass(frozen=True)
class Calibration:
    """A threshold set on normal images: ``threshold`` and threshold.json's ``calibration`` record
    (``record``: rule, its parameters, n, flagged, achieved rate and interval, data, date,
    previous threshold, versions)."""

    threshold: float
    record: dict

    @property
    def rate(self) -> float:
        """The achieved false-alarm rate on the calibration images (flagged / n)."""
        return self.record["achieved_false_alarm_rate"]

    @property
    def interval(self) -> tuple[float, float]:
        """The Clopper-Pearson interval (lower, upper) for the long-run false-alarm rate."""
        return self.record["interval"]["lower"], self.record["interval"]["upper"]

    @property
    def prediction(self) -> tuple[int, int]:
        """The prediction interval (lower, upper) for the false alarms among n new normal images."""
        return self.record["prediction"]["lower"], self.record["prediction"]["upper"]


def check_rule(k=None, false_alarm_rate=None, confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """The rule asked for, checked: ``(k, None)`` or ``(None, rate)``; ``k`` defaults to 3 when
    neither is given. ``UsageError`` for both, k outside (0, 100], a rate outside (0, 1), a
    confidence outside (0, 1)."""
    if k is not None and false_alarm_rate is not None:
        raise UsageError("pass k or false_alarm_rate, not both")
    if not (isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and 0 < confidence < 1):
        raise UsageError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    if false_alarm_rate is not None:
        if isinstance(false_alarm_rate, bool) or not isinstance(false_alarm_rate, (int, float, np.floating)) \
                or not 0 < false_alarm_rate < 1:
            raise UsageError(f"false_alarm_rate must lie strictly between 0 and 1, got {false_alarm_rate!r}")
        return None, float(false_alarm_rate)
    k = DEFAULT_K if k is None else k
    if isinstance(k, bool) or not isinstance(k, (int, float, np.floating)) or not 0 < k <= 100:
        raise UsageError(f"k must be a number in (0, 100], got {k!r}")
    return float(k), None


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
    record: dict = {}
    if rate is not None:
        if n < min_n_for_rate(rate):
            raise UsageError(f"a false-alarm rate of {rate:g} needs at least {min_n_for_rate(rate):,} normal images "
                             f"(the threshold is the ceil((1 - rate) (n + 1))-th smallest score), got {n:,}; "
                             f"pass more images or a larger rate")
        q = threshold_for_false_alarm_rate(s, rate)
        value = q.value
        record.update(rule="false-alarm rate", false_alarm_rate=rate, rank=q.rank)
    else:
        if n < 2:
            raise UsageError(f"mean + k std needs at least 2 normal images, got {n}")
        th = threshold_from_scores(s, k)
        value = th.value
        record.update(rule="mean + k std", k=th.k, mean=th.mean, std=th.std, ddof=1)
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


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


# ---------------------------------------------------------------- what the scores came from

def data_entry(name: str, kind: str, sha256: str, n: int) -> dict:
    """One entry of ``calibration.data``: ``kind`` "file" (sha256 of the file, as ``sha256sum``
    prints it), "folder" (sha256 of the lines ``"<sha256>  <name>\\n"`` of its files sorted by
    name, as ``cd DIR && sha256sum * | LC_ALL=C sort -k2`` prints them) or "array" (sha256 of the
    images' bytes in C order, dtype as given)."""
    return {"name": str(name)[:1000], "kind": kind, "sha256": sha256, "n": int(n)}


def path_entry(path: str | os.PathLike, n: int, name: str | None = None) -> dict:
    """``data_entry`` for an input file or folder of ``n`` images."""
    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.is_file()), key=lambda f: f.name.encode())
        listing = "".join(f"{sha256_file(f)}  {f.name}\n" for f in files)
        return data_entry(name or str(path), "folder", hashlib.sha256(listing.encode()).hexdigest(), n)
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

def check_out_dir(out: str | os.PathLike, force: bool = False, what: str = "out") -> Path:
    """Before any work: a folder for a calibrated copy of the artifacts must be new or empty
    (anything with ``force``), a folder, in a writable parent (``aeflow.files.check_output_folder``).
    ``OutputError`` otherwise."""
    return check_output_folder(out, what, empty=not force)


def _same_folder(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def write_calibration(directory: str | os.PathLike, calibrations: dict[str, Calibration],
                      out: str | os.PathLike | None = None) -> Path:
    """Write threshold.json with the calibrated thresholds (``calibrations``: graph -> Calibration,
    graph "ae" for ae.onnx, "int8" for ae.int8.onnx), through the contract's validator, atomically.

    ``out`` None (or ``directory`` itself): threshold.json in ``directory`` is replaced in one
    step. Else ``out`` receives a copy of the artifact files (hard links where the file system
    allows, else copies) and the new threshold.json, all published together
    (``aeflow.files.staged_folder``), and ``directory`` is left as it was; check ``out`` first with
    ``check_out_dir``. Returns the path of the new threshold.json.

    The old threshold.json must pass its content_sha256 check even where scoring ran with
    verify=False: the new file is sealed again, and must not bless an edited one."""
    directory = Path(directory)
    doc = read_threshold(directory, verify=True)
    for which, cal in calibrations.items():
        if doc.entry(which) is None:
            raise ArtifactError(f"no {contract.GRAPHS[which].file} entry in {directory / contract.THRESHOLD_JSON} "
                                f"to calibrate")
        doc = doc.calibrated(which, cal.threshold, copy.deepcopy(cal.record))
    if out is None or (Path(out).exists() and _same_folder(Path(out), directory)):
        write_metadata(directory / contract.THRESHOLD_JSON, doc)
        return directory / contract.THRESHOLD_JSON
    out = Path(out)
    try:
        with staged_folder(out, last=(contract.THRESHOLD_JSON,)) as tmp:
            for name in COPIED:
                if (directory / name).is_file():
                    try:
                        os.link(directory / name, tmp / name)
                    except OSError:
                        shutil.copy2(directory / name, tmp / name)
            write_metadata(tmp / contract.THRESHOLD_JSON, doc)
    except OSError as e:
        raise OutputError(f"out {out}: cannot write it ({e.strerror or e}); nothing was written") from None
    return out / contract.THRESHOLD_JSON


@dataclass
class CalibrationRun:
    """What ``calibrate_files`` did: the calibrations per graph ("ae", "int8" where it exists),
    the inputs' ``data`` entries, the threshold.json written, and the provider that scored."""

    calibrations: dict[str, Calibration]
    data: list[dict]
    written: Path
    provider: str


def calibrate_files(paths: list[str | os.PathLike], artifacts: str | os.PathLike | None = None,
                    out: str | os.PathLike | None = None, k: float | None = None,
                    false_alarm_rate: float | None = None, confidence: float = CONFIDENCE, device: str = "auto",
                    batch_size: int = 1024, verify: bool = True, on_batch=None) -> CalibrationRun:
    """Score the normal images in ``paths`` (anything ``aeflow.runtime.inputs.open_source``
    reads) with every graph of ``artifacts`` (ae.onnx, and ae.int8.onnx where threshold.json
    names it, each calibrated on its own scores), and write the calibrated threshold.json
    (``write_calibration``: into ``artifacts`` itself, or a copy of it in ``out``).
    ``on_batch(b)``: progress, called after each batch of b images."""
    import contextlib

    from aeflow.runtime.inputs import open_source
    from aeflow.runtime.scorer import AnomalyScorer

    check_rule(k, false_alarm_rate, confidence)
    if not paths:
        raise UsageError("no normal images given: pass the files or folders to calibrate on")
    directory = artifacts_dir(artifacts)
    graphs = ["ae"] + (["int8"] if read_threshold(directory, verify).int8 is not None else [])
    calibrations, provider = {}, ""
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_source(p)) for p in paths]
        for s in sources:
            if s.labels is not None and np.any(s.labels):
                # a labelled set with anomalies in it would drag the threshold up (silently)
                raise InputError(f"{s.name}: {int(np.sum(s.labels)):,} of its {s.n:,} images are labelled anomalous "
                                 f"(is_anomaly); calibrate on normal images only")
        data = [path_entry(p, s.n, s.name) for p, s in zip(paths, sources)]
        total = sum(s.n for s in sources)
        if false_alarm_rate is not None and total < min_n_for_rate(false_alarm_rate):
            # refused before any scoring
            calibrate_scores(np.zeros(total), data, 0.0, k, false_alarm_rate, confidence)
        for which in graphs:
            scorer = AnomalyScorer(directory, device, batch_size, "int8" if which == "int8" else "fp32", verify)
            provider = scorer.provider
            scores = np.concatenate([scorer.score_source(s, on_batch) for s in sources])
            calibrations[which] = calibrate_scores(scores, data, scorer.threshold, k, false_alarm_rate, confidence)
    written = write_calibration(directory, calibrations, out)
    return CalibrationRun(calibrations, data, written, provider)


def threshold_origin(entry: contract.ThresholdEntry) -> str:
    """How the threshold of a checked threshold.json entry (``ThresholdMeta.entry``: "ae" or
    "int8") was set, in words: export's rule on its validation scores, or the calibration's."""
    cal = entry.calibration
    if cal is None:
        return f"mean + {entry.k:g} std of {entry.validation.n:,} validation scores, at export"
    rule = f"mean + {cal['k']:g} std" if cal["rule"] == "mean + k std" else f"false-alarm rate {cal['false_alarm_rate']:g}"
    return f"calibrated {cal['date'][:10]}: {rule} of {cal['n']:,} normal images"
