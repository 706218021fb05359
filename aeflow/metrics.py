"""Threshold, error-rate and p-value maths shared by export, calibration, evaluation and scoring (numpy only)."""

import math
from typing import NamedTuple

import numpy as np


class Threshold(NamedTuple):
    """``value = mean + k * std`` of validation scores, std with ``ddof=1`` as ``torch.std``."""

    value: float
    mean: float
    std: float
    k: float
    n: int


def threshold_from_scores(scores: np.ndarray, k: float = 3.0) -> Threshold:
    """The anomaly threshold from validation scores (float [N], N >= 2), statistics in float64."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size < 2:
        raise ValueError("need at least two validation scores to estimate a standard deviation")
    if not np.all(np.isfinite(s)):
        raise ValueError("validation scores contain NaN or Inf")
    mean, std = float(s.mean()), float(s.std(ddof=1))
    return Threshold(value=mean + k * std, mean=mean, std=std, k=float(k), n=int(s.size))


def above_threshold(scores, threshold: float) -> np.ndarray:
    """THE decision: bool [N], True where a score (float [N]) is strictly above ``threshold``, compared in float64
    (NumPy 2 would round the threshold to float32 scores' precision: a score just above it would pass)."""
    return np.greater(scores, np.float64(threshold))


def type_i_error(normal_scores: np.ndarray, threshold: float) -> float:
    """Share of in-distribution images flagged (score strictly above ``threshold``: false alarms)."""
    s = np.ravel(normal_scores)
    return float(np.mean(above_threshold(s, threshold))) if s.size else float("nan")


def type_ii_error(anomaly_scores: np.ndarray, threshold: float) -> float:
    """Share of anomalies not flagged (score <= threshold), as in the homework."""
    s = np.ravel(anomaly_scores)
    return float(np.mean(~above_threshold(s, threshold))) if s.size else float("nan")


def auroc(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    """Area under the ROC curve for "anomaly scores higher" (Mann-Whitney U, ties count half)."""
    a = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())
    b = np.asarray(anomaly_scores, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        return float("nan")
    below, not_above = np.searchsorted(a, b, "left"), np.searchsorted(a, b, "right")
    return float((below.sum() + 0.5 * (not_above - below).sum()) / (a.size * b.size))


def error_rates(normal_scores: np.ndarray, anomaly_scores: dict[str, np.ndarray], threshold: float) -> dict:
    """Type I error on the normal set (float [N]), type II error and AUROC per anomaly set (name ->
    float [M]), as threshold.json's ``evaluation`` records them: ``{"type_i": {"set", "n", "rate"},
    "type_ii": {name: {"n", "rate"}}, "auroc": {name: a}}``."""
    normal, sets = np.ravel(normal_scores), {name: np.ravel(s) for name, s in anomaly_scores.items()}
    return {"type_i": {"set": "mnist-test", "n": int(normal.size), "rate": type_i_error(normal, threshold)},
            "type_ii": {name: {"n": int(s.size), "rate": type_ii_error(s, threshold)} for name, s in sets.items()},
            "auroc": {name: auroc(normal, s) for name, s in sets.items()}}


def roc_curve(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``, float64, over every distinct threshold, highest first, from (0, 0)."""
    a = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())
    b = np.sort(np.asarray(anomaly_scores, dtype=np.float64).ravel())
    thresholds = np.unique(np.concatenate([a, b]))[::-1]
    fpr = (a.size - np.searchsorted(a, thresholds, side="left")) / a.size
    tpr = (b.size - np.searchsorted(b, thresholds, side="left")) / b.size
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thresholds]


def threshold_for_type_i(normal_scores: np.ndarray, rate: float = 0.01) -> float:
    """Smallest threshold whose type I error (share of ``normal_scores`` above it) is <= ``rate``."""
    s = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())
    allowed = int(np.floor(rate * s.size))
    return float(s[s.size - allowed - 1]) if allowed < s.size else float(s[0])


def normalized_scores(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Scores (float [N], >= 0) -> float32 [N] ``min(score / (2 * threshold), 1)`` in float64: the threshold at
    0.5 (anomalib's min-max normalisation); a threshold of 0 reads 0 as 0.5, else 1."""
    s, t = np.asarray(scores, dtype=np.float64).ravel(), float(threshold)
    with np.errstate(over="ignore"):  # a subnormal threshold: the ratio is beyond float64, inf, then 1
        ratio = s / (2.0 * t) if t > 0 else np.where(s > 0, 1.0, 0.5)
    return np.clip(ratio, 0.0, 1.0).astype(np.float32)


def _binomial_p(k: int, n: int, tail: float) -> float:
    """The p in (0, 1) with P(Binomial(n, p) >= k) = ``tail`` (1 <= k <= n), by bisection to
    float64 resolution; terms summed in log space over the mean +- 40 standard deviations."""
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1.0, n + 1)))])
    lo, hi = 0.0, 1.0
    while (p := 0.5 * (lo + hi)) not in (lo, hi):
        spread = 40 * math.sqrt(n * p * (1 - p)) + 2
        j = np.arange(max(k, int(n * p - spread)), min(n, int(n * p + spread)) + 1)
        terms = log_fact[n] - log_fact[j] - log_fact[n - j] + j * math.log(p) + (n - j) * math.log1p(-p)
        top = terms.max(initial=-np.inf)
        if (math.exp(top) * np.exp(terms - top).sum() if j.size else 0.0) < tail:  # the tail grows with p
            lo = p
        else:
            hi = p
    return p


