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
    r"""The number of bisection steps :math:`n` that shrink :math:`[a, b]` below a resolution
    :math:`r`: each step halves the bracket, so :math:`n = \lceil \log_2((b - a) / r) \rceil`
    (at least 1).

    Arguments:
        lo: The lower end :math:`a` (float).
        hi: The upper end :math:`b > a` (float).
        resolution: The resolution :math:`r`, by default the float32 spacing at 1.

    Returns:
        The number of steps :math:`n` (int).

    Example:
        >>> bisection_steps(-3.0, 3.0)
        26
    """
    return max(1, math.ceil(math.log2((hi - lo) / resolution)))


def bisect(evaluate: Evaluate, z: np.ndarray, index: np.ndarray, lo: float, hi: float, steps: int) -> np.ndarray:
    r"""The homework's bisection: finds :math:`x` in :math:`[a, b]` such that :math:`f(x)` is
    close to each target :math:`z`, for many targets at once.

    Each step evaluates :math:`f` at the midpoint :math:`m = (a + b) / 2` (float32, as the
    homework's torch code) and keeps the half that holds the root: :math:`b \gets m` where
    :math:`f(m) \geq z`, else :math:`a \gets m`. After :math:`n` steps the bracket is
    :math:`(b - a) / 2^n` wide and its midpoint is returned.

    Wikipedia:
        https://wikipedia.org/wiki/Bisection_method

    Arguments:
        evaluate: ``evaluate(x, index) -> (f(x), f'(x))``, float64 [M] each (see the module).
        z: The targets :math:`z`, float64 [M].
        index: The targets' positions, int64 [M] (passed to ``evaluate``).
        lo: The bound :math:`a` with :math:`f(a) \leq z` for every target (float).
        hi: The bound :math:`b` with :math:`z \leq f(b)` for every target (float).
        steps: The number of steps :math:`n` (``bisection_steps``).

    Returns:
        The final midpoints :math:`x`, float64 [M] (float32 values).

    Example:
        >>> comp = Components([0.0], [1.0], [2.0])  # f(x) = erf(x / sqrt(2)), W = 2
        >>> evaluate = lambda x, index: (comp.z(x), comp.dz_dx(x))
        >>> z = np.array([-0.5, 0.25, 0.5])
        >>> bisect(evaluate, z, np.arange(3), -10.0, 10.0, 30).round(5)
        array([-0.67449,  0.31864,  0.67449])
    """
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
    r"""Safeguarded Newton-bisection: solves :math:`f(x) = z` for many targets at once, each from a
    start :math:`x_0` inside its own bracket :math:`[a, b]`.

    Each step evaluates :math:`r = f(x) - z` and :math:`f'(x)` at :math:`x` rounded to float32,
    moves the bracket (:math:`a \gets x` where :math:`r < 0`, :math:`b \gets x` where
    :math:`r > 0`) and takes the Newton step

    .. math:: x \gets x - \frac{f(x) - z}{f'(x)}

    when it lands strictly inside the bracket, the midpoint :math:`(a + b) / 2` otherwise. A target
    has converged when its last Newton step was within
    :math:`\max(\epsilon / f'(x), 2 \text{ float32 spacings})` (:math:`\epsilon` the graph's noise)
    or its bracket shrank to 2 float32 spacings. Each target stops at its own convergence, so
    results do not depend on which other targets share the call.

    Wikipedia:
        https://wikipedia.org/wiki/Newton%27s_method

    Arguments:
        evaluate: ``evaluate(x, index) -> (f(x), f'(x))``, float64 [M] each (see the module).
        z: The targets :math:`z`, float64 [M].
        index: The targets' positions, int64 [M] (passed to ``evaluate``).
        x0: The starts :math:`x_0`, float64 [M], inside the brackets.
        lo: The lower ends :math:`a`, float64 [M], :math:`f(a) < z` up to the noise.
        hi: The upper ends :math:`b`, float64 [M], :math:`z \leq f(b)` up to the noise.
        noise: The graph's float32 error in :math:`z`, :math:`\epsilon` (float, >= 0).
        max_evals: The most evaluations per target.

    Returns:
        ``(x, slope, converged)``: the solutions :math:`x`, float64 [M]; :math:`f'` at the last
        evaluation, float64 [M]; whether each target converged, bool [M].

    Example:
        >>> comp = Components([0.0], [1.0], [2.0])  # f(x) = erf(x / sqrt(2)), W = 2
        >>> evaluate = lambda x, index: (comp.z(x), comp.dz_dx(x))
        >>> z = np.array([-0.5, 0.25, 0.5])
        >>> x, slope, ok = newton(evaluate, z, np.arange(3), np.zeros(3), np.full(3, -10.0), np.full(3, 10.0), 1e-7)
        >>> x.round(5), ok
        (array([-0.67449,  0.31864,  0.67449]), array([ True,  True,  True]))
    """
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
    r"""The flow's parameters in float64 and the flow evaluated from them in numpy (``math.erf``,
    ``math.erfc``): a mixture of :math:`K` Gaussian CDFs,

    .. math:: f(x) = \sum_k w_k \left(\Phi\left(\frac{x - \mu_k}{\sigma_k}\right) - \frac12\right),
              \qquad f'(x) = \sum_k \frac{w_k}{\sigma_k} \varphi\left(\frac{x - \mu_k}{\sigma_k}\right),

    strictly increasing from :math:`-W/2` to :math:`W/2`, :math:`W = \sum_k w_k` (``half_w`` is
    :math:`W/2`).

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


def polish64(comp: Components, z: np.ndarray, x0: np.ndarray, lo: float, hi: float,
             max_iter: int = POLISH_MAX_ITER) -> np.ndarray:
    r"""The float64 polish: solves :math:`f(x) = z` in float64 for targets strictly inside
    :math:`(-W/2, W/2)`, to a relative step of :math:`10^{-13}`, however close to the range's edge.

    With :math:`s = \operatorname{sign} z`, the root of :math:`f(x) = z` is the root of
    :math:`\log G(x) = \log(W/2 - |z|)`, :math:`G` the tail mass (``Components.tail_mass``), which
    has no cancellation and is close to linear in the tails. Safeguarded Newton on it:

    .. math:: x \gets x + s \, \frac{G(x)}{f'(x)} \left(\log G(x) - \log(W/2 - |z|)\right),

    the step kept when it lands inside the current bracket, the bracket's midpoint taken otherwise.

    Arguments:
        comp: The flow's components (``Components``).
        z: The targets :math:`z`, float64 [M], :math:`|z| < W/2`.
        x0: The starts, float64 [M] (non-finite starts begin at the bracket's middle).
        lo: The lower end of a bracket of every target (float; flow.json's ``x_bracket``).
        hi: The upper end (float).
        max_iter: The most Newton steps.

    Returns:
        The solutions :math:`x`, float64 [M].

    Example:
        >>> comp = Components([0.0], [1.0], [2.0])  # f(x) = erf(x / sqrt(2)), W = 2
        >>> x = polish64(comp, np.array([0.5, 1 - 2**-40]), np.zeros(2), -40.0, 40.0)  # W/2 - z = 2^-40
        >>> x, comp.tail_mass(x[1:], np.ones(1)) * 2**40
        (array([0.67448975, 7.14355203]), array([1.]))
    """
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
    r"""The graph's float32 error in :math:`z`: :math:`\max |f_{32}(\tilde x) - f(\tilde x)|`
    over the points, :math:`\tilde x` each point rounded to float32, :math:`f_{32}` what
    ``evaluate`` returns and :math:`f` the float64 flow of ``comp``.

    Arguments:
        evaluate: ``evaluate(x, index) -> (f(x), f'(x))``, float64 [M] each.
        comp: The flow's components.
        x: The points, float64 [M].

    Returns:
        The largest absolute difference (float).

    Example:
        >>> comp = Components([0.0], [1.0], [2.0])
        >>> in_float32 = lambda x, index: (comp.z(x).astype(np.float32).astype(np.float64), comp.dz_dx(x))
        >>> graph_noise(in_float32, comp, np.linspace(-3, 3, 101)) < 6e-8
        True
    """
    x32 = x.astype(np.float32).astype(np.float64)
    return float(np.max(np.abs(evaluate(x32, np.arange(x.size))[0] - comp.z(x32))))


class InverseTable:
    r"""A table of the inverse :math:`x(z)` for starts and brackets: nodes :math:`x_j` at ``size``
    evenly spaced :math:`z` in :math:`(-W/2, W/2)`, found once through the graph by ``bisect``.

    ``x``, ``z``, ``dx_dz``: float64 [K] nodes (K <= ``size``: float32 plateaus keep their first
    node). ``z`` is the graph's own z at the nodes, strictly increasing, so
    :math:`z_{j-1} < z \leq z_j` is a sign change of the graph's :math:`f`: a bracket for Newton.
    Between nodes the start is the cubic Hermite interpolant of :math:`x(z)` with slopes
    :math:`dx/dz = 1 / f'(x_j)`.

    Arguments:
        evaluate: ``evaluate(x, index) -> (f(x), f'(x))``, float64 [M] each.
        x_bracket: :math:`(a, b)` with :math:`f(a) = -W/2`, :math:`f(b) = W/2` (flow.json's).
        half_w: :math:`W/2`.
        size: The number of nodes.

    Example:
        >>> comp = Components([0.0], [1.0], [2.0])
        >>> table = InverseTable(lambda x, index: (comp.z(x), comp.dz_dx(x)), (-10.0, 10.0), 1.0, size=64)
        >>> x0, lo, hi = table.start(np.array([0.5]))
        >>> bool(lo[0] < 0.6744897502 < hi[0]), bool(abs(x0[0] - 0.6744897502) < 1e-4)
        (True, True)
    """

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
        r"""The node index :math:`i` with :math:`z_{i-1} < z \leq z_i` for each target, int64 [M]
        (targets z float64 [M]); equal to ``np.searchsorted(self.z, z)``, found by arithmetic on
        the evenly spaced targets and corrected by one where needed."""
        n = self.z.size
        i = np.clip(np.ceil((z - self._z0) * self._inv_step).astype(np.int64), 0, n)
        i -= (i > 0) & (self.z[np.maximum(i - 1, 0)] >= z)
        i += (i < n) & (self.z[np.minimum(i, n - 1)] < z)
        wrong = ((i > 0) & (self.z[np.maximum(i - 1, 0)] >= z)) | ((i < n) & (self.z[np.minimum(i, n - 1)] < z))
        if wrong.any():
            i[wrong] = np.searchsorted(self.z, z[wrong])
        return i

    def start(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Starts and brackets for targets z float64 [M]: ``(x0, lo, hi)``, float64 [M] each.

        Inside the table, with :math:`u = (z - z_{i-1}) / (z_i - z_{i-1})`, :math:`x_0` is the cubic
        Hermite interpolant through :math:`(z_{i-1}, x_{i-1})`, :math:`(z_i, x_i)` with slopes
        :math:`1 / f'` (clipped to :math:`[x_{i-1}, x_i]`, the bracket); beyond the end nodes the
        bracket reaches out to the x bracket and :math:`x_0` is the end node."""
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
