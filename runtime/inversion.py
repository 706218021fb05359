"""Inverting the flow f(x) = sum_k w_k (Phi((x - mu_k) / sigma_k) - 1/2), strictly increasing onto
(-W/2, W/2), for many targets at once (numpy only): float32 bisection through flow.onnx, and a
float64 finish from the components (``polish64``) where float32 cannot resolve x to 1e-5."""

import math
from typing import Callable

import numpy as np

F32_RESOLUTION = float(np.finfo(np.float32).eps)  # float32 spacing at |x| = 1
# a float32 root is trusted while noise / f'(x) + two float32 spacings of x stay below this share of
# the x tolerance (room left for the output's float32 rounding); beyond it polish64 takes over
FLOAT32_ERROR_SHARE = 0.4
_SQRT1_2, _INV_SQRT_2PI = 1.0 / math.sqrt(2.0), 1.0 / math.sqrt(2.0 * math.pi)
_erf, _erfc = np.frompyfunc(math.erf, 1, 1), np.frompyfunc(math.erfc, 1, 1)


class Components:
    """The flow's means, scales and weights (array-like [K] each) in float64, and f from them
    (``math.erf``); ``half_w`` is W/2 = sum(weight) / 2."""

    def __init__(self, mu, sigma, weight):
        self.mu, self.sigma, self.weight = (np.asarray(v, dtype=np.float64) for v in (mu, sigma, weight))
        self.half_w = float(self.weight.sum()) / 2.0

    def _t(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64)[:, None] - self.mu) / self.sigma

    def z(self, x: np.ndarray) -> np.ndarray:
        """f(x), float64 [M] at x float64 [M]."""
        return 0.5 * (_erf(self._t(x) * _SQRT1_2).astype(np.float64) * self.weight).sum(axis=1)

    def dz_dx(self, x: np.ndarray) -> np.ndarray:
        """f'(x), float64 [M] at x float64 [M]."""
        t = self._t(x)
        return (self.weight / self.sigma * np.exp(-0.5 * t * t)).sum(axis=1) * _INV_SQRT_2PI

    def tail_mass(self, x: np.ndarray, side: np.ndarray) -> np.ndarray:
        """G = W/2 - s f(x) as a sum of positive erfc terms (no cancellation near s W/2), float64 [M]
        for x and sides s = +-1, float64 [M] each."""
        return 0.5 * (_erfc(self._t(x) * side[:, None] * _SQRT1_2).astype(np.float64) * self.weight).sum(axis=1)


def merged_intervals(intervals) -> np.ndarray:
    """The union of the closed ``intervals`` [[a, b], ...] (a <= b, any order): sorted disjoint rows, float64 [K, 2]."""
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    if not iv.size:
        return iv
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    ends = np.maximum.accumulate(iv[:, 1])
    first = np.concatenate([[True], iv[1:, 0] > ends[:-1]])  # the rows that start a run
    return np.stack([iv[first, 0], ends[np.append(first[1:], True)]], axis=1)


def in_intervals(z: np.ndarray, intervals) -> np.ndarray:
    """bool [M]: z float64 [M] inside any of the closed ``intervals`` [[a, b], ...] (O(M log K) for K of them)."""
    iv = merged_intervals(intervals)
    if not iv.size:
        return np.zeros(np.shape(z), dtype=bool)
    i = np.searchsorted(iv[:, 0], z, side="right") - 1
    return (i >= 0) & (z <= iv[np.maximum(i, 0), 1])


def polish64(comp: Components, z: np.ndarray, x0: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """x float64 [M] with f(x) = z (float64 [M], |z| < W/2) to a relative step of 1e-13, from starts x0 float64 [M]
    (non-finite: mid-bracket) in [lo, hi]: safeguarded Newton on log G = log(W/2 - |z|), G the tail mass."""
    side, log_target = np.where(z >= 0, 1.0, -1.0), np.log(comp.half_w - np.abs(z))
    floor = 0.01 * (hi - lo)  # near x = 0 the step is relative to the bracket, the data's scale (any scale)
    a, b = np.full(z.shape, lo, dtype=np.float64), np.full(z.shape, hi, dtype=np.float64)
    x = np.clip(np.where(np.isfinite(x0), x0, 0.5 * (lo + hi)), lo, hi)
    active = np.arange(z.size)
    for _ in range(200):
        if not active.size:
            break
        xa, sa, aa, ba = x[active], side[active], a[active], b[active]
        g, fp, tol = comp.tail_mass(xa, sa), comp.dz_dx(xa), 1e-13 * np.maximum(floor, np.abs(xa))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = np.log(g) - log_target[active]  # > 0: G too large, the root lies further along +side
            root_above = (d > 0) == (sa > 0)
            aa, ba = np.where((d != 0) & root_above, xa, aa), np.where((d != 0) & ~root_above, xa, ba)
            xn = xa + sa * d * g / fp
            ok = np.isfinite(xn) & (xn > aa) & (xn < ba)
            xn = np.where(ok, xn, 0.5 * (aa + ba))
        done = (d == 0) | (ok & (np.abs(xn - xa) <= tol)) | (ba - aa <= tol)
        x[active], a[active], b[active] = np.where(d == 0, xa, xn), aa, ba
        active = active[~done]
    return x


def invert_by_bisection(evaluate: Callable[[np.ndarray], np.ndarray], comp: Components, z: np.ndarray,
                        bracket: tuple[float, float], noise: float, x_tolerance: float = 1e-5) -> np.ndarray:
    """The "bisection" method: z float64 [M] inside (-W/2, W/2) -> x float64 [M], every target bisected at once
    (float32 midpoints) through the graph's f (``evaluate``: x float64 [M] -> f(x) float64 [M], error at most
    ``noise``), then ``polish64`` where float32 cannot resolve x to ``FLOAT32_ERROR_SHARE`` of ``x_tolerance``.

    Example:
        >>> comp = Components([0.0], [1.0], [2.0])  # f(x) = erf(x / sqrt(2)), W = 2
        >>> in_float32 = lambda x: comp.z(x).astype(np.float32).astype(np.float64)
        >>> z = np.array([0.5, 1 - 1e-12])  # float32 cannot tell the second one from the edge
        >>> invert_by_bisection(in_float32, comp, z, (-40.0, 40.0), 1e-7).round(5)
        array([0.67449, 7.13051])
    """
    lo, hi = bracket
    x_lo, x_hi = np.full(z.shape, lo, dtype=np.float32), np.full(z.shape, hi, dtype=np.float32)
    for _ in range(max(1, math.ceil(math.log2((hi - lo) / min(F32_RESOLUTION, 0.1 * x_tolerance))))):
        mid = (x_lo + x_hi) / np.float32(2)
        above = evaluate(mid.astype(np.float64)) >= z
        x_hi, x_lo = np.where(above, mid, x_hi), np.where(above, x_lo, mid)
    x = ((x_lo + x_hi) / np.float32(2)).astype(np.float64)
    spacing = np.spacing(np.abs(x).astype(np.float32)).astype(np.float64)
    with np.errstate(divide="ignore"):
        unsure = ~(noise / comp.dz_dx(x) + 2 * spacing <= FLOAT32_ERROR_SHARE * x_tolerance)
    if unsure.any():
        x[unsure] = polish64(comp, z[unsure], x[unsure], *bracket)
    return x