def clopper_pearson(flagged: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval ``(lower, upper)`` for a rate seen as ``flagged`` of ``n`` (ints, n >= 1):
    for a threshold with ``flagged`` of its ``n`` normal scores above it, a distribution-free interval for its
    false-alarm rate (the mass above the r-th smallest is Beta(n - r + 1, r))."""
    if n < 1 or not 0 <= flagged <= n or not 0 < confidence < 1:
        raise ValueError("need 0 <= flagged <= n, n >= 1 and 0 < confidence < 1")
    alpha = 1.0 - confidence
    lower = 0.0 if flagged == 0 else _binomial_p(flagged, n, alpha / 2)
    upper = 1.0 if flagged == n else _binomial_p(flagged + 1, n, 1 - alpha / 2)
    return lower, upper


def min_n_for_rate(rate: float) -> int:
    """The fewest normal scores ``threshold_for_false_alarm_rate`` needs: smallest n with floor(rate (n + 1)) >= 1."""
    return max(1, math.ceil(1 / _as_written(rate)) - 1)


def _as_written(rate: float):
    """``rate`` as its shortest decimal, exactly (a Fraction): 0.29 * 100 is 29, where float's is 28.999..."""
    from fractions import Fraction  # not at the top: scoring imports this module, and fractions imports decimal

    return Fraction(repr(float(rate)))


def threshold_for_false_alarm_rate(scores: np.ndarray, rate: float) -> tuple[float, int]:
    """``(value, r)``: the r-th smallest of ``scores`` (float [n], normal images), r = n + 1 - floor(rate (n + 1)):
    split-conformal, a new normal image scores above it with probability (n - r + 1) / (n + 1) <= rate.
    ``ValueError`` when n < ``min_n_for_rate(rate)``."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if not 0 < rate < 1:
        raise ValueError("the false-alarm rate must lie strictly between 0 and 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or Inf")
    above = math.floor(_as_written(rate) * (s.size + 1))  # images above the threshold, plus one
    if above < 1:
        raise ValueError(f"a false-alarm rate of {rate:g} needs at least {min_n_for_rate(rate):,} normal images, "
                         f"got {s.size:,}")
    rank = s.size + 1 - above
    return float(s[rank - 1]), int(rank)


def _beta_binomial_cdf(m: int, a: float, b: float) -> np.ndarray:
    """CDF of the Beta-Binomial(m, a, b) distribution at 0..m, float64 [m + 1]."""
    j = np.arange(m + 1)
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    log_pmf = (lg(m + 1.0) - lg(j + 1.0) - lg(m - j + 1.0) + lg(j + a) + lg(m - j + b) - lg(m + a + b)
               + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
    pmf = np.exp(log_pmf - log_pmf.max())
    return np.cumsum(pmf) / pmf.sum()


def false_alarm_prediction(flagged: int, n: int, m: int, confidence: float = 0.95) -> tuple[int, int]:
    """Distribution-free prediction interval ``(lower, upper)`` (ints in [0, m]) for how many of ``m`` new normal
    images a threshold flags when ``flagged`` of the ``n`` it was set on lie above it: the (1 -+ confidence) / 2
    quantiles of Beta-Binomial(m, n - r + 1, r), r on either side (``clopper_pearson``: the long-run rate)."""
    if n < 1 or m < 1 or not 0 <= flagged <= n or not 0 < confidence < 1:
        raise ValueError("need 0 <= flagged <= n, n >= 1, m >= 1 and 0 < confidence < 1")
    alpha = 1.0 - confidence
    lower = 0 if flagged == 0 else int(np.sum(_beta_binomial_cdf(m, flagged, n - flagged + 1) <= alpha / 2))
    upper = m if flagged == n else int(np.searchsorted(_beta_binomial_cdf(m, flagged + 1, n - flagged), 1 - alpha / 2))
    return lower, min(upper, m)


def conformal_p_values(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Conformal p-values p = (1 + #{reference >= s}) / (n + 1), so P(p <= alpha) <= alpha on normal
    images exchangeable with the reference ones: float [N] scores, float [n] reference -> float64 [N]."""
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    at_least = ref.size - np.searchsorted(ref, np.asarray(scores, dtype=np.float64).ravel(), side="left")
    return (1.0 + at_least) / (ref.size + 1.0)
