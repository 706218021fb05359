"""Inverting the flow z = f(x) for many targets at once (numpy only, no torch).

f is the flow of flow.onnx: z = sum_k w_k (Phi((x - mu_k) / sigma_k) - 1/2), strictly increasing
from -W/2 to W/2. The solvers here take ``evaluate(x, index)``: float64 [M] points and their targets'
positions int64 [M] -> (z, dz/dx) float64 [M], the graph's float32 outputs at float32(x) (see
``FlowSampler``: onnxruntime rounds a point differently depending on where it sits in the batch,
so each point is placed by its target's position, which keeps results independent of chunking). Three ways, all vectorised over the targets:

* ``bisect``: the homework's bisection (float32 midpoints, ``f >= z`` moves the upper end).
* ``newton``: safeguarded Newton-bisection: a Newton step that leaves the current bracket is
  replaced by the bracket's midpoint; stops when the step is within the graph's float32 noise.
* ``InverseTable``: nodes x_j at evenly spaced z_j (built once through the graph), searchsorted
  plus cubic Hermite interpolation of x(z) gives a start that one Newton step finishes.

The graph computes f in float32: its z carries an error of ~4e-7 (``graph_noise`` measures it),
so a float32 solve is only good to about noise / f'(x); in the tails, where f' is small (it falls
below 1e-2 where only the widest component is left), that exceeds 1e-5. ``polish64`` finishes such
targets in float64 from the components, on the complementary tail mass
G(x) = sum_k w_k Q(s (x - mu_k) / sigma_k) = W/2 - s z (s = sign z, Q = erfc(t / sqrt 2) / 2),
a sum of positive terms with no cancellation, solved in log space: log G is close to linear in the
tails, and W/2 - |z| keeps full relative precision right up to the range's edge.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Evaluate = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

F32_RESOLUTION = float(np.finfo(np.float32).eps)  # float32 spacing at |x| = 1
NEWTON_MAX_EVALS = 60
POLISH_MAX_ITER = 200
# an x accepted from a float32 solve has error <= noise / f'(x) (+ the float32 rounding of the output);
# beyond this the float64 polish takes over, leaving room for the rounding within the 1e-5 promise
FLOAT32_ERROR_BUDGET = 4e-6

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def bisection_steps(lo: float, hi: float, resolution: float = F32_RESOLUTION) -> int:
    """Steps for bisection to shrink [lo, hi] below ``resolution``: ceil(log2(width / resolution))."""
    return max(1, math.ceil(math.log2((hi - lo) / resolution)))


def bisect(evaluate: Evaluate, z: np.ndarray, index: np.ndarray, lo: float, hi: float, steps: int) -> np.ndarray:
    """The homework's bisection on [lo, hi] for targets z float64 [M] (positions ``index`` int64 [M])
    float32 ends and midpoints,
    ``f(mid) >= z`` moves the upper end, ``steps`` evaluations. Returns x float64 [M] (the final
    midpoint, a float32 value)."""
    x_lo = np.full(z.shape, lo, dtype=np.float32)
    x_hi = np.full(z.shape, hi, dtype=np.float32)
    for _ in range(steps):
        mid = (x_lo + x_hi) / np.float32(2)
        above = evaluate(mid.astype(np.float64), index)[0] >= z
        x_hi = np.where(above, mid, x_hi)
        x_lo = np.where(above, x_lo, mid)
    return ((x_lo + x_hi) / np.float32(2)).astype(np.float64)


def newton(evaluate: Evaluate, z: np.ndarray, index: np.ndarray, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
           noise: float, max_evals: int = NEWTON_MAX_EVALS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Safeguarded Newton-bisection for targets z float64 [M] (positions ``index`` int64 [M]) from
    starts x0 inside brackets [lo, hi] (float64 [M] each; f(lo) < z <= f(hi) up to the graph's noise).

    Converged: the last Newton step was within max(noise / f', 2 float32 spacings), or the bracket
    shrank to 2 float32 spacings. Each target stops at its own convergence, so results do not depend
    on which other targets share the call. Returns (x float64 [M], dz/dx at the last evaluation
    float64 [M], converged bool [M])."""
    n = z.size
    x_out, slope_out, converged = np.empty(n), np.zeros(n), np.zeros(n, dtype=bool)
    todo = np.arange(n)  # the unconverged targets; their state below is kept compacted
    xa, la, ha, za, ia = x0.astype(np.float64), lo.astype(np.float64), hi.astype(np.float64), z, index
    for _ in range(max_evals):
        xa = xa.astype(np.float32).astype(np.float64)
        fz, fp = evaluate(xa, ia)
        r = fz - za
        la = np.where(r < 0, np.maximum(la, xa), la)
        ha = np.where(r > 0, np.minimum(ha, xa), ha)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            xn = xa - r / fp
            ok = (xn > la) & (xn < ha) & (fp > 0)  # False for NaN
            xn = np.where(ok, xn, 0.5 * (la + ha))
            spacing = np.maximum(np.abs(xa), 1.0) * (2 * F32_RESOLUTION)  # >= 2 float32 spacings
            tol = np.maximum(spacing, noise / fp)
        xn = np.where(r == 0, xa, xn)
        done = (r == 0) | (ok & (np.abs(xn - xa) <= tol)) | (ha - la <= spacing)
        x_out[todo], slope_out[todo] = xn, fp
        converged[todo[done]] = True
        keep = ~done
        if not keep.any():
            break
        todo, xa, la, ha, za, ia = todo[keep], xn[keep], la[keep], ha[keep], za[keep], ia[keep]
    return x_out, slope_out, converged


