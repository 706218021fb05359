"""The artifact contract between ``aeflow export`` and the runtime: file names, graph signatures,
and threshold.json and flow.json as typed, frozen metadata (``ThresholdMeta``, ``FlowMeta``).

``from_json(doc, where)`` checks what the runtime reads and the consistency that protects results:
the ``content_sha256`` seal over every other field (an edited number fails), each graph's file,
sha256, opset and signature, threshold = mean + k std (or the calibration record that set it),
W = the sum of the weights, z_range = +-W/2, an ordered x bracket that maps onto the range, the
sampler entry's intervals and export check. ``to_json()`` gives the sealed document back, so what
export writes is what the runtime accepts. Every failure is one ``ArtifactError`` line naming the
file and the field. Loading and checking a folder: ``aeflow.runtime.artifacts``.

Images are H x W (``image_shape``, absent = 28 x 28); schema 1 (before golden outputs and
bindings) is refused with a line saying how to re-export.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from typing import NoReturn

import numpy as np

from aeflow.errors import ArtifactError
from aeflow.files import sha256_file
from aeflow.runtime.inversion import Components

SCHEMA_VERSION = 2
AE_FILE, INT8_FILE, FLOW_FILE, SAMPLER_FILE = "ae.onnx", "ae.int8.onnx", "flow.onnx", "flow_sampler.onnx"
THRESHOLD_JSON, FLOW_JSON, GOLDEN_FILE, DEMO_FILE = "threshold.json", "flow.json", "golden.npz", "demo.npz"
AE_CHECKPOINT, FLOW_CHECKPOINT = "ae.pt", "flow.pt"
MAX_JSON_BYTES = 1 << 20  # today's files are ~3 KB
FLOW_TARGET = "N(0, 1)"
GOLDEN_IMAGES, GOLDEN_POINTS = 64, 256
IMAGE_SHAPE, MIN_SIDE, MAX_PIXELS = (28, 28), 4, 4_194_304
MAX_COMPONENTS = 64
CALIBRATION_RULES = {"mean + k std": ("k", "mean", "std", "ddof"), "false-alarm rate": ("false_alarm_rate", "rank")}
SHA256 = "[0-9a-f]{64}"


def score_definition(image_shape: tuple[int, int] = IMAGE_SHAPE) -> str:
    """threshold.json's ``score``: the score's definition for images of ``image_shape``."""
    return f"mean over the {image_shape[0] * image_shape[1]} pixels of (image - reconstruction)^2, image float32 in [0, 1]"


# ---------------------------------------------------------------- graphs

@dataclass(frozen=True)
class GraphSpec:
    """A graph of the contract: its file, the JSON recording it, the key of its entry there (None:
    the top level), the export that makes it, and its golden arrays (inputs first)."""

    file: str
    metadata: str
    entry: str | None
    export_hint: str
    golden: tuple[str, ...]


GRAPHS = {"ae": GraphSpec(AE_FILE, THRESHOLD_JSON, None, "aeflow export", ("ae_images", "ae_reconstruction", "ae_score")),
          "int8": GraphSpec(INT8_FILE, THRESHOLD_JSON, "int8", "aeflow export --quantize int8",
                            ("ae_images", "int8_reconstruction", "int8_score")),
          "flow": GraphSpec(FLOW_FILE, FLOW_JSON, None, "aeflow export", ("flow_x", "flow_z", "flow_dz_dx", "flow_log_prob")),
          "sampler": GraphSpec(SAMPLER_FILE, FLOW_JSON, "sampler_graph", "aeflow export", ("sampler_z", "sampler_x"))}


def signature(which: str, image_shape: tuple[int, int] = IMAGE_SHAPE) -> dict:
    """Graph ``which``'s inputs and outputs, all float32: {"inputs": {name: dims}, "outputs": ...},
    "N" the dynamic batch; the autoencoders' images are [N, 1, H, W]."""
    if which in ("ae", "int8"):
        image = ["N", 1, *image_shape]
        return {"inputs": {"images": image}, "outputs": {"reconstruction": image, "score": ["N"]}}
    if which == "flow":
        return {"inputs": {"x": ["N"]}, "outputs": {"z": ["N"], "dz_dx": ["N"], "log_prob": ["N"]}}
    return {"inputs": {"z": ["N"]}, "outputs": {"x": ["N"]}}


