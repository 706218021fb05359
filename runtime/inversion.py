"""Inverting the flow z = f(x) for many targets at once (numpy only, no torch).

f is the flow of flow.onnx: z = sum_k w_k (Phi((x - mu_k) / sigma_k) - 1/2), strictly increasing
from -W/2 to W/2. flow.onnx computes it in float32, with an error of ~4e-7 in z, so a float32 solve
(``bisect``) is only good to about that noise / f'(x): beyond 1e-5 where f' is small (the tails,
flat valleys between components). ``polish64`` finishes such targets in float64 from the
components, on the tail mass G(x) = W/2 - s f(x) (s = sign z), a sum of positive erfc terms with
no cancellation, solved in log space, exact up to the range's edge. ``invert_by_bisection`` is the
two together: the sampler's "bisection" method.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Evaluate = Callable[[np.ndarray], np.ndarray]

F32_RESOLUTION = float(np.finfo(np.float32).eps)  # float32 spacing at |x| = 1
POLISH_MAX_ITER = 200
# an x accepted from a float32 solve has error <= noise / f'(x) + two float32 spacings of x; beyond
# this the float64 polish takes over, leaving room for the output's float32 rounding within 1e-5
FLOAT32_ERROR_BUDGET = 4e-6

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


class Components:
    r"""The flow's parameters in float64 and the flow evaluated from them in numpy (``math.erf``,
    ``math.erfc``): :math:`f(x) = \sum_k w_k (\Phi((x - \mu_k) / \sigma_k) - 1/2)`, strictly
    increasing from :math:`-W/2` to :math:`W/2`, :math:`W = \sum_k w_k` (``half_w`` is :math:`W/2`).

    Arguments:
        mu: The means :math:`\mu_k`, array-like [K].
        sigma: The scales :math:`\sigma_k > 0`, array-like [K].
        weight: The weights :math:`w_k > 0`, array-like [K].

    Example:
        >>> comp = Components([0.0, 2.0], [1.0, 0.5], [1.0, 3.0])
        >>> comp.half_w, comp.z(np.array([-50.0, 2.0, 50.0]))
        (2.0, array([-2.        ,  0.47724987,  2.        ]))
    """

    def __init__(self, mu, sigma, weight):
        self.mu = np.asarray(mu, dtype=np.float64)
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.weight = np.asarray(weight, dtype=np.float64)
        self.half_w = float(self.weight.sum()) / 2.0

    def z(self, x: np.ndarray) -> np.ndarray:
        """:math:`f(x)` (float64 [M]) at x float64 [M]."""
        t = (np.asarray(x, dtype=np.float64)[:, None] - self.mu) / self.sigma
        return 0.5 * (_erf(t * _SQRT1_2).astype(np.float64) * self.weight).sum(axis=1)

    def dz_dx(self, x: np.ndarray) -> np.ndarray:
        """:math:`f'(x)` (float64 [M]) at x float64 [M]."""
        t = (np.asarray(x, dtype=np.float64)[:, None] - self.mu) / self.sigma
        return (self.weight / self.sigma * np.exp(-0.5 * t * t)).sum(axis=1) * _INV_SQRT_2PI

    def tail_mass(self, x: np.ndarray, side: np.ndarray) -> np.ndarray:
        r""":math:`G(x) = W/2 - s f(x) = \sum_k w_k Q(s (x - \mu_k) / \sigma_k)` (float64 [M]) for x
        and sides :math:`s = \pm 1`, float64 [M] each: a sum of positive terms, with full relative
        precision however close :math:`f(x)` is to :math:`s W/2`."""
        t = (x[:, None] - self.mu) / self.sigma * side[:, None]
        return 0.5 * (_erfc(t * _SQRT1_2).astype(np.float64) * self.weight).sum(axis=1)


def bisect(evaluate: Evaluate, z: np.ndarray, lo: float, hi: float) -> np.ndarray:
    r"""The homework's bisection, every target at once: each step evaluates :math:`f` at the
    midpoints :math:`m = (a + b) / 2` (float32, as the homework's torch code) and keeps the half
    that holds the root (:math:`b \gets m` where :math:`f(m) \geq z`, else :math:`a \gets m`),
    for :math:`\lceil \log_2((b - a) / \epsilon_{32}) \rceil` steps: down to float32 resolution.

    Wikipedia:
        https://wikipedia.org/wiki/Bisection_method

    Arguments:
        evaluate: ``evaluate(x) -> f(x)``: float64 [M] -> float64 [M] (see the module).
        z: The targets :math:`z`, float64 [M].
        lo: A bound :math:`a` with :math:`f(a) \leq z` for every target (float).
        hi: A bound :math:`b` with :math:`z \leq f(b)` for every target (float).

    Returns:
        The final midpoints :math:`x`, float64 [M] (float32 values).

    Example:
        >>> comp = Components([0.0], [1.0], [2.0])  # f(x) = erf(x / sqrt(2)), W = 2
        >>> bisect(comp.z, np.array([-0.5, 0.25, 0.5]), -10.0, 10.0).round(5)
        array([-0.67449,  0.31864,  0.67449])
    """
    x_lo, x_hi = np.full(z.shape, lo, dtype=np.float32), np.full(z.shape, hi, dtype=np.float32)
    for _ in range(max(1, math.ceil(math.log2((hi - lo) / F32_RESOLUTION)))):
        mid = (x_lo + x_hi) / np.float32(2)
        above = evaluate(mid.astype(np.float64)) >= z
        x_hi = np.where(above, mid, x_hi)
        x_lo = np.where(above, x_lo, mid)
    return ((x_lo + x_hi) / np.float32(2)).astype(np.float64)


def polish64(comp: Components, z: np.ndarray, x0: np.ndarray, lo: float, hi: float,
             max_iter: int = POLISH_MAX_ITER) -> np.ndarray:
    r"""Solves :math:`f(x) = z` in float64 for targets strictly inside :math:`(-W/2, W/2)`, to a
    relative step of :math:`10^{-13}`, however close to the range's edge: safeguarded Newton on
    :math:`\log G(x) = \log(W/2 - |z|)` (:math:`G` the tail mass on the side :math:`s` of z, no
    cancellation, close to linear in the tails), :math:`x \gets x + s (G / f') (\log G - \log(W/2 - |z|))`,
    the step kept when it lands inside the current bracket, the bracket's midpoint taken otherwise.

    Arguments:
        comp: The flow's components (``Components``).
        z: The targets :math:`z`, float64 [M], :math:`|z| < W/2`.
        x0: The starts, float64 [M] (non-finite starts begin at the bracket's middle).
        lo, hi: A bracket of every target (floats; flow.json's ``x_bracket``).
        max_iter: The most Newton steps.

    Returns:
        The solutions :math:`x`, float64 [M].

    Example:
        >>> comp = Components([0.0], [1.0], [2.0])  # f(x) = erf(x / sqrt(2)), W = 2
        >>> x = polish64(comp, np.array([0.5, 1 - 2**-40]), np.zeros(2), -40.0, 40.0)  # W/2 - z = 2^-40
        >>> x, comp.tail_mass(x[1:], np.ones(1)) * 2**40
        (array([0.67448975, 7.14355203]), array([1.]))
    """
    side, log_target = np.where(z >= 0, 1.0, -1.0), np.log(comp.half_w - np.abs(z))
    a, b = np.full(z.shape, lo, dtype=np.float64), np.full(z.shape, hi, dtype=np.float64)
    x = np.clip(np.where(np.isfinite(x0), x0, 0.5 * (lo + hi)), lo, hi)
    active = np.arange(z.size)
    for _ in range(max_iter):
        if not active.size:
            break
        xa, sa, aa, ba = x[active], side[active], a[active], b[active]
        g, fp, tol = comp.tail_mass(xa, sa), comp.dz_dx(xa), 1e-13 * np.maximum(1.0, np.abs(xa))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = np.log(g) - log_target[active]  # > 0: G too large, the root lies further along +side
            root_above = (d > 0) == (sa > 0)
            aa = np.where((d != 0) & root_above, xa, aa)
            ba = np.where((d != 0) & ~root_above, xa, ba)
            xn = xa + sa * d * g / fp
            ok = np.isfinite(xn) & (xn > aa) & (xn < ba)
            xn = np.where(ok, xn, 0.5 * (aa + ba))
        done = (d == 0) | (ok & (np.abs(xn - xa) <= tol)) | (ba - aa <= tol)
        x[active], a[active], b[active] = np.where(d == 0, xa, xn), aa, ba
        active = active[~done]
    return x



def invert_by_bisection(evaluate: Evaluate, comp: Components, z: np.ndarray, bracket: tuple[float, float],
                        noise: float) -> np.ndarray:
    r"""Every target bisected at once through the graph (``bisect`` down to float32 resolution),
    then finished by ``polish64`` where the float32 root can be off by more than
    ``FLOAT32_ERROR_BUDGET``: :math:`\epsilon / f'(x)` plus two float32 spacings of :math:`x`
    (:math:`\epsilon` the graph's noise). The result is within :math:`10^{-5}` of the float64 inverse.

    Arguments:
        evaluate: ``evaluate(x) -> f(x)``: float64 [M] -> float64 [M], the graph's float32 f.
        comp: The flow's components (``Components``), for :math:`f'` and the polish.
        z: The targets :math:`z`, float64 [M], strictly inside :math:`(-W/2, W/2)`.
        bracket: :math:`(a, b)` holding every target's root (flow.json's ``x_bracket``).
        noise: A bound on the graph's error in :math:`z`, :math:`\epsilon` (float).

    Returns:
        The solutions :math:`x`, float64 [M].

    Example:
        >>> comp = Components([0.0], [1.0], [2.0])  # f(x) = erf(x / sqrt(2)), W = 2
        >>> in_float32 = lambda x: comp.z(x).astype(np.float32).astype(np.float64)
        >>> z = np.array([0.5, 1 - 1e-12])  # float32 cannot tell the second one from the edge
        >>> invert_by_bisection(in_float32, comp, z, (-40.0, 40.0), 1e-7).round(5)
        array([0.67449, 7.13051])
    """
    x = bisect(evaluate, z, *bracket)
    spacing = np.spacing(np.abs(x).astype(np.float32)).astype(np.float64)
    with np.errstate(divide="ignore"):
        unsure = ~(noise / comp.dz_dx(x) + 2 * spacing <= FLOAT32_ERROR_BUDGET)
    if unsure.any():
        x[unsure] = polish64(comp, z[unsure], x[unsure], *bracket)
    return x
