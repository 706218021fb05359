"""threshold.json and flow.json as export builds them: the contract's own types, checked and sealed by
``artifacts.write_metadata``, so what export writes is what the runtime accepts."""

import math
from pathlib import Path

from aeflow.files import sha256_file
from aeflow.provenance import package_versions
from aeflow.runtime import contract
from aeflow.runtime.contract import Binding, FlowMeta, Graph, SamplerEntry, ThresholdMeta, Validation
from aeflow.runtime.inversion import Components
from aeflow.runtime.jsoncheck import Check


def bindings(directory: Path, checkpoint: Path) -> dict:
    """``golden`` and ``checkpoint`` (names and sha256 of ``directory``'s golden.npz and of the checkpoint
    the graphs came from) and the package ``versions``."""
    return {"golden": Binding(contract.GOLDEN_FILE, sha256_file(directory / contract.GOLDEN_FILE)),
            "checkpoint": Binding(checkpoint.name, sha256_file(checkpoint)), "versions": package_versions()}


def threshold_metadata(directory: Path, ae) -> ThresholdMeta:
    """threshold.json for the detector staged in ``directory`` (``exporter.stage_detector``): its threshold,
    the checkpoint's config (no ``image_shape``: 28 x 28), the evaluation and the int8 entry, if any."""
    cfg, th = ae.ckpt["config"], ae.threshold
    image_shape = tuple(cfg.get("image_shape", contract.IMAGE_SHAPE))
    meta = ThresholdMeta(
        graph=Graph.of_file("ae", directory / contract.AE_FILE, ae.opset, image_shape), threshold=th.value, k=th.k,
        validation=Validation(mean=th.mean, std=th.std, n=th.n), image_shape=image_shape, validation_scores=th.n,
        data={"source": cfg["data_source"], "train_images": cfg["n_train"], "validation_images": cfg["n_val"],
              "split_seed": cfg["seed"], "anomaly_sets": sorted(ae.evaluation.get("type_ii", {}))},
        training={k: cfg[k] for k in ("epochs", "lr", "batch_size", "seed")}
        | {"final_loss": float(ae.ckpt["history"]["epoch_loss"][-1])},
        evaluation=ae.evaluation, **bindings(directory, ae.path))
    if ae.int8 is None:
        return meta
    return ThresholdMeta.from_json(contract.seal(meta.to_json() | {"int8": ae.int8}), contract.THRESHOLD_JSON)


def flow_metadata(directory: Path, flow) -> FlowMeta:
    """flow.json for the flow staged in ``directory`` (``exporter.stage_flow``): components, W (their weights'
    sum), range +-W/2, bracket and flow.onnx's z there, NLLs, training config and the sampler graph's entry."""
    comp, cfg = flow.model.components(), flow.ckpt["config"]
    w, keys = math.fsum(comp["weight"]), ("n_components", "epochs", "lr", "batch_size", "n_train", "n_test", "seed")
    return FlowMeta(graph=Graph.of_file("flow", directory / contract.FLOW_FILE, flow.opset), W=w,
                    z_range=(-w / 2, w / 2), components=Components(comp["mu"], comp["sigma"], comp["weight"]),
                    x_bracket=tuple(float(v) for v in flow.x_bracket), training={k: cfg[k] for k in keys},
                    z_at_bracket=tuple(float(v) for v in flow.z_at_bracket), nll=flow.nll,
                    sampler=SamplerEntry.from_json(Check(contract.FLOW_JSON), flow.sampler, w / 2),  # its JSON, checked
                    **bindings(directory, flow.path))