# ---------------------------------------------------------------- checking JSON values

def _show(value) -> str:
    """A short, always printable rendering of a JSON value."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = json.dumps(value) if isinstance(value, (str, bool)) or value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Check:
    """Checks of the values of one JSON file; each failure is one ``ArtifactError`` naming the file
    (``where``) and the dotted field."""

    def __init__(self, where):
        self.where = where

    def fail(self, field: str, reason: str) -> NoReturn:
        raise ArtifactError(f"{self.where}: field '{field}' {reason}; re-export the artifacts")

    def obj(self, value, field: str, keys: tuple = (), optional: tuple = (), closed: bool = True) -> dict:
        """A JSON object holding ``keys``; with ``closed``, nothing beyond them and ``optional``."""
        if not isinstance(value, dict):
            self.fail(field, f"must be an object, found {_show(value)}")
        prefix = f"{field}." if field else ""
        for key in keys:
            if key not in value:
                self.fail(prefix + key, "is missing")
        extra = sorted(set(value) - set(keys) - set(optional)) if closed else []
        if extra:
            self.fail(prefix + extra[0][:40], "is not a field of this schema")
        return value

    def num(self, value, field: str, lo=None, hi=None, lo_open=False, integer=False):
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            self.fail(field, f"must be {kind}, found {_show(value)}")
        if isinstance(value, int) and value.bit_length() > 63:
            self.fail(field, f"is out of range, found {_show(value)}")
        if not math.isfinite(value):
            self.fail(field, f"must be finite, found {_show(value)}")
        if lo is not None and (value <= lo if lo_open else value < lo):
            self.fail(field, f"must be {'>' if lo_open else '>='} {lo:g}, found {_show(value)}")
        if hi is not None and value > hi:
            self.fail(field, f"must be <= {hi:g}, found {_show(value)}")
        return value

    def count(self, value, field: str, lo: int = 0) -> int:
        return self.num(value, field, lo, 10**12, integer=True)

    def text(self, value, field: str, pattern: str | None = None, max_len: int = 1000) -> str:
        if not isinstance(value, str):
            self.fail(field, f"must be a string, found {_show(value)}")
        if len(value) > max_len or (pattern and not re.fullmatch(pattern, value)):
            self.fail(field, f"is not a valid value, found {_show(value)}")
        return value

    def same(self, value, field: str, want) -> None:
        if type(value) is not type(want) or value != want:
            self.fail(field, f"must be {_show(want) if not isinstance(want, dict) else json.dumps(want)}, "
                             f"found {_show(value)}")

    def numbers(self, value, field: str, n: tuple[int, int], **bounds) -> tuple:
        if not isinstance(value, list):
            self.fail(field, f"must be an array, found {_show(value)}")
        if not n[0] <= len(value) <= n[1]:
            self.fail(field, f"must have {n[0] if n[0] == n[1] else f'{n[0]} to {n[1]}'} items, found {len(value)}")
        return tuple(self.num(v, f"{field}[{i}]", **bounds) for i, v in enumerate(value))

    def table(self, value, field: str, item) -> dict:
        """A JSON object of at most 100 names (at most 100 characters) -> ``item(value, field)``."""
        self.obj(value, field, closed=False)
        if len(value) > 100 or any(len(k) > 100 for k in value):
            self.fail(field, "has too many or too long names")
        return {k: item(v, f"{field}.{k}") for k, v in value.items()}


def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def _canonical(doc) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_sha256(doc: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``doc`` without ``content_sha256``."""
    return hashlib.sha256(_canonical({k: v for k, v in doc.items() if k != "content_sha256"}).encode()).hexdigest()


def seal(doc: dict) -> dict:
    """``doc`` with ``content_sha256`` set to the hash of its other fields."""
    return {k: v for k, v in doc.items() if k != "content_sha256"} | {"content_sha256": content_sha256(doc)}


