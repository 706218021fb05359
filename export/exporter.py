"""``aeflow export``: the checkpoints a run holds -> ae.onnx (+ ae.int8.onnx) and threshold.json,
flow.onnx, flow_sampler.onnx and flow.json, golden.npz (PyTorch's outputs on fixed inputs, and the
detector's validation scores), MODEL_CARD.md. Everything is written into a staging folder, checked
there (onnxruntime against PyTorch, the golden outputs as the runtime checks them) and only then
published (``aeflow.files.staged_folder``), so a failed or killed export leaves the folder as it was.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

import torch

from aeflow.datasets import available, load_images, mixture_log_density, to_float
from aeflow.errors import ArtifactError, ParityError, UsageError
from aeflow.export.golden import golden_arrays, golden_images, golden_points, write_golden
from aeflow.export.graphs import export_autoencoder, export_flow
from aeflow.export.metadata import flow_metadata, threshold_metadata
from aeflow.export.model_card import MODEL_CARD, write_model_card
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
from aeflow.train.autoencoder import AEConfig, training_images
from aeflow.train.flow import FlowConfig, flow_data
from aeflow.train.models import Flow1d

ANOMALY_SETS = ("kmnist", "fashion-mnist")
FLOW_TRAINING = ("n_components", "epochs", "lr", "batch_size", "n_train", "n_test", "seed")  # flow.json's "training"


@dataclass
class ExportReport:
    """What an export wrote and measured."""

    out_dir: Path
    files: list[str]
    checks: list[Comparison]
    threshold: dict | None
    flow_meta: dict | None
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


def validation_images(cfg: dict, data_dir) -> tuple[np.ndarray, str]:
    """The validation images of the autoencoder checkpoint config ``cfg`` (its own files, or MNIST
    from ``data_dir``), float32 [n_val, 1, H, W], and the sha256 of all the training pixels;
    ``ArtifactError`` when they are not the ones it was trained with."""
    if cfg["data_source"] == "array":
        raise ArtifactError("ae.pt was trained on an array (AutoencoderDetector.fit): export it with "
                            "AutoencoderDetector.export, which holds its validation images (export a flow "
                            "for the same folder first, or into another folder)")
    config = AEConfig(**{**cfg, "data_dir": data_dir})
    images, train_idx, val_idx = training_images(config)
    if len(train_idx) != cfg["n_train"] or list(images.shape[-2:]) != list(cfg.get("image_shape", [28, 28])):
        raise ArtifactError(
            f"the training set found has {len(images)} images, but ae.pt was trained on a split of "
            f"{cfg['n_train'] + cfg['n_val']}; pass data_dir=DIR, the folder it was trained from")
    return images[val_idx], config.data_sha256


@dataclass
class Staged:
    """One model exported into the staging folder, waiting for golden.npz and its metadata."""

    model: torch.nn.Module
    ckpt: dict
    path: Path
    opset: int
    extra: dict = field(default_factory=dict)


def stage_detector(tmp: Path, ckpt_path: Path, data_dir, opset, evaluate: bool, quantize: str | None,
                   checks: list, notes: list, validation: np.ndarray | None = None) -> Staged:
    """ae.onnx (and ae.int8.onnx) in ``tmp``, checked against PyTorch on the validation images
    (``validation`` float32 [n_val, 1, H, W] for a detector fitted on an array, else re-read);
    the threshold from the graph's own validation scores, the evaluation on the MNIST test sets
    (for an MNIST detector)."""
    model, ckpt = load_autoencoder(ckpt_path)
    cfg = ckpt["config"]
    own = bool(cfg.get("data")) or validation is not None
    if own and quantize:
        raise UsageError("--quantize int8 checks the int8 graph on the MNIST test sets; it is for MNIST detectors")
    data_dir = data_dir if data_dir is not None else cfg["data_dir"]
    if validation is None:
        val, data_sha256 = validation_images(cfg, data_dir)
    elif len(validation) != cfg["n_val"] or list(validation.shape[-2:]) != cfg["image_shape"]:
        raise ArtifactError(f"{ckpt_path}: the validation images given are not the ones it was trained with")
    else:
        val, data_sha256 = validation, cfg["data_sha256"]
    ae_opset = export_autoencoder(model, tmp / contract.AE_FILE, opset)
    session = create_session(tmp / contract.AE_FILE, "cpu")
    ae_checks, val_scores = check_autoencoder(session, model, val)
    checks += ae_checks
    _require(checks, "ONNX differs from PyTorch")
    # the threshold comes from the exported graph's own scores, the ones the runtime will compare
    th = threshold_from_scores(val_scores, k=3.0)
    evaluation, ev_notes = evaluate_graph(session, data_dir, th.value) if evaluate and not own else ({}, [])
    notes += ev_notes + (["your own data: type II and AUROC come from 'aeflow evaluate' with labelled anomalies"]
                         if own else [])
    int8 = None
    if quantize == "int8":
        int8, int8_checks = quantize_int8(tmp, val, data_dir, ANOMALY_SETS)
        checks += int8_checks
    golden = np.resize(val, (contract.GOLDEN_IMAGES,) + val.shape[1:]) if own else golden_images()
    return Staged(model, ckpt, ckpt_path, ae_opset, {"threshold": th, "evaluation": evaluation, "int8": int8,
                                                     "val_scores": val_scores, "golden_images": golden,
                                                     "data_sha256": data_sha256})


def stage_flow(tmp: Path, ckpt_path: Path, opset, checks: list) -> Staged:
    """flow.onnx and flow_sampler.onnx in ``tmp``, checked against PyTorch over the data's range."""
    flow, ckpt = load_flow(ckpt_path)
    config = FlowConfig(**ckpt["config"])
    flow_opset = export_flow(flow, tmp / contract.FLOW_FILE, opset)
    session = create_session(tmp / contract.FLOW_FILE, "cpu")
    scaled = lambda x: (np.float32(config.loc) + np.float32(config.scale) * x).astype(np.float32)  # noqa: E731
    checks += check_flow(session, flow, scaled(flow_check_points()))
    _require(checks, "ONNX differs from PyTorch")
    x_bracket, z_at_bracket = flow_bracket(flow, session)
    sampler = write_sampler_graph(flow, flow.components(), tuple(x_bracket), tmp / contract.SAMPLER_FILE,
                                  flow_opset, onnx.load(str(tmp / contract.FLOW_FILE)).ir_version,
                                  (config.loc, config.scale))
    hist = ckpt["history"]
    nll = {"train": hist["train_nll"][-1], "test": hist["test_nll"][-1]}
    if config.data is None:
        nll["true_mixture_test"] = float(-mixture_log_density(flow_data(config)[1]).mean())
    return Staged(flow, ckpt, ckpt_path, flow_opset, {"x_bracket": x_bracket, "z_at_bracket": z_at_bracket,
                                                      "sampler": sampler, "nll": nll,
                                                      "golden_points": scaled(golden_points())})


