"""``aeflow verify``: every graph on this machine's provider against golden.npz (a failure: this machine's numerics
differ) and, with torch and ae.pt/flow.pt (the sha256 export recorded), against the checkpoints run eagerly."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aeflow.datasets import to_float
from aeflow.errors import ArtifactError, ParityError
from aeflow.files import locked
from aeflow.metrics import above_threshold
from aeflow.parity import Comparison, compare, flow_check_points
from aeflow.runtime import contract
from aeflow.runtime.artifacts import (artifacts_dir, checkpoint_path, demo_images, graphs_without_metadata, read_flow,
                                      read_golden, read_threshold, reference_scores)
from aeflow.runtime.golden import golden_rows, load_graph
from aeflow.runtime.providers import provider_of, run_batched

DECISION_MARGIN = 1e-6


@dataclass
class Verification:
    """What ``verify_artifacts`` compared: the provider that ran, the golden rows (one per graph output, named
    "<graph>: <output>"), the checkpoint rows (None when not run) and notes."""

    directory: Path
    provider: str
    golden: list[Comparison]
    checkpoints: list[Comparison] | None
    notes: list[str]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.golden + (self.checkpoints or []))

    def raise_for_failure(self) -> None:
        """``ParityError`` (one line) saying which comparison failed, when one did."""
        if bad := [r.name for r in self.golden if not r.passed]:
            raise ParityError(f"this machine's numerics differ: {', '.join(bad)} beyond tolerance against the "
                              f"golden outputs on {self.provider}; do not deploy these graphs on this machine")
        if bad := [r.name for r in self.checkpoints or [] if not r.passed]:
            raise ParityError(f"the checkpoint and the graph disagree: {', '.join(bad)} beyond tolerance (this machine "
                              f"reproduces the golden outputs); re-export from the checkpoints in {self.directory}")


def golden_comparisons(directory: Path, threshold: contract.ThresholdMeta, flow: contract.FlowMeta, device: str,
                       verify: bool) -> tuple[str, list[Comparison]]:
    """Every graph of the artifacts against golden.npz on ``device``: (provider, rows)."""
    rows, provider = [], None
    for which, meta in (("ae", threshold), ("int8", threshold), ("flow", flow), ("sampler", flow)):
        if meta is None or meta.entry(which) is None:
            continue
        session = load_graph(directory, meta, which, device, verify=verify, golden=False)
        provider = provider or provider_of(session)
        rows += [r._replace(name=f"{contract.GRAPHS[which].file}: {r.name}")
                 for r in golden_rows(session, which, read_golden(directory, meta, which, verify), meta)]
    return provider, rows


def checkpoint_comparisons(directory: Path, threshold: contract.ThresholdMeta, flow: contract.FlowMeta, device: str,
                           verify: bool, notes: list[str]) -> list[Comparison] | None:
    """ae.onnx and flow.onnx against the checkpoints (PyTorch, CPU), or None with a note where torch or they are
    missing. First ``ArtifactError`` where a checkpoint is there but not the one exported (sha256; torch or not)."""
    ae_ckpt, flow_ckpt = (checkpoint_path(directory, m) if m is not None else None for m in (threshold, flow))
    try:
        from aeflow.export.reference import flow_checks, load_autoencoder, load_flow, torch_ae
    except ImportError:
        notes.append("PyTorch is not installed: checked against the golden outputs only "
                     "(pip install 'aeflow[train]' to compare with the checkpoints too)")
        return None
    if threshold is None or flow is None or threshold.image_shape != contract.IMAGE_SHAPE:
        notes.append("the checkpoint comparison covers 28x28 runs holding both models: the checkpoints' sha256 "
                     "checked, the graphs against the golden outputs only")
        return None
    if ae_ckpt is None or flow_ckpt is None:
        notes.append(f"no checkpoints (ae.pt, flow.pt) in {directory}: checked against the golden outputs only")
        return None
    images = to_float(demo_images(directory, threshold.image_shape))
    rec, score = run_batched(load_graph(directory, threshold, "ae", device, verify=verify, golden=False), images, 500)
    t_rec, t_score = torch_ae(load_autoencoder(ae_ckpt)[0], images)
    t = threshold.threshold
    clear = np.abs(t_score.astype(np.float64) - t) > DECISION_MARGIN
    disagree = int(np.sum(above_threshold(score[clear], t) != above_threshold(t_score[clear], t)))
    rows = [compare("reconstruction", rec, t_rec), compare("score", score, t_score),
            Comparison("decisions", int(clear.sum()), float(disagree), float(disagree), 0.0, 0.0, disagree == 0)]
    return rows + flow_checks(load_graph(directory, flow, "flow", device, verify=verify, golden=False),
                              load_flow(flow_ckpt)[0], flow_check_points())


def verify_artifacts(artifacts=None, device: str = "auto", verify: bool = True, checkpoints: bool = True) -> Verification:
    """Check ``artifacts`` (None: the bundled ones) on ``device``: what the runtime checks at load (contract, sha256,
    signatures), the golden outputs of every graph and, with ``checkpoints`` and torch, the graphs against ae.pt
    and flow.pt. Its ``raise_for_failure`` turns a failed comparison into one line."""
    directory = artifacts_dir(artifacts)
    with locked(directory, shared=True):  # one state of the folder, not half of an export or a calibration
        return _verify(directory, device, verify, checkpoints)


def _verify(directory: Path, device: str, verify: bool, checkpoints: bool) -> Verification:
    if orphans := graphs_without_metadata(directory):  # a damaged folder, not a run of one model
        raise ArtifactError(orphans[0])
    # a run holds the detector, the flow, or both (export writes what it had)
    has_threshold, has_flow = ((directory / n).exists() for n in (contract.THRESHOLD_JSON, contract.FLOW_JSON))
    threshold = read_threshold(directory, verify) if has_threshold or not has_flow else None
    if threshold is not None:  # the p-values' reference scores, checked as scoring reads them
        reference_scores(directory, threshold, verify)
    flow = read_flow(directory, verify) if has_flow or threshold is None else None
    provider, golden = golden_comparisons(directory, threshold, flow, device, verify)
    notes: list[str] = []
    ckpt = checkpoint_comparisons(directory, threshold, flow, device, verify, notes) if checkpoints else None
    return Verification(directory, provider, golden, ckpt, notes)