def _check_envelope(c: _Check, doc, verify: bool) -> dict:
    """The schema version and (when ``verify``) the seal of a whole document."""
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        if version == 1 and not isinstance(version, bool):
            raise ArtifactError(f"{c.where}: schema_version 1 was written by an older aeflow (no golden outputs, "
                                f"metadata not bound to the graphs); re-export: aeflow export -o DIR, which reads "
                                f"DIR/ae.pt and DIR/flow.pt")
        raise ArtifactError(f"{c.where}: unknown schema_version {_show(version)} (this aeflow reads {SCHEMA_VERSION}); "
                            f"upgrade aeflow or re-export")
    c.text(doc.get("content_sha256"), "content_sha256", SHA256)
    if verify:
        try:
            same = doc["content_sha256"] == content_sha256(doc)
        except (TypeError, ValueError):  # NaN or a non-JSON object handed in through the API
            same = False
        if not same:
            raise ArtifactError(f"{c.where}: contents do not match its content_sha256; the file was edited after "
                                f"export - re-export, or pass verify=False to load it anyway")
    return doc


# ---------------------------------------------------------------- the pieces of both files

@dataclass(frozen=True)
class Graph:
    """A graph's entry: which graph (a key of ``GRAPHS``), its sha256, opset and signature."""

    which: str
    sha256: str
    opset: int
    signature: dict

    @classmethod
    def of_file(cls, which: str, path, opset: int, image_shape: tuple[int, int] = IMAGE_SHAPE) -> "Graph":
        return cls(which, sha256_file(path), int(opset), signature(which, image_shape))

    @classmethod
    def from_json(cls, c: _Check, doc: dict, prefix: str, which: str, image_shape=IMAGE_SHAPE) -> "Graph":
        sig = signature(which, image_shape)
        c.same(doc["onnx_file"], prefix + "onnx_file", GRAPHS[which].file)
        for key, want in sig.items():
            if doc[key] != want:
                c.fail(prefix + key, f"must be the graph's signature {json.dumps(want)}")
        return cls(which, c.text(doc["sha256"], prefix + "sha256", SHA256),
                   c.num(doc["opset"], prefix + "opset", 7, 100, integer=True), sig)

    def to_json(self) -> dict:
        return {"onnx_file": GRAPHS[self.which].file, "sha256": self.sha256, "opset": self.opset,
                **self.signature}


GRAPH_KEYS = ("onnx_file", "sha256", "opset", "inputs", "outputs")


def graph_entry(which: str, path, opset: int, image_shape: tuple[int, int] = IMAGE_SHAPE) -> dict:
    """The JSON entry of graph ``which`` written at ``path`` (file name, sha256, opset, signature)."""
    return Graph.of_file(which, path, opset, image_shape).to_json()


@dataclass(frozen=True)
class Binding:
    """A file the JSON binds by its sha256: golden.npz, or the checkpoint the graphs came from."""

    file: str
    sha256: str

    @classmethod
    def from_json(cls, c: _Check, value, field: str, pattern: str) -> "Binding":
        c.obj(value, field, ("file", "sha256"))
        return cls(c.text(value["file"], f"{field}.file", pattern, 100), c.text(value["sha256"], f"{field}.sha256", SHA256))

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256}


def _bindings(c: _Check, doc: dict) -> dict:
    return {"golden": Binding.from_json(c, doc["golden"], "golden", re.escape(GOLDEN_FILE)),
            "checkpoint": Binding.from_json(c, doc["checkpoint"], "checkpoint", r"[A-Za-z0-9_.-]+\.pt")
            if "checkpoint" in doc else None,
            "versions": c.table(doc["versions"], "versions", lambda v, f: c.text(v, f, max_len=100))}


def _rate(c: _Check):
    return lambda v, f: c.num(v, f, 0.0, 1.0)



# ---------------------------------------------------------------- threshold.json

