"""Finding and checking artifacts: the bundled folder, JSON metadata, sha256 of the graphs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from aeflow.errors import ArtifactError
from aeflow.files import sha256_file

SCHEMA_VERSIONS = (1,)
AE_SIGNATURE = (["images"], ["reconstruction", "score"])
FLOW_SIGNATURE = (["x"], ["z", "dz_dx", "log_prob"])
SAMPLER_SIGNATURE = (["z"], ["x"])


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
        raise ArtifactError(f"artifacts folder {p} does not exist; pass --artifacts DIR holding ae.onnx and threshold.json")
    return p


def read_metadata(directory: Path, name: str, verify: bool = True) -> dict:
    """Read ``directory/name`` (threshold.json or flow.json), check its schema version and, unless
    ``verify`` is False, the sha256 of the graph it names. Returns the dict, with
    ``onnx_path`` (a Path) added."""
    path = directory / name
    if not path.is_file():
        raise ArtifactError(f"{path}: not found; run 'aeflow export' or pass the right --artifacts")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: malformed JSON ({e}); re-export the artifacts") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: expected a JSON object; re-export the artifacts")
    version = meta.get("schema_version")
    if version not in SCHEMA_VERSIONS:
        raise ArtifactError(f"{path}: unknown schema_version {version!r} (this aeflow reads {SCHEMA_VERSIONS}); "
                            f"upgrade aeflow or re-export")
    meta["onnx_path"] = _graph_path(directory, meta, path.name, verify)
    return meta


def _graph_path(directory: Path, entry: dict, where: str, verify: bool, export_hint: str = "aeflow export") -> Path:
    """The graph ``entry["onnx_file"]`` names in ``directory``, checked to exist and, when
    ``verify``, to have the sha256 ``entry["sha256"]``."""
    name = entry.get("onnx_file")
    if not isinstance(name, str) or "/" in name or "\\" in name:
        raise ArtifactError(f"{directory / where}: 'onnx_file' must name a graph in the same folder; re-export")
    path = directory / name
    if not path.is_file():
        raise ArtifactError(f"{path}: not found; run '{export_hint}' or restore the file")
    if verify:
        have, want = sha256_file(path), entry.get("sha256")
        if have != want:
            raise ArtifactError(f"{path}: sha256 {have[:12]}... does not match {where}'s {str(want)[:12]}...; "
                                f"the graph was changed or replaced - re-export, or pass --no-verify to load it anyway")
    return path


def _positive_threshold(value, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ArtifactError(f"{where}: threshold must be a finite positive number, found {value!r}; re-export")
    return float(value)


def read_threshold(directory: Path, verify: bool = True) -> dict:
    """threshold.json checked: a finite, positive threshold, plus ``read_metadata``'s checks."""
    meta = read_metadata(directory, "threshold.json", verify)
    _positive_threshold(meta.get("threshold"), str(directory / "threshold.json"))
    return meta


def read_int8(directory: Path, meta: dict, verify: bool = True) -> tuple[Path, float]:
    """The int8 graph's path and threshold from threshold.json's "int8" entry (``meta`` as
    ``read_threshold`` returns it), checked like the float32 graph."""
    entry = meta.get("int8")
    if not isinstance(entry, dict):
        raise ArtifactError(f"no int8 graph in {directory}: run 'aeflow export --quantize int8'")
    path = _graph_path(directory, entry, "threshold.json (int8)", verify, "aeflow export --quantize int8")
    return path, _positive_threshold(entry.get("threshold"), f"{directory / 'threshold.json'} (int8)")


def read_sampler_graph(directory: Path, meta: dict, verify: bool = True) -> tuple[Path, dict]:
    """The sampler graph's path and flow.json's "sampler_graph" entry (``meta`` as
    ``read_flow_metadata`` returns it), the graph checked like flow.onnx and the entry's
    ``float64_z_intervals`` checked to be a list of ordered [a, b] pairs."""
    entry = meta.get("sampler_graph")
    if not isinstance(entry, dict):
        raise ArtifactError(f"no sampler graph in {directory}: re-export with 'aeflow export'")
    path = _graph_path(directory, entry, "flow.json (sampler_graph)", verify)
    intervals = entry.get("float64_z_intervals")
    try:
        ok = isinstance(intervals, list) and all(len(p) == 2 and float(p[0]) <= float(p[1]) for p in intervals)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ArtifactError(f"{directory / 'flow.json'}: malformed sampler_graph float64_z_intervals; re-export")
    return path, entry


def read_flow_metadata(directory: Path, verify: bool = True) -> dict:
    """flow.json checked: W > 0, an ordered x bracket, plus ``read_metadata``'s checks."""
    meta = read_metadata(directory, "flow.json", verify)
    try:
        w = float(meta["W"])
        lo, hi = (float(v) for v in meta["x_bracket"])
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{directory / 'flow.json'}: missing W or x_bracket; re-export") from None
    if not (math.isfinite(w) and w > 0 and math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ArtifactError(f"{directory / 'flow.json'}: W must be positive and x_bracket ordered; re-export")
    return meta


def check_signature(session: ort.InferenceSession, expected: tuple[list[str], list[str]], name: str) -> None:
    """Raise ``ArtifactError`` naming the differences when the graph's inputs or outputs are not
    the expected ones."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    problems = []
    if inputs != expected[0]:
        problems.append(f"inputs {inputs} (expected {expected[0]})")
    if outputs != expected[1]:
        problems.append(f"outputs {outputs} (expected {expected[1]})")
    if problems:
        raise ArtifactError(f"{name}: unexpected {' and '.join(problems)}; this is not an aeflow graph - re-export")
