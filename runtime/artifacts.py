"""Loading and checking an artifacts folder against ``aeflow.runtime.contract``: the metadata, graphs, a
session's signature, golden.npz, checkpoints and the demo set; a bad file is one ``ArtifactError`` line."""

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from aeflow.errors import ArtifactError, UsageError
from aeflow.files import sha256_file, write_atomic
from aeflow.runtime import contract
from aeflow.runtime.contract import FlowMeta, ThresholdMeta
from aeflow.runtime.jsoncheck import CALIBRATION_SCORES

MAX_DEMO_BYTES = 1 << 30


def bundled_dir() -> Path:
    """The artifacts shipped with the package, from its import spec (``importlib.resources`` is slower)."""
    import importlib.util

    return Path(importlib.util.find_spec("aeflow.artifacts").submodule_search_locations[0]).resolve()


def artifacts_dir(path: str | os.PathLike | None = None) -> Path:
    """``path`` (checked to be a folder) or the bundled folder."""
    if path is None:
        return bundled_dir()
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"artifacts must be a folder path (str or pathlib.Path), got {type(path).__name__}")
    p = Path(path)
    if not p.is_dir():
        what = "is not a folder" if p.exists() else "does not exist"
        raise ArtifactError(f"artifacts folder {p} {what}; pass artifacts=DIR, a folder holding ae.onnx "
                            f"and threshold.json")
    return p


def graphs_without_metadata(directory: Path) -> list[str]:
    """One line for each graph file in ``directory`` whose metadata file (threshold.json or flow.json) is
    missing, e.g. deleted by hand: that model is neither loaded nor checked."""
    return [f"{directory / spec.file}: {spec.metadata} is missing beside it, so this model is not checked; "
            f"restore {spec.metadata} or re-export" for spec in contract.GRAPHS.values()
            if os.path.lexists(directory / spec.file) and not os.path.lexists(directory / spec.metadata)]


def _regular(path: Path, hint: str = "run 'aeflow export' or restore the file") -> Path:
    """``path`` when it is a regular file (links followed), else ``ArtifactError`` saying what it is."""
    if not path.exists():
        raise ArtifactError(f"{path}: not found; {hint}")
    if not path.is_file():
        raise ArtifactError(f"{path}: not a regular file (a folder or a device); {hint}")
    return path


def _read_bytes(path: Path, limit: int, what: str, hint: str = "run 'aeflow export' or restore the file") -> bytes:
    size = _regular(path, hint).stat().st_size
    if size > limit:
        raise ArtifactError(f"{path}: {size:,} bytes, more than {what} can be ({limit:,}); re-export the artifacts")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot be read ({e.strerror or e}); restore the file") from None


def read_npz(path: Path, names: tuple[str, ...], limit: int, sha256: str | None = None,
             recorded_in: str = "") -> dict[str, np.ndarray]:
    """The arrays ``names`` of the .npz at ``path`` (at most ``limit`` bytes, with ``recorded_in``'s ``sha256``)."""
    data = _read_bytes(path, limit, "this file")
    if sha256 is not None:
        _same_sha256(path, hashlib.sha256(data).hexdigest(), sha256, recorded_in)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {n: npz[n] for n in names if n in npz.files}
    except Exception as e:  # np.load and zipfile raise many types for an empty or damaged file
        raise ArtifactError(f"{path}: cannot be read as .npz ({type(e).__name__}); re-export") from None
    if missing := [n for n in names if n not in arrays]:
        raise ArtifactError(f"{path}: no array {missing[0]!r}; re-export")
    return arrays


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list) -> dict:
    seen = set()
    for key, _ in pairs:  # a set: a 1 MB object of 100,000 keys is checked in linear time
        if key in seen:
            raise ValueError(f"duplicate key {key[:40]!r}")
        seen.add(key)
    return dict(pairs)


def _missing_hint(path: Path) -> str:
    """What to do when metadata ``path`` is missing: export, unless its folder holds only the other model's export
    and not this model's checkpoint (export changes nothing there): then train this model first."""
    folder, ae = path.parent, path.name == contract.THRESHOLD_JSON
    other, checkpoint, model, its = ("flow.json", "ae.pt", "detector", "ae") if ae else (
        "threshold.json", "flow.pt", "flow", "flow")
    if path.name in contract.METADATA and (folder / other).is_file() and not os.path.lexists(folder / checkpoint):
        return (f"{folder} holds only the {'flow' if ae else 'detector'} and no {checkpoint}: run 'aeflow train {its} "
                f"-o {folder}' and 'aeflow export -o {folder}' for a {model}, or pass an artifacts folder with one")
    return f"run 'aeflow export -o {folder}' or pass the right artifacts folder"