def _calibration(c: _Check, cal, field: str, threshold: float) -> dict:
    """The record ``aeflow.runtime.calibration`` writes when it sets ``threshold``, checked against
    itself and the threshold (kept as the dict it is)."""
    rules = {k for keys in CALIBRATION_RULES.values() for k in keys}
    c.obj(cal, field, ("rule", "n", "flagged", "achieved_false_alarm_rate", "interval", "prediction", "data", "date",
                       "previous_threshold", "versions"), tuple(rules))
    rule, f = cal["rule"], field + "."
    if rule not in CALIBRATION_RULES:
        c.fail(f + "rule", f"has an unexpected value, found {_show(rule)}")
    for key in CALIBRATION_RULES[rule]:
        if key not in cal:
            c.fail(f + key, f"is missing (rule {rule!r})")
    for key in sorted((rules - set(CALIBRATION_RULES[rule])) & set(cal)):
        c.fail(f + key, f"does not belong to rule {rule!r}")
    n, flagged = c.count(cal["n"], f + "n", 1), c.count(cal["flagged"], f + "flagged")
    rate = c.num(cal["achieved_false_alarm_rate"], f + "achieved_false_alarm_rate", 0.0, 1.0)
    if rule == "mean + k std":
        k, mean = c.num(cal["k"], f + "k", 0.0, 100.0, lo_open=True), c.num(cal["mean"], f + "mean", 0.0)
        std = c.num(cal["std"], f + "std", 0.0)
        c.same(cal["ddof"], f + "ddof", 1)
        if not _close(threshold, mean + k * std):
            c.fail(field, f"threshold {threshold!r} is not calibration.mean + k * calibration.std")
    else:
        c.num(cal["false_alarm_rate"], f + "false_alarm_rate", 0.0, 1.0, lo_open=True)
        if c.count(cal["rank"], f + "rank", 1) > n:
            c.fail(f + "rank", "is larger than n")
    if flagged > n or not _close(rate, flagged / n):
        c.fail(f + "achieved_false_alarm_rate", "is not flagged / n")
    iv = c.obj(cal["interval"], f + "interval", ("method", "confidence", "lower", "upper"))
    pr = c.obj(cal["prediction"], f + "prediction", ("method", "images", "confidence", "lower", "upper"))
    for name, part in (("interval", iv), ("prediction", pr)):
        c.text(part["method"], f"{f}{name}.method", max_len=200)
        c.num(part["confidence"], f"{f}{name}.confidence", 0.0, 1.0, lo_open=True)
    if not c.num(iv["lower"], f + "interval.lower", 0.0, 1.0) <= rate <= c.num(iv["upper"], f + "interval.upper", 0.0, 1.0):
        c.fail(f + "interval", "does not contain the achieved rate")
    low, high = c.count(pr["lower"], f + "prediction.lower"), c.count(pr["upper"], f + "prediction.upper")
    if not low <= high <= c.count(pr["images"], f + "prediction.images", 1):
        c.fail(f + "prediction", "must hold lower <= upper <= images")
    data = cal["data"]
    if not isinstance(data, list) or not 1 <= len(data) <= 1000:
        c.fail(f + "data", f"must be an array of 1 to 1000 inputs, found {_show(data)}")
    for i, d in enumerate(data):
        c.obj(d, f"{f}data[{i}]", ("name", "kind", "sha256", "n"))
        c.text(d["name"], f"{f}data[{i}].name"), c.text(d["kind"], f"{f}data[{i}].kind", "file|folder|array")
        c.text(d["sha256"], f"{f}data[{i}].sha256", SHA256), c.count(d["n"], f"{f}data[{i}].n", 1)
    if sum(d["n"] for d in data) != n:
        c.fail(f + "data", "holds another number of images than n")
    c.text(cal["date"], f + "date", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    c.num(cal["previous_threshold"], f + "previous_threshold", 0.0)
    c.table(cal["versions"], f + "versions", lambda v, g: c.text(v, g, max_len=100))
    return cal


@dataclass(frozen=True, kw_only=True)
class Validation:
    """Export's validation scores: mean, std (ddof 1) and their number."""

    mean: float
    std: float
    n: int

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std, "ddof": 1, "n": self.n}


