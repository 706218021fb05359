"""``aeflow export``: checkpoints -> graphs, metadata, golden.npz and MODEL_CARD.md, staged and published only
when checked against PyTorch and the golden outputs (a failed export changes nothing)."""

import contextlib
import io
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import torch

from aeflow.analysis.verify import golden_comparisons
from aeflow.datasets import available, load_images, mixture_log_density, to_float
from aeflow.errors import ArtifactError, OutputError, ParityError, UsageError
from aeflow.export.golden import golden_images, golden_points, write_golden
from aeflow.export.metadata import flow_metadata, threshold_metadata
from aeflow.export.quantize import quantize_int8
from aeflow.export.reference import flow_checks, load_autoencoder, load_flow, torch_ae
from aeflow.export.sampler_graph import write_sampler_graph
from aeflow.files import FORCE, file_digest, sha256_file, staged_folder, write_atomic
from aeflow.metrics import error_rates, threshold_from_scores, type_i_error
from aeflow.parity import Comparison, compare, flow_check_points
from aeflow.runtime import artifacts, calibration, contract, inversion
from aeflow.runtime.providers import create_session, run_batched
from aeflow.targets import check_target
from aeflow.train.autoencoder import AEConfig, training_images
from aeflow.train.flow import FlowConfig, flow_data
from aeflow.train.models import ScoringAutoencoder

ANOMALY_SETS = ("kmnist", "fashion-mnist")


@dataclass
class ExportReport:
    """What an export wrote and measured."""

    files: list[str]
    checks: list[Comparison]
    threshold: dict | None
    flow_meta: dict | None
    notes: list[str] = field(default_factory=list)


def export_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, input_names: list[str],
                 output_names: list[str], opset: int | None) -> tuple[int, int, object]:
    """Write ``module`` as a checked ONNX graph with a dynamic batch: its opset, IR version and a CPU session."""
    module.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter chats and warns
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=input_names, output_names=output_names,
                          dynamic_shapes={input_names[0]: {0: torch.export.Dim("N")}}, opset_version=opset,
                          external_data=False, dynamo=True)
    model = onnx.load(str(path))
    for node in model.graph.node:  # stack traces hold the checkout's paths: drop them, same graph anywhere
        for prop in [p for p in node.metadata_props if "stack_trace" in p.key]:
            node.metadata_props.remove(prop)
    onnx.save(model, str(path))
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return opset, model.ir_version, create_session(path, "cpu")


def _require(checks: list[Comparison], what: str) -> None:
    failed = [c for c in checks if not c.passed]
    if failed:
        worst = ", ".join(f"{c.name} max diff {c.max_abs:.2e} abs, {c.max_rel:.2e} rel (tolerance {c.tolerance})"
                          for c in failed)
        raise ParityError(f"{what}: {worst}; nothing was written")


def test_sets(data_dir, notes: list[str]) -> dict[str, np.ndarray]:
    """The test sets found in ``data_dir``, float32 [N, 1, 28, 28] by name ("mnist-test" first); notes the others."""
    found = [name for name in ANOMALY_SETS if available(name, "test", data_dir)]
    notes += [f"{name} test set not in {data_dir}: no type II figure for it" for name in ANOMALY_SETS if name not in found]
    return {f"{name}-test": to_float(load_images(name, "test", data_dir)) for name in ("mnist", *found)}


def validation_images(cfg: dict, data_dir) -> tuple[np.ndarray, str]:
    """The validation images of the config ``cfg`` (float32 [n_val, 1, H, W]) and the training pixels' sha256."""
    if cfg["data_source"] == "array":
        raise ArtifactError("ae.pt was fitted on an array: export it with AutoencoderDetector.export, which holds "
                            "its validation images (export a flow into that folder first, or into another)")
    config = AEConfig(**{**cfg, "data_dir": data_dir})
    images, train_idx, val_idx = training_images(config)
    if len(train_idx) != cfg["n_train"] or list(images.shape[-2:]) != list(cfg.get("image_shape", [28, 28])):
        raise ArtifactError(f"the training set found has {len(images)} images, but ae.pt was trained on a split of "
                            f"{cfg['n_train'] + cfg['n_val']}; pass data_dir=DIR, the folder it was trained from")
    return images[val_idx], config.data_sha256