class Components:
    """The flow's parameters in float64, evaluated in numpy (float64 erf/erfc from ``math``)."""

    def __init__(self, mu, sigma, weight):
        self.mu = np.asarray(mu, dtype=np.float64)
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.weight = np.asarray(weight, dtype=np.float64)
        self.half_w = float(self.weight.sum()) / 2.0

    def z(self, x: np.ndarray) -> np.ndarray:
        """f(x) in float64 for x float64 [M]."""
        t = (np.asarray(x, dtype=np.float64)[:, None] - self.mu) / self.sigma
        return 0.5 * (_erf(t * _SQRT1_2).astype(np.float64) * self.weight).sum(axis=1)

    def dz_dx(self, x: np.ndarray) -> np.ndarray:
        """f'(x) in float64 for x float64 [M]."""
        t = (np.asarray(x, dtype=np.float64)[:, None] - self.mu) / self.sigma
        return (self.weight / self.sigma * np.exp(-0.5 * t * t)).sum(axis=1) * _INV_SQRT_2PI

    def tail_mass(self, x: np.ndarray, side: np.ndarray) -> np.ndarray:
        """G(x) = W/2 - side * f(x) for x, side (+1 or -1) float64 [M], as a sum of positive terms."""
        t = (x[:, None] - self.mu) / self.sigma * side[:, None]
        return 0.5 * (_erfc(t * _SQRT1_2).astype(np.float64) * self.weight).sum(axis=1)


def polish64(comp: Components, z: np.ndarray, x0: np.ndarray, lo: float, hi: float,
             max_iter: int = POLISH_MAX_ITER) -> np.ndarray:
    """Solve f(x) = z in float64 for z float64 [M] strictly inside (-W/2, W/2), from starts x0
    float64 [M], with [lo, hi] a bracket of every target (flow.json's x_bracket).

    Safeguarded Newton on log G(x) = log(W/2 - |z|) (see the module docstring), to a relative step
    of 1e-13. Returns x float64 [M]."""
    side = np.where(z >= 0, 1.0, -1.0)
    log_target = np.log(comp.half_w - np.abs(z))
    a = np.full(z.shape, lo, dtype=np.float64)
    b = np.full(z.shape, hi, dtype=np.float64)
    x = np.clip(np.where(np.isfinite(x0), x0, 0.5 * (lo + hi)), lo, hi)
    active = np.arange(z.size)
    for _ in range(max_iter):
        if active.size == 0:
            break
        xa, sa, aa, ba = x[active], side[active], a[active], b[active]
        g = comp.tail_mass(xa, sa)
        fp = comp.dz_dx(xa)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = np.log(g) - log_target[active]  # > 0: G too large, the root lies further along +side
            root_above = (d > 0) == (sa > 0)
            aa = np.where((d != 0) & root_above, xa, aa)
            ba = np.where((d != 0) & ~root_above, xa, ba)
            xn = xa + sa * d * g / fp
            ok = np.isfinite(xn) & (xn > aa) & (xn < ba)
            xn = np.where(ok, xn, 0.5 * (aa + ba))
        tol = 1e-13 * np.maximum(1.0, np.abs(xa))
        done = (d == 0) | (ok & (np.abs(xn - xa) <= tol)) | (ba - aa <= tol)
        x[active], a[active], b[active] = np.where(d == 0, xa, xn), aa, ba
        active = active[~done]
    return x