@dataclass(frozen=True, kw_only=True)
class ThresholdEntry:
    """A graph's threshold: the one in force, export's ``k`` and ``validation`` statistics, and
    the ``calibration`` record (a dict, None unless 'aeflow calibrate' set the threshold)."""

    graph: Graph
    threshold: float
    k: float
    validation: Validation
    calibration: dict | None = None

    @staticmethod
    def _fields(c: _Check, doc: dict, prefix: str, which: str, image_shape, n_validation: int) -> dict:
        v = c.obj(doc["validation"], prefix + "validation", ("mean", "std", "ddof", "n"))
        c.same(v["ddof"], prefix + "validation.ddof", 1)
        val = Validation(mean=c.num(v["mean"], prefix + "validation.mean", 0.0),
                         std=c.num(v["std"], prefix + "validation.std", 0.0),
                         n=c.num(v["n"], prefix + "validation.n", 2, 10**9, integer=True))
        threshold = c.num(doc["threshold"], prefix + "threshold", 0.0, lo_open=True)
        k = c.num(doc["k"], prefix + "k", 0.0, 100.0, lo_open=True)
        cal = doc.get("calibration")
        if cal is not None:
            _calibration(c, cal, prefix + "calibration", threshold)
        elif not _close(threshold, val.mean + k * val.std):
            c.fail(prefix + "threshold", f"{threshold!r} is not validation.mean + k * validation.std "
                                         f"= {val.mean + k * val.std!r}")
        if val.n != n_validation:
            c.fail(prefix + "validation.n", "differs from data.validation_images")
        return dict(graph=Graph.from_json(c, doc, prefix, which, image_shape), threshold=threshold, k=k,
                    validation=val, calibration=cal)

    def _json(self) -> dict:
        cal = {} if self.calibration is None else {"calibration": self.calibration}
        return {"threshold": self.threshold, "k": self.k, "validation": self.validation.to_json(),
                **self.graph.to_json(), **cal}


@dataclass(frozen=True, kw_only=True)
class Int8Entry(ThresholdEntry):
    """threshold.json's "int8": the quantised graph, its threshold, how it was quantised (``method``)
    and how it compares with float32 (``evaluation``), both as written by export."""

    method: dict
    evaluation: dict

    def to_json(self) -> dict:
        return self._json() | {"method": self.method, "evaluation": self.evaluation}


def _image_shape(c: _Check, value) -> tuple[int, int]:
    ok = isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
    if not ok or min(value) < MIN_SIDE or value[0] * value[1] > MAX_PIXELS:
        c.fail("image_shape", f"must be [H, W] with H, W >= {MIN_SIDE} and H * W <= {MAX_PIXELS:,}, "
                              f"found {_show(value) if not ok else value}")
    return value[0], value[1]


def _evaluation(c: _Check, ev, field: str) -> dict:
    """type_i {set, n, rate}, type_ii {set: {n, rate}}, auroc {set: rate}, each optional."""
    c.obj(ev, field, (), ("type_i", "type_ii", "auroc"), closed=field == "evaluation")
    if "type_i" in ev:
        t = c.obj(ev["type_i"], field + ".type_i", ("set", "n", "rate"))
        c.text(t["set"], field + ".type_i.set", max_len=100), c.count(t["n"], field + ".type_i.n")
        _rate(c)(t["rate"], field + ".type_i.rate")
    c.table(ev.get("type_ii", {}), field + ".type_ii", lambda v, f: (
        c.obj(v, f, ("n", "rate")), c.count(v["n"], f + ".n"), _rate(c)(v["rate"], f + ".rate")))
    c.table(ev.get("auroc", {}), field + ".auroc", _rate(c))
    if set(ev.get("type_ii", {})) != set(ev.get("auroc", {})):
        c.fail(field + ".auroc", "names other sets than evaluation.type_ii")
    return ev


