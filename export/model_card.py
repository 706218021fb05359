"""MODEL_CARD.md: what an exported run folder holds, for a reader deciding whether to deploy it,
written by export from the checkpoints and the metadata it has just checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aeflow.files import write_text_atomic

MODEL_CARD = "MODEL_CARD.md"

P_VALUE_TEXT = (
    "Each image also gets a conformal p-value, p = (1 + #{validation scores >= s}) / (n + 1) "
    "(`AnomalyScorer.p_value`). Flagging images with p < alpha raises at most a fraction alpha of "
    "false alarms on normal images exchangeable with the validation images (same source, same "
    "preprocessing); it says nothing about images from elsewhere.")


def _detector(ae, th: dict) -> list[str]:
    cfg, v = ae.ckpt["config"], th["validation"]
    scores = np.asarray(ae.extra["val_scores"], dtype=np.float64)
    h, w = th.get("image_shape", [28, 28])
    ev = th["evaluation"]
    lines = [
        "## Anomaly detector (ae.onnx, threshold.json)", "",
        f"- **Data**: {th['data']['source']}; sha256 of the pixels {ae.extra['data_sha256']}",
        f"- **Images**: {cfg['n_train'] + cfg['n_val']} greyscale {h}x{w}; {cfg['n_train']} for training, "
        f"{cfg['n_val']} held out for validation (seeded split, seed {cfg['seed']}, fraction {cfg['val_fraction']:.4f})",
        f"- **Model**: autoencoder {h * w}-256-128-32 and its mirror, ReLU, sigmoid output; score = {th['score']}",
        f"- **Training**: {cfg['epochs']} epochs, Adam lr {cfg['lr']:g}, batch {cfg['batch_size']}, seed {cfg['seed']}; "
        f"final epoch loss {th['training']['final_loss']:.6f}",
        f"- **Threshold**: {th['threshold']:.6g} = mean {v['mean']:.6g} + {th['k']:g} x std {v['std']:.6g} of the "
        f"{v['n']} validation scores (the homework's rule); an image is anomalous when its score is above it",
        f"- **False-alarm rate on the validation images**: {float(np.mean(scores > th['threshold'])):.2%}",
    ]
    if ev.get("type_i"):
        lines.append(f"- **Type I** on {ev['type_i']['set']} ({ev['type_i']['n']} images): {ev['type_i']['rate']:.2%}")
    for name, t2 in ev.get("type_ii", {}).items():
        lines.append(f"- **Type II** on {name} ({t2['n']} images): {t2['rate']:.2%}, AUROC {ev['auroc'][name]:.4f}")
    if not ev.get("type_ii"):
        lines.append("- **Type II / AUROC**: no labelled anomalies were scored at export; measure them with "
                     "`aeflow evaluate` on anomalies you expect")
    return lines + ["", P_VALUE_TEXT, ""]


def _flow(flow, meta: dict) -> list[str]:
    cfg = flow.ckpt["config"]
    data = (f"{cfg['data']}" + (f" (column {cfg['column']})" if cfg.get("column") else "")
            + f"; sha256 {cfg['data_sha256']}") if cfg.get("data") else "the homework's three-Gaussian mixture"
    lo, hi = meta["x_bracket"]
    return [
        "## 1-D flow (flow.onnx, flow_sampler.onnx, flow.json)", "",
        f"- **Data**: {data}",
        f"- **Split**: {cfg['n_train']} values for training, {cfg['n_test']} held out (seed {cfg['seed']})",
        f"- **Model**: z = sum of {meta['n_components']} weighted Gaussian CDFs, target N(0, 1); x in [{lo:.6g}, {hi:.6g}]",
        f"- **Training**: {cfg['epochs']} epochs, Adam lr {cfg['lr']:g}, batch {cfg['batch_size']}; NLL train "
        f"{meta['nll']['train']:.4f}, held out {meta['nll']['test']:.4f} nats per value", ""]


def write_model_card(path: Path, ae, flow, threshold: dict | None, meta: dict | None) -> None:
    """Write MODEL_CARD.md at ``path`` for the staged detector ``ae`` and flow ``flow`` (either may
    be None) with their checked metadata ``threshold`` and ``meta``."""
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
    write_text_atomic(path, "\n".join(lines), replace=True)