def graph_noise(evaluate: Evaluate, comp: Components, x: np.ndarray) -> float:
    """Largest |graph z - float64 z| at the points x float64 [M] (evaluated at float32(x))."""
    x32 = x.astype(np.float32).astype(np.float64)
    return float(np.max(np.abs(evaluate(x32, np.arange(x.size))[0] - comp.z(x32))))


class InverseTable:
    """x at ``size`` evenly spaced z in (-W/2, W/2), built once through the graph, for starts.

    ``x``, ``z``, ``dx_dz``: float64 [K] nodes; ``z`` is the graph's own float32 z at the nodes
    (strictly increasing), so z[i-1] < target <= z[i] is a sign change of the graph's f: a bracket
    for Newton."""

    def __init__(self, evaluate: Evaluate, x_bracket: tuple[float, float], half_w: float, size: int = 4096):
        lo, hi = x_bracket
        targets = np.linspace(-half_w, half_w, size + 2)[1:-1]
        index = np.arange(size)
        x = bisect(evaluate, targets, index, lo, hi, bisection_steps(lo, hi))
        z, fp = evaluate(x, index)
        keep = np.isfinite(z) & (fp > 0)
        x, z, fp = x[keep], z[keep], fp[keep]
        strictly = np.concatenate([[True], np.diff(z) > 0])  # float32 plateaus: keep the first node
        self.x, self.z, self.dx_dz = x[strictly], z[strictly], 1.0 / fp[strictly]
        self.bracket = (float(lo), float(hi))
        # the nodes' z sit within the graph's noise of evenly spaced targets, so a target's node
        # index is known up to one from arithmetic; np.searchsorted (as costly as a graph call on
        # 1e6 random targets) only runs for those the arithmetic guess does not settle
        self._z0 = float(targets[0])
        self._inv_step = (size - 1) / float(targets[-1] - targets[0])

    def locate(self, z: np.ndarray) -> np.ndarray:
        """Same as np.searchsorted(self.z, z) for targets z float64 [M]: int64 [M] with
        self.z[i-1] < z <= self.z[i]."""
        n = self.z.size
        i = np.clip(np.ceil((z - self._z0) * self._inv_step).astype(np.int64), 0, n)
        i -= (i > 0) & (self.z[np.maximum(i - 1, 0)] >= z)
        i += (i < n) & (self.z[np.minimum(i, n - 1)] < z)
        wrong = ((i > 0) & (self.z[np.maximum(i - 1, 0)] >= z)) | ((i < n) & (self.z[np.minimum(i, n - 1)] < z))
        if wrong.any():
            i[wrong] = np.searchsorted(self.z, z[wrong])
        return i

    def start(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Starts and brackets for targets z float64 [M]: (x0, lo, hi) float64 [M] each. Inside the
        table, x0 is the cubic Hermite interpolant of x(z) (slopes 1 / f'); beyond the end nodes the
        bracket reaches out to flow.json's x_bracket and x0 is the end node."""
        n = self.z.size
        i = self.locate(z)  # z[i-1] < target <= z[i]
        j0, j1 = np.clip(i - 1, 0, n - 1), np.clip(i, 0, n - 1)
        x0, x1, z0, z1 = self.x[j0], self.x[j1], self.z[j0], self.z[j1]
        h = z1 - z0
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(h > 0, (z - z0) / h, 0.0)
        # cubic Hermite in power form: x0 + m0 u + (3d - 2m0 - m1) u^2 + (m0 + m1 - 2d) u^3
        d, m0, m1 = x1 - x0, h * self.dx_dz[j0], h * self.dx_dz[j1]
        guess = x0 + u * (m0 + u * ((3 * d - 2 * m0 - m1) + u * (m0 + m1 - 2 * d)))
        lo = np.where(i > 0, x0, self.bracket[0])
        hi = np.where(i < n, x1, self.bracket[1])
        inside = (i > 0) & (i < n)
        x_start = np.where(inside, np.clip(guess, x0, x1), np.where(i == 0, x0, x1))
        return x_start, lo, hi