@dataclass(frozen=True, kw_only=True)
class ThresholdMeta(ThresholdEntry):
    """threshold.json: ae.onnx's threshold (``ThresholdEntry``), the image size, the data and
    training it came from, export's evaluation, versions, golden.npz and checkpoint bindings, and
    the int8 entry (None without --quantize int8). ``data``, ``training``: dicts as export wrote
    them (``source``, ``train_images``, ``validation_images``, ``anomaly_sets``; ``epochs``,
    ``final_loss`` checked)."""

    image_shape: tuple[int, int] = IMAGE_SHAPE
    data: dict
    training: dict
    evaluation: dict
    versions: dict
    golden: Binding
    checkpoint: Binding | None = None
    int8: Int8Entry | None = None

    KEYS = ("schema_version", "threshold", "k", "validation", "score", *GRAPH_KEYS, "data", "training", "evaluation",
            "versions", "golden", "content_sha256")

    @classmethod
    def from_json(cls, doc, where=THRESHOLD_JSON, verify: bool = True) -> "ThresholdMeta":
        """threshold.json's document ``doc`` checked (``where``: the file, for messages; ``verify``:
        check the seal), or ``ArtifactError`` naming the file and the field."""
        c = _Check(where)
        c.obj(_check_envelope(c, doc, verify), "", cls.KEYS, ("image_shape", "checkpoint", "int8", "calibration"))
        shape = _image_shape(c, doc["image_shape"]) if "image_shape" in doc else IMAGE_SHAPE
        c.same(doc["score"], "score", score_definition(shape))
        data = c.obj(doc["data"], "data", ("source", "train_images", "validation_images", "anomaly_sets"), closed=False)
        c.text(data["source"], "data.source"), c.count(data["train_images"], "data.train_images", 1)
        n_val = c.count(data["validation_images"], "data.validation_images", 2)
        sets = data["anomaly_sets"]
        if not isinstance(sets, list) or any(not isinstance(s, str) for s in sets):
            c.fail("data.anomaly_sets", f"must be an array of names, found {_show(sets)}")
        training = c.obj(doc["training"], "training", ("epochs", "final_loss"), closed=False)
        c.count(training["epochs"], "training.epochs", 1), c.num(training["final_loss"], "training.final_loss", 0.0)
        ev = _evaluation(c, doc["evaluation"], "evaluation")
        if sorted(ev.get("type_ii", {})) != sorted(sets):
            c.fail("data.anomaly_sets", "differs from the sets of evaluation.type_ii")
        int8 = None
        if "int8" in doc:
            e = c.obj(doc["int8"], "int8", ("threshold", "k", "validation", *GRAPH_KEYS, "method", "evaluation"),
                      ("calibration",))
            int8 = Int8Entry(**ThresholdEntry._fields(c, e, "int8.", "int8", shape, n_val),
                             method=c.obj(e["method"], "int8.method", closed=False),
                             evaluation=_evaluation(c, e["evaluation"], "int8.evaluation"))
        return cls(**cls._fields(c, doc, "", "ae", shape, n_val), image_shape=shape, data=data, training=training,
                   evaluation=ev, int8=int8, **_bindings(c, doc))

    def to_json(self) -> dict:
        """The sealed document (``from_json(meta.to_json())`` gives ``meta`` back)."""
        top = self._json()
        doc = {"schema_version": SCHEMA_VERSION, **{k: top.pop(k) for k in ("threshold", "k", "validation")},
               "image_shape": list(self.image_shape), "score": score_definition(self.image_shape), **top,
               "data": self.data, "training": self.training, "evaluation": self.evaluation,
               "versions": self.versions, "golden": self.golden.to_json()}
        if self.checkpoint is not None:
            doc["checkpoint"] = self.checkpoint.to_json()
        if self.int8 is not None:
            doc["int8"] = self.int8.to_json()
        if self.calibration is not None:
            doc["calibration"] = doc.pop("calibration")
        return seal(doc)

    def entry(self, which: str) -> ThresholdEntry | None:
        """The entry of graph "ae" (this object) or "int8" (None when absent)."""
        return self if which == "ae" else self.int8

    def calibrated(self, which: str, threshold: float, record: dict) -> "ThresholdMeta":
        """A copy with graph ``which``'s threshold set by a calibration (``record``)."""
        if which == "ae":
            return replace(self, threshold=threshold, calibration=record)
        return replace(self, int8=replace(self.int8, threshold=threshold, calibration=record))


# ---------------------------------------------------------------- flow.json