def stage_detector(tmp: Path, loaded: tuple, data_dir, opset, evaluate: bool, quantize: str | None,
                   checks: list, notes: list, validation: np.ndarray | None = None) -> SimpleNamespace:
    """ae.onnx (and ae.int8.onnx) in ``tmp`` for ``loaded`` (ae.pt's path, model, dict), checked against PyTorch
    on the validation images (re-read unless given), with the threshold of the graph's own scores."""
    ckpt_path, model, ckpt = loaded
    cfg = ckpt["config"]
    own = bool(cfg.get("data")) or validation is not None
    if own and quantize:
        raise UsageError("--quantize int8 checks the int8 graph on the MNIST test sets; it is for MNIST detectors")
    data_dir = data_dir if data_dir is not None else cfg["data_dir"]
    val, data_sha256 = validation_images(cfg, data_dir) if validation is None else (validation, cfg["data_sha256"])
    ae_opset, _, session = export_graph(ScoringAutoencoder(model), torch.rand(4, 1, *model.image_shape),
                                        tmp / contract.AE_FILE, ["images"], ["reconstruction", "score"], opset)
    (rec, val_scores), (t_rec, t_score) = run_batched(session, val), torch_ae(model, val)
    checks += [compare("reconstruction", rec, t_rec), compare("score", val_scores, t_score)]
    _require(checks, "ONNX differs from PyTorch")
    th = threshold_from_scores(val_scores, k=3.0)  # the graph's own scores, the ones the runtime compares
    sets = test_sets(data_dir, notes) if evaluate and not own else {}
    scores = {name: run_batched(session, images, outputs=["score"])[0] for name, images in sets.items()}
    evaluation = error_rates(scores.pop("mnist-test"), scores, th.value) if sets else {}
    notes += ["your own data: type II and AUROC come from 'aeflow evaluate' with labelled anomalies"] if own else []
    int8, int8_checks = quantize_int8(tmp, val, sets) if quantize == "int8" else (None, [])
    checks += int8_checks
    golden = np.resize(val, (contract.GOLDEN_IMAGES,) + val.shape[1:]) if own else golden_images()
    return SimpleNamespace(model=model, ckpt=ckpt, path=ckpt_path, opset=ae_opset, threshold=th, evaluation=evaluation,
                           int8=int8, val_scores=val_scores, golden_images=golden, data_sha256=data_sha256)


def stage_flow(tmp: Path, loaded: tuple, opset, checks: list) -> SimpleNamespace:
    """flow.onnx and flow_sampler.onnx in ``tmp`` for ``loaded`` (flow.pt's path, model, dict), checked."""
    ckpt_path, flow, ckpt = loaded
    config = FlowConfig(**ckpt["config"])
    flow_opset, ir_version, session = export_graph(flow, torch.linspace(-3, 3, 8), tmp / contract.FLOW_FILE, ["x"],
                                                   ["z", "dz_dx", "log_prob"], opset)
    scaled = lambda x: (np.float32(config.loc) + np.float32(config.scale) * x).astype(np.float32)  # noqa: E731
    checks += flow_checks(session, flow, scaled(flow_check_points()))
    _require(checks, "ONNX differs from PyTorch")
    # 12 sigma beyond every component Phi is within 1e-32 of 0 or 1, so f there equals +-W/2
    comp = inversion.Components(**flow.components())
    x_bracket = [float(np.min(comp.mu - 12 * comp.sigma)), float(np.max(comp.mu + 12 * comp.sigma))]
    z_at_bracket = [float(z) for z in session.run(None, {"x": np.array(x_bracket, dtype=np.float32)})[0]]
    sampler = write_sampler_graph(flow, comp, tuple(x_bracket), tmp / contract.SAMPLER_FILE, flow_opset, ir_version,
                                  (config.loc, config.scale))
    nll = {"train": ckpt["history"]["train_nll"][-1], "test": ckpt["history"]["test_nll"][-1]}
    if config.data is None:
        nll["true_mixture_test"] = float(-mixture_log_density(flow_data(config)[1]).mean())
    return SimpleNamespace(model=flow, ckpt=ckpt, path=ckpt_path, opset=flow_opset, comp=comp, x_bracket=x_bracket,
                           z_at_bracket=z_at_bracket, sampler=sampler, nll=nll, golden_points=scaled(golden_points()))


