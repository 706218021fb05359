"""threshold.json and flow.json, built from the contract's definitions (``aeflow.runtime.contract``):
the graph entries come from ``contract.graph_entry`` and the documents are checked against
``THRESHOLD_FIELDS``/``FLOW_FIELDS`` and sealed by ``contract.write_metadata`` when written."""

from __future__ import annotations

import math
from pathlib import Path

from aeflow.files import sha256_file
from aeflow.metrics import Threshold
from aeflow.runtime import contract


def bindings(golden: Path, checkpoint: Path) -> dict:
    """The ``golden`` and ``checkpoint`` entries: file names and sha256 of golden.npz and of the
    checkpoint the graphs were exported from."""
    return {"golden": {"file": contract.GOLDEN_FILE, "sha256": sha256_file(golden)},
            "checkpoint": {"file": checkpoint.name, "sha256": sha256_file(checkpoint)}}


def threshold_fields(th: Threshold) -> dict:
    """``threshold``, ``k`` and ``validation`` of a threshold computed by ``metrics.threshold_from_scores``."""
    return {"threshold": th.value, "k": th.k, "validation": {"mean": th.mean, "std": th.std, "ddof": 1, "n": th.n}}


def threshold_metadata(ae_graph: Path, opset: int, th: Threshold, cfg: dict, final_loss: float, evaluation: dict,
                       versions: dict, int8: dict | None, golden: Path, checkpoint: Path) -> dict:
    """threshold.json's document (unsealed) for the graph at ``ae_graph``: ``th`` from its
    validation scores, ``cfg`` the autoencoder checkpoint's config, ``evaluation`` as
    ``aeflow.metrics.evaluate`` returns it (or {}), ``int8`` the int8 entry or None."""
    shape = tuple(cfg.get("image_shape", (28, 28)))
    doc = {
        "schema_version": contract.SCHEMA_VERSION,
        **threshold_fields(th),
        "score": contract.score_definition(shape),
        "image_shape": list(shape),
        "validation_scores": th.n,
        **contract.graph_entry("ae", ae_graph, opset, contract.ae_signature(shape)),
        "data": {"source": cfg["data_source"], "train_images": cfg["n_train"], "validation_images": cfg["n_val"],
                 "split_seed": cfg["seed"], "anomaly_sets": sorted(evaluation.get("type_ii", {}))},
        "training": {k: cfg[k] for k in ("epochs", "lr", "batch_size", "seed")} | {"final_loss": float(final_loss)},
        "evaluation": evaluation,
        "versions": versions,
        **bindings(golden, checkpoint),
    }
    if int8 is not None:
        doc["int8"] = int8
    return doc


def flow_metadata(flow_graph: Path, opset: int, components: dict, z_at_bracket: list[float], x_bracket: list[float],
                  nll: dict, config: dict, sampler: dict, versions: dict, golden: Path, checkpoint: Path) -> dict:
    """flow.json's document (unsealed): ``components`` {mu, sigma, weight} (lists of float),
    W = their weights' sum, the range +-W/2, the inversion bracket ``x_bracket`` and flow.onnx's z
    there, the NLLs, the training ``config``, the ``sampler`` graph entry."""
    w_total = math.fsum(components["weight"])
    return {
        "schema_version": contract.SCHEMA_VERSION,
        **contract.graph_entry("flow", flow_graph, opset),
        "n_components": len(components["mu"]),
        "components": components,
        "W": w_total,
        "z_range": [-w_total / 2, w_total / 2],
        "x_bracket": [float(v) for v in x_bracket],
        "z_at_bracket": [float(v) for v in z_at_bracket],
        "target": contract.FLOW_TARGET,
        "nll": nll,
        "training": config,
        "sampler_graph": sampler,
        "versions": versions,
        **bindings(golden, checkpoint),
    }