@dataclass(frozen=True, kw_only=True)
class SamplerEntry:
    """flow.json's "sampler_graph": flow_sampler.onnx, how it was built, the float64 z intervals
    and slope where it hands over to float64, and export's check of it (a dict of six numbers)."""

    graph: Graph
    newton_steps: int
    table_nodes: int
    tail_nodes_per_side: int
    tail_mass: float
    trusted_slope: float
    float64_z_intervals: tuple[tuple[float, float], ...]
    check: dict

    CHECK = ("targets", "trusted_targets", "max_abs_x_error_trusted", "max_abs_residual", "x_tolerance",
             "residual_tolerance")

    @classmethod
    def from_json(cls, c: _Check, doc, half_w: float) -> "SamplerEntry":
        f = "sampler_graph."
        ints = ("newton_steps", "table_nodes", "tail_nodes_per_side")
        c.obj(doc, "sampler_graph", (*GRAPH_KEYS, *ints, "tail_mass", "trusted_slope", "float64_z_intervals", "check"))
        bounds = {"newton_steps": (1, 16), "table_nodes": (2, 10**6), "tail_nodes_per_side": (2, 10**6)}
        kw = {k: c.num(doc[k], f + k, *bounds[k], integer=True) for k in ints}
        if not c.num(doc["tail_mass"], f + "tail_mass", 0.0, lo_open=True) < half_w:
            c.fail(f + "tail_mass", "must be below W/2")
        iv = doc["float64_z_intervals"]
        if not isinstance(iv, list) or len(iv) > 10_000:
            c.fail(f + "float64_z_intervals", f"must be an array of at most 10,000 pairs, found {_show(iv)}")
        pairs = tuple(c.numbers(p, f"{f}float64_z_intervals[{i}]", (2, 2)) for i, p in enumerate(iv))
        for i, (a, b) in enumerate(pairs):
            if not -half_w <= a <= b <= half_w:
                c.fail(f"{f}float64_z_intervals[{i}]", f"must be an ordered pair inside [-W/2, W/2], found [{a!r}, {b!r}]")
        ch = c.obj(doc["check"], f + "check", cls.CHECK)
        for k in cls.CHECK:
            c.num(ch[k], f + "check." + k, 0.0, integer=k.endswith("targets"), lo_open=k.endswith("tolerance"))
        if ch["trusted_targets"] > ch["targets"] or ch["max_abs_x_error_trusted"] > ch["x_tolerance"] \
                or ch["max_abs_residual"] > ch["residual_tolerance"]:
            c.fail(f + "check", "records a failed export check")
        return cls(graph=Graph.from_json(c, doc, f, "sampler"), tail_mass=doc["tail_mass"], float64_z_intervals=pairs,
                   trusted_slope=c.num(doc["trusted_slope"], f + "trusted_slope", 0.0, lo_open=True), check=ch, **kw)

    def to_json(self) -> dict:
        return {**self.graph.to_json(), "newton_steps": self.newton_steps, "table_nodes": self.table_nodes,
                "tail_nodes_per_side": self.tail_nodes_per_side, "tail_mass": self.tail_mass,
                "trusted_slope": self.trusted_slope, "float64_z_intervals": [list(p) for p in self.float64_z_intervals],
                "check": self.check}