def write_documents(tmp: Path, ae: Staged | None, flow: Staged | None, int8_graph: Path | None) -> tuple:
    """golden.npz (with the validation scores), then threshold.json and flow.json bound to it."""
    versions, golden_path = package_versions(), tmp / contract.GOLDEN_FILE
    arrays = golden_arrays(ae and ae.model, flow and flow.model, flow and flow.model.components(),
                           flow and flow.extra["sampler"], flow and flow.extra["x_bracket"], int8_graph,
                           ae and ae.extra["golden_images"], flow and flow.extra["golden_points"])
    if ae is not None:
        arrays["validation_scores"] = ae.extra["val_scores"].astype(np.float32)
    write_golden(golden_path, arrays)
    threshold = meta = None
    if flow is not None:
        e = flow.extra
        training = {k: v for k, v in flow.ckpt["config"].items() if k in FLOW_TRAINING}
        meta = artifacts.write_metadata(tmp / contract.FLOW_JSON, flow_metadata(
            tmp / contract.FLOW_FILE, flow.opset, flow.model.components(), e["z_at_bracket"], e["x_bracket"],
            e["nll"], training, e["sampler"], versions, golden_path, flow.path))
    if ae is not None:
        e = ae.extra
        threshold = artifacts.write_metadata(tmp / contract.THRESHOLD_JSON, threshold_metadata(
            tmp / contract.AE_FILE, ae.opset, e["threshold"], ae.ckpt["config"], ae.ckpt["history"]["epoch_loss"][-1],
            e["evaluation"], versions, e["int8"], golden_path, ae.path))
    return threshold, meta


