"""``aeflow sample``: outputs, summary, errors (one line, exit code, no partial file), no torch."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from aeflow.cli import cli
from aeflow.runtime.sampler import FlowSampler
from conftest import assert_one_line_error, run_cli


def invoke(*args: str):
    return CliRunner().invoke(cli, ["sample", *args])


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    return FlowSampler(device="cpu").sample(3000, seed=4)


def test_npy_output_and_summary(tmp_path, expected):
    out = tmp_path / "s.npy"
    r = invoke("-n", "3000", "--seed", "4", "--device", "cpu", "-o", str(out))
    assert r.exit_code == 0, r.output
    x = np.load(out)
    assert x.dtype == np.float32 and np.array_equal(x, expected)
    text = r.stdout
    for part in ("sampled 3,000 x from flow_sampler.onnx in ", "method graph", "provider CPU", f"mean {expected.mean(dtype=np.float64):.6f}",
                 f"std {expected.std(dtype=np.float64):.6f}", f"written to {out}", " s "):
        assert part in text, (part, text)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_csv_and_json(tmp_path, expected):
    out = tmp_path / "s.csv"
    r = invoke("-n", "3000", "--seed", "4", "--device", "cpu", "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[0] == "x" and len(lines) == 3001
    assert np.array_equal(np.array(lines[1:], dtype=np.float32), expected)
    summary = json.loads(r.stdout)
    assert summary["n"] == 3000 and summary["method"] == "graph" and summary["provider"] == "CPUExecutionProvider"
    assert summary["mean"] == pytest.approx(float(expected.mean(dtype=np.float64)), abs=1e-9)
    assert summary["output"] == str(out) and summary["seconds"] > 0


def test_bisection_names_flow_onnx(tmp_path, expected):
    out = tmp_path / "b.npy"
    r = invoke("-n", "3000", "--seed", "4", "--method", "bisection", "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["method"] == "bisection" and summary["graph"] == "flow.onnx" and "iterations" not in summary
    assert np.max(np.abs(np.load(out) - expected)) <= 2e-5  # each within 1e-5 of the float64 inverse
    r = invoke("-n", "10", "--method", "bisection")
    assert r.exit_code == 0 and r.stdout.startswith("sampled 10 x from flow.onnx in "), r.output


def test_method_choices():
    r = invoke("--help")
    assert "[graph|bisection]" in r.stdout and "iterations" not in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (["-n", "0"], "-n must be a positive"),
    (["-n", "-5"], "-n must be a positive"),
    (["-n", "10", "--iterations", "40"], "No such option '--iterations'"),
    (["-n", "10", "--method", "table"], "Invalid value for '--method'"),
    (["-n", "10", "--method", "newton"], "Invalid value for '--method'"),
    (["-n", "10", "-o", "x.txt"], "use a .npy or .csv"),
    (["-n", "10", "--histogram", "h.jpg2"], "use a .png, .pdf or .svg"),
    (["-n", str(10**13)], "ask for fewer"),
])
def test_usage_errors(tmp_path, args, fragment):
    line = one_line_error(invoke(*args), 2)
    assert fragment in line


def test_output_folder_checked_before_work(tmp_path):
    missing = tmp_path / "nope" / "s.npy"
    line = one_line_error(invoke("-n", "10", "-o", str(missing)), 1)
    assert "does not exist" in line and not missing.parent.exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = one_line_error(invoke("-n", "10", "-o", str(ro / "s.npy")), 1)
        assert "not writable" in line and not list(ro.iterdir())
    finally:
        ro.chmod(0o755)


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "s.npy"
    out.write_bytes(b"keep")
    line = one_line_error(invoke("-n", "10", "-o", str(out)), 1)
    assert "--force" in line and out.read_bytes() == b"keep"
    assert invoke("-n", "10", "--seed", "0", "-o", str(out), "--force").exit_code == 0
    assert np.load(out).shape == (10,)


def test_failure_leaves_no_partial_file(tmp_path):
    out = tmp_path / "s.npy"
    line = one_line_error(invoke("-n", "10", "-o", str(out), "--artifacts", str(tmp_path / "none")), 1)
    assert "does not exist" in line
    assert list(tmp_path.iterdir()) == []


def test_histogram(tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "h.png"
    r = invoke("-n", "2000", "--seed", "0", "--histogram", str(plot), "--quiet")
    assert r.exit_code == 0, r.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"histogram written to {plot}" in r.stdout


def test_histogram_without_matplotlib(tmp_path, no_torch_env):
    shim = tmp_path / "shim"
    (shim / "matplotlib").mkdir(parents=True)
    (shim / "matplotlib" / "__init__.py").write_text('raise ImportError("matplotlib blocked")\n')
    env = dict(no_torch_env)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), env["PYTHONPATH"]])
    out = tmp_path / "s.npy"
    proc = run_cli("sample", "-n", "100", "-o", str(out), "--histogram", str(tmp_path / "h.png"), env=env)
    line = assert_one_line_error(proc, 2)
    assert "pip install matplotlib" in line and not out.exists()


def test_sample_runs_without_torch(tmp_path, no_torch_env):
    out = tmp_path / "s.npy"
    proc = run_cli("sample", "-n", "1000", "--seed", "0", "--device", "cpu", "-o", str(out), env=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    assert "sampled 1,000 x" in proc.stdout and np.load(out).shape == (1000,)


def test_help_has_example():
    r = invoke("--help")
    assert r.exit_code == 0 and "Example:" in r.stdout and "aeflow sample -n" in r.stdout