@dataclass(frozen=True, kw_only=True, eq=False)
class FlowMeta:
    """flow.json: flow.onnx, its float64 ``components`` (``inversion.Components``), W and the
    range +-W/2, the inversion bracket and flow.onnx's z there, ``nll`` (train, test, ...; dict),
    ``training`` (its config, a dict), the sampler entry, versions and bindings."""

    graph: Graph
    components: Components
    W: float
    z_range: tuple[float, float]
    x_bracket: tuple[float, float]
    z_at_bracket: tuple[float, float]
    nll: dict
    training: dict
    sampler: SamplerEntry
    versions: dict
    golden: Binding
    checkpoint: Binding | None = None

    KEYS = ("schema_version", *GRAPH_KEYS, "n_components", "components", "W", "z_range", "x_bracket", "z_at_bracket",
            "target", "nll", "training", "sampler_graph", "versions", "golden", "content_sha256")

    @classmethod
    def from_json(cls, doc, where=FLOW_JSON, verify: bool = True) -> "FlowMeta":
        """flow.json's document ``doc`` checked (see ``ThresholdMeta.from_json``)."""
        c = _Check(where)
        c.obj(_check_envelope(c, doc, verify), "", cls.KEYS, ("checkpoint",))
        k = c.num(doc["n_components"], "n_components", 1, MAX_COMPONENTS, integer=True)
        comp = c.obj(doc["components"], "components", ("mu", "sigma", "weight"))
        mu = c.numbers(comp["mu"], "components.mu", (1, MAX_COMPONENTS))
        sigma, weight = (c.numbers(comp[n], f"components.{n}", (1, MAX_COMPONENTS), lo=0.0, lo_open=True)
                         for n in ("sigma", "weight"))
        for name, values in (("mu", mu), ("sigma", sigma), ("weight", weight)):
            if len(values) != k:
                c.fail(f"components.{name}", f"has {len(values)} values, n_components is {k}")
        c.same(doc["target"], "target", FLOW_TARGET)
        nll = c.obj(doc["nll"], "nll", ("train", "test"), closed=False)
        c.table(nll, "nll", lambda v, f: c.num(v, f))
        training = c.obj(doc["training"], "training", ("n_components",), closed=False)
        if training["n_components"] != k:
            c.fail("training.n_components", f"differs from n_components {k}")
        w = c.num(doc["W"], "W", 0.0, lo_open=True)
        if not _close(w, math.fsum(weight), 1e-12):
            c.fail("W", f"{w!r} is not the sum of components.weight ({math.fsum(weight)!r})")
        z_range, (lo, hi), zb = (c.numbers(doc[n], n, (2, 2)) for n in ("z_range", "x_bracket", "z_at_bracket"))
        if not (_close(z_range[0], -w / 2, 1e-12) and _close(z_range[1], w / 2, 1e-12)):
            c.fail("z_range", f"must be [-W/2, W/2] = [{-w / 2!r}, {w / 2!r}]")
        if not lo < hi:
            c.fail("x_bracket", f"must be ordered, found [{lo!r}, {hi!r}]")
        model = Components(mu, sigma, weight)
        beyond = model.tail_mass(np.array([lo, hi]), np.array([-1.0, 1.0]))  # float64 mass beyond the bracket
        if not np.all(beyond <= 1e-12 * w):
            c.fail("x_bracket", f"does not map onto the range (mass {float(beyond.max()):.3g} beyond its ends)")
        if not (abs(zb[0] + w / 2) <= 1e-6 * w and abs(zb[1] - w / 2) <= 1e-6 * w):
            c.fail("z_at_bracket", "must be the range's ends -W/2, W/2 (to float32 rounding)")
        return cls(graph=Graph.from_json(c, doc, "", "flow"), components=model, W=w, z_range=z_range,
                   x_bracket=(lo, hi), z_at_bracket=zb, nll=nll, training=training,
                   sampler=SamplerEntry.from_json(c, doc["sampler_graph"], w / 2), **_bindings(c, doc))

    def to_json(self) -> dict:
        """The sealed document (``from_json(meta.to_json())`` gives ``meta`` back)."""
        comp = {n: getattr(self.components, n).tolist() for n in ("mu", "sigma", "weight")}
        doc = {"schema_version": SCHEMA_VERSION, **self.graph.to_json(), "n_components": len(comp["mu"]),
               "components": comp, "W": self.W, "z_range": list(self.z_range), "x_bracket": list(self.x_bracket),
               "z_at_bracket": list(self.z_at_bracket), "target": FLOW_TARGET, "nll": self.nll,
               "training": self.training, "sampler_graph": self.sampler.to_json(), "versions": self.versions,
               "golden": self.golden.to_json()}
        return seal(doc | ({} if self.checkpoint is None else {"checkpoint": self.checkpoint.to_json()}))

    def entry(self, which: str):
        """The entry of graph "flow" (this object) or "sampler"."""
        return self if which == "flow" else self.sampler


METADATA = {THRESHOLD_JSON: ThresholdMeta, FLOW_JSON: FlowMeta}
