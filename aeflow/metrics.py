"""Threshold and error-rate maths shared by export and evaluation (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Threshold:
    """``value = mean + k * std`` of validation scores, std with ``ddof=1`` as ``torch.std``."""

    value: float
    mean: float
    std: float
    k: float
    n: int


def threshold_from_scores(scores: np.ndarray, k: float = 3.0) -> Threshold:
    """Compute the anomaly threshold from validation scores (float [N], N >= 2).

    The statistics are taken in float64 so the result does not depend on summation order.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size < 2:
        raise ValueError("need at least two validation scores to estimate a standard deviation")
    if not np.all(np.isfinite(s)):
        raise ValueError("validation scores contain NaN or Inf")
    mean = float(s.mean())
    std = float(s.std(ddof=1))
    return Threshold(value=mean + k * std, mean=mean, std=std, k=float(k), n=int(s.size))


def flag_rate(scores: np.ndarray, threshold: float) -> float:
    """Share of scores strictly above the threshold (flagged as anomalies)."""
    s = np.asarray(scores).ravel()
    return float(np.mean(s > threshold)) if s.size else float("nan")


def type_i_error(normal_scores: np.ndarray, threshold: float) -> float:
    """Share of in-distribution images flagged (false alarms)."""
    return flag_rate(normal_scores, threshold)


def type_ii_error(anomaly_scores: np.ndarray, threshold: float) -> float:
    """Share of anomalies not flagged (score <= threshold), as in the homework."""
    s = np.asarray(anomaly_scores).ravel()
    return float(np.mean(s <= threshold)) if s.size else float("nan")


def auroc(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    """Area under the ROC curve for "anomaly scores higher" (Mann-Whitney U, ties count half)."""
    a = np.asarray(normal_scores, dtype=np.float64).ravel()
    b = np.asarray(anomaly_scores, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        return float("nan")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    sorted_vals = both[order]
    # average ranks over ties
    uniq, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[a.size:].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


def error_rates(normal_scores: np.ndarray, anomaly_scores: dict[str, np.ndarray], threshold: float,
                normal_set: str = "mnist-test") -> dict:
    """Type I error on the normal set, type II error and AUROC per anomaly set, in the one shape
    threshold.json's ``evaluation`` records and every report uses::

        {"type_i": {"set": normal_set, "n": N, "rate": r},
         "type_ii": {name: {"n": M, "rate": r}, ...}, "auroc": {name: a, ...}}

    ``normal_scores`` float [N], ``anomaly_scores`` name -> float [M]; an image is flagged when its
    score is strictly above ``threshold``."""
    normal = np.asarray(normal_scores).ravel()
    out = {"type_i": {"set": normal_set, "n": int(normal.size), "rate": type_i_error(normal, threshold)},
           "type_ii": {}, "auroc": {}}
    for name, scores in anomaly_scores.items():
        s = np.asarray(scores).ravel()
        out["type_ii"][name] = {"n": int(s.size), "rate": type_ii_error(s, threshold)}
        out["auroc"][name] = auroc(normal, s)
    return out


def roc_curve(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates over every distinct threshold, highest first.

    Returns ``(fpr, tpr, thresholds)``, float64 arrays starting at (0, 0)."""
    a = np.asarray(normal_scores, dtype=np.float64).ravel()
    b = np.asarray(anomaly_scores, dtype=np.float64).ravel()
    thresholds = np.unique(np.concatenate([a, b]))[::-1]
    a_sorted, b_sorted = np.sort(a), np.sort(b)
    fpr = (a.size - np.searchsorted(a_sorted, thresholds, side="left")) / a.size
    tpr = (b.size - np.searchsorted(b_sorted, thresholds, side="left")) / b.size
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thresholds]


def threshold_for_type_i(normal_scores: np.ndarray, rate: float = 0.01) -> float:
    """Smallest threshold whose type I error (share of ``normal_scores`` above it) is <= ``rate``."""
    s = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())
    allowed = int(np.floor(rate * s.size))
    return float(s[s.size - allowed - 1]) if allowed < s.size else float(s[0])


def normalized_scores(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Scores mapped to [0, 1] with the threshold at 0.5, for reading, float32 [N].

    anomalib's min-max normalisation, ``(score - threshold) / (max - min) + 0.5`` clipped to
    [0, 1], with ``min = 0`` (a perfect reconstruction) and ``max = 2 * threshold``, which is

        normalized = min(score / (2 * threshold), 1)

    so 0 is a perfect reconstruction, 0.5 the threshold and 1 twice the threshold or more. It is
    computed in float64 and rounded to float32; decisions use the raw score (``score >
    threshold``), since a score within float32 rounding of the threshold reads 0.5 exactly. A
    threshold of 0 flags every positive score: those read 1, scores of 0 read 0.5.

    Arguments:
        scores: float [N], >= 0.
        threshold: float >= 0.

    Returns:
        float32 [N] in [0, 1].

    >>> normalized_scores(np.array([0.0, 0.01, 0.02, 0.05], np.float32), 0.02).tolist()
    [0.0, 0.25, 0.5, 1.0]
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = float(threshold)
    if t > 0:
        ratio = s / (2.0 * t)
    else:
        ratio = np.where(s > 0, 1.0, 0.5)
    return np.clip(ratio, 0.0, 1.0).astype(np.float32)