def _detector(ae, th: dict) -> list[str]:
    cfg, v, ev = ae.ckpt["config"], th["validation"], th["evaluation"]
    (h, w), t1 = th.get("image_shape", [28, 28]), ev.get("type_i")
    return [
        "## Anomaly detector (ae.onnx, threshold.json)", "",
        f"- **Data**: {th['data']['source']}; sha256 of the pixels {ae.data_sha256}",
        f"- **Images**: {cfg['n_train'] + cfg['n_val']} greyscale {h}x{w}; {cfg['n_train']} for training, "
        f"{cfg['n_val']} held out for validation (seeded split, seed {cfg['seed']}, fraction {cfg['val_fraction']:.4f})",
        f"- **Model**: autoencoder {h * w}-256-128-32 and its mirror, ReLU, sigmoid output; score = {th['score']}",
        f"- **Training**: {cfg['epochs']} epochs, Adam lr {cfg['lr']:g}, batch {cfg['batch_size']}, seed {cfg['seed']}; "
        f"final epoch loss {th['training']['final_loss']:.6f}",
        f"- **Threshold**: {th['threshold']:.6g} = mean {v['mean']:.6g} + {th['k']:g} x std {v['std']:.6g} of the "
        f"{v['n']} validation scores (the homework's rule); an image is anomalous when its score is above it",
        f"- **False-alarm rate on the validation images**: "
        f"{type_i_error(ae.val_scores, th['threshold']):.2%}",
        *([f"- **Type I** on {t1['set']} ({t1['n']} images): {t1['rate']:.2%}"] if t1 else []),
        *([f"- **Type II** on {name} ({t2['n']} images): {t2['rate']:.2%}, AUROC {ev['auroc'][name]:.4f}"
           for name, t2 in ev.get("type_ii", {}).items()] or
          ["- **Type II / AUROC**: no labelled anomalies were scored at export; measure them with `aeflow evaluate` "
           "on anomalies you expect"]), "",
        "Each image also gets a conformal p-value, p = (1 + #{validation scores >= s}) / (n + 1) "
        "(`AnomalyScorer.p_value`). Flagging images with p < alpha raises at most a fraction alpha of "
        "false alarms on normal images exchangeable with the validation images (same source, same "
        "preprocessing); it says nothing about images from elsewhere.", ""]


def _flow(flow, meta: dict) -> list[str]:
    cfg, (lo, hi) = flow.ckpt["config"], meta["x_bracket"]
    data = (f"{cfg['data']}" + (f" (column {cfg['column']})" if cfg.get("column") else "")
            + f"; sha256 {cfg['data_sha256']}") if cfg.get("data") else "the homework's three-Gaussian mixture"
    return [
        "## 1-D flow (flow.onnx, flow_sampler.onnx, flow.json)", "",
        f"- **Data**: {data}",
        f"- **Split**: {cfg['n_train']} values for training, {cfg['n_test']} held out (seed {cfg['seed']})",
        f"- **Model**: z = sum of {meta['n_components']} weighted Gaussian CDFs, target N(0, 1); x in [{lo:.6g}, {hi:.6g}]",
        f"- **Training**: {cfg['epochs']} epochs, Adam lr {cfg['lr']:g}, batch {cfg['batch_size']}; NLL train "
        f"{meta['nll']['train']:.4f}, held out {meta['nll']['test']:.4f} nats per value", ""]


def write_model_card(path: Path, ae, flow, threshold: dict | None, meta: dict | None) -> None:
    """Write MODEL_CARD.md for the staged ``ae`` and ``flow`` (either may be None) and their metadata."""
    versions = (threshold or meta)["versions"]
    lines = ["# Model card", "", "Written by `aeflow export`; the numbers come from the files beside it.", ""]
    lines += _detector(ae, threshold) if ae is not None else []
    lines += _flow(flow, meta) if flow is not None else []
    lines += ["## Intended use and limits", "",
              "- Intended: flag inputs unlike the training data (detector), model and sample one real quantity "
              "(flow), on the CPU or an edge device with onnxruntime.",
              "- Not a classifier: it has never seen anomalies, and an anomaly that reconstructs well goes "
              "unnoticed. Inputs must be prepared exactly as the training data (size, greyscale, scale).",
              "- Re-check the false-alarm rate on your own normal data (`aeflow calibrate`) before relying on it.", "",
              "## Software", "", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())), ""]
    write_atomic(path, "\n".join(lines), replace=True)


