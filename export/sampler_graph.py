"""``flow_sampler.onnx``, z float32 [N] -> x float32 [N]: a cubic inverse table solved in float64 gives a start and
bracket, then fixed safeguarded Newton steps with flow.onnx's ops; flow.json records the z intervals the runtime
finishes in float64 (f' < ``TRUSTED_SLOPE``, and table pieces where the graph misses its targets)."""

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from aeflow.errors import ParityError
from aeflow.runtime import inversion
from aeflow.runtime.contract import SAMPLER_FILE, Graph
from aeflow.runtime.inversion import in_intervals, merged_intervals
from aeflow.runtime.providers import create_session

TABLE_NODES = 2048  # bulk intervals (evenly spaced in z)
TAIL_NODES = 256  # intervals per tail (evenly spaced in log tail mass)
TAIL_MASS = 0.02  # where the tails begin: W/2 - |z| below this
TAIL_FLOOR = 1e-8  # the smallest tail mass tabulated; float32 z cannot resolve W/2 - |z| below ~1e-7
MAX_NEWTON_STEPS = 3  # the export writes the fewest steps (1, 2 or 3) that pass the check
TRUSTED_SLOPE = 0.1  # graph error in z <= 7e-7: x within 7e-6 where f' >= this; below, a float64 finish
X_TOLERANCE = 1e-5  # max |x - x_ref| where f' >= TRUSTED_SLOPE, in the data's scale (or 2 float32 steps at its size)
RESIDUAL_TOLERANCE = 2e-6  # max |f64(x) - z| everywhere: that same error, with margin
FLOAT64_PIECES = 64  # at most this many table pieces finished in float64 where the graph misses (5 seen)


