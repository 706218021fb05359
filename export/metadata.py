"""threshold.json and flow.json as export builds them: the contract's own types
(``aeflow.runtime.contract.ThresholdMeta``, ``FlowMeta``), written by ``artifacts.write_metadata``,
which checks and seals them, so what export writes is what the runtime accepts."""

from __future__ import annotations

import math
from pathlib import Path

from aeflow.files import sha256_file
from aeflow.metrics import Threshold
from aeflow.runtime import contract
from aeflow.runtime.contract import Binding, FlowMeta, Graph, SamplerEntry, ThresholdMeta, Validation
from aeflow.runtime.inversion import Components


def bindings(golden: Path, checkpoint: Path, versions: dict) -> dict:
    """``golden``, ``checkpoint`` (file names and sha256 of golden.npz and of the checkpoint the
    graphs were exported from) and ``versions``."""
    return {"golden": Binding(contract.GOLDEN_FILE, sha256_file(golden)),
            "checkpoint": Binding(checkpoint.name, sha256_file(checkpoint)), "versions": versions}


def threshold_fields(th: Threshold) -> dict:
    """``threshold``, ``k`` and ``validation`` (JSON) of a threshold from ``metrics.threshold_from_scores``."""
    return {"threshold": th.value, "k": th.k, "validation": {"mean": th.mean, "std": th.std, "ddof": 1, "n": th.n}}


def threshold_metadata(ae_graph: Path, opset: int, th: Threshold, cfg: dict, final_loss: float, evaluation: dict,
                       versions: dict, int8: dict | None, golden: Path, checkpoint: Path) -> ThresholdMeta:
    """threshold.json for the graph at ``ae_graph``: ``th`` from its validation scores (golden.npz keeps them:
    ``validation_scores``), ``cfg`` the autoencoder checkpoint's config (its ``image_shape``, absent: 28 x 28),
    ``evaluation`` as ``aeflow.metrics.evaluate`` returns it (or {}), ``int8`` the int8 entry (JSON) or None."""
    image_shape = tuple(cfg.get("image_shape", contract.IMAGE_SHAPE))
    meta = ThresholdMeta(
        graph=Graph.of_file("ae", ae_graph, opset, image_shape), threshold=th.value, k=th.k,
        validation=Validation(mean=th.mean, std=th.std, n=th.n), image_shape=image_shape, validation_scores=th.n,
        data={"source": cfg["data_source"], "train_images": cfg["n_train"], "validation_images": cfg["n_val"],
              "split_seed": cfg["seed"], "anomaly_sets": sorted(evaluation.get("type_ii", {}))},
        training={k: cfg[k] for k in ("epochs", "lr", "batch_size", "seed")} | {"final_loss": float(final_loss)},
        evaluation=evaluation, **bindings(golden, checkpoint, versions))
    if int8 is None:
        return meta
    return ThresholdMeta.from_json(contract.seal(meta.to_json() | {"int8": int8}), contract.THRESHOLD_JSON)


def flow_metadata(flow_graph: Path, opset: int, components: dict, z_at_bracket: list[float], x_bracket: list[float],
                  nll: dict, config: dict, sampler: dict, versions: dict, golden: Path, checkpoint: Path) -> FlowMeta:
    """flow.json: ``components`` {mu, sigma, weight} (lists of float), W = their weights' sum, the
    range +-W/2, the inversion bracket ``x_bracket`` and flow.onnx's z there, the NLLs, the
    training ``config``, the ``sampler`` graph entry (JSON, ``aeflow.export.sampler_graph``)."""
    w = math.fsum(components["weight"])
    entry = dict(sampler)
    graph = Graph("sampler", entry.pop("sha256"), entry.pop("opset"), contract.signature("sampler"))
    for key in ("onnx_file", "inputs", "outputs"):
        entry.pop(key)
    entry["float64_z_intervals"] = tuple(tuple(p) for p in entry["float64_z_intervals"])
    return FlowMeta(graph=Graph.of_file("flow", flow_graph, opset), W=w, z_range=(-w / 2, w / 2),
                    components=Components(components["mu"], components["sigma"], components["weight"]),
                    x_bracket=tuple(float(v) for v in x_bracket), z_at_bracket=tuple(float(v) for v in z_at_bracket),
                    nll=nll, training=config, sampler=SamplerEntry(graph=graph, **entry),
                    **bindings(golden, checkpoint, versions))
