"""The artifact contract between ``aeflow export`` and the runtime: file names, graph signatures, and
threshold.json and flow.json as frozen dataclasses whose ``from_json`` checks the fields and their consistency
(one ``ArtifactError`` line naming file and field) and whose ``to_json`` gives the sealed document back."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from aeflow.errors import ArtifactError
from aeflow.files import sha256_file
from aeflow.runtime.jsoncheck import SHA256, Check, calibration_record, content_sha256, evaluation, seal, show

if TYPE_CHECKING:
    from aeflow.runtime.inversion import Components

SCHEMA_VERSION = 2
AE_FILE, INT8_FILE, FLOW_FILE, SAMPLER_FILE = "ae.onnx", "ae.int8.onnx", "flow.onnx", "flow_sampler.onnx"
THRESHOLD_JSON, FLOW_JSON, GOLDEN_FILE, DEMO_FILE = "threshold.json", "flow.json", "golden.npz", "demo.npz"
AE_CHECKPOINT, FLOW_CHECKPOINT = "ae.pt", "flow.pt"
MAX_JSON_BYTES = 1 << 20  # today's files are ~3 KB
FLOW_TARGET = "N(0, 1)"
GOLDEN_IMAGES, GOLDEN_POINTS = 64, 256
IMAGE_SHAPE, MIN_SIDE, MAX_SIDE, MAX_PIXELS = (28, 28), 4, 1024, 1 << 16  # sizes read, trained and exported
MAX_COMPONENTS = 64
GRAPH_KEYS = ("onnx_file", "sha256", "opset", "inputs", "outputs")


def score_definition(image_shape: tuple[int, int] = IMAGE_SHAPE) -> str:
    """threshold.json's ``score``: the score's definition for images of ``image_shape``."""
    return f"mean over the {image_shape[0] * image_shape[1]} pixels of (image - reconstruction)^2, image float32 in [0, 1]"


class GraphSpec(NamedTuple):
    """A graph: its file, the JSON recording it, its golden arrays (inputs first)."""

    file: str
    metadata: str
    golden: tuple[str, ...]


GRAPHS = {"ae": GraphSpec(AE_FILE, THRESHOLD_JSON, ("ae_images", "ae_reconstruction", "ae_score")),
          "int8": GraphSpec(INT8_FILE, THRESHOLD_JSON, ("ae_images", "int8_reconstruction", "int8_score")),
          "flow": GraphSpec(FLOW_FILE, FLOW_JSON, ("flow_x", "flow_z", "flow_dz_dx", "flow_log_prob")),
          "sampler": GraphSpec(SAMPLER_FILE, FLOW_JSON, ("sampler_z", "sampler_x"))}


# each model's files in an export: its metadata first (an earlier export is recognised by it), then its graphs
MODEL_FILES = {model: (meta, *(g.file for g in GRAPHS.values() if g.metadata == meta))
               for model, meta in (("detector", THRESHOLD_JSON), ("flow", FLOW_JSON))}


def signature(which: str, image_shape: tuple[int, int] = IMAGE_SHAPE) -> dict:
    """Graph ``which``'s float32 inputs and outputs {"inputs": {name: dims}, ...}; "N" is the batch."""
    if which in ("ae", "int8"):
        image = ["N", 1, *image_shape]
        return {"inputs": {"images": image}, "outputs": {"reconstruction": image, "score": ["N"]}}
    if which == "flow":
        return {"inputs": {"x": ["N"]}, "outputs": {"z": ["N"], "dz_dx": ["N"], "log_prob": ["N"]}}
    return {"inputs": {"z": ["N"]}, "outputs": {"x": ["N"]}}