def flow_constants(flow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``Flow1d``'s (means, exp(-log_sigma), weights), float32 [K] each, as its forward computes them."""
    with torch.no_grad():
        return tuple(t.numpy() for t in (flow.mus.detach(), torch.exp(-flow.log_sigmas), torch.exp(flow.weight_logits)))


def _pieces(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Cubic Hermite pieces through nodes x [L+1] with dx/du ``slope`` [L+1]: float64 [L, 6] (coefficients, ends)."""
    d, m0, m1 = np.diff(x), slope[:-1], slope[1:]
    ends = np.sort(np.stack([x[:-1], x[1:]], axis=1), axis=1)
    return np.concatenate([np.stack([x[:-1], m0, 3 * d - 2 * m0 - m1, m0 + m1 - 2 * d], axis=1), ends], axis=1)


def _nodes(half_w: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Bulk z float64 [TABLE_NODES + 1], tail masses m float64 [TAIL_NODES + 1] (z = +-(W/2 - m)), the log-mass step."""
    ds = math.log(TAIL_MASS / TAIL_FLOOR) / TAIL_NODES
    bulk = np.linspace(-(half_w - TAIL_MASS), half_w - TAIL_MASS, TABLE_NODES + 1)
    return bulk, TAIL_MASS * np.exp(-ds * np.arange(TAIL_NODES + 1)), ds


def piece_intervals(half_w: float, z: np.ndarray) -> np.ndarray:
    """The z ranges [a, b] (float64 [M, 2]) of the table pieces holding the targets z float64 [M]."""
    bulk, mass, _ = _nodes(half_w)
    knots = np.unique(np.concatenate([[-half_w], mass - half_w, bulk, half_w - mass, [half_w]]))
    i = np.clip(np.searchsorted(knots, z, side="right"), 1, knots.size - 1)
    return np.stack([knots[i - 1], knots[i]], axis=1)


def inverse_tables(comp: inversion.Components, x_bracket: tuple[float, float]) -> tuple:
    """(rows float32 [L, 6]: x(u) = c0 + c1 u + c2 u^2 + c3 u^3 and its ends, bulk then upper then lower tail; z0,
    1 / dz, 1 / ds) for the flow ``comp``, nodes solved in float64 and rounded to float32 once."""
    lo, hi = x_bracket
    z_nodes, mass, ds = _nodes(comp.half_w)
    dz = z_nodes[1] - z_nodes[0]
    xb = inversion.polish64(comp, z_nodes, np.zeros_like(z_nodes), lo, hi)
    rows = [_pieces(xb, dz / comp.dz_dx(xb))]
    for side in (1.0, -1.0):
        x = inversion.polish64(comp, side * (comp.half_w - mass), np.full(mass.shape, side * 3.0), lo, hi)
        # s = log(TAIL_MASS / m): dx/ds = m / f'(x) on the upper side, -m / f'(x) on the lower
        rows.append(_pieces(x, side * ds * mass / comp.dz_dx(x)))
    return np.concatenate(rows).astype(np.float32), float(z_nodes[0]), float(1.0 / dz), float(1.0 / ds)


class _Builder:
    """Collects nodes and initializers; ``const`` and ``op`` return the names of what they add."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 0, **attrs):
        self.count += 1
        name = f"{op_type.lower()}_{self.count}"
        outs = [f"{name}_{i}" for i in range(outputs)] or [name]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs if outputs else name


def _newton_step(b: _Builder, x: str, lo: str, hi: str) -> tuple[str, str, str]:
    """One safeguarded Newton step on ``z`` -> (x, lo, hi): f with flow.onnx's op sequence, f' from its t."""
    t = b.op("Mul", b.op("Sub", b.op("Reshape", x, "col_shape"), "mus"), "inv_sigma")
    erf = b.op("Erf", b.op("Mul", t, "rsqrt2"))
    fz = b.op("ReduceSum", b.op("Mul", b.op("Mul", erf, "half"), "weight"), "axis1", keepdims=0)
    gauss = b.op("Exp", b.op("Mul", b.op("Mul", t, t), "minus_half"))
    slope = b.op("ReduceSum", b.op("Mul", gauss, "slope_coef"), "axis1", keepdims=0)
    r = b.op("Sub", fz, "z")
    lo = b.op("Where", b.op("Less", r, "zero"), x, lo)
    hi = b.op("Where", b.op("Greater", r, "zero"), x, hi)
    xn = b.op("Sub", x, b.op("Div", r, slope))
    inside = b.op("And", b.op("GreaterOrEqual", xn, lo), b.op("LessOrEqual", xn, hi))  # False for NaN
    return b.op("Where", inside, xn, b.op("Mul", b.op("Add", lo, hi), "half")), lo, hi


def _table_start(b: _Builder) -> tuple[str, str, str]:
    """(x, lo, hi) for input ``z``: its table piece's cubic, clipped to the piece's ends."""
    mass = b.op("Max", b.op("Sub", "half_w", b.op("Abs", "z")), "floor")
    in_tail = b.op("Less", mass, "tail_mass")
    c_bulk = b.op("Mul", b.op("Sub", "z", "z0"), "inv_dz")
    c_tail = b.op("Mul", b.op("Sub", "log_tail_mass", b.op("Log", mass)), "inv_ds")
    j_bulk = b.op("Clip", b.op("Floor", c_bulk), "zero_f", "last_bulk")
    j_tail = b.op("Clip", b.op("Floor", c_tail), "zero_f", "last_tail")
    coord = b.op("Where", in_tail, c_tail, c_bulk)
    j_local = b.op("Where", in_tail, j_tail, j_bulk)
    u = b.op("Clip", b.op("Sub", coord, j_local), "zero_f", "one")
    offset = b.op("Where", b.op("Greater", "z", "zero"), "upper_offset", "lower_offset")
    j = b.op("Cast", b.op("Add", j_local, b.op("Where", in_tail, offset, "zero")), to=TensorProto.INT64)
    rows = b.op("Gather", "table", j, axis=0)  # one Gather of [N, 6]: 7 ms less per 1e6
    sizes = b.const(f"split_sizes_{b.count + 1}", [1] * 6, np.int64)  # its six columns (sizes an input: opset 13+)
    c0, c1, c2, c3, lo, hi = (b.op("Squeeze", c, "axis1") for c in b.op("Split", rows, sizes, outputs=6, axis=1))
    x = b.op("Add", c0, b.op("Mul", u, b.op("Add", c1, b.op("Mul", u, b.op("Add", c2, b.op("Mul", u, c3))))))
    return b.op("Min", b.op("Max", x, lo), hi), lo, hi


def build_sampler_graph(consts: tuple[np.ndarray, np.ndarray, np.ndarray], tables: tuple, half_w: float,
                        steps: int = 1, opset: int = 20, ir_version: int = 10) -> onnx.ModelProto:
    """The checked graph ``z`` float32 [N] -> ``x`` float32 [N] with ``steps`` Newton steps."""
    b, (mu, inv_sigma, weight), (table, z0, inv_dz, inv_ds) = _Builder(), consts, tables
    for name, value in {"col_shape": [-1, 1], "mus": mu, "inv_sigma": inv_sigma, "rsqrt2": 1 / math.sqrt(2),
                        "half": 0.5, "weight": weight, "axis1": [1], "minus_half": -0.5, "slope_coef": weight.astype(np.float64)
                        * inv_sigma / math.sqrt(2 * math.pi), "zero": 0.0, "half_w": half_w, "floor": TAIL_FLOOR,
                        "tail_mass": TAIL_MASS, "z0": z0, "inv_dz": inv_dz, "log_tail_mass": math.log(TAIL_MASS),
                        "inv_ds": inv_ds, "zero_f": 0.0, "last_bulk": TABLE_NODES - 1, "last_tail": TAIL_NODES - 1,
                        "one": 1.0, "upper_offset": TABLE_NODES, "lower_offset": TABLE_NODES + TAIL_NODES,
                        "table": table}.items():  # in the bundled graph's order
        b.const(name, value, np.int64 if name in ("col_shape", "axis1") else np.float32)
    x, lo, hi = _table_start(b)
    for _ in range(steps):
        x, lo, hi = _newton_step(b, x, lo, hi)
    b.nodes.append(helper.make_node("Identity", [x], ["x"], name="output"))
    graph = helper.make_graph(b.nodes, "aeflow_flow_sampler", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N"])],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="aeflow")
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def slow_intervals(comp: inversion.Components, x_bracket: tuple[float, float], unit: tuple[float, float]) -> list:
    """z intervals [a, b] whose preimages have f' < ``TRUSTED_SLOPE`` (a float64 scan of x over loc +- 50 scale)."""
    lo, hi = x_bracket
    x = np.concatenate([[lo], np.linspace(max(lo, unit[0] - 50.0 * unit[1]), min(hi, unit[0] + 50.0 * unit[1]),
                                          400_001), [hi]])
    z, last = comp.z(x), x.size - 1
    edges = np.diff(np.concatenate([[0], (comp.dz_dx(x) < TRUSTED_SLOPE / unit[1]).astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1  # runs of slow points
    return [[-comp.half_w if i == 0 else float(z[i - 1]), comp.half_w if j == last else float(z[j + 1])]
            for i, j in zip(starts, stops)]


def _measure(model: onnx.ModelProto, comp: inversion.Components, x_bracket: tuple[float, float],
             unit: tuple[float, float], intervals, seed: int) -> tuple[dict, np.ndarray, list[str]]:
    """The graph against the float64 inverse on a grid, draws (``seed``) and the edges, outside ``intervals``:
    (figures, the targets z float64 it misses, what it misses)."""
    bulk = np.float32(abs(unit[0]) + 5.0 * unit[1])  # the data's size: float32 resolves x no finer than this
    x_tol, slope = max(X_TOLERANCE * unit[1], 2.0 * float(np.spacing(bulk))), TRUSTED_SLOPE / unit[1]
    rng, half = np.random.default_rng(seed), comp.half_w
    normal, edges = rng.standard_normal(200_000), half - np.geomspace(1e-9, 1e-2, 200)
    z = np.concatenate([np.linspace(-half, half, 100_003)[1:-1], rng.uniform(-half, half, 200_000), normal, edges, -edges])
    z = z[np.abs(z) < half]
    x = create_session(model.SerializeToString(), "cpu").run(None, {"z": z.astype(np.float32)})[0].astype(np.float64)
    finite = np.isfinite(x)
    xs = np.where(finite, x, 0.0)
    ref = inversion.polish64(comp, z, xs, *x_bracket)
    graph_only = ~in_intervals(z, intervals)  # the runtime finishes the rest in float64
    trusted = graph_only & (comp.dz_dx(ref) >= slope)
    side = np.where(z >= 0, 1.0, -1.0)
    residual = np.abs(comp.tail_mass(xs, side) - (half - side * z))  # |f64(x) - z|, exact up to the edges
    step = 2.0 * np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)  # float32's resolution at x
    err = np.where(trusted, np.maximum(np.abs(xs - ref) - step, 0.0), 0.0)  # errors beyond it
    res = np.where(graph_only, np.maximum(residual - step * comp.dz_dx(ref), 0.0), 0.0)
    missed = (graph_only & ~finite) | (err > x_tol) | (res > RESIDUAL_TOLERANCE)
    problems = [msg for bad, msg in (
        (not finite[graph_only].all(), f"{int((graph_only & ~finite).sum())} non-finite outputs"),
        (err.max() > x_tol, f"max |x - x_ref| {err.max():.2e} where f' >= {slope:g} (tolerance {x_tol:g})"),
        (res.max() > RESIDUAL_TOLERANCE, f"max |f(x) - z| {res.max():.2e} (tolerance {RESIDUAL_TOLERANCE})")) if bad]
    return {"targets": int(z.size), "trusted_targets": int(trusted.sum()), "max_abs_x_error_trusted": float(err.max()),
            "max_abs_residual": float(res.max()), "x_tolerance": x_tol, "residual_tolerance": RESIDUAL_TOLERANCE
            }, z[missed], problems


def check_sampler_graph(model: onnx.ModelProto, comp: inversion.Components, x_bracket: tuple[float, float],
                        unit: tuple[float, float] = (0.0, 1.0), intervals=None, seed: int = 0) -> dict:
    """flow.json's figures of the graph outside ``intervals`` (None: ``slow_intervals``), or ``ParityError`` where
    it misses ``X_TOLERANCE`` (f' >= ``TRUSTED_SLOPE``) or ``RESIDUAL_TOLERANCE``."""
    if intervals is None:
        intervals = slow_intervals(comp, x_bracket, unit)
    figures, _, problems = _measure(model, comp, x_bracket, unit, intervals, seed)
    _refuse(problems)
    return figures


def _refuse(problems: list[str]) -> None:
    """``ParityError`` naming the ``problems`` (what the graph misses), if any."""
    if problems:
        raise ParityError(f"{SAMPLER_FILE} misses its accuracy targets: {'; '.join(problems)}; nothing was written "
                          f"(a flow with more components than its data need, or far from trained: train it with fewer "
                          f"--components, or longer)")


def write_sampler_graph(flow, comp: inversion.Components, x_bracket: tuple[float, float], path: str | Path,
                        opset: int = 20, ir_version: int = 10, unit: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Save the checked ``flow_sampler.onnx`` for ``flow`` (``comp``: its float64 components, ``unit``: the data's
    loc, scale) with the fewest Newton steps that pass; pieces where ``MAX_NEWTON_STEPS`` miss (up to
    ``FLOAT64_PIECES``) go to float64. Returns flow.json's "sampler_graph" entry, or ``ParityError``."""
    tables, consts = inverse_tables(comp, x_bracket), flow_constants(flow)
    intervals = slow_intervals(comp, x_bracket, unit)
    for steps in range(1, MAX_NEWTON_STEPS + 1):
        model = build_sampler_graph(consts, tables, comp.half_w, steps, opset, ir_version)
        check, missed, problems = _measure(model, comp, x_bracket, unit, intervals, seed=0)
        if not missed.size:
            break
    else:
        pieces = np.unique(piece_intervals(comp.half_w, missed), axis=0)
        _refuse(problems if len(pieces) > FLOAT64_PIECES else [])
        intervals = merged_intervals([*intervals, *pieces]).tolist()
        check = check_sampler_graph(model, comp, x_bracket, unit, intervals, seed=1)
    onnx.save(model, str(path))
    return Graph.of_file("sampler", path, opset).to_json() | {
        "newton_steps": steps, "table_nodes": TABLE_NODES + 1, "tail_nodes_per_side": TAIL_NODES + 1,
        "tail_mass": TAIL_MASS, "trusted_slope": TRUSTED_SLOPE / unit[1], "float64_z_intervals": intervals,
        "check": check}
