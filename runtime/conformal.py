"""Conformal p-values of anomaly scores against reference scores of normal images, p = (1 +
#{reference >= s}) / (n + 1), so P(p <= alpha) <= alpha on normal images exchangeable with them: the
calibration scores 'aeflow calibrate' kept, else export's validation scores (``reference_scores``)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from aeflow.errors import ArtifactError
from aeflow.runtime import contract
from aeflow.runtime.jsoncheck import CALIBRATION_SCORES


def conformal_p_values(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """p = (1 + #{reference >= s}) / (n + 1): float [N] scores, float [n] reference -> float64 [N]."""
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    at_least = ref.size - np.searchsorted(ref, np.asarray(scores, dtype=np.float64).ravel(), side="left")
    return (1.0 + at_least) / (ref.size + 1.0)


def reference_scores(directory: Path, meta: contract.ThresholdMeta, verify: bool = True) -> np.ndarray | None:
    """ae.onnx's reference scores for p-values, float32 [n]: the calibration scores threshold.json's
    ``calibration.scores`` binds, else the validation scores golden.npz keeps (the file's sha256
    checked if ``verify``); None where threshold.json records neither (exported before p-values)."""
    record = (meta.calibration or {}).get("scores")
    if record is not None:
        path, sha, n, hint = Path(directory) / CALIBRATION_SCORES, record["sha256"], record["n"], "calibrate again"
    elif meta.validation_scores is not None:
        path, sha, n, hint = Path(directory) / contract.GOLDEN_FILE, meta.golden.sha256, meta.validation_scores, \
            "re-export"
    else:
        return None
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