def _envelope(c: Check, doc, keys: tuple, optional: tuple, verify: bool) -> None:
    """The schema version, the keys, plain JSON throughout and (when ``verify``) the seal."""
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        if version == 1 and not isinstance(version, bool):
            raise ArtifactError(f"{c.where}: schema_version 1 was written by an older aeflow (no golden outputs, "
                                f"metadata not bound to the graphs); re-export: aeflow export -o DIR, which reads "
                                f"DIR/ae.pt and DIR/flow.pt")
        raise ArtifactError(f"{c.where}: unknown schema_version {show(version)} (this aeflow reads {SCHEMA_VERSION}); "
                            f"upgrade aeflow or re-export")
    c.obj(doc, "", keys, optional)
    try:
        digest = content_sha256(doc)
    except (TypeError, ValueError, RecursionError):  # NaN, Infinity or a non-JSON object handed in through the API
        raise ArtifactError(f"{c.where}: holds values that are not plain JSON (NaN, Infinity or objects); "
                            f"re-export the artifacts") from None
    if verify and c.text(doc["content_sha256"], "content_sha256", SHA256) != digest:
        raise ArtifactError(f"{c.where}: contents do not match its content_sha256; the file was edited after "
                            f"export - re-export, or pass verify=False to load it anyway")


class Graph(NamedTuple):
    """A graph's entry: which graph (a key of ``GRAPHS``), its sha256, opset and ``signature``."""

    which: str
    sha256: str
    opset: int
    signature: dict

    @classmethod
    def of_file(cls, which: str, path, opset: int, image_shape: tuple[int, int] = IMAGE_SHAPE) -> "Graph":
        """The entry of graph ``which`` written at ``path`` for images of ``image_shape``."""
        return cls(which, sha256_file(path), int(opset), signature(which, image_shape))

    @classmethod
    def from_json(cls, c: Check, doc: dict, prefix: str, which: str, image_shape=IMAGE_SHAPE) -> "Graph":
        sig = signature(which, image_shape)
        c.same(doc["onnx_file"], prefix + "onnx_file", GRAPHS[which].file)
        for key, want in sig.items():
            if doc[key] != want:
                c.fail(prefix + key, f"must be the graph's signature {json.dumps(want)}")
        return cls(which, c.text(doc["sha256"], prefix + "sha256", SHA256),
                   c.num(doc["opset"], prefix + "opset", 7, 100, integer=True), sig)

    def to_json(self) -> dict:
        return {"onnx_file": GRAPHS[self.which].file, "sha256": self.sha256, "opset": self.opset, **self.signature}


class Binding(NamedTuple):
    """A file the JSON binds by its sha256 (``_asdict()`` is its JSON): golden.npz, or the graphs' checkpoint."""

    file: str
    sha256: str


def _bindings(c: Check, doc: dict) -> dict:
    """``golden``, ``checkpoint`` (None when absent) and ``versions`` of a document."""
    out = {"checkpoint": None, "versions": c.versions(doc["versions"], "versions")}
    for key, pattern in (("golden", re.escape(GOLDEN_FILE)), ("checkpoint", r"[A-Za-z0-9_.-]+\.pt")):
        if key in doc:
            b = c.obj(doc[key], key, ("file", "sha256"))
            out[key] = Binding(c.text(b["file"], f"{key}.file", pattern, 100), c.text(b["sha256"], f"{key}.sha256", SHA256))
    return out


def _optional(doc: dict) -> dict:
    """``doc`` without its None values (absent optional fields), bindings as JSON."""
    return {k: v._asdict() if isinstance(v, Binding) else v for k, v in doc.items() if v is not None}