def golden_checks(tmp: Path, threshold: contract.ThresholdMeta | None, meta: contract.FlowMeta | None) -> list[Comparison]:
    """The graphs as the runtime will load them: the golden outputs within tolerance on the CPU."""
    checks = []
    for which, doc in (("ae", threshold), ("int8", threshold), ("flow", meta), ("sampler", meta)):
        if doc is not None and doc.entry(which) is not None:
            session = create_session(tmp / contract.GRAPHS[which].file, "cpu")
            checks += [replace(c, name=f"golden {c.name}")
                       for c in golden_rows(session, which, artifacts.read_golden(tmp, doc, which), doc)]
    return checks


def export_artifacts(checkpoints: str | os.PathLike, out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                     opset: int | None = None, evaluate: bool = True, quantize: str | None = None,
                     validation: np.ndarray | None = None) -> ExportReport:
    """Export what ``checkpoints`` holds (ae.pt, flow.pt, or both) into ``out_dir`` (see the module
    docstring). ``data_dir``: where an MNIST detector's images are (default: where it was trained
    from); ``validation``: the validation images of a detector fitted on an array. ``ParityError``
    (writing nothing) when a graph misses PyTorch, its golden outputs or (``quantize="int8"``) the
    int8 targets. The other model's JSON left by an earlier export (bound to the replaced
    golden.npz) is removed."""
    checkpoints, out = Path(checkpoints), Path(out_dir)
    paths = {name: checkpoints / name for name in (contract.AE_CHECKPOINT, contract.FLOW_CHECKPOINT)
             if (checkpoints / name).is_file()}
    if not paths:
        raise ArtifactError(f"{checkpoints}: holds neither ae.pt nor flow.pt; run 'aeflow train ae' or 'aeflow train "
                            f"flow -o {checkpoints}' first, or pass --checkpoints DIR")
    if quantize and contract.AE_CHECKPOINT not in paths:
        raise UsageError(f"--quantize int8 quantizes the detector, and {checkpoints} holds no ae.pt")
    for name, path in paths.items():  # every checkpoint checked before any data is read
        (load_autoencoder if name == contract.AE_CHECKPOINT else load_flow)(path)
    checks, notes = [], []
    out.mkdir(parents=True, exist_ok=True)
    with staged_folder(out, last=(contract.THRESHOLD_JSON, contract.FLOW_JSON)) as tmp:
        ae = stage_detector(tmp, paths[contract.AE_CHECKPOINT], data_dir, opset, evaluate, quantize, checks, notes,
                            validation) \
            if contract.AE_CHECKPOINT in paths else None
        flow = stage_flow(tmp, paths[contract.FLOW_CHECKPOINT], opset, checks) if contract.FLOW_CHECKPOINT in paths else None
        threshold, meta = write_documents(tmp, ae, flow, tmp / contract.INT8_FILE if ae and ae.extra["int8"] else None)
        checks += golden_checks(tmp, threshold, meta)
        _require(checks, "the exported graphs miss their golden outputs")
        if checkpoints.resolve() != out.resolve():
            for src in paths.values():
                shutil.copy2(src, tmp / src.name)
        threshold, meta = (m and m.to_json() for m in (threshold, meta))  # the documents as written
        write_model_card(tmp / MODEL_CARD, ae, flow, threshold, meta)
        files = sorted(p.name for p in tmp.iterdir())
    stale = ([] if quantize else [contract.INT8_FILE]) + ([] if ae else [contract.THRESHOLD_JSON]) \
        + ([] if flow else [contract.FLOW_JSON])
    for name in stale:  # metadata no longer bound to golden.npz, a graph threshold.json no longer names
        (out / name).unlink(missing_ok=True)
    return ExportReport(out, files, checks, threshold, meta, notes)
