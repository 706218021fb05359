"""Calibration: the threshold from normal images, ``k`` (mean + k std, ddof 1, as export) or
``false_alarm_rate`` P (the r-th smallest score, r = n + 1 - floor(P (n + 1)): at most P false alarms
on new normal images), recorded with exact Clopper-Pearson and prediction intervals in threshold.json."""

import copy
import hashlib
import io
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from aeflow import __version__
from aeflow.checks import CONFIDENCE, check_rule
from aeflow.errors import ArtifactError, OutputError, UsageError
from aeflow.files import forget_published, keep_copy, locked, same_file, sha256_file, staged_folder, write_atomic
from aeflow.metrics import (above_threshold, clopper_pearson, false_alarm_prediction, min_n_for_rate,
                            threshold_for_false_alarm_rate, threshold_from_scores)
from aeflow.runtime import contract
from aeflow.runtime.artifacts import load_json, read_threshold, write_metadata
from aeflow.runtime.inputs import ImageSource
from aeflow.runtime.jsoncheck import CALIBRATION_SCORES
from aeflow.targets import check_target

# the model's files: graphs, metadata and the files they bind (the scores last); a copy is not made beside another's
MODEL_FILES = (*(n for names in contract.MODEL_FILES.values() for n in names if n != contract.THRESHOLD_JSON),
               contract.GOLDEN_FILE, contract.AE_CHECKPOINT, contract.FLOW_CHECKPOINT, CALIBRATION_SCORES)
CARD, CARD_HEAD, CARD_SECTION = "MODEL_CARD.md", "# Model card\n\nWritten by `aeflow export`", "## Calibration"
COPIED = MODEL_FILES + (contract.DEMO_FILE, "ae_loss.png", "flow_loss.png", "flow_data.png", "flow_density.png",
                        "flow_map.png", CARD)


@dataclass(frozen=True)
class Calibration:
    """A threshold set on normal images, its ``calibration`` record, the scores it was set on (float32 [n]) and
    the sha256 of the graph that scored them (None: not known, not checked)."""

    threshold: float
    record: dict
    scores: np.ndarray | None = None
    graph: str | None = None


def calibrate_scores(scores: np.ndarray, data: list[dict], previous_threshold: float, k: float | None = None,
                     false_alarm_rate: float | None = None, confidence: float = CONFIDENCE,
                     graph: str | None = None) -> Calibration:
    """The threshold for normal images' ``scores`` (float [n]) by rule ``k`` or ``false_alarm_rate``, with its
    record (``data``: ``path_entry``/``array_entry`` dicts; ``graph``: the scoring graph's sha256); ``UsageError``
    for too few scores or a threshold <= 0."""
    k, rate = check_rule(k, false_alarm_rate, confidence)
    s = np.asarray(scores, dtype=np.float64).ravel()
    n = s.size
    if not np.all(np.isfinite(s)):
        raise UsageError("the scores hold NaN or Inf")
    value, record = _rule(s, k, rate)
    if not value > 0:
        raise UsageError(f"the calibrated threshold would be {value!r}; a threshold must be positive - "
                         f"are the images blank?")
    flagged = int(np.sum(above_threshold(s, value)))
    (lower, upper), (low_count, high_count) = clopper_pearson(flagged, n, confidence), \
        false_alarm_prediction(flagged, n, n, confidence)
    record.update(
        n=n, flagged=flagged, achieved_false_alarm_rate=flagged / n,
        interval={"method": "Clopper-Pearson (exact binomial; distribution-free for new normal images)",
                  "confidence": float(confidence), "lower": lower, "upper": upper},
        prediction={"method": "Beta-Binomial order-statistic bound (distribution-free)", "images": n,
                    "confidence": float(confidence), "lower": low_count, "upper": high_count},
        data=data, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        previous_threshold=float(previous_threshold),
        versions={"aeflow": __version__, "numpy": np.__version__, "onnxruntime": onnxruntime.__version__},
    )
    return Calibration(float(value), record, np.array(scores, dtype=np.float32).ravel(), graph)