def load_json(path: Path) -> dict:
    """``path`` as one JSON object (at most ``contract.MAX_JSON_BYTES``; NaN, Infinity, duplicate keys refused)."""
    hint = "restore it" if path.is_file() else _missing_hint(path)  # the hint's look around: only where it is missing
    data = _read_bytes(path, contract.MAX_JSON_BYTES, "metadata", hint)
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ArtifactError(f"{path}: malformed JSON (nested too deeply); re-export the artifacts") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: malformed JSON ({str(e)[:120]}); re-export the artifacts") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}: expected a JSON object; re-export the artifacts")
    return doc


def read_metadata(directory: str | os.PathLike, name: str, verify: bool = True) -> ThresholdMeta | FlowMeta:
    """``directory/name`` (threshold.json or flow.json) as its typed metadata, checked (``verify``: the seal too)."""
    path = Path(directory) / name
    return contract.METADATA[name].from_json(load_json(path), path, verify)


def read_threshold(directory: str | os.PathLike, verify: bool = True) -> ThresholdMeta:
    """threshold.json, checked (``read_metadata``)."""
    return read_metadata(directory, contract.THRESHOLD_JSON, verify)


def read_flow(directory: str | os.PathLike, verify: bool = True) -> FlowMeta:
    """flow.json, checked (``read_metadata``)."""
    return read_metadata(directory, contract.FLOW_JSON, verify)


def is_aeflow_document(path: str | os.PathLike) -> bool:
    """True when ``path`` is an aeflow threshold.json or flow.json (any schema) in its own right: an export's or
    copy's own (a link to one elsewhere, or a file merely holding a "schema_version", is not)."""
    try:
        doc = load_json(Path(path))
        return not Path(path).is_symlink() and {"schema_version", "onnx_file", "content_sha256"} <= set(doc)
    except ArtifactError:  # missing, not a regular file, too large, malformed or not an object
        return False


def write_metadata(path: str | os.PathLike, meta: ThresholdMeta | FlowMeta) -> ThresholdMeta | FlowMeta:
    """Write ``meta`` sealed at ``path`` atomically, checked first as the runtime reads it; returns it as read."""
    doc = meta.to_json()
    checked = type(meta).from_json(doc, Path(path))
    write_atomic(path, json.dumps(doc, indent=2) + "\n", replace=True)
    return checked


def check_signature(session, sig: dict, name: str) -> None:
    """``ArtifactError`` unless ``session``'s inputs and outputs are ``sig``'s: names, float32, ranks, fixed dims."""
    for kind, have in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        if [a.name for a in have] != list(want := sig[kind]):
            raise ArtifactError(f"{name}: unexpected {kind} {[a.name for a in have]} (expected {list(want)}); "
                                f"this is not an aeflow graph - re-export")
        for arg, dims in zip(have, want.values()):
            shape = list(arg.shape) if arg.shape is not None else None
            ok = shape is not None and len(shape) == len(dims) and all(
                (isinstance(d, int) and d == w) if w != "N" else not isinstance(d, int) for d, w in zip(shape, dims))
            if arg.type != "tensor(float)" or not ok:
                raise ArtifactError(f"{name}: {kind[:-1]} {arg.name!r} is {arg.type} {shape} (expected tensor(float) "
                                    f"{dims}); this graph breaks the artifact contract - re-export")


def _same_sha256(path: Path, have: str, want: str, recorded_in: str) -> None:
    if have != want:
        raise ArtifactError(f"{path}: sha256 {have[:12]}... does not match {recorded_in}'s {want[:12]}...; the "
                            f"file was changed or replaced - re-export, or pass verify=False to load it anyway")


def graph_path(directory: str | os.PathLike, meta: ThresholdMeta | FlowMeta, which: str, verify: bool = True) -> Path:
    """The file of graph ``which`` in ``directory`` (``meta``: its JSON), checked to exist (and its sha256)."""
    spec, entry = contract.GRAPHS[which], meta.entry(which)
    if entry is None:
        raise ArtifactError(f"no int8 graph in {directory}: run 'aeflow export --quantize int8'")
    export = "aeflow export --quantize int8" if which == "int8" else "aeflow export"
    path = _regular(Path(directory) / spec.file, f"run '{export}' or restore the file")
    if verify:
        try:
            _same_sha256(path, sha256_file(path), entry.graph.sha256, spec.metadata)
        except OSError as e:
            raise ArtifactError(f"{path}: cannot be read ({e.strerror or e}); restore the file") from None
    return path


def golden_arrays(image_shape: tuple[int, int] = contract.IMAGE_SHAPE) -> dict[str, tuple[str, tuple[int, ...]]]:
    """golden.npz: array name -> (dtype, shape) for images of ``image_shape``."""
    image, points = (contract.GOLDEN_IMAGES, 1, *image_shape), (contract.GOLDEN_POINTS,)
    shapes = {"ae_images": image, "ae_reconstruction": image, "ae_score": (contract.GOLDEN_IMAGES,),
              "int8_reconstruction": image, "int8_score": (contract.GOLDEN_IMAGES,)}
    shapes |= {n: points for n in ("flow_x", "flow_z", "flow_dz_dx", "flow_log_prob", "sampler_z", "sampler_x")}
    return {n: ("float64" if n == "sampler_x" else "float32", s) for n, s in shapes.items()}


