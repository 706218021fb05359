"""Conformal p-values of anomaly scores against the validation scores export kept in golden.npz:
p = (1 + #{validation >= s}) / (n + 1), so P(p <= alpha) <= alpha on exchangeable normal images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aeflow.errors import ArtifactError
from aeflow.files import sha256_file
from aeflow.runtime import contract


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