class Validation(NamedTuple):
    """Export's validation scores: mean, std (ddof 1) and their number."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True, kw_only=True)
class ThresholdEntry:
    """A graph's threshold, export's ``k`` and ``validation``, the ``calibration`` record (None: export's);
    threshold.json's "int8" entry also holds export's ``method`` and ``evaluation`` dicts."""

    graph: Graph
    threshold: float
    k: float
    validation: Validation
    calibration: dict | None = None
    method: dict | None = None
    evaluation: dict | None = None

    @staticmethod
    def _fields(c: Check, doc: dict, prefix: str, which: str, image_shape, n_validation: int) -> dict:
        v = c.obj(doc["validation"], prefix + "validation", ("mean", "std", "ddof", "n"))
        c.same(v["ddof"], prefix + "validation.ddof", 1)
        val = Validation(mean=c.num(v["mean"], prefix + "validation.mean", 0.0),
                         std=c.num(v["std"], prefix + "validation.std", 0.0),
                         n=c.num(v["n"], prefix + "validation.n", 2, 10**9, integer=True))
        threshold = c.num(doc["threshold"], prefix + "threshold", 0.0, lo_open=True)
        k = c.num(doc["k"], prefix + "k", 0.0, 100.0, lo_open=True)
        cal = doc.get("calibration")
        if cal is not None:
            calibration_record(c, cal, prefix + "calibration", threshold)
        elif not math.isclose(threshold, val.mean + k * val.std, rel_tol=1e-9):
            c.fail(prefix + "threshold", f"{threshold!r} is not validation.mean + k * validation.std "
                                         f"= {val.mean + k * val.std!r}")
        if val.n != n_validation:
            c.fail(prefix + "validation.n", "differs from data.validation_images")
        return dict(graph=Graph.from_json(c, doc, prefix, which, image_shape), threshold=threshold, k=k,
                    validation=val, calibration=cal)

    def _head(self) -> dict:
        v = self.validation
        return {"threshold": self.threshold, "k": self.k, "validation": {"mean": v.mean, "std": v.std, "ddof": 1, "n": v.n}}

    def to_json(self) -> dict:
        """threshold.json's "int8" entry."""
        return _optional({**self._head(), **self.graph.to_json(), "calibration": self.calibration,
                          "method": self.method, "evaluation": self.evaluation})


@dataclass(frozen=True, kw_only=True)
class ThresholdMeta(ThresholdEntry):
    """threshold.json: ae.onnx's entry, ``image_shape`` (H, W), export's ``data``, ``training`` and ``evaluation``,
    versions, bindings, the ``int8`` entry and how many validation scores golden.npz keeps (None: none)."""

    image_shape: tuple[int, int] = IMAGE_SHAPE
    validation_scores: int | None = None
    data: dict
    training: dict
    evaluation: dict
    versions: dict
    golden: Binding
    checkpoint: Binding | None = None
    int8: ThresholdEntry | None = None

    KEYS = ("schema_version", "threshold", "k", "validation", "score", *GRAPH_KEYS, "data", "training", "evaluation",
            "versions", "golden", "content_sha256")

    @classmethod
    def from_json(cls, doc, where=THRESHOLD_JSON, verify: bool = True) -> "ThresholdMeta":
        """``doc`` checked (``where``: the file, for messages; ``verify``: the seal), or ``ArtifactError``."""
        c = Check(where)
        _envelope(c, doc, cls.KEYS, ("image_shape", "validation_scores", "checkpoint", "int8", "calibration"), verify)
        shape = doc.get("image_shape", list(IMAGE_SHAPE))
        ok = isinstance(shape, list) and len(shape) == 2 and all(type(v) is int for v in shape)
        if not ok or min(shape) < MIN_SIDE or max(shape) > MAX_SIDE or shape[0] * shape[1] > MAX_PIXELS:
            c.fail("image_shape", f"must be [H, W] with H, W of {MIN_SIDE} to {MAX_SIDE:,} and "
                                  f"H * W <= {MAX_PIXELS:,}, found {shape if ok else show(shape)}")
        shape = tuple(shape)
        c.same(doc["score"], "score", score_definition(shape))
        data = c.obj(doc["data"], "data", ("source", "train_images", "validation_images", "anomaly_sets"), closed=False)
        c.text(data["source"], "data.source"), c.count(data["train_images"], "data.train_images", 1)
        n_val = c.count(data["validation_images"], "data.validation_images", 2)
        training = c.obj(doc["training"], "training", ("epochs", "final_loss"), closed=False)
        c.count(training["epochs"], "training.epochs", 1), c.num(training["final_loss"], "training.final_loss", 0.0)
        ev = evaluation(c, doc["evaluation"], "evaluation")
        if sorted(ev.get("type_ii", {})) != data["anomaly_sets"]:
            c.fail("data.anomaly_sets", "differs from the sets of evaluation.type_ii")
        int8 = None
        if "int8" in doc:
            e = c.obj(doc["int8"], "int8", ("threshold", "k", "validation", *GRAPH_KEYS, "method", "evaluation"),
                      ("calibration",))
            int8 = ThresholdEntry(**ThresholdEntry._fields(c, e, "int8.", "int8", shape, n_val),
                                  method=c.obj(e["method"], "int8.method", closed=False),
                                  evaluation=evaluation(c, e["evaluation"], "int8.evaluation"))
        n_scores = c.num(doc["validation_scores"], "validation_scores", 2, 10**9, integer=True) \
            if "validation_scores" in doc else None
        return cls(**cls._fields(c, doc, "", "ae", shape, n_val), image_shape=shape, validation_scores=n_scores,
                   data=data, training=training, evaluation=ev, int8=int8, **_bindings(c, doc))

    def to_json(self) -> dict:
        """The sealed document (``from_json(meta.to_json())`` gives ``meta`` back) in export's key order, the
        calibration record last: the bundled files are written back byte for byte."""
        return seal(_optional({
            "schema_version": SCHEMA_VERSION, **self._head(), "image_shape": list(self.image_shape),
            "score": score_definition(self.image_shape), **self.graph.to_json(),
            "validation_scores": self.validation_scores, "data": self.data, "training": self.training,
            "evaluation": self.evaluation, "versions": self.versions, "golden": self.golden,
            "checkpoint": self.checkpoint, "int8": self.int8 and self.int8.to_json(), "calibration": self.calibration}))

    def entry(self, which: str) -> ThresholdEntry | None:
        """The entry of graph "ae" (this object) or "int8" (None when absent)."""
        return self if which == "ae" else self.int8

    def calibrated(self, which: str, threshold: float, record: dict) -> "ThresholdMeta":
        """A copy with graph ``which``'s threshold set by a calibration (``record``)."""
        if which == "ae":
            return replace(self, threshold=threshold, calibration=record)
        return replace(self, int8=replace(self.int8, threshold=threshold, calibration=record))


class SamplerEntry(NamedTuple):
    """flow.json's "sampler_graph": the graph, its build, where float64 takes over, export's ``check``."""

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
    BUILD = {"newton_steps": (1, 16), "table_nodes": (2, 10**6), "tail_nodes_per_side": (2, 10**6)}

    @classmethod
    def from_json(cls, c: Check, doc, half_w: float) -> "SamplerEntry":
        """flow.json's "sampler_graph" ``doc`` checked for a range of +-``half_w``."""
        f = "sampler_graph."
        c.obj(doc, f[:-1], (*GRAPH_KEYS, *cls.BUILD, "tail_mass", "trusted_slope", "float64_z_intervals", "check"))
        build = {k: c.num(doc[k], f + k, *bounds, integer=True) for k, bounds in cls.BUILD.items()}
        if not c.num(doc["tail_mass"], f + "tail_mass", 0.0, lo_open=True) < half_w:
            c.fail(f + "tail_mass", "must be below W/2")
        iv = doc["float64_z_intervals"]
        if not isinstance(iv, list) or len(iv) > 10_000:
            c.fail(f + "float64_z_intervals", f"must be an array of at most 10,000 pairs, found {show(iv)}")
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
                   trusted_slope=c.num(doc["trusted_slope"], f + "trusted_slope", 0.0, lo_open=True), check=ch, **build)

    def to_json(self) -> dict:
        return {**self.graph.to_json(), **{k: getattr(self, k) for k in self.BUILD}, "tail_mass": self.tail_mass,
                "trusted_slope": self.trusted_slope, "float64_z_intervals": [list(p) for p in self.float64_z_intervals],
                "check": self.check}


