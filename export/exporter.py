"""``aeflow export``: checkpoints -> ae.onnx, flow.onnx, flow_sampler.onnx, threshold.json, flow.json.

Everything is written into a temporary folder beside the output, checked there (onnxruntime
against PyTorch on real inputs), and only then moved into place, so a failed or killed export
leaves the previous artifacts as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from aeflow.errors import ArtifactError, ParityError
from aeflow.export.graphs import export_autoencoder, export_flow
from aeflow.export.quantize import INT8_FILE, quantize_int8
from aeflow.export.sampler_graph import SAMPLER_FILE, write_sampler_graph
from aeflow.files import sha256_file
from aeflow.metrics import auroc, threshold_from_scores, type_i_error, type_ii_error
from aeflow.parity import Comparison, compare, flow_check_points
from aeflow.provenance import package_versions
from aeflow.train.checkpoint import load_checkpoint
from aeflow.datasets import available, load_images, mixture_log_density, split_indices, to_float
from aeflow.train.flow import FlowConfig, flow_data
from aeflow.train.models import Autoencoder, Flow1d, ScoringAutoencoder

SCHEMA_VERSION = 1
SCORE_DEFINITION = "mean over the 784 pixels of (image - reconstruction)^2, image float32 in [0, 1]"
ANOMALY_SETS = ("kmnist", "fashion-mnist")
BATCH = 1000


@dataclass
class ExportReport:
    """What an export wrote and measured."""

    out_dir: Path
    files: list[str]
    checks: list[Comparison]
    threshold: dict
    flow_meta: dict
    notes: list[str] = field(default_factory=list)


def load_autoencoder(path: str | os.PathLike) -> tuple[Autoencoder, dict]:
    """The trained autoencoder (eval mode) and its checkpoint dict."""
    ckpt = load_checkpoint(path, "autoencoder")
    model = Autoencoder()
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def load_flow(path: str | os.PathLike) -> tuple[Flow1d, dict]:
    """The trained flow (eval mode) and its checkpoint dict."""
    ckpt = load_checkpoint(path, "flow")
    flow = Flow1d(int(ckpt["config"]["n_components"]))
    flow.load_state_dict(ckpt["state_dict"])
    return flow.eval(), ckpt


def cpu_session(path: str | os.PathLike) -> ort.InferenceSession:
    """An onnxruntime session on the CPU provider (the reference for export's checks)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_batched(session: ort.InferenceSession, images: np.ndarray, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """ae.onnx over float32 [N, 1, 28, 28] in batches -> (reconstruction, score)."""
    recs, scores = [], []
    for i in range(0, len(images), batch):
        r, s = session.run(None, {"images": images[i:i + batch]})
        recs.append(r)
        scores.append(s)
    return np.concatenate(recs), np.concatenate(scores)


def torch_ae(model: Autoencoder, images: np.ndarray, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch reference for ``run_batched``."""
    wrapper = ScoringAutoencoder(model).eval()
    recs, scores = [], []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            r, s = wrapper(torch.from_numpy(images[i:i + batch]))
            recs.append(r.numpy())
            scores.append(s.numpy())
    return np.concatenate(recs), np.concatenate(scores)


def check_autoencoder(session: ort.InferenceSession, model: Autoencoder, images: np.ndarray
                      ) -> tuple[list[Comparison], np.ndarray]:
    """Compare ONNX with PyTorch on float32 images; returns the comparisons and the ONNX scores."""
    rec, score = run_batched(session, images)
    t_rec, t_score = torch_ae(model, images)
    return [compare("reconstruction", rec, t_rec), compare("score", score, t_score)], score


def torch_flow(flow: Flow1d, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch reference for flow.onnx: float32 x [N] -> (z, dz_dx, log_prob), float32 [N] each."""
    with torch.inference_mode():
        z, dz, lp = flow(torch.from_numpy(x))
    return z.numpy(), dz.numpy(), lp.numpy()


def check_flow(session: ort.InferenceSession, flow: Flow1d, x: np.ndarray) -> list[Comparison]:
    """Compare flow.onnx with PyTorch at float32 points x [N]."""
    z, dz, lp = session.run(None, {"x": x})
    tz, tdz, tlp = torch_flow(flow, x)
    return [compare("z", z, tz), compare("dz_dx", dz, tdz), compare("log_prob", lp, tlp)]


def flow_metadata(flow: Flow1d, ckpt: dict, session: ort.InferenceSession) -> dict:
    """Component parameters, W, the range (-W/2, W/2) and an x bracket for inversion."""
    comp = flow.components()
    mu, sigma = np.array(comp["mu"]), np.array(comp["sigma"])
    w_total = float(sum(comp["weight"]))
    # beyond 12 sigma of every component, Phi is within 1e-32 of 0 or 1: f(x) equals +-W/2 in float32
    lo, hi = float(np.min(mu - 12 * sigma)), float(np.max(mu + 12 * sigma))
    z_edges = session.run(None, {"x": np.array([lo, hi], dtype=np.float32)})[0]
    config = ckpt["config"]
    _, test_x = flow_data(FlowConfig(**config))
    return {
        "n_components": len(mu),
        "components": comp,
        "W": w_total,
        "z_range": [-w_total / 2, w_total / 2],
        "x_bracket": [lo, hi],
        "z_at_bracket": [float(z_edges[0]), float(z_edges[1])],
        "target": "N(0, 1)",
        "nll": {"train": ckpt["history"]["train_nll"][-1], "test": ckpt["history"]["test_nll"][-1],
                "true_mixture_test": float(-mixture_log_density(test_x).mean())},
        "training": config,
    }


def _evaluate(session: ort.InferenceSession, data_dir, threshold: float) -> tuple[dict, list[str]]:
    """Type I on the MNIST test set, type II and AUROC per available anomaly set."""
    notes = []
    normal = run_batched(session, to_float(load_images("mnist", "test", data_dir)))[1]
    ev = {"type_i": {"set": "mnist-test", "n": int(normal.size), "rate": type_i_error(normal, threshold)},
          "type_ii": {}, "auroc": {}}
    for name in ANOMALY_SETS:
        if not available(name, "test", data_dir):
            notes.append(f"{name} test set not in {data_dir}: no type II figure for it")
            continue
        scores = run_batched(session, to_float(load_images(name, "test", data_dir)))[1]
        ev["type_ii"][f"{name}-test"] = {"n": int(scores.size), "rate": type_ii_error(scores, threshold)}
        ev["auroc"][f"{name}-test"] = auroc(normal, scores)
    return ev, notes


def export_artifacts(checkpoints: str | os.PathLike, out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                     opset: int | None = None, evaluate: bool = True, quantize: str | None = None) -> ExportReport:
    """Export both checkpoints in ``checkpoints`` (ae.pt, flow.pt) into ``out_dir``.

    ``data_dir`` overrides where the validation images come from (default: the folder the
    autoencoder was trained from). Raises ``ParityError`` (writing nothing) when ONNX and
    PyTorch differ beyond ``aeflow.parity.TOLERANCES``. ``quantize="int8"`` also writes
    ae.int8.onnx and threshold.json's ``"int8"`` entry (``aeflow.export.quantize``), or raises
    ``ParityError`` (writing nothing) when the int8 graph misses its targets. flow_sampler.onnx
    (``aeflow.export.sampler_graph``) and flow.json's ``"sampler_graph"`` entry are always written,
    or ``ParityError`` (writing nothing) when that graph misses its accuracy targets.
    """
    checkpoints, out = Path(checkpoints), Path(out_dir)
    model, ae_ckpt = load_autoencoder(checkpoints / "ae.pt")
    flow, flow_ckpt = load_flow(checkpoints / "flow.pt")
    cfg = ae_ckpt["config"]
    data_dir = data_dir if data_dir is not None else cfg.get("data_dir")
    images = load_images("mnist", "train", data_dir)
    train_idx, val_idx = split_indices(len(images), int(cfg["seed"]), float(cfg["val_fraction"]))
    if len(train_idx) != cfg["n_train"]:
        raise ArtifactError(
            f"the training set found has {len(images)} images, but ae.pt was trained on a split of "
            f"{cfg['n_train'] + cfg['n_val']}; pass the --data-dir it was trained from"
        )
    val = to_float(images[val_idx])

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".aeflow-tmp-", dir=out))
    try:
        ae_opset = export_autoencoder(model, tmp / "ae.onnx", opset)
        flow_opset = export_flow(flow, tmp / "flow.onnx", opset)
        ae_sess, flow_sess = cpu_session(tmp / "ae.onnx"), cpu_session(tmp / "flow.onnx")
        checks, val_scores = check_autoencoder(ae_sess, model, val)
        checks += check_flow(flow_sess, flow, flow_check_points())
        failed = [c for c in checks if not c.passed]
        if failed:
            worst = ", ".join(f"{c.name} max diff {c.max_abs:.2e} (tolerance {c.tolerance})" for c in failed)
            raise ParityError(f"ONNX differs from PyTorch: {worst}; nothing was written")
        # the threshold comes from the exported graph's own scores, the ones the runtime will compare
        th = threshold_from_scores(val_scores, k=3.0)
        evaluation, notes = _evaluate(ae_sess, data_dir, th.value) if evaluate else ({}, [])
        versions = package_versions()
        threshold = {
            "schema_version": SCHEMA_VERSION,
            "threshold": th.value,
            "k": th.k,
            "validation": {"mean": th.mean, "std": th.std, "ddof": 1, "n": th.n},
            "score": SCORE_DEFINITION,
            "onnx_file": "ae.onnx",
            "sha256": sha256_file(tmp / "ae.onnx"),
            "opset": ae_opset,
            "inputs": {"images": ["N", 1, 28, 28]},
            "outputs": {"reconstruction": ["N", 1, 28, 28], "score": ["N"]},
            "data": {"source": cfg["data_source"], "train_images": cfg["n_train"], "validation_images": cfg["n_val"],
                     "split_seed": cfg["seed"], "anomaly_sets": sorted(evaluation.get("type_ii", {}))},
            "training": {k: cfg[k] for k in ("epochs", "lr", "batch_size", "seed")}
                        | {"final_loss": ae_ckpt["history"]["epoch_loss"][-1]},
            "evaluation": evaluation,
            "versions": versions,
        }
        if quantize == "int8":
            threshold["int8"], int8_checks = quantize_int8(tmp, val, data_dir, ANOMALY_SETS)
            checks += int8_checks
        meta = {"schema_version": SCHEMA_VERSION, "onnx_file": "flow.onnx", "sha256": sha256_file(tmp / "flow.onnx"),
                "opset": flow_opset, "inputs": {"x": ["N"]}, "outputs": {o: ["N"] for o in ("z", "dz_dx", "log_prob")}}
        meta |= flow_metadata(flow, flow_ckpt, flow_sess)
        meta["sampler_graph"] = write_sampler_graph(flow, meta["components"], tuple(meta["x_bracket"]),
                                                    tmp / SAMPLER_FILE, flow_opset,
                                                    onnx.load(str(tmp / "flow.onnx")).ir_version)
        meta["sampler_graph"]["sha256"] = sha256_file(tmp / SAMPLER_FILE)
        meta["versions"] = versions
        (tmp / "threshold.json").write_text(json.dumps(threshold, indent=2) + "\n")
        (tmp / "flow.json").write_text(json.dumps(meta, indent=2) + "\n")
        files = ["ae.onnx", "flow.onnx", SAMPLER_FILE, "threshold.json", "flow.json"] + ([INT8_FILE] if quantize else [])
        if checkpoints.resolve() != out.resolve():
            for name in ("ae.pt", "flow.pt"):
                shutil.copy2(checkpoints / name, tmp / name)
                files.append(name)
        for name in files:
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        # the JSON files go last: they name the graphs' hashes, so a reader never trusts a stale graph
        for name in sorted(files, key=lambda n: n.endswith(".json")):
            os.replace(tmp / name, out / name)
        if not quantize:
            (out / INT8_FILE).unlink(missing_ok=True)  # a stale int8 graph that threshold.json no longer names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportReport(out, files, checks, threshold, meta, notes)