def read_golden(directory: str | os.PathLike, meta: ThresholdMeta | FlowMeta, which: str,
                verify: bool = True) -> dict[str, np.ndarray]:
    """golden.npz's arrays for graph ``which``, checked against ``meta``'s sha256 and ``golden_arrays``."""
    spec, path = contract.GRAPHS[which], Path(directory) / contract.GOLDEN_FILE
    want = golden_arrays(getattr(meta, "image_shape", contract.IMAGE_SHAPE))
    limit = sum(np.dtype(d).itemsize * int(np.prod(s)) for d, s in want.values()) + (64 << 20)  # + validation scores
    out = read_npz(path, spec.golden, limit, meta.golden.sha256 if verify else None, spec.metadata)  # one read
    for name, a in out.items():
        dtype, shape = want[name]
        if a.dtype != np.dtype(dtype) or a.shape != shape:
            raise ArtifactError(f"{path}: array {name!r} is {a.dtype} {a.shape} (expected {dtype} {shape}); re-export")
        if not np.all(np.isfinite(a)):
            raise ArtifactError(f"{path}: array {name!r} holds NaN or Inf; re-export")
    return out


def checkpoint_path(directory: str | os.PathLike, meta: ThresholdMeta | FlowMeta) -> Path | None:
    """``meta``'s checkpoint in ``directory`` (None: none named, or absent); ``ArtifactError`` for another one."""
    path = Path(directory) / meta.checkpoint.file if meta.checkpoint else None
    if path is None or not path.exists():
        return None
    if sha256_file(_regular(path, "restore the checkpoint or remove it")) != meta.checkpoint.sha256:
        raise ArtifactError(f"{path}: the checkpoint and the graph disagree: this is not the checkpoint the graphs "
                            f"were exported from (sha256 differs from the JSON's); re-export from it")
    return path


def demo_file(directory: str | os.PathLike | None = None) -> Path:
    """``directory/demo.npz`` where it exists, else the bundled demo set's (28 x 28 images)."""
    path = Path(directory) / contract.DEMO_FILE if directory is not None else None
    return path if path is not None and os.path.lexists(path) else bundled_dir() / contract.DEMO_FILE


def demo_images(directory: str | os.PathLike | None = None,
                image_shape: tuple[int, int] = contract.IMAGE_SHAPE) -> np.ndarray:
    """The demo images of ``demo_file(directory)``, uint8 [N, H, W]. ``ArtifactError`` (one line) for a
    damaged file or other images, or other sizes than 28 x 28 without the run's own demo.npz."""
    path = demo_file(directory)
    if path == bundled_dir() / contract.DEMO_FILE and tuple(image_shape) != contract.IMAGE_SHAPE:
        h, w = image_shape
        raise ArtifactError(f"no {contract.DEMO_FILE} of {h}x{w} images in {directory}: save some of the run's "
                            f"images there (np.savez(path, images=uint8 [N, {h}, {w}]))")
    images = read_npz(path, ("images",), MAX_DEMO_BYTES)["images"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != tuple(image_shape) or not len(images):
        raise ArtifactError(f"{path}: array 'images' is {images.dtype} {list(images.shape)} (expected uint8 "
                            f"[N, {image_shape[0]}, {image_shape[1]}]); re-export")
    return images


def reference_scores(directory: Path, meta: ThresholdMeta, verify: bool = True) -> np.ndarray | None:
    """ae.onnx's reference scores for p-values, float32 [n]: the calibration scores ``calibration.scores`` binds,
    else the validation scores golden.npz keeps (sha256 checked if ``verify``); None where neither is recorded."""
    record = (meta.calibration or {}).get("scores")
    if record is None and meta.validation_scores is None:
        return None
    path, sha, n, hint = (CALIBRATION_SCORES, record["sha256"], record["n"], "calibrate again (a changed file moved "
                          "away first)") if record is not None \
        else (contract.GOLDEN_FILE, meta.golden.sha256, meta.validation_scores, "re-export")
    path = Path(directory) / path
    try:
        data = path.read_bytes() if path.is_file() else b""
    except OSError:
        data = b""
    if not data or (verify and hashlib.sha256(data).hexdigest() != sha):
        raise ArtifactError(f"{path}: missing or not the file threshold.json records; {hint}")
    try:
        scores = np.load(io.BytesIO(data), allow_pickle=False)
        scores = scores if record is not None else scores["validation_scores"]
    except Exception as e:  # a damaged .npy or .npz raises many types
        raise ArtifactError(f"{path}: no readable scores ({type(e).__name__}); {hint}") from None
    if scores.dtype != np.float32 or scores.shape != (n,) or not np.isfinite(scores).all():
        raise ArtifactError(f"{path}: the scores are not float32 [{n}] of finite values; {hint}")
    return scores
