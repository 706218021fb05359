"""``aeflow export``: checkpoints -> ae.onnx, flow.onnx, flow_sampler.onnx, threshold.json, flow.json.

Plus golden.npz (PyTorch's outputs on a fixed input set, ``aeflow.export.golden``) and, with
``--quantize int8``, ae.int8.onnx. Everything is written into a staging folder, checked there
(onnxruntime against PyTorch on real inputs, the golden outputs as the runtime checks them), and
only then published (``aeflow.files.staged_folder``), so a failed or killed export leaves the
previous artifacts as they were. The metadata is built from the contract's definitions
(``aeflow.export.metadata``, ``aeflow.runtime.contract``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from aeflow.datasets import available, load_images, mixture_log_density, split_indices, to_float
from aeflow.errors import ArtifactError, ParityError
from aeflow.export.golden import golden_arrays, write_golden
from aeflow.export.graphs import export_autoencoder, export_flow
from aeflow.export.metadata import flow_metadata, threshold_metadata
from aeflow.export.quantize import quantize_int8
from aeflow.export.reference import load_autoencoder, load_flow, torch_ae, torch_flow
from aeflow.export.sampler_graph import write_sampler_graph
from aeflow.files import staged_folder
from aeflow.metrics import error_rates, threshold_from_scores
from aeflow.parity import Comparison, compare, flow_check_points
from aeflow.provenance import package_versions
from aeflow.runtime import artifacts, contract
from aeflow.runtime.golden import golden_rows
from aeflow.runtime.providers import create_session, run_batched
from aeflow.train.flow import FlowConfig, flow_data
from aeflow.train.models import Flow1d

ANOMALY_SETS = ("kmnist", "fashion-mnist")


@dataclass
class ExportReport:
    """What an export wrote and measured."""

    out_dir: Path
    files: list[str]
    checks: list[Comparison]
    threshold: contract.ThresholdMeta
    flow_meta: contract.FlowMeta
    notes: list[str] = field(default_factory=list)


def check_autoencoder(session, model, images: np.ndarray) -> tuple[list[Comparison], np.ndarray]:
    """Compare ae.onnx (``session``) with PyTorch on float32 images; returns the comparisons and the
    ONNX scores float32 [N]."""
    rec, score = run_batched(session, images)
    t_rec, t_score = torch_ae(model, images)
    return [compare("reconstruction", rec, t_rec), compare("score", score, t_score)], score


def check_flow(session, flow: Flow1d, x: np.ndarray) -> list[Comparison]:
    """Compare flow.onnx (``session``) with PyTorch at float32 points x [N]."""
    z, dz, lp = session.run(None, {"x": x})
    tz, tdz, tlp = torch_flow(flow, x)
    return [compare("z", z, tz), compare("dz_dx", dz, tdz), compare("log_prob", lp, tlp)]


def flow_bracket(flow: Flow1d, session) -> tuple[list[float], list[float]]:
    """An x bracket for inversion (12 sigma beyond every component: Phi is within 1e-32 of 0 or 1
    there, so f equals +-W/2) and flow.onnx's z at its ends."""
    comp = flow.components()
    mu, sigma = np.array(comp["mu"]), np.array(comp["sigma"])
    lo, hi = float(np.min(mu - 12 * sigma)), float(np.max(mu + 12 * sigma))
    z_edges = session.run(None, {"x": np.array([lo, hi], dtype=np.float32)})[0]
    return [lo, hi], [float(z_edges[0]), float(z_edges[1])]


def evaluate_graph(session, data_dir, threshold: float) -> tuple[dict, list[str]]:
    """Type I on the MNIST test set, type II and AUROC per available anomaly set
    (``metrics.error_rates``), and notes on the sets not found."""
    notes, anomalies = [], {}
    normal = run_batched(session, to_float(load_images("mnist", "test", data_dir)), outputs=["score"])[0]
    for name in ANOMALY_SETS:
        if not available(name, "test", data_dir):
            notes.append(f"{name} test set not in {data_dir}: no type II figure for it")
            continue
        anomalies[f"{name}-test"] = run_batched(session, to_float(load_images(name, "test", data_dir)),
                                                outputs=["score"])[0]
    return error_rates(normal, anomalies, threshold), notes


def _require(checks: list[Comparison], what: str) -> None:
    failed = [c for c in checks if not c.passed]
    if failed:
        worst = ", ".join(f"{c.name} max diff {c.max_abs:.2e} (tolerance {c.tolerance})" for c in failed)
        raise ParityError(f"{what}: {worst}; nothing was written")