def _rule(s: np.ndarray, k: float | None, rate: float | None) -> tuple[float, dict]:
    """The threshold of float64 scores ``s`` by rule ``k`` or ``rate``, and the rule's record."""
    n = int(s.size)
    if rate is not None:
        if n < min_n_for_rate(rate):
            raise UsageError(f"a false-alarm rate of {rate:g} needs at least {min_n_for_rate(rate):,} normal images "
                             f"(the threshold is the ceil((1 - rate) (n + 1))-th smallest score), got {n:,}; "
                             f"pass more images or a larger rate")
        value, rank = threshold_for_false_alarm_rate(s, rate)
        return value, {"rule": "false-alarm rate", "false_alarm_rate": rate, "rank": rank}
    if n < 2:
        raise UsageError(f"mean + k std needs at least 2 normal images, got {n}")
    th = threshold_from_scores(s, k)
    return th.value, {"rule": "mean + k std", "k": th.k, "mean": th.mean, "std": th.std, "ddof": 1}


def path_entry(path: str | os.PathLike, n: int, name: str | None = None, files=None) -> dict:
    """One entry of ``calibration.data``: a file (its ``sha256sum``) or a folder whose ``files`` were scored
    (default: its visible files; the sha256 of ``cd DIR && sha256sum *.png | LC_ALL=C sort -k2``)."""
    if (p := Path(path)).is_dir():
        files = files if files is not None else [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
        names = sorted(files, key=lambda f: os.fsencode(Path(f).name))
        listing = "".join(f"{sha256_file(f)}  {Path(f).name}\n" for f in names).encode("utf-8", "surrogateescape")
        kind, sha = "folder", hashlib.sha256(listing).hexdigest()
    else:
        kind, sha = "file", sha256_file(p)
    return {"name": str(name or path)[:1000], "kind": kind, "sha256": sha, "n": int(n)}


def array_entry(source: ImageSource, name: str = "array") -> dict:
    """One entry of ``calibration.data`` for images given as an array: the sha256 of their C-order bytes."""
    h = hashlib.sha256()
    for batch in source.batches(4096):
        h.update(np.ascontiguousarray(batch))
    return {"name": str(name)[:1000], "kind": "array", "sha256": h.hexdigest(), "n": int(source.n)}


def calibration_target(directory: str | os.PathLike, out: str | os.PathLike | None = None, force: bool = False,
                       inputs=(), cli: bool = False) -> Path | None:
    """Before any work (``aeflow.targets.check_target``): None for ``directory``'s own threshold.json
    (never the bundled one), else ``out``, a new or empty folder (anything with ``force`` but another model's
    files) clear of ``inputs`` and ``directory``; one-line errors naming the CLI's options where ``cli``."""
    directory, what = Path(directory), "--output" if cli else "out"
    if out is None or (os.path.isdir(out) and same_file(out, directory)):  # isdir: False for a name too long
        what = what if out is not None else ("--artifacts" if cli else "artifacts")
        hint = "pass -o OUTDIR, another folder, for a calibrated copy" if cli else "pass out=DIR for a copy"
        check_target(directory, "folder", what=what, force=True, inputs=inputs, hint=hint,  # every file it writes
                     names=(contract.THRESHOLD_JSON, CALIBRATION_SCORES, CARD))
        if os.path.lexists(path := directory / CALIBRATION_SCORES) and not bound_scores(directory):  # the user's
            raise OutputError(f"{path} exists and is not the calibration scores {contract.THRESHOLD_JSON} records; "
                              f"move it away, or {hint}")
        return None
    out = check_target(out, "folder", what=what, force=force, inputs=inputs, artifacts=[directory])
    check_target(out, "folder", what=what, force=True, inputs=inputs,  # each name it writes
                 names=(*COPIED, contract.THRESHOLD_JSON, CALIBRATION_SCORES))
    if stale := [n for n in MODEL_FILES[:-1] if os.path.lexists(out / n) and not (directory / n).is_file()]:
        raise UsageError(f"{what} {out} holds {', '.join(stale)}, another model's files that a calibrated copy of "
                         f"{directory} lacks and would leave inconsistent; choose a new folder")
    return out


def bound_scores(directory: Path) -> bool:
    """Whether ``directory``'s calibration_scores.npy is a regular file that its threshold.json binds (sha256); the
    record as written, unchecked: export asks this of an earlier export it replaces, whatever its state."""
    path = directory / CALIBRATION_SCORES
    if not path.is_file() or path.is_symlink():
        return False
    with locked(directory, shared=True):  # the pair as one calibration wrote it, not half of another's
        try:
            record = load_json(directory / contract.THRESHOLD_JSON).get("calibration")
        except ArtifactError:
            return False
        scores = record.get("scores") if isinstance(record, dict) else None
        return isinstance(scores, dict) and scores.get("sha256") == sha256_file(path)


def write_calibration(directory: str | os.PathLike, calibrations: dict[str, Calibration],
                      out: str | os.PathLike | None = None, force: bool = False,
                      what: str = "out") -> tuple[Path, contract.ThresholdMeta]:
    """Write threshold.json with ``calibrations`` ("ae"/"int8" -> Calibration) atomically, in ``directory`` under
    its lock (``out`` None) or into ``out`` with copies of ``COPIED``, published once ``directory``'s lock is let
    go (two copies made crosswise never wait on each other). Returns the path written and its document."""
    directory = Path(directory)
    if out is None:
        with locked(directory):
            doc, scores = _calibrated(directory, calibrations)
            _write_in_place(directory, doc, scores)
        return directory / contract.THRESHOLD_JSON, doc
    with staged_folder(out, last=(contract.THRESHOLD_JSON,), what=what, force=force) as tmp:
        with locked(directory, shared=True):  # read and copied as one state of the folder
            doc, scores = _calibrated(directory, calibrations)
            for name in COPIED:
                if (directory / name).is_file():
                    shutil.copyfile(directory / name, tmp / name)  # copies: editing one never edits the other
        for name, data in ((CALIBRATION_SCORES, scores), (CARD, _card(tmp / CARD, doc))):
            if data is not None:
                write_atomic(tmp / name, data, replace=True)
        write_metadata(tmp / contract.THRESHOLD_JSON, doc)
    return Path(out) / contract.THRESHOLD_JSON, doc


def _calibrated(directory: Path, calibrations: dict[str, Calibration]) -> tuple[contract.ThresholdMeta, bytes | None]:
    """``directory``'s threshold.json (verified: the new seal must not bless an edit) with ``calibrations`` set,
    and ae.onnx's calibration scores as .npy bytes (None when not calibrated here)."""
    doc, scores = read_threshold(directory, verify=True), None
    for which, cal in calibrations.items():
        entry = doc.entry(which)
        if entry is None:
            raise ArtifactError(f"no {contract.GRAPHS[which].file} entry in {directory / contract.THRESHOLD_JSON} "
                                f"to calibrate")
        if cal.graph is not None and cal.graph != entry.graph.sha256:  # read under the lock that export takes
            raise ArtifactError(f"{directory / contract.GRAPHS[which].file} changed after the images were scored "
                                f"(exported again meanwhile?); nothing written: calibrate again (in Python: with a "
                                f"new AnomalyScorer)")
        cal.record["previous_threshold"] = float(entry.threshold)
        if which == "ae" and cal.scores is not None:
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(cal.scores, dtype=np.float32), allow_pickle=False)
            scores = buf.getvalue()
            cal.record["scores"] = {"file": CALIBRATION_SCORES, "sha256": hashlib.sha256(scores).hexdigest(),
                                    "n": int(cal.scores.size)}
        doc = doc.calibrated(which, cal.threshold, copy.deepcopy(cal.record))
    return doc, scores