def export_artifacts(checkpoints: str | os.PathLike, out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                     opset: int | None = None, evaluate: bool = True, quantize: str | None = None,
                     validation: np.ndarray | None = None, force: bool = False, what: str = "out_dir") -> ExportReport:
    """Export what ``checkpoints`` holds (ae.pt, flow.pt, or both) into ``out_dir``; ``data_dir``: an MNIST
    detector's images (default: where it trained from); ``validation``: those of a detector fitted on an array.
    ``ParityError`` (writing nothing) when a graph misses PyTorch, its golden outputs or the int8 targets; the
    folder's refusals come before any work (``what``: ``out_dir``'s name in them)."""
    checkpoints, out = Path(checkpoints), Path(out_dir)
    _check_quantize(quantize, evaluate)
    check_target(out, "folder", what=what, force=True, parents=True)  # the place first, then what it reads
    read = {n: file_digest(checkpoints / n) for n in (contract.AE_CHECKPOINT, contract.FLOW_CHECKPOINT)}
    ae_pt, flow_pt = _checkpoints(checkpoints, out, quantize, force)  # (path, model, dict) each, or None
    copies = [contract.AE_CHECKPOINT, contract.FLOW_CHECKPOINT] if checkpoints.resolve() != out.resolve() else []
    check_target(out, "folder", what=what, force=True, parents=True, names=EXPORT_FILES + copies,
                 inputs=_recorded_data(ae_pt, flow_pt))
    if not force and (foreign := _not_exported(out, EXPORT_FILES + copies, checkpoints)):
        raise OutputError(f"{out / foreign[0]} exists and is not an earlier aeflow export's file; pass {FORCE} to "
                          f"replace it, or export into another folder")
    checks, notes, stale = [], [], []
    seen = {contract.THRESHOLD_JSON: file_digest(out / contract.THRESHOLD_JSON)} | ({} if copies else read)
    if ae_pt:
        _calibration(out, force, notes, stale)
    out.mkdir(parents=True, exist_ok=True)
    with staged_folder(out, last=(contract.THRESHOLD_JSON, contract.FLOW_JSON), force=True, remove=stale,
                       unchanged=seen) as tmp:
        ae = ae_pt and stage_detector(tmp, ae_pt, data_dir, opset, evaluate, quantize, checks, notes, validation)
        flow = flow_pt and stage_flow(tmp, flow_pt, opset, checks)
        write_golden(tmp / contract.GOLDEN_FILE, ae, flow)  # then the metadata bound to it, checked as verify does
        meta = flow and artifacts.write_metadata(tmp / contract.FLOW_JSON, flow_metadata(tmp, flow))
        threshold = ae and artifacts.write_metadata(tmp / contract.THRESHOLD_JSON, threshold_metadata(tmp, ae))
        checks += golden_comparisons(tmp, threshold, meta, "cpu", verify=True)[1]
        _require(checks, "the exported graphs miss their golden outputs")
        if copies:
            _copy_checkpoints([staged.path for staged in (ae, flow) if staged], tmp, read)
        threshold, meta = (m and m.to_json() for m in (threshold, meta))  # the documents as written
        write_model_card(tmp / "MODEL_CARD.md", ae, flow, threshold, meta)
        files = sorted(p.name for p in tmp.iterdir())
        notes += _earlier(out, bool(ae), bool(flow), quantize, stale)  # removed as the new files are published
    return ExportReport(files, checks, threshold, meta, notes)


def _check_quantize(quantize: str | None, evaluate: bool) -> None:
    """``UsageError`` for a quantization other than None or "int8", or int8 without the evaluation, which holds
    the int8 graph to float32's decisions on the test sets."""
    if quantize not in (None, "int8"):
        raise UsageError(f"unknown quantization {quantize!r}; choose 'int8' or None")
    if quantize and not evaluate:
        raise UsageError("int8 quantization is checked on the test sets; drop --no-eval (evaluate=False)")


# every file an export may write or remove (besides the checkpoints it copies)
EXPORT_FILES = [*(g.file for g in contract.GRAPHS.values()), contract.THRESHOLD_JSON, contract.FLOW_JSON,
                contract.GOLDEN_FILE, "MODEL_CARD.md"]


def _checkpoints(checkpoints: Path, out: Path, quantize, force: bool) -> tuple[tuple | None, tuple | None]:
    """ae.pt and flow.pt in ``checkpoints`` as (path, model, dict), None where absent; refused where neither is
    there, or (unless ``force``) where ``out`` holds an export of a model without one."""
    ae_pt, flow_pt = (checkpoints / n if (checkpoints / n).is_file() else None
                      for n in (contract.AE_CHECKPOINT, contract.FLOW_CHECKPOINT))
    if not (ae_pt or flow_pt):
        raise ArtifactError(f"{checkpoints}: checkpoints not found (neither ae.pt nor flow.pt); run 'aeflow train "
                            f"ae -o {checkpoints}' and/or 'aeflow train flow -o {checkpoints}' first, or pass "
                            f"--checkpoints DIR")
    if quantize and not ae_pt:
        raise UsageError(f"--quantize int8 quantizes the detector, and {checkpoints} holds no ae.pt")
    for ckpt, (model, names) in zip((ae_pt, flow_pt), contract.MODEL_FILES.items()):
        if not (ckpt or force) and artifacts.is_aeflow_document(out / names[0]):
            raise OutputError(f"{out} holds an exported {model} ({names[0]}) and {checkpoints} no checkpoint of it: "
                              f"this export would remove it; pass {FORCE} for that, or export into another folder")
    return ae_pt and (ae_pt, *load_autoencoder(ae_pt)), flow_pt and (flow_pt, *load_flow(flow_pt))