def export_artifacts(checkpoints: str | os.PathLike, out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                     opset: int | None = None, evaluate: bool = True, quantize: str | None = None) -> ExportReport:
    """Export both checkpoints in ``checkpoints`` (ae.pt, flow.pt) into ``out_dir``.

    ``data_dir`` overrides where the validation images come from (default: the folder the
    autoencoder was trained from). Raises ``ParityError`` (writing nothing) when ONNX and
    PyTorch differ beyond ``aeflow.parity.TOLERANCES``. ``quantize="int8"`` also writes
    ae.int8.onnx and threshold.json's ``"int8"`` entry (``aeflow.export.quantize``), or raises
    ``ParityError`` (writing nothing) when the int8 graph misses its targets. flow_sampler.onnx
    (``aeflow.export.sampler_graph``) and flow.json's ``"sampler_graph"`` entry are always written,
    or ``ParityError`` (writing nothing) when that graph misses its accuracy targets. golden.npz
    (``aeflow.export.golden``) records PyTorch's outputs for every graph, checked against the
    graphs as the runtime will check them. Every file is written into a staging folder and
    published only when all checks pass (``aeflow.files.staged_folder``), the JSON files last.
    """
    checkpoints, out = Path(checkpoints), Path(out_dir)
    ae_ckpt_path, flow_ckpt_path = checkpoints / contract.AE_CHECKPOINT, checkpoints / contract.FLOW_CHECKPOINT
    model, ae_ckpt = load_autoencoder(ae_ckpt_path)
    flow, flow_ckpt = load_flow(flow_ckpt_path)
    cfg = ae_ckpt["config"]
    data_dir = data_dir if data_dir is not None else cfg["data_dir"]
    images = load_images("mnist", "train", data_dir)
    train_idx, val_idx = split_indices(len(images), int(cfg["seed"]), float(cfg["val_fraction"]))
    if len(train_idx) != cfg["n_train"]:
        raise ArtifactError(
            f"the training set found has {len(images)} images, but ae.pt was trained on a split of "
            f"{cfg['n_train'] + cfg['n_val']}; pass data_dir=DIR, the folder it was trained from"
        )
    val = to_float(images[val_idx])

    out.mkdir(parents=True, exist_ok=True)
    with staged_folder(out, last=(contract.THRESHOLD_JSON, contract.FLOW_JSON)) as tmp:
        ae_opset = export_autoencoder(model, tmp / contract.AE_FILE, opset)
        flow_opset = export_flow(flow, tmp / contract.FLOW_FILE, opset)
        ae_sess, flow_sess = create_session(tmp / contract.AE_FILE, "cpu"), create_session(tmp / contract.FLOW_FILE, "cpu")
        checks, val_scores = check_autoencoder(ae_sess, model, val)
        checks += check_flow(flow_sess, flow, flow_check_points())
        _require(checks, "ONNX differs from PyTorch")
        # the threshold comes from the exported graph's own scores, the ones the runtime will compare
        th = threshold_from_scores(val_scores, k=3.0)
        evaluation, notes = evaluate_graph(ae_sess, data_dir, th.value) if evaluate else ({}, [])
        versions = package_versions()
        int8 = None
        if quantize == "int8":
            int8, int8_checks = quantize_int8(tmp, val, data_dir, ANOMALY_SETS)
            checks += int8_checks

        x_bracket, z_at_bracket = flow_bracket(flow, flow_sess)
        sampler = write_sampler_graph(flow, flow.components(), tuple(x_bracket), tmp / contract.SAMPLER_FILE,
                                      flow_opset, onnx.load(str(tmp / contract.FLOW_FILE)).ir_version)
        config = flow_ckpt["config"]
        _, test_x = flow_data(FlowConfig(**config))
        nll = {"train": flow_ckpt["history"]["train_nll"][-1], "test": flow_ckpt["history"]["test_nll"][-1],
               "true_mixture_test": float(-mixture_log_density(test_x).mean())}
        golden_path = tmp / contract.GOLDEN_FILE
        copies = []
        if checkpoints.resolve() != out.resolve():
            for src in (ae_ckpt_path, flow_ckpt_path):
                shutil.copy2(src, tmp / src.name)
                copies.append(src.name)
        write_golden(golden_path, golden_arrays(model, flow, flow.components(), sampler, x_bracket,
                                                tmp / contract.INT8_FILE if int8 else None))
        meta = artifacts.write_metadata(tmp / contract.FLOW_JSON, flow_metadata(
            tmp / contract.FLOW_FILE, flow_opset, flow.components(), z_at_bracket, x_bracket, nll, config, sampler,
            versions, golden_path, flow_ckpt_path))
        threshold = artifacts.write_metadata(tmp / contract.THRESHOLD_JSON, threshold_metadata(
            tmp / contract.AE_FILE, ae_opset, th, cfg, ae_ckpt["history"]["epoch_loss"][-1], evaluation, versions,
            int8, golden_path, ae_ckpt_path))
        # the graphs as the runtime will load them: the golden outputs within tolerance on the CPU
        for which, doc in (("ae", threshold), ("int8", threshold), ("flow", meta), ("sampler", meta)):
            if doc.entry(which) is not None:
                session = create_session(tmp / contract.GRAPHS[which].file, "cpu")
                checks += [replace(c, name=f"golden {c.name}")
                           for c in golden_rows(session, which, artifacts.read_golden(tmp, doc, which), doc)]
        _require(checks, "the exported graphs miss their golden outputs")
        files = sorted(p.name for p in tmp.iterdir())
    if not quantize:
        (out / contract.INT8_FILE).unlink(missing_ok=True)  # a stale int8 graph that threshold.json no longer names
    return ExportReport(out, files, checks, threshold, meta, notes)
