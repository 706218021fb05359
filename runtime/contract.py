"""The artifact contract between ``aeflow export`` and the runtime, owned here and nowhere else.

What an artifacts folder holds and what each file must satisfy:

* file names (``AE_FILE`` ... ``GOLDEN_FILE``) and ``SCHEMA_VERSION``;
* each graph's full signature (``GRAPHS``: input/output names, dtypes, ranks, fixed dims),
  checked against the onnxruntime session that loads it (``check_signature``);
* every field of threshold.json and flow.json, described declaratively (``THRESHOLD_FIELDS``,
  ``FLOW_FIELDS``: type, finite, range) plus the consistency rules between fields
  (``_consistent_threshold``, ``_consistent_flow``: threshold = mean + k std, W = sum of the
  weights, z_range = +-W/2, an ordered x bracket that maps onto the range ...);
* the bindings: the sha256 of every graph and of golden.npz recorded in the JSON, and the JSON's
  own ``content_sha256`` over every other field, so an edited number fails at load;
* golden.npz's arrays (``GOLDEN_ARRAYS``): PyTorch's outputs (float64 for the sampler) on a fixed
  input set, which ``aeflow.runtime.golden`` compares with this machine's provider at load.

Export builds the metadata with ``graph_entry`` and writes it with ``write_metadata`` (which
validates and seals it), so a file that export writes is a file the runtime accepts. Every failure
is one ``ArtifactError`` line naming the file and the field.

Artifacts of schema 1 (before golden outputs and bindings existed) are refused with a line saying
how to re-export: their metadata cannot be bound to their graphs after the fact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aeflow.checks import shorten
from aeflow.errors import ArtifactError
from aeflow.files import sha256_file, write_text_atomic

SCHEMA_VERSION = 2
AE_FILE, INT8_FILE, FLOW_FILE, SAMPLER_FILE = "ae.onnx", "ae.int8.onnx", "flow.onnx", "flow_sampler.onnx"
THRESHOLD_JSON, FLOW_JSON, GOLDEN_FILE = "threshold.json", "flow.json", "golden.npz"
AE_CHECKPOINT, FLOW_CHECKPOINT = "ae.pt", "flow.pt"
MAX_JSON_BYTES = 1 << 20  # today's files are ~3 KB
MAX_GOLDEN_BYTES = 16 << 20
SCORE_DEFINITION = "mean over the 784 pixels of (image - reconstruction)^2, image float32 in [0, 1]"
FLOW_TARGET = "N(0, 1)"
GOLDEN_IMAGES, GOLDEN_POINTS = 64, 256


# ---------------------------------------------------------------- graph signatures

@dataclass(frozen=True)
class Tensor:
    """One graph input or output: name, element type (onnxruntime's spelling) and shape, with
    None for the dynamic batch dimension N."""

    name: str
    shape: tuple[int | None, ...]
    type: str = "tensor(float)"

    def as_json(self) -> list:
        return ["N" if d is None else d for d in self.shape]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def as_json(self) -> dict:
        return {"inputs": {t.name: t.as_json() for t in self.inputs},
                "outputs": {t.name: t.as_json() for t in self.outputs}}


@dataclass(frozen=True)
class GraphSpec:
    """A graph of the contract: its file, the JSON that records it (``entry``: None for the top
    level, else the key of its sub-object), its signature and the export that makes it."""

    file: str
    metadata: str
    entry: str | None
    signature: Signature
    export_hint: str = "aeflow export"


IMAGE = (None, 1, 28, 28)


def ae_signature(image_shape=(28, 28)) -> Signature:
    """ae.onnx's signature for images of ``image_shape`` (H, W)."""
    image = (None, 1, int(image_shape[0]), int(image_shape[1]))
    return Signature((Tensor("images", image),), (Tensor("reconstruction", image), Tensor("score", (None,))))


AE_SIGNATURE = ae_signature()
FLOW_SIGNATURE = Signature((Tensor("x", (None,)),), tuple(Tensor(n, (None,)) for n in ("z", "dz_dx", "log_prob")))
SAMPLER_SIGNATURE = Signature((Tensor("z", (None,)),), (Tensor("x", (None,)),))
GRAPHS: dict[str, GraphSpec] = {
    "ae": GraphSpec(AE_FILE, THRESHOLD_JSON, None, AE_SIGNATURE),
    "int8": GraphSpec(INT8_FILE, THRESHOLD_JSON, "int8", AE_SIGNATURE, "aeflow export --quantize int8"),
    "flow": GraphSpec(FLOW_FILE, FLOW_JSON, None, FLOW_SIGNATURE),
    "sampler": GraphSpec(SAMPLER_FILE, FLOW_JSON, "sampler_graph", SAMPLER_SIGNATURE),
}

# golden.npz: array name -> (dtype, shape); the "<graph>_" prefix says which graph it belongs to,
# the first array of each graph is its input
GOLDEN_ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    "ae_images": ("float32", (GOLDEN_IMAGES, 1, 28, 28)),
    "ae_reconstruction": ("float32", (GOLDEN_IMAGES, 1, 28, 28)),
    "ae_score": ("float32", (GOLDEN_IMAGES,)),
    "int8_reconstruction": ("float32", (GOLDEN_IMAGES, 1, 28, 28)),
    "int8_score": ("float32", (GOLDEN_IMAGES,)),
    "flow_x": ("float32", (GOLDEN_POINTS,)),
    "flow_z": ("float32", (GOLDEN_POINTS,)),
    "flow_dz_dx": ("float32", (GOLDEN_POINTS,)),
    "flow_log_prob": ("float32", (GOLDEN_POINTS,)),
    "sampler_z": ("float32", (GOLDEN_POINTS,)),
    "sampler_x": ("float64", (GOLDEN_POINTS,)),
}
GOLDEN_OF = {"ae": ("ae_images", "ae_reconstruction", "ae_score"),
             "int8": ("ae_images", "int8_reconstruction", "int8_score"),
             "flow": ("flow_x", "flow_z", "flow_dz_dx", "flow_log_prob"),
             "sampler": ("sampler_z", "sampler_x")}


