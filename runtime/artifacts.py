"""Finding and checking artifacts: the bundled folder, JSON metadata, sha256 of the graphs."""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path

import onnxruntime as ort

from aeflow.errors import ArtifactError
from aeflow.files import sha256_file

SCHEMA_VERSIONS = (1,)
AE_SIGNATURE = (["images"], ["reconstruction", "score"])
FLOW_SIGNATURE = (["x"], ["z", "dz_dx", "log_prob"])


def bundled_dir() -> Path:
    """The artifacts shipped with the package (works for editable installs and wheels)."""
    return Path(str(resources.files("aeflow.artifacts")))


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
    onnx_name = meta.get("onnx_file")
    if not isinstance(onnx_name, str) or "/" in onnx_name or "\\" in onnx_name:
        raise ArtifactError(f"{path}: 'onnx_file' must name a graph in the same folder")
    onnx_path = directory / onnx_name
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: not found; run 'aeflow export' or restore the file")
    if verify:
        have, want = sha256_file(onnx_path), meta.get("sha256")
        if have != want:
            raise ArtifactError(f"{onnx_path}: sha256 {have[:12]}... does not match {name}'s {str(want)[:12]}...; "
                                f"the graph was changed or replaced - re-export, or pass --no-verify to load it anyway")
    meta["onnx_path"] = onnx_path
    return meta


def read_threshold(directory: Path, verify: bool = True) -> dict:
    """threshold.json checked: a finite, positive threshold, plus ``read_metadata``'s checks."""
    meta = read_metadata(directory, "threshold.json", verify)
    t = meta.get("threshold")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
        raise ArtifactError(f"{directory / 'threshold.json'}: threshold must be a finite positive number, found {t!r}; re-export")
    return meta


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
