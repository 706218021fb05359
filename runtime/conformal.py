"""Conformal p-values of anomaly scores against reference scores of normal images, p = (1 +
#{reference >= s}) / (n + 1), so P(p <= alpha) <= alpha on normal images exchangeable with them: the
calibration scores 'aeflow calibrate' kept (``reference_scores``), else export's validation scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aeflow.errors import ArtifactError
from aeflow.files import sha256_file
from aeflow.runtime import contract
from aeflow.runtime.jsoncheck import CALIBRATION_SCORES


def conformal_p_values(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """p = (1 + #{reference >= s}) / (n + 1): float [N] scores, float [n] reference -> float64 [N]."""
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    at_least = ref.size - np.searchsorted(ref, np.asarray(scores, dtype=np.float64).ravel(), side="left")
    return (1.0 + at_least) / (ref.size + 1.0)


def validation_scores(directory: Path, meta: contract.ThresholdMeta, verify: bool = True) -> np.ndarray:
    """The validation scores export kept, float32 [n], from golden.npz (sha256 checked if ``verify``)."""
    path = Path(directory) / contract.GOLDEN_FILE
    if meta.validation_scores is None:
        raise ArtifactError(f"{Path(directory) / contract.THRESHOLD_JSON}: no validation scores (exported before "
                            f"p-values); re-export with 'aeflow export' for p-values")
    if not path.is_file() or (verify and sha256_file(path) != meta.golden.sha256):
        raise ArtifactError(f"{path}: missing or not the file threshold.json records; re-export")
    try:
        with np.load(path, allow_pickle=False) as npz:
            scores = npz["validation_scores"]
    except Exception as e:  # a damaged zip raises many types
        raise ArtifactError(f"{path}: no readable validation_scores ({type(e).__name__}); re-export") from None
    if scores.dtype != np.float32 or scores.shape != (meta.validation_scores,) or not np.isfinite(scores).all():
        raise ArtifactError(f"{path}: validation_scores is not float32 [{meta.validation_scores}] of finite "
                            f"values; re-export")
    return scores


def reference_scores(directory: Path, meta: contract.ThresholdMeta, verify: bool = True) -> np.ndarray:
    """ae.onnx's reference scores for p-values, float32 [n]: the calibration scores threshold.json's
    ``calibration.scores`` binds (sha256 checked if ``verify``), else ``validation_scores``."""
    record = (meta.calibration or {}).get("scores")
    if record is None:
        return validation_scores(directory, meta, verify)
    path, n = Path(directory) / CALIBRATION_SCORES, record["n"]
    if not path.is_file() or (verify and sha256_file(path) != record["sha256"]):
        raise ArtifactError(f"{path}: missing or not the file threshold.json records; calibrate again")
    try:
        scores = np.load(path, allow_pickle=False)
    except Exception as e:  # a damaged .npy raises many types
        raise ArtifactError(f"{path}: unreadable ({type(e).__name__}); calibrate again") from None
    if scores.dtype != np.float32 or scores.shape != (n,) or not np.isfinite(scores).all():
        raise ArtifactError(f"{path}: not float32 [{n}] of finite values; calibrate again")
    return scores
