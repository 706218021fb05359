"""Comparing ONNX outputs with PyTorch's: one tolerance policy for export, the runtime's golden check,
``aeflow verify`` and the tests (numpy only)."""

from typing import NamedTuple

import numpy as np

# name -> (atol, rtol): pass where |actual - expected| <= atol + rtol * |expected|. log p(x) reaches -100 in the
# tails: 1e-5 absolute up to |log p| = 1, relative beyond. dz_dx is computed through its float32 log, whose
# rounding (a few |ln dz_dx| x 6e-8) is relative in dz_dx: rtol * (1 + |ln dz_dx|) (LOG_RELATIVE), 30 times what
# flows fitted to integers showed. reconstruction: two correct float32 runs (another GEMM kernel or SIMD width)
# differ by about 2e-5; 5e-5 still catches a bias moved by 1e-3 or float16 weights. The score stays within 1e-5.
TOLERANCES: dict[str, tuple[float, float]] = {
    "reconstruction": (5e-5, 0.0), "score": (1e-5, 0.0), "z": (1e-5, 0.0), "dz_dx": (1e-30, 1e-5),
    "log_prob": (1e-5, 1e-5), "sample": (1e-5, 0.0),
    "components z": (1e-5, 0.0),  # flow.json's float64 components against the graph's float32 z (noise ~4e-7)
    # int8 graphs are compared with onnxruntime CPU's own outputs at export: a value that rounds to
    # another uint8 step on another machine moves the outputs by about one quantisation step
    "int8 reconstruction": (2e-3, 0.0), "int8 score": (1e-4, 0.0),
}
LOG_RELATIVE = {"dz_dx"}  # rtol scaled by 1 + |ln expected| (see above)


class Comparison(NamedTuple):
    """One output compared: the largest absolute and relative differences, and the verdict."""

    name: str
    n: int
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool
    log_relative: bool = False  # rtol times 1 + |ln expected| (LOG_RELATIVE), kept when a caller renames the row

    @property
    def tolerance(self) -> str:
        rel = f"{self.rtol:g} rel" + (" x (1+|ln|)" if self.log_relative else "")
        parts = ([f"{self.atol:g} abs"] if self.atol > 1e-20 else []) + ([rel] if self.rtol else [])
        return " + ".join(parts) or "0 (bit-identical)"


def compare(name: str, actual: np.ndarray, expected: np.ndarray, atol: float | None = None,
            rtol: float | None = None) -> Comparison:
    """Compare two arrays of the same shape (float, computed in float64); tolerances default to
    ``TOLERANCES[name]`` (``LOG_RELATIVE`` names: rtol times 1 + |ln expected|). Non-finite values must match
    exactly."""
    d_atol, d_rtol = TOLERANCES.get(name, (1e-5, 0.0))
    atol, rtol = d_atol if atol is None else atol, d_rtol if rtol is None else rtol
    a = np.asarray(actual, dtype=np.float64).ravel()
    e = np.asarray(expected, dtype=np.float64).ravel()
    if a.shape != e.shape:
        return Comparison(name, int(e.size), float("inf"), float("inf"), atol, rtol, False)
    n, finite = int(e.size), np.isfinite(a) & np.isfinite(e)
    same_nonfinite = np.array_equal(a[~finite], e[~finite], equal_nan=True)
    if not finite.all():  # as a rule all are: no copies then
        a, e = a[finite], e[finite]
    diff, magnitude = np.abs(a - e), np.abs(e)
    size = np.maximum(magnitude, np.finfo(np.float64).tiny)
    rel = diff / size
    scale = size * (1.0 + np.abs(np.log(size))) if name in LOG_RELATIVE else magnitude
    ok = bool(np.all(diff <= atol + rtol * scale)) and same_nonfinite
    return Comparison(name, n, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), atol, rtol, ok,
                      name in LOG_RELATIVE)


def flow_check_points(seed: int = 0) -> np.ndarray:
    """Inputs for the flow's parity checks: a grid over [-5, 5], random points, and the tails (float32 [N])."""
    rng, tails = np.random.default_rng(seed), [6.0, 8.0, 10.0, 20.0, 50.0]
    return np.concatenate([np.linspace(-5, 5, 2001), rng.normal(0, 2, 2000), rng.uniform(-5, 5, 1000),
                           -np.array(tails[::-1]), tails]).astype(np.float32)