def image_shape(meta: dict) -> tuple[int, int]:
    """threshold.json's ``image_shape`` (absent: the homework's 28x28)."""
    return tuple(meta.get("image_shape", (28, 28)))


def signature_of(meta: dict, which: str) -> Signature:
    """The signature graph ``which`` must have (the autoencoder's at ``meta``'s image size)."""
    return ae_signature(image_shape(meta)) if which in ("ae", "int8") else GRAPHS[which].signature


def golden_shape(name: str, meta: dict) -> tuple[int, ...]:
    """The shape of golden array ``name`` for the graphs of ``meta`` (images at its size)."""
    shape = GOLDEN_ARRAYS[name][1]
    return shape[:2] + image_shape(meta) if len(shape) == 4 else shape


def check_signature(session, spec: GraphSpec | Signature, name: str) -> None:
    """``ArtifactError`` (one line) unless ``session``'s inputs and outputs are exactly the
    signature's: names in order, element types, ranks, and the fixed dimensions (a dynamic
    dimension in the contract must be dynamic in the graph)."""
    sig = spec.signature if isinstance(spec, GraphSpec) else spec
    for kind, have, want in (("inputs", session.get_inputs(), sig.inputs), ("outputs", session.get_outputs(), sig.outputs)):
        names = [a.name for a in have]
        if names != [t.name for t in want]:
            raise ArtifactError(f"{name}: unexpected {kind} {names} (expected {[t.name for t in want]}); "
                                f"this is not an aeflow graph - re-export")
        for arg, t in zip(have, want):
            shape = list(arg.shape) if arg.shape is not None else None
            ok_shape = shape is not None and len(shape) == len(t.shape) and all(
                (isinstance(d, int) and d == w) if w is not None else not isinstance(d, int) for d, w in zip(shape, t.shape))
            if arg.type != t.type or not ok_shape:
                raise ArtifactError(f"{name}: {kind[:-1]} {t.name!r} is {arg.type} {shape} (expected {t.type} "
                                    f"{t.as_json()}); this graph breaks the artifact contract - re-export")


# ---------------------------------------------------------------- declarative field checks

class _Invalid(Exception):
    """A field that breaks the contract: ``field`` (dotted path) and ``reason``."""

    def __init__(self, field: str, reason: str):
        super().__init__(field, reason)
        self.field, self.reason = field, reason