def _copy_checkpoints(paths: list[Path], tmp: Path, read: dict[str, str | None]) -> None:
    """Copy the checkpoints exported from into ``tmp``; ``OutputError`` where one is not the file export read
    (sha256 in ``read``, taken before loading it: trained again meanwhile)."""
    for path in paths:
        shutil.copy2(path, tmp / path.name)
        if file_digest(tmp / path.name) != read[path.name]:
            raise OutputError(f"{path}: another command wrote it while aeflow exported from it; nothing written - "
                              f"export again")


def _not_exported(out: Path, names: list[str], checkpoints: Path) -> list[str]:
    """Those of ``names`` in ``out`` that no earlier export wrote (an export's metadata is aeflow's; a checkpoint
    there is the same bytes as the one exported)."""
    metadata = (contract.THRESHOLD_JSON, contract.FLOW_JSON)
    earlier = any(artifacts.is_aeflow_document(out / m) for m in metadata)
    ckpts = (contract.AE_CHECKPOINT, contract.FLOW_CHECKPOINT)  # trained, never an export's own: same bytes only
    same = {n for n in ckpts if (out / n).is_file() and (checkpoints / n).is_file()
            and sha256_file(out / n) == sha256_file(checkpoints / n)}
    return [n for n in names if os.path.lexists(out / n) and n not in same
            and (n in ckpts or not (earlier and (n not in metadata or artifacts.is_aeflow_document(out / n))))]


def _calibration(out: Path, force: bool, notes: list[str], stale: list[str]) -> None:
    """Where ``out``'s threshold.json (aeflow's) holds a calibration, which a detector's export replaces: an
    ``OutputError`` unless ``force``; else a note, and the calibration scores it binds added to ``stale``."""
    if not artifacts.is_aeflow_document(out / contract.THRESHOLD_JSON):
        return
    doc = artifacts.load_json(out / contract.THRESHOLD_JSON)
    found = [(which, entry["calibration"]) for which, entry in (("ae.onnx", doc), ("ae.int8.onnx", doc.get("int8")))
             if isinstance(entry, dict) and isinstance(entry.get("calibration"), dict)]
    if not (calibrated := ", ".join(f"{which}'s of {str(cal.get('date', '?'))[:10]}" for which, cal in found)):
        return
    if not force:
        raise OutputError(f"{out / contract.THRESHOLD_JSON} holds a calibration ({calibrated}) that this export "
                          f"would replace with the training threshold; export into another folder, or pass "
                          f"{FORCE} and calibrate again")
    notes.append(f"replaced the calibration ({calibrated}): the threshold is the training one again")
    stale += [calibration.CALIBRATION_SCORES] if calibration.bound_scores(out) else []  # not a user's file


def _recorded_data(ae_pt: tuple | None, flow_pt: tuple | None) -> list:
    """The data files the loaded checkpoints record (an autoencoder's list, which export reads again; a flow's
    one file), glob patterns as recorded (``check_target`` expands them, and refuses a file they would match)."""
    ae_data = ae_pt and ae_pt[2]["config"].get("data") or []
    flow_data = flow_pt and flow_pt[2]["config"].get("data")
    return ae_data + ([flow_data] if flow_data and flow_data != "array" else [])  # "array": fitted in Python


def _earlier(out: Path, ae: bool, flow: bool, quantize, stale: list[str]) -> list[str]:
    """Add to ``stale`` an earlier export's files that nothing binds any more, returning notes: the int8 graph
    without ``quantize``; the metadata (if aeflow's) and graphs of a model this export had no checkpoint of."""
    notes = []
    for names, gone in (((contract.INT8_FILE,), ae and not quantize), (contract.MODEL_FILES["detector"], not ae),
                        (contract.MODEL_FILES["flow"], not flow)):
        first = out / names[0]
        if gone and first.is_file() and (len(names) == 1 or artifacts.is_aeflow_document(first)):
            removed = [n for n in names if (out / n).is_file()]
            removed += [calibration.CALIBRATION_SCORES] if first.name == contract.THRESHOLD_JSON \
                and calibration.bound_scores(out) else []  # the detector's calibration scores go with it
            stale += removed
            notes.append(f"removed {', '.join(removed)}: the earlier export's, which this one replaced" + (
                " (pass --quantize int8 for a new int8 graph)" if len(names) == 1 else ""))
    return notes
