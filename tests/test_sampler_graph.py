"""The "graph" sampling method: flow_sampler.onnx against a float64 reference and the table method,
its sha256 and flow.json entry, lazy loading, the CLI without torch, and the export-time check."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from aeflow.errors import ArtifactError, ParityError, UsageError
from aeflow.files import sha256_file
from aeflow.runtime.sampler import FlowSampler

from conftest import edit_metadata, run_cli
from test_sampler import ref, sampler  # noqa: F401  (shared fixtures: the bundled sampler, its float64 reference)


@pytest.fixture(scope="module")
def targets(sampler) -> np.ndarray:
    """4000 truncated-normal draws, both tails' edges, the slope valley near z = 0.49."""
    a = sampler.z_range[1]
    edges = [a - 1e-15, a - 1e-9, a - 1e-6, a - 1e-3, 3.3, 0.48, 0.485, 0.49, 0.0, -3.3, -a + 1e-6, -a + 1e-12]
    return np.concatenate([sampler.draw_z(np.random.default_rng(11), 4000), edges])


@pytest.fixture(scope="module")
def x_ref(ref, targets) -> np.ndarray:
    return ref.invert(targets)


def _copy_flow(src, dst, names=("flow.json", "flow.onnx", "flow_sampler.onnx", "golden.npz")):
    for name in names:
        shutil.copy2(src / name, dst / name)
    return json.loads((dst / "flow.json").read_text())


def test_the_default_where_the_artifacts_hold_it(sampler):
    assert sampler.methods[:2] == ("graph", "table")
    assert sampler.method == "graph"
    assert sampler.resolve() == ("graph", sampler.default_iterations("graph"))
    # iterations without a method: graph's steps are built in, so table runs
    assert sampler.resolve(None, 5) == ("table", 5)


def test_graph_within_1e5_of_float64(sampler, targets, x_ref):
    x = sampler.invert(targets, method="graph")
    assert x.dtype == np.float32 and x.shape == targets.shape
    err = np.abs(x.astype(np.float64) - x_ref)
    assert err.max() <= 1e-5, (err.max(), targets[err.argmax()])


def test_graph_agrees_with_table(sampler):
    a = sampler.sample(20000, seed=5, method="graph").astype(np.float64)
    b = sampler.sample(20000, seed=5, method="table").astype(np.float64)
    assert np.abs(a - b).max() <= 2e-5  # each within 1e-5 of the float64 inverse


def test_pure_graph_accuracy(sampler, targets, x_ref, ref):
    """flow_sampler.onnx alone (no polish): within 1e-5 where f' >= the trusted slope, and
    |f64(x) - z| within the recorded residual tolerance for every target."""
    session, entry = sampler._sampler_graph
    x = session.run(None, {"z": targets.astype(np.float32)})[0].astype(np.float64)
    assert np.all(np.isfinite(x))
    trusted = ref.fprime(x_ref) >= entry.trusted_slope
    assert trusted.mean() > 0.95
    assert np.abs(x - x_ref)[trusted].max() <= entry.check["x_tolerance"]
    upper = targets >= 0
    residual = np.where(upper, np.abs(ref.upper_tail(x) - (ref.half_w - targets)),
                        np.abs(ref.lower_tail(x) - (ref.half_w + targets)))
    assert residual.max() <= entry.check["residual_tolerance"]
    # targets outside the float64 intervals are exactly those the runtime trusts to the graph
    inside = np.zeros(targets.shape, bool)
    for a, b in entry.float64_z_intervals:
        inside |= (targets >= a) & (targets <= b)
    assert np.all(ref.fprime(x_ref)[~inside] >= entry.trusted_slope)


def test_chunking_does_not_change_graph_results(bundled):
    a = FlowSampler(bundled, device="cpu", chunk_size=777).sample(3000, seed=2, method="graph")
    b = FlowSampler(bundled, device="cpu").sample(3000, seed=2, method="graph")
    assert np.array_equal(a, b)


def test_iterations_rejected_for_graph(sampler):
    assert sampler.default_iterations("graph") == sampler._sampler_graph[1].newton_steps >= 1
    with pytest.raises(UsageError, match="Newton steps built into flow_sampler.onnx"):
        sampler.invert([0.1], method="graph", iterations=3)


def test_sha256_checked_lazily(tmp_path, bundled):
    meta = _copy_flow(bundled, tmp_path)
    assert meta["sampler_graph"]["sha256"] == sha256_file(bundled / "flow_sampler.onnx")
    edit_metadata(tmp_path / "flow.json", lambda m: m["sampler_graph"].update(sha256="0" * 64))
    s = FlowSampler(tmp_path, device="cpu")
    assert s.sample(10, seed=0, method="table").shape == (10,)  # table never opens the sampler graph
    with pytest.raises(ArtifactError, match="sha256"):
        s.sample(10, seed=0)  # graph, the default
    assert FlowSampler(tmp_path, device="cpu", verify=False).sample(10, seed=0, method="graph").shape == (10,)


def test_missing_entry_or_file(tmp_path, bundled):
    _copy_flow(bundled, tmp_path, ("flow.json", "flow.onnx", "golden.npz"))
    s = FlowSampler(tmp_path, device="cpu")
    with pytest.raises(ArtifactError, match="flow_sampler.onnx: not found"):
        s.invert([0.0], method="graph")
    assert s.invert([0.0], method="table").shape == (1,)
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
    assert out["method"] == "graph" and out["n"] == 1000 and out["provider"] == "CPUExecutionProvider"
    assert -3 < out["mean"] < 3 and out["std"] > 0


def test_export_rebuilds_the_bundled_graph(tmp_path, bundled):
    """The builder reproduces flow_sampler.onnx byte for byte, and its check fails a graph that
    misses the targets (no Newton step: the table start alone)."""
    pytest.importorskip("torch")
    from aeflow.export import sampler_graph as sg
    from aeflow.export.reference import load_flow
    from aeflow.runtime.inversion import Components

    meta = json.loads((bundled / "flow.json").read_text())
    flow, _ = load_flow(bundled / "flow.pt")
    entry = sg.write_sampler_graph(flow, meta["components"], tuple(meta["x_bracket"]), tmp_path / sg.SAMPLER_FILE,
                                   meta["opset"])
    assert sha256_file(tmp_path / sg.SAMPLER_FILE) == meta["sampler_graph"]["sha256"]
    assert entry["float64_z_intervals"] == meta["sampler_graph"]["float64_z_intervals"]
    c = meta["components"]
    comp = Components(c["mu"], c["sigma"], c["weight"])
    tables = sg.inverse_tables(comp, tuple(meta["x_bracket"]))
    start_only = sg.build_sampler_graph(sg.FlowConstants.from_flow(flow), tables, comp.half_w, steps=0)
    with pytest.raises(ParityError, match="misses its accuracy targets"):
        sg.check_sampler_graph(start_only, comp, tuple(meta["x_bracket"]))
