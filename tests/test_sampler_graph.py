"""The "graph" sampling method: flow_sampler.onnx alone against a float64 reference, its sha256 and
flow.json entry, lazy loading, the CLI without torch, and the export that rebuilds it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from aeflow.errors import ArtifactError, ParityError
from aeflow.files import sha256_file
from aeflow.runtime.sampler import FlowSampler

from conftest import edit_metadata, run_cli
from test_sampler import hard_targets, ref, sampler  # noqa: F401  (shared fixtures: the bundled sampler, its float64 reference)

# Rebuilt on another x86-64 CPU, the table's float64 nodes come out of numpy's SIMD exp/log a few
# float64 ulps apart, and a value can round to a neighbouring float32 (seen with numpy held to AVX2:
# 2 of 15,360 values, cubic coefficients 2.3e-13 apart, 1 float32 ulp). So values are compared to 2
# float32 ulps (rtol 2.4e-7), or 1e-9 absolute for the small coefficients that are differences of
# nearby nodes: a table value only moves the start of the Newton step (|u| <= 1), which the export
# check then measures against float64, so such differences cannot reach the 1e-5 promise.
TABLE_ATOL, TABLE_RTOL = 1e-9, 2.4e-7
INTERVAL_RTOL = 1e-9  # float64 ends of the float64 intervals (f and f' in float64, same SIMD caveat)


def _copy_flow(src, dst, names=("flow.json", "flow.onnx", "flow_sampler.onnx", "golden.npz")):
    for name in names:
        shutil.copy2(src / name, dst / name)
    return json.loads((dst / "flow.json").read_text())


def test_pure_graph_accuracy(sampler, ref):
    """flow_sampler.onnx alone (no polish): within 1e-5 where f' >= the trusted slope, and
    |f64(x) - z| within the recorded residual tolerance for every target."""
    targets = np.concatenate([sampler.draw_z(np.random.default_rng(11), 4000), hard_targets(sampler.z_range[1])])
    x_ref = ref.invert(targets)
    entry = sampler.metadata.to_json()["sampler_graph"]
    x = sampler._sampler_graph().run(None, {"z": targets.astype(np.float32)})[0].astype(np.float64)
    assert np.all(np.isfinite(x))
    trusted = ref.fprime(x_ref) >= entry["trusted_slope"]
    assert trusted.mean() > 0.95
    assert np.abs(x - x_ref)[trusted].max() <= entry["check"]["x_tolerance"]
    upper = targets >= 0
    residual = np.where(upper, np.abs(ref.upper_tail(x) - (ref.half_w - targets)),
                        np.abs(ref.lower_tail(x) - (ref.half_w + targets)))
    assert residual.max() <= entry["check"]["residual_tolerance"]
    # targets outside the float64 intervals are exactly those the runtime trusts to the graph
    inside = np.zeros(targets.shape, bool)
    for a, b in entry["float64_z_intervals"]:
        inside |= (targets >= a) & (targets <= b)
    assert np.all(ref.fprime(x_ref)[~inside] >= entry["trusted_slope"])


def test_sha256_checked_lazily(tmp_path, bundled):
    meta = _copy_flow(bundled, tmp_path)
    assert meta["sampler_graph"]["sha256"] == sha256_file(bundled / "flow_sampler.onnx")
    edit_metadata(tmp_path / "flow.json", lambda m: m["sampler_graph"].update(sha256="0" * 64))
    s = FlowSampler(tmp_path, device="cpu")
    assert s.sample(10, seed=0, method="bisection").shape == (10,)  # bisection never opens the sampler graph
    with pytest.raises(ArtifactError, match="sha256"):
        s.sample(10, seed=0)  # graph, the default
    assert FlowSampler(tmp_path, device="cpu", verify=False).sample(10, seed=0, method="graph").shape == (10,)


def test_missing_entry_or_file(tmp_path, bundled):
    _copy_flow(bundled, tmp_path, ("flow.json", "flow.onnx", "golden.npz"))
    s = FlowSampler(tmp_path, device="cpu")
    with pytest.raises(ArtifactError, match="flow_sampler.onnx: not found"):
        s.invert([0.0], method="graph")
    assert s.invert([0.0], method="bisection").shape == (1,)
    edit_metadata(tmp_path / "flow.json", lambda m: m.pop("sampler_graph"))
    with pytest.raises(ArtifactError, match="field 'sampler_graph' is missing; re-export"):
        FlowSampler(tmp_path, device="cpu")


def test_malformed_intervals(tmp_path, bundled):
    _copy_flow(bundled, tmp_path)
    edit_metadata(tmp_path / "flow.json", lambda m: m["sampler_graph"].update(float64_z_intervals=[[1.0]]))
    with pytest.raises(ArtifactError, match=r"float64_z_intervals\[0\]' must have 2 items"):
        FlowSampler(tmp_path, device="cpu")


def test_cli_without_torch(no_torch_env):
    proc = run_cli("sample", "-n", "1000", "--method", "graph", "--seed", "0", "--json", env=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["method"] == "graph" and out["graph"] == "flow_sampler.onnx" and out["n"] == 1000
    assert out["provider"] == "CPUExecutionProvider" and -3 < out["mean"] < 3 and out["std"] > 0


def _same_graph(rebuilt: onnx.ModelProto, bundled: onnx.ModelProto) -> None:
    """The same nodes, and initializers of the same names, dtypes and shapes whose values agree
    within TABLE_ATOL + TABLE_RTOL * |value| (see above: not bytes, which depend on the CPU)."""
    assert [n.SerializeToString() for n in rebuilt.graph.node] == [n.SerializeToString() for n in bundled.graph.node]
    got = {t.name: numpy_helper.to_array(t) for t in rebuilt.graph.initializer}
    want = {t.name: numpy_helper.to_array(t) for t in bundled.graph.initializer}
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=TABLE_RTOL, atol=TABLE_ATOL, err_msg=name)


def test_export_rebuilds_the_bundled_graph(tmp_path, bundled):
    """The builder reproduces flow_sampler.onnx (numerically: see TABLE_ATOL) and its flow.json
    entry, and its check fails a graph that misses the targets (no Newton step: the table start alone)."""
    pytest.importorskip("torch")
    from aeflow.export import sampler_graph as sg
    from aeflow.export.reference import load_flow
    from aeflow.runtime.inversion import Components

    meta = json.loads((bundled / "flow.json").read_text())
    flow, _ = load_flow(bundled / "flow.pt")
    entry = sg.write_sampler_graph(flow, Components(**meta["components"]), tuple(meta["x_bracket"]), tmp_path / sg.SAMPLER_FILE,
                                   meta["opset"])
    rebuilt = onnx.load(tmp_path / sg.SAMPLER_FILE)
    _same_graph(rebuilt, onnx.load(bundled / sg.SAMPLER_FILE))
    table = next(t for t in rebuilt.graph.initializer if t.name == "table")
    moved = numpy_helper.to_array(table).copy()
    moved[100, 0] *= 1 + 1e-6  # one node moved by 16 float32 ulps: a difference the comparison must see
    table.CopyFrom(numpy_helper.from_array(moved, "table"))
    with pytest.raises(AssertionError, match="table"):
        _same_graph(rebuilt, onnx.load(bundled / sg.SAMPLER_FILE))
    recorded = meta["sampler_graph"]
    assert {k: v for k, v in entry.items() if k not in ("sha256", "float64_z_intervals", "check")} == \
        {k: v for k, v in recorded.items() if k not in ("sha256", "float64_z_intervals", "check")}
    np.testing.assert_allclose(entry["float64_z_intervals"], recorded["float64_z_intervals"], rtol=INTERVAL_RTOL)
    assert entry["check"]["max_abs_x_error_trusted"] <= entry["check"]["x_tolerance"]
    c = meta["components"]
    comp = Components(c["mu"], c["sigma"], c["weight"])
    tables = sg.inverse_tables(comp, tuple(meta["x_bracket"]))
    start_only = sg.build_sampler_graph(sg.flow_constants(flow), tables, comp.half_w, steps=0)
    with pytest.raises(ParityError, match="misses its accuracy targets"):
        sg.check_sampler_graph(start_only, comp, tuple(meta["x_bracket"]))


# a flow fitted to two clusters 50 sigma apart (N(0, 1) and N(50, 1), 2000 points each; FlowModel's defaults)
CLUSTERS = {"mu": [-2.58, -0.657, -22.28, 50.39, 52.36], "sigma": [1.469, 1.257, 2153.6, 1.169, 1.458],
            "weight": [1.756, 1.926, 0.124, 1.646, 2.022]}


def test_clusters_far_apart_finish_in_float64_where_the_graph_misses(tmp_path):
    """Export refused two clusters 50 sigma apart: the gap between them (43 units of x) fell inside one table
    piece, whose cubic started that piece's steep stretch up to 8 units off, beyond 3 Newton steps (0.82 left).
    Such pieces now join the float64 intervals: the runtime's result stays within x_tolerance of a float64
    bisection (test_sampler's Reference64), and the graph still serves all but a sliver of the targets."""
    torch = pytest.importorskip("torch")
    from aeflow.export import sampler_graph as sg
    from aeflow.runtime.inversion import Components, in_intervals, polish64
    from aeflow.runtime.providers import create_session
    from aeflow.train.models import Flow1d
    from test_sampler import Reference64

    flow = Flow1d(5)
    with torch.no_grad():
        flow.mus.copy_(torch.tensor(CLUSTERS["mu"]))
        flow.log_sigmas.copy_(torch.tensor(CLUSTERS["sigma"]).log())
        flow.weight_logits.copy_(torch.tensor(CLUSTERS["weight"]).log())
    comp = Components(**flow.components())
    bracket = (float(np.min(comp.mu - 12 * comp.sigma)), float(np.max(comp.mu + 12 * comp.sigma)))
    entry = sg.write_sampler_graph(flow, comp, bracket, tmp_path / sg.SAMPLER_FILE, unit=(24.965, 24.999))
    assert entry["newton_steps"] == sg.MAX_NEWTON_STEPS and entry["check"]["max_abs_x_error_trusted"] <= 2.5e-4
    rng = np.random.default_rng(7)
    draws = rng.standard_normal(5_000)
    draws = draws[np.abs(draws) < comp.half_w]  # the sampler's draws, then the whole range and the gap
    z = np.concatenate([draws, rng.uniform(-comp.half_w, comp.half_w, 5_000), np.linspace(0.0, 0.02, 5_001)])
    x = create_session(tmp_path / sg.SAMPLER_FILE, "cpu").run(None, {"z": z.astype(np.float32)})[0].astype(np.float64)
    unsure = ~np.isfinite(x) | in_intervals(z, entry["float64_z_intervals"])  # as FlowSampler._invert_chunk
    x[unsure] = polish64(comp, z[unsure], x[unsure], *bracket)
    exact = Reference64({"components": flow.components(), "x_bracket": bracket}).invert(z)
    step = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)  # the float32 output's rounding
    assert np.max(np.abs(x.astype(np.float32) - exact) - step) <= entry["check"]["x_tolerance"]
    assert unsure[:draws.size].mean() < 0.01