@dataclass(frozen=True, kw_only=True, eq=False)
class FlowMeta:
    """flow.json: flow.onnx, its float64 ``components``, W and the range +-W/2, the x bracket and
    flow.onnx's z there, export's ``nll`` and ``training`` dicts, the ``sampler`` entry, bindings."""

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
        from aeflow.runtime.inversion import Components  # here: scoring never loads the flow's maths

        c = Check(where)
        _envelope(c, doc, cls.KEYS, ("checkpoint",), verify)
        k = c.num(doc["n_components"], "n_components", 1, MAX_COMPONENTS, integer=True)
        comp = c.obj(doc["components"], "components", ("mu", "sigma", "weight"))
        cols = {n: c.numbers(comp[n], f"components.{n}", (1, MAX_COMPONENTS), lo=None if n == "mu" else 0.0,
                             lo_open=True) for n in ("mu", "sigma", "weight")}
        for name, values in cols.items():
            if len(values) != k:
                c.fail(f"components.{name}", f"has {len(values)} values, n_components is {k}")
        c.same(doc["target"], "target", FLOW_TARGET)
        nll = c.table(c.obj(doc["nll"], "nll", ("train", "test"), closed=False), "nll", c.num)
        if c.obj(doc["training"], "training", ("n_components",), closed=False)["n_components"] != k:
            c.fail("training.n_components", f"differs from n_components {k}")
        w = c.num(doc["W"], "W", 0.0, lo_open=True)
        if not math.isclose(w, math.fsum(cols["weight"]), rel_tol=1e-12):
            c.fail("W", f"{w!r} is not the sum of components.weight ({math.fsum(cols['weight'])!r})")
        z_range, (lo, hi), zb = (c.numbers(doc[n], n, (2, 2)) for n in ("z_range", "x_bracket", "z_at_bracket"))
        if not all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(z_range, (-w / 2, w / 2))):
            c.fail("z_range", f"must be [-W/2, W/2] = [{-w / 2!r}, {w / 2!r}]")
        if not lo < hi:
            c.fail("x_bracket", f"must be ordered, found [{lo!r}, {hi!r}]")
        model = Components(**cols)
        beyond = model.tail_mass(np.array([lo, hi]), np.array([-1.0, 1.0]))  # float64 mass beyond the bracket
        if not np.all(beyond <= 1e-12 * w):
            c.fail("x_bracket", f"does not map onto the range (mass {float(beyond.max()):.3g} beyond its ends)")
        if not (abs(zb[0] + w / 2) <= 1e-6 * w and abs(zb[1] - w / 2) <= 1e-6 * w):
            c.fail("z_at_bracket", "must be the range's ends -W/2, W/2 (to float32 rounding)")
        return cls(graph=Graph.from_json(c, doc, "", "flow"), components=model, W=w, z_range=z_range,
                   x_bracket=(lo, hi), z_at_bracket=zb, nll=nll, training=doc["training"],
                   sampler=SamplerEntry.from_json(c, doc["sampler_graph"], w / 2), **_bindings(c, doc))

    def to_json(self) -> dict:
        """The sealed document (``from_json(meta.to_json())`` gives ``meta`` back)."""
        comp = {n: getattr(self.components, n).tolist() for n in ("mu", "sigma", "weight")}
        return seal(_optional({
            "schema_version": SCHEMA_VERSION, **self.graph.to_json(), "n_components": len(comp["mu"]),
            "components": comp, "W": self.W, "z_range": list(self.z_range), "x_bracket": list(self.x_bracket),
            "z_at_bracket": list(self.z_at_bracket), "target": FLOW_TARGET, "nll": self.nll, "training": self.training,
            "sampler_graph": self.sampler.to_json(), "versions": self.versions, "golden": self.golden,
            "checkpoint": self.checkpoint}))

    def entry(self, which: str) -> "FlowMeta | SamplerEntry":
        """The entry of graph "flow" (this object) or "sampler"."""
        return self if which == "flow" else self.sampler


METADATA = {THRESHOLD_JSON: ThresholdMeta, FLOW_JSON: FlowMeta}