def _write_in_place(directory: Path, doc: contract.ThresholdMeta, scores: bytes | None) -> None:
    """The scores file (when ``scores``) and export's model card, then threshold.json; if any of it fails (a signal
    too) the old files come back, each in one rename of a copy kept beside it (nothing is published after a signal)."""
    writes = {directory / CALIBRATION_SCORES: scores, directory / CARD: _card(directory / CARD, doc)}
    kept, written = {}, []
    try:
        for path, data in ((p, d) for p, d in writes.items() if d is not None):
            if path.is_file():
                kept[path] = keep_copy(path)
            written.append(path)
            write_atomic(path, data, replace=True)
        write_metadata(directory / contract.THRESHOLD_JSON, doc)
    except BaseException:
        if _holds(directory / contract.THRESHOLD_JSON, doc):  # a signal just after it landed: the new set
            raise
        for path in written:
            if path in kept:
                os.replace(kept.pop(path), path)
            else:
                path.unlink(missing_ok=True)
            forget_published(path)
        raise
    finally:
        for copy_ in kept.values():
            copy_.unlink(missing_ok=True)


def _card(path: Path, doc: contract.ThresholdMeta) -> str | None:
    """Export's MODEL_CARD.md at ``path`` with a section on ``doc``'s calibrated thresholds (replacing an earlier
    one, before the limits); None where there is no card of export's (a user's own is left alone)."""
    try:
        card = path.read_text("utf-8") if path.is_file() and not path.is_symlink() else ""
    except (OSError, UnicodeDecodeError):
        return None
    if not card.startswith(CARD_HEAD):
        return None
    lines = [CARD_SECTION, "", "The threshold in force was set by `aeflow calibrate`; the detector's figures above "
             "are export's.", ""]
    for which in ("ae", "int8"):
        if (entry := doc.entry(which)) is not None and (cal := entry.calibration) is not None:
            names = ", ".join(_printable(d["name"]) for d in cal["data"][:3]) + ", ..." * (len(cal["data"]) > 3)
            lines.append(f"- **{contract.GRAPHS[which].file}**: threshold {entry.threshold:.6g}, "
                         f"{threshold_origin(entry)} ({names}); {cal['flagged']:,} of them above it "
                         f"({cal['achieved_false_alarm_rate']:.2%}; {cal['interval']['confidence']:.0%} interval "
                         f"{cal['interval']['lower']:.2%} - {cal['interval']['upper']:.2%})")
    if "scores" in (doc.calibration or {}):
        lines.append(f"- **p-values** compare with the {doc.calibration['n']:,} calibration scores "
                     f"({CALIBRATION_SCORES}), not the validation scores")
    old = card.split("\n")
    heads = [i for i, line in enumerate(old) if line.startswith("## ")]  # an earlier section: replaced up to the next
    start = next((i for i in heads if old[i] == CARD_SECTION), None)
    end = next((i for i in heads if i > start), len(old)) if start is not None else None
    if start is None:  # a first section goes before the limits (or last)
        start = end = next((i for i in heads if old[i].startswith("## Intended use")), len(old))
    return "\n".join(old[:start] + lines + [""] + old[end:]).rstrip("\n") + "\n"


def _printable(name: str) -> str:
    """``name`` on one line of Markdown: characters that are not printable written as Python escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _holds(path: Path, doc: contract.ThresholdMeta) -> bool:
    """Whether the file ``path`` is ``doc`` as written (its seal), e.g. published just before a signal."""
    try:
        return load_json(path).get("content_sha256") == doc.to_json()["content_sha256"]
    except ArtifactError:
        return False


def threshold_origin(entry: contract.ThresholdEntry) -> str:
    """How a threshold.json entry's threshold was set (``ThresholdMeta.entry``), in words."""
    cal = entry.calibration
    if cal is None:
        return f"mean + {entry.k:g} std of {entry.validation.n:,} validation scores, at export"
    rule = f"mean + {cal['k']:g} std" if cal["rule"] == "mean + k std" else f"false-alarm rate {cal['false_alarm_rate']:g}"
    return f"calibrated {cal['date'][:10]}: {rule} of {cal['n']:,} normal images"