def _show(value) -> str:
    """A short, always printable rendering of a JSON value."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = json.dumps(value) if isinstance(value, (str, bool)) or value is None else repr(value)
    return shorten(text)


class Field:
    """A JSON value's rule; ``check(value, where)`` raises ``_Invalid`` naming ``where``."""

    def check(self, value, where: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Field):
    """A finite JSON number (not a bool) with optional bounds; ``integer`` requires an int."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    integer: bool = False

    def check(self, value, where):
        kind = "an integer" if self.integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            raise _Invalid(where, f"must be {kind}, found {_show(value)}")
        if isinstance(value, int) and value.bit_length() > 63:
            raise _Invalid(where, f"is out of range, found {_show(value)}")
        if not math.isfinite(value):
            raise _Invalid(where, f"must be finite, found {_show(value)}")
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            raise _Invalid(where, f"must be {'>' if self.lo_open else '>='} {self.lo:g}, found {_show(value)}")
        if self.hi is not None and value > self.hi:
            raise _Invalid(where, f"must be <= {self.hi:g}, found {_show(value)}")


def Integer(lo: int | None = None, hi: int | None = None) -> Number:
    return Number(lo, hi, integer=True)


POSITIVE = Number(0.0, lo_open=True)
NON_NEGATIVE = Number(0.0)
RATE = Number(0.0, 1.0)
COUNT = Integer(0, 10**12)


@dataclass(frozen=True)
class Text(Field):
    """A string of at most ``max_len`` characters, matching ``pattern`` when given."""

    max_len: int = 500
    pattern: str | None = None

    def check(self, value, where):
        if not isinstance(value, str):
            raise _Invalid(where, f"must be a string, found {_show(value)}")
        if len(value) > self.max_len or (self.pattern and not re.fullmatch(self.pattern, value)):
            raise _Invalid(where, f"is not a valid value, found {_show(value)}")


SHA256 = Text(64, "[0-9a-f]{64}")


@dataclass(frozen=True)
class Exact(Field):
    """Exactly this JSON value (types included: true is not 1)."""

    value: object

    def check(self, value, where):
        try:
            same = _canonical(value) == _canonical(self.value)
        except (TypeError, ValueError):  # NaN/Inf or a non-JSON object handed in through the API
            same = False
        if not same:
            raise _Invalid(where, f"must be {_show(self.value)}, found {_show(value)}")


@dataclass(frozen=True)
class Array(Field):
    """A JSON array of ``item``s, ``min_len`` to ``max_len`` long."""

    item: Field
    min_len: int = 0
    max_len: int = 10_000

    def check(self, value, where):
        if not isinstance(value, list):
            raise _Invalid(where, f"must be an array, found {_show(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            size = str(self.min_len) if self.min_len == self.max_len else f"{self.min_len} to {self.max_len}"
            raise _Invalid(where, f"must have {size} items, found {len(value)}")
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")


def Pair(item: Field = Number()) -> Array:
    return Array(item, 2, 2)


@dataclass(frozen=True)
class Record(Field):
    """A JSON object with exactly these keys (those in ``optional`` may be absent)."""

    fields: dict
    optional: frozenset = frozenset()

    def check(self, value, where):
        if not isinstance(value, dict):
            raise _Invalid(where, f"must be an object, found {_show(value)}")
        prefix = f"{where}." if where else ""
        for key, rule in self.fields.items():
            if key in value:
                rule.check(value[key], prefix + key)
            elif key not in self.optional:
                raise _Invalid(prefix + key, "is missing")
        extra = sorted(set(value) - set(self.fields))
        if extra:
            raise _Invalid(prefix + extra[0][:40], "is not a field of this schema")


@dataclass(frozen=True)
class Table(Field):
    """A JSON object mapping names (short strings) to ``item``s."""

    item: Field
    max_items: int = 100

    def check(self, value, where):
        if not isinstance(value, dict):
            raise _Invalid(where, f"must be an object, found {_show(value)}")
        if len(value) > self.max_items:
            raise _Invalid(where, f"has {len(value)} entries (at most {self.max_items})")
        for key, v in value.items():
            if len(key) > 100:
                raise _Invalid(where, f"has a key of {len(key)} characters")
            self.item.check(v, f"{where}.{key}")


@dataclass(frozen=True)
class AnyOf(Field):
    options: tuple

    def check(self, value, where):
        for option in self.options:
            try:
                option.check(value, where)
                return
            except _Invalid:
                continue
        raise _Invalid(where, f"has an unexpected value, found {_show(value)}")


def _graph_fields(spec: GraphSpec) -> dict:
    sig = spec.signature.as_json()
    if spec.signature == AE_SIGNATURE:  # any image size: _consistent_threshold checks it against image_shape
        return {"onnx_file": Exact(spec.file), "sha256": SHA256, "opset": Integer(7, 100),
                "inputs": Table(Array(AnyOf((Exact("N"), Integer(1, 4096))), 1, 4), 1),
                "outputs": Table(Array(AnyOf((Exact("N"), Integer(1, 4096))), 1, 4), 2)}
    return {"onnx_file": Exact(spec.file), "sha256": SHA256, "opset": Integer(7, 100),
            "inputs": Exact(sig["inputs"]), "outputs": Exact(sig["outputs"])}


def graph_entry(which: str, path: str | os.PathLike, opset: int, signature: Signature | None = None) -> dict:
    """The metadata of graph ``which`` (a key of ``GRAPHS``) written at ``path``: its file name,
    sha256, opset and signature (default: the contract's), as threshold.json and flow.json record them."""
    spec = GRAPHS[which]
    return {"onnx_file": spec.file, "sha256": sha256_file(path), "opset": int(opset),
            **(signature or spec.signature).as_json()}


VALIDATION = Record({"mean": NON_NEGATIVE, "std": NON_NEGATIVE, "ddof": Exact(1), "n": Integer(2, 10**9)})
EVALUATION = Record({
    "type_i": Record({"set": Text(100), "n": COUNT, "rate": RATE}),
    "type_ii": Table(Record({"n": COUNT, "rate": RATE})),
    "auroc": Table(RATE),
}, optional=frozenset({"type_i", "type_ii", "auroc"}))
INT8_EVALUATION = Record(EVALUATION.fields | {
    "decision_agreement_with_fp32": RATE,
    "decision_agreement_by_set": Table(RATE),
    "score_relative_difference_to_fp32": Record({"median": NON_NEGATIVE, "p99": NON_NEGATIVE, "max": NON_NEGATIVE}),
}, optional=EVALUATION.optional)
VERSIONS = Table(Text(100))
BINDINGS = {"golden": Record({"file": Exact(GOLDEN_FILE), "sha256": SHA256}),
            "checkpoint": Record({"file": Text(100, r"[A-Za-z0-9_.-]+\.pt"), "sha256": SHA256}),
            "content_sha256": SHA256}

# written by 'aeflow calibrate' / AnomalyScorer.save_calibration (aeflow.runtime.calibration): the
# threshold in force was set on the user's own normal images; "validation" and "k" stay export's
CALIBRATION_RULES = ("mean + k std", "false-alarm rate")
CALIBRATION = Record({
    "rule": AnyOf(tuple(Exact(r) for r in CALIBRATION_RULES)),
    "k": Number(0.0, 100.0, lo_open=True),              # rule "mean + k std"
    "mean": NON_NEGATIVE, "std": NON_NEGATIVE, "ddof": Exact(1),
    "false_alarm_rate": Number(0.0, 1.0, lo_open=True),  # rule "false-alarm rate"
    "rank": Integer(1, 10**12),                          # the threshold is the rank-th smallest score
    "n": Integer(1, 10**12),
    "flagged": COUNT,
    "achieved_false_alarm_rate": RATE,
    "interval": Record({"method": Text(200), "confidence": Number(0.0, 1.0, lo_open=True), "lower": RATE,
                        "upper": RATE}),
    "prediction": Record({"method": Text(200), "images": Integer(1, 10**12),
                          "confidence": Number(0.0, 1.0, lo_open=True), "lower": COUNT, "upper": COUNT}),
    "data": Array(Record({"name": Text(1000), "kind": AnyOf((Exact("file"), Exact("folder"), Exact("array"))),
                         "sha256": SHA256, "n": Integer(1, 10**12)}), 1, 1000),
    "date": Text(40, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
    "previous_threshold": NON_NEGATIVE,
    "versions": VERSIONS,
}, optional=frozenset({"k", "mean", "std", "ddof", "false_alarm_rate", "rank"}))

THRESHOLD_FIELDS = Record({
    "schema_version": Exact(SCHEMA_VERSION),
    "threshold": POSITIVE,
    "k": Number(0.0, 100.0, lo_open=True),
    "validation": VALIDATION,
    "score": Text(),
    "image_shape": Pair(Integer(4, 1024)),
    "validation_scores": Integer(2, 10**9),  # how many of golden.npz's "validation_scores" (conformal p-values)
    **_graph_fields(GRAPHS["ae"]),
    "data": Record({"source": Text(), "train_images": Integer(1, 10**9), "validation_images": Integer(2, 10**9),
                    "split_seed": Integer(0, 2**63 - 1), "anomaly_sets": Array(Text(100), 0, 100)}),
    "training": Record({"epochs": Integer(1, 10**6), "lr": POSITIVE, "batch_size": Integer(1, 10**9),
                        "seed": Integer(0, 2**63 - 1), "final_loss": NON_NEGATIVE}),
    "evaluation": EVALUATION,
    "versions": VERSIONS,
    "int8": Record({
        **_graph_fields(GRAPHS["int8"]),
        "method": Table(AnyOf((Text(), Number(), Exact(True), Exact(False), Array(Text(), 0, 50))), 50),
        "threshold": POSITIVE, "k": Number(0.0, 100.0, lo_open=True), "validation": VALIDATION,
        "evaluation": INT8_EVALUATION, "calibration": CALIBRATION}, optional=frozenset({"calibration"})),
    "calibration": CALIBRATION,
    **BINDINGS,
}, optional=frozenset({"int8", "checkpoint", "calibration", "image_shape", "validation_scores"}))

MAX_COMPONENTS = 64
COMPONENTS = Array(Number(), 1, MAX_COMPONENTS)
FLOW_FIELDS = Record({
    "schema_version": Exact(SCHEMA_VERSION),
    **_graph_fields(GRAPHS["flow"]),
    "n_components": Integer(1, MAX_COMPONENTS),
    "components": Record({"mu": COMPONENTS, "sigma": Array(POSITIVE, 1, MAX_COMPONENTS),
                          "weight": Array(POSITIVE, 1, MAX_COMPONENTS)}),
    "W": POSITIVE,
    "z_range": Pair(),
    "x_bracket": Pair(),
    "z_at_bracket": Pair(),
    "target": Exact(FLOW_TARGET),
    "nll": Record({"train": Number(), "test": Number(), "true_mixture_test": Number()},
                  optional=frozenset({"true_mixture_test"})),  # absent for a flow of the user's values
    "training": Record({"n_components": Integer(1, MAX_COMPONENTS), "epochs": Integer(1, 10**6), "lr": POSITIVE,
                        "batch_size": Integer(1, 10**9), "n_train": Integer(1, 10**9), "n_test": Integer(1, 10**9),
                        "seed": Integer(0, 2**63 - 1)}),
    "sampler_graph": Record({
        **_graph_fields(GRAPHS["sampler"]),
        "newton_steps": Integer(1, 16),
        "table_nodes": Integer(2, 10**6),
        "tail_nodes_per_side": Integer(2, 10**6),
        "tail_mass": POSITIVE,
        "trusted_slope": POSITIVE,
        "float64_z_intervals": Array(Pair(), 0, 10_000),
        "check": Record({"targets": COUNT, "trusted_targets": COUNT, "max_abs_x_error_trusted": NON_NEGATIVE,
                         "max_abs_residual": NON_NEGATIVE, "x_tolerance": POSITIVE, "residual_tolerance": POSITIVE}),
    }),
    "versions": VERSIONS,
    **BINDINGS,
}, optional=frozenset({"checkpoint"}))


# ---------------------------------------------------------------- consistency between fields

def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def score_definition(shape: tuple[int, int]) -> str:
    """threshold.json's ``score`` for images of ``shape``."""
    return SCORE_DEFINITION.replace("784", str(shape[0] * shape[1]))


def _consistent_threshold(doc: dict) -> None:
    if doc["score"] != score_definition(image_shape(doc)):
        raise _Invalid("score", f"must be {score_definition(image_shape(doc))!r}")
    sig = ae_signature(image_shape(doc)).as_json()
    for where, entry in (("", doc), ("int8.", doc.get("int8"))):
        if entry is None:
            continue
        for key in ("inputs", "outputs"):
            Exact(sig[key]).check(entry[key], f"{where}{key}")  # the signature at image_shape
        v = entry["validation"]
        if "calibration" in entry:
            _consistent_calibration(entry["threshold"], entry["calibration"], f"{where}calibration")
        elif not _close(entry["threshold"], v["mean"] + entry["k"] * v["std"]):
            raise _Invalid(f"{where}threshold", f"{entry['threshold']!r} is not validation.mean + k * validation.std "
                                               f"= {v['mean'] + entry['k'] * v['std']!r}")
        if v["n"] != doc["data"]["validation_images"]:
            raise _Invalid(f"{where}validation.n", "differs from data.validation_images")
    ev = doc["evaluation"]
    if set(ev.get("type_ii", {})) != set(ev.get("auroc", {})):
        raise _Invalid("evaluation.auroc", "names other sets than evaluation.type_ii")
    if sorted(ev.get("type_ii", {})) != sorted(doc["data"]["anomaly_sets"]):
        raise _Invalid("data.anomaly_sets", "differs from the sets of evaluation.type_ii")


def _consistent_calibration(threshold: float, cal: dict, where: str) -> None:
    """A calibration record agrees with itself and with the threshold it set."""
    need = {"mean + k std": ("k", "mean", "std", "ddof"), "false-alarm rate": ("false_alarm_rate", "rank")}[cal["rule"]]
    other = {"k", "mean", "std", "ddof", "false_alarm_rate", "rank"} - set(need)
    for key in need:
        if key not in cal:
            raise _Invalid(f"{where}.{key}", f"is missing (rule {cal['rule']!r})")
    extra = sorted(other & set(cal))
    if extra:
        raise _Invalid(f"{where}.{extra[0]}", f"does not belong to rule {cal['rule']!r}")
    if cal["rule"] == "mean + k std" and not _close(threshold, cal["mean"] + cal["k"] * cal["std"]):
        raise _Invalid(f"{where}", f"threshold {threshold!r} is not calibration.mean + k * calibration.std")
    if cal["rule"] == "false-alarm rate" and cal["rank"] > cal["n"]:
        raise _Invalid(f"{where}.rank", "is larger than n")
    if cal["flagged"] > cal["n"] or not _close(cal["achieved_false_alarm_rate"], cal["flagged"] / cal["n"]):
        raise _Invalid(f"{where}.achieved_false_alarm_rate", "is not flagged / n")
    if sum(d["n"] for d in cal["data"]) != cal["n"]:
        raise _Invalid(f"{where}.data", "holds another number of images than n")
    iv, pr = cal["interval"], cal["prediction"]
    if not iv["lower"] <= cal["achieved_false_alarm_rate"] <= iv["upper"]:
        raise _Invalid(f"{where}.interval", "does not contain the achieved rate")
    if not pr["lower"] <= pr["upper"] <= pr["images"]:
        raise _Invalid(f"{where}.prediction", "must hold lower <= upper <= images")


def _consistent_flow(doc: dict) -> None:
    from aeflow.runtime.inversion import Components

    c = doc["components"]
    k = doc["n_components"]
    for key in ("mu", "sigma", "weight"):
        if len(c[key]) != k:
            raise _Invalid(f"components.{key}", f"has {len(c[key])} values, n_components is {k}")
    if doc["training"]["n_components"] != k:
        raise _Invalid("training.n_components", f"differs from n_components {k}")
    w = doc["W"]
    if not _close(w, math.fsum(c["weight"]), 1e-12):
        raise _Invalid("W", f"{w!r} is not the sum of components.weight ({math.fsum(c['weight'])!r})")
    if not (_close(doc["z_range"][0], -w / 2, 1e-12) and _close(doc["z_range"][1], w / 2, 1e-12)):
        raise _Invalid("z_range", f"must be [-W/2, W/2] = [{-w / 2!r}, {w / 2!r}]")
    lo, hi = doc["x_bracket"]
    if not lo < hi:
        raise _Invalid("x_bracket", f"must be ordered, found [{lo!r}, {hi!r}]")
    comp = Components(c["mu"], c["sigma"], c["weight"])
    # the bracket maps onto the whole range: the float64 tail mass left beyond each end is nil
    beyond = comp.tail_mass(np.array([lo, hi]), np.array([-1.0, 1.0]))
    if not np.all(beyond <= 1e-12 * w):
        raise _Invalid("x_bracket", f"does not map onto the range (mass {float(beyond.max()):.3g} beyond its ends)")
    zb = doc["z_at_bracket"]
    if not (abs(zb[0] + w / 2) <= 1e-6 * w and abs(zb[1] - w / 2) <= 1e-6 * w):
        raise _Invalid("z_at_bracket", "must be the range's ends -W/2, W/2 (to float32 rounding)")
    sg = doc["sampler_graph"]
    if not sg["tail_mass"] < w / 2:
        raise _Invalid("sampler_graph.tail_mass", "must be below W/2")
    for i, (a, b) in enumerate(sg["float64_z_intervals"]):
        if not -w / 2 <= a <= b <= w / 2:
            raise _Invalid(f"sampler_graph.float64_z_intervals[{i}]", f"must be an ordered pair inside [-W/2, W/2], "
                                                                     f"found [{a!r}, {b!r}]")
    ch = sg["check"]
    if ch["trusted_targets"] > ch["targets"] or ch["max_abs_x_error_trusted"] > ch["x_tolerance"] \
            or ch["max_abs_residual"] > ch["residual_tolerance"]:
        raise _Invalid("sampler_graph.check", "records a failed export check")


SCHEMAS = {THRESHOLD_JSON: (THRESHOLD_FIELDS, _consistent_threshold), FLOW_JSON: (FLOW_FIELDS, _consistent_flow)}


# ---------------------------------------------------------------- reading and writing metadata

def _canonical(doc) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_sha256(doc: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``doc`` without ``content_sha256``."""
    return hashlib.sha256(_canonical({k: v for k, v in doc.items() if k != "content_sha256"}).encode()).hexdigest()


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list) -> dict:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup[:40]!r}")
    return doc


def load_json(path: Path) -> dict:
    """``path`` parsed as one JSON object (at most ``MAX_JSON_BYTES``; NaN, Infinity and duplicate
    keys refused), or ``ArtifactError`` naming the file."""
    if not path.is_file():
        raise ArtifactError(f"{path}: not found; run 'aeflow export -o {path.parent}' or pass the right artifacts folder")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ArtifactError(f"{path}: {path.stat().st_size:,} bytes, more than metadata can be "
                            f"({MAX_JSON_BYTES:,}); re-export the artifacts")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_reject_constant,
                         object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ArtifactError(f"{path}: malformed JSON (nested too deeply); re-export the artifacts") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: malformed JSON ({str(e)[:120]}); re-export the artifacts") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}: expected a JSON object; re-export the artifacts")
    return doc


def validate_metadata(name: str, doc: dict, where: str | os.PathLike | None = None, content_hash: bool = True) -> None:
    """Check every field of ``doc`` (the contents of ``name``: threshold.json or flow.json), then,
    when ``content_hash``, that ``content_sha256`` matches the contents (an edited number fails
    here), then the consistency between fields; ``ArtifactError`` naming the file and the field
    otherwise."""
    fields, consistent = SCHEMAS[name]
    where = where or name
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        if version == 1 and not isinstance(version, bool):
            raise ArtifactError(f"{where}: schema_version 1 was written by an older aeflow (no golden outputs, "
                                f"metadata not bound to the graphs); re-export: aeflow export -o DIR, which reads "
                                f"DIR/ae.pt and DIR/flow.pt")
        raise ArtifactError(f"{where}: unknown schema_version {_show(version)} (this aeflow reads {SCHEMA_VERSION}); "
                            f"upgrade aeflow or re-export")
    try:
        fields.check(doc, "")
    except _Invalid as e:
        raise ArtifactError(f"{where}: field '{e.field}' {e.reason}; re-export the artifacts") from None
    if content_hash and doc["content_sha256"] != content_sha256(doc):
        raise ArtifactError(f"{where}: contents do not match its content_sha256; the file was edited after export "
                            f"- re-export, or pass verify=False to load it anyway")
    try:
        consistent(doc)
    except _Invalid as e:
        raise ArtifactError(f"{where}: field '{e.field}' {e.reason}; re-export the artifacts") from None


def read_metadata(directory: Path, name: str, verify: bool = True) -> dict:
    """``directory/name`` (threshold.json or flow.json) loaded and validated (``validate_metadata``);
    unless ``verify`` is False, its ``content_sha256`` must match its contents (an edited number
    fails here). Returns the document (a dict, as written by export)."""
    path = Path(directory) / name
    doc = load_json(path)
    validate_metadata(name, doc, path, content_hash=verify)
    return doc


def read_threshold(directory: Path, verify: bool = True) -> dict:
    """threshold.json, checked (``read_metadata``)."""
    return read_metadata(directory, THRESHOLD_JSON, verify)


def read_flow(directory: Path, verify: bool = True) -> dict:
    """flow.json, checked (``read_metadata``)."""
    return read_metadata(directory, FLOW_JSON, verify)


def seal(doc: dict) -> dict:
    """``doc`` with ``content_sha256`` set to the hash of its other fields."""
    return {k: v for k, v in doc.items() if k != "content_sha256"} | {"content_sha256": content_sha256(doc)}


def write_metadata(path: str | os.PathLike, doc: dict) -> dict:
    """Seal ``doc`` (``seal``), validate it as the file named like ``path`` and write it
    atomically. Returns the sealed document."""
    path = Path(path)
    sealed = seal(doc)
    validate_metadata(path.name, sealed, path)
    write_text_atomic(path, json.dumps(sealed, indent=2) + "\n", replace=True)
    return sealed


def entry_of(meta: dict, which: str) -> dict | None:
    """The metadata of graph ``which`` inside its JSON ``meta`` (None where the entry is absent)."""
    spec = GRAPHS[which]
    return meta if spec.entry is None else meta.get(spec.entry)


def graph_path(directory: Path, meta: dict, which: str, verify: bool = True) -> Path:
    """The file of graph ``which`` in ``directory`` (``meta``: its checked JSON), checked to exist and,
    when ``verify``, to have the recorded sha256."""
    spec = GRAPHS[which]
    entry = entry_of(meta, which)
    if entry is None:
        if which == "int8":
            raise ArtifactError(f"no int8 graph in {directory}: run 'aeflow export --quantize int8'")
        raise ArtifactError(f"no {spec.file} entry in {directory / spec.metadata}: re-export with 'aeflow export'")
    return _checked_file(Path(directory) / spec.file, entry["sha256"], spec.metadata, verify, spec.export_hint)


def _checked_file(path: Path, want: str, recorded_in: str, verify: bool, hint: str = "aeflow export") -> Path:
    if not path.is_file():
        raise ArtifactError(f"{path}: not found; run '{hint}' or restore the file")
    if verify:
        have = sha256_file(path)
        if have != want:
            raise ArtifactError(f"{path}: sha256 {have[:12]}... does not match {recorded_in}'s {want[:12]}...; the "
                                f"file was changed or replaced - re-export, or pass verify=False to load it anyway")
    return path


def read_golden(directory: Path, meta: dict, which: str, verify: bool = True) -> dict[str, np.ndarray]:
    """golden.npz's arrays for graph ``which`` (``GOLDEN_OF``), the file checked against the sha256
    ``meta`` (its JSON) records, the arrays against ``GOLDEN_ARRAYS``."""
    spec = GRAPHS[which]
    path = _checked_file(Path(directory) / GOLDEN_FILE, meta["golden"]["sha256"], spec.metadata, verify)
    if path.stat().st_size > MAX_GOLDEN_BYTES:
        raise ArtifactError(f"{path}: larger than golden outputs can be; re-export")
    out = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in GOLDEN_OF[which]:
                if name not in npz.files:
                    raise ArtifactError(f"{path}: no array {name!r}; re-export")
                out[name] = npz[name]
    except ArtifactError:
        raise
    except Exception as e:  # zipfile/np.load raise many types for a damaged file
        raise ArtifactError(f"{path}: cannot be read ({type(e).__name__}); re-export") from None
    for name, a in out.items():
        dtype, shape = GOLDEN_ARRAYS[name][0], golden_shape(name, meta)
        if a.dtype != np.dtype(dtype) or a.shape != shape:
            raise ArtifactError(f"{path}: array {name!r} is {a.dtype} {a.shape} (expected {dtype} {shape}); re-export")
        if not np.all(np.isfinite(a)):
            raise ArtifactError(f"{path}: array {name!r} holds NaN or Inf; re-export")
    return out


def checkpoint_path(directory: Path, meta: dict) -> Path | None:
    """The checkpoint the graphs of ``meta`` were exported from, in ``directory`` (None where the
    JSON names none). ``ArtifactError`` when the file there is another checkpoint."""
    entry = meta.get("checkpoint")
    if entry is None:
        return None
    path = Path(directory) / entry["file"]
    if not path.is_file():
        return None
    if sha256_file(path) != entry["sha256"]:
        raise ArtifactError(f"{path}: the checkpoint and the graph disagree: this is not the checkpoint the graphs "
                            f"were exported from (sha256 differs from the JSON's); re-export from it")
    return path


# ---------------------------------------------------------------- folders

def bundled_dir() -> Path:
    """The artifacts shipped with the package (works for editable installs and wheels). Found
    from the package's import spec rather than ``importlib.resources``, which would cost `aeflow
    score` a cold-start import of importlib.resources, zipfile and tempfile."""
    import importlib.util

    return Path(importlib.util.find_spec("aeflow.artifacts").submodule_search_locations[0]).resolve()


def demo_images(directory: Path | None = None) -> np.ndarray:
    """The demo images, uint8 [N, 28, 28]: ``directory/demo.npz`` where it exists, else the
    bundled demo set."""
    path = directory / "demo.npz" if directory is not None else None
    if path is None or not path.is_file():
        path = bundled_dir() / "demo.npz"
    with np.load(path) as demo:
        return np.asarray(demo["images"], dtype=np.uint8)


def artifacts_dir(path: str | os.PathLike | None = None) -> Path:
    """``path`` (checked to exist) or the bundled folder."""
    if path is None:
        return bundled_dir()
    p = Path(path)
    if not p.is_dir():
        what = "is not a folder" if p.exists() else "does not exist"
        raise ArtifactError(f"artifacts folder {p} {what}; pass artifacts=DIR, a folder holding ae.onnx "
                            f"and threshold.json")
    return p