def test_a_graph_that_misses_everywhere_is_refused_not_finished_in_float64(tmp_path, bundled, monkeypatch):
    """Only a few table pieces (``FLOAT64_PIECES``) may go to float64: a graph whose means are 1e-3 off (its
    Newton steps solve another flow) misses in every piece, and export refuses it, saving nothing."""
    pytest.importorskip("torch")
    from aeflow.export import sampler_graph as sg
    from aeflow.export.reference import load_flow
    from aeflow.runtime.inversion import Components

    meta = json.loads((bundled / "flow.json").read_text())
    flow, _ = load_flow(bundled / "flow.pt")
    constants = sg.flow_constants
    monkeypatch.setattr(sg, "MAX_NEWTON_STEPS", 1)
    monkeypatch.setattr(sg, "flow_constants", lambda f: (constants(f)[0] + np.float32(1e-3), *constants(f)[1:]))
    with pytest.raises(ParityError, match="misses its accuracy targets"):
        sg.write_sampler_graph(flow, Components(**meta["components"]), tuple(meta["x_bracket"]),
                               tmp_path / sg.SAMPLER_FILE, meta["opset"])
    assert not any(tmp_path.iterdir())


def test_in_intervals_takes_any_list_of_intervals():
    """flow.json's float64 intervals in any order, overlapping or touching, looked up in O(log K) per target,
    against a direct test of every interval."""
    from aeflow.runtime.inversion import in_intervals, merged_intervals

    rng = np.random.default_rng(3)
    for _ in range(200):
        a = rng.uniform(-1, 1, rng.integers(0, 8))
        iv = np.stack([a, a + rng.uniform(0, 0.4, a.size) * (rng.random(a.size) < 0.8)], axis=1)
        z = np.concatenate([rng.uniform(-1.5, 1.5, 300), iv.ravel(), [np.nan]])
        want = ((z[:, None] >= iv[:, 0]) & (z[:, None] <= iv[:, 1])).any(axis=1)
        np.testing.assert_array_equal(in_intervals(z, iv.tolist()), want)
    assert merged_intervals([[3, 4], [0, 1], [0.5, 2], [4, 5]]).tolist() == [[0, 2], [3, 5]]
