"""The artifacts shipped in the repository: hashes, metadata, and PyTorch-vs-ONNX parity."""

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli, run_cli

from aeflow.files import sha256_file


def test_hashes_match_metadata(bundled):
    for meta_name in ("threshold.json", "flow.json"):
        meta = json.loads((bundled / meta_name).read_text())
        assert meta["sha256"] == sha256_file(bundled / meta["onnx_file"]), meta_name


def test_no_side_files_and_demo_set(bundled):
    assert not list(bundled.glob("*.onnx.data"))
    with np.load(bundled / "demo.npz") as demo:
        assert demo["images"].dtype == np.uint8 and demo["images"].shape == (2000, 28, 28)
        assert demo["is_anomaly"].sum() == 1000


def test_threshold_metadata_is_consistent(bundled):
    meta = json.loads((bundled / "threshold.json").read_text())
    v = meta["validation"]
    assert meta["threshold"] == pytest.approx(v["mean"] + meta["k"] * v["std"])
    assert meta["data"]["train_images"] + meta["data"]["validation_images"] == 5000
    assert 0 <= meta["evaluation"]["type_i"]["rate"] < 0.05


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_golden_and_checkpoint_parity(bundled, device):
    from aeflow.analysis.verify import verify_artifacts
    from aeflow.errors import DeviceError

    try:
        result = verify_artifacts(bundled, device)
    except DeviceError as e:
        pytest.skip(e.message)
    assert result.provider == {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[device]
    assert {r.name for r in result.golden} == {
        "ae.onnx: reconstruction", "ae.onnx: score", "ae.int8.onnx: int8 reconstruction", "ae.int8.onnx: int8 score",
        "flow.onnx: z", "flow.onnx: dz_dx", "flow.onnx: log_prob", "flow.onnx: components z", "flow_sampler.onnx: sample"}
    if result.checkpoints is not None:  # torch installed
        assert {r.name for r in result.checkpoints} == {"reconstruction", "score", "decisions", "z", "dz_dx", "log_prob"}
    failed = [(r.name, r.max_abs) for r in result.golden + (result.checkpoints or []) if not r.passed]
    assert not failed
    result.raise_for_failure()


def test_verify_cli_passes_and_prints_table(capfd):
    """In this process (torch is imported once); a new process verifies in test_info_and_verify_without_torch."""
    pytest.importorskip("torch")
    proc = invoke_cli("verify", "--device", "cpu", capfd=capfd)
    assert proc.returncode == 0, proc.stderr
    assert "CPUExecutionProvider" in proc.stdout and "FAIL" not in proc.stdout
    dz_dx = [line for line in proc.stdout.splitlines() if "dz_dx" in line]
    assert len(dz_dx) == 2 and all("1e-05 rel x (1+|ln|)" in line for line in dz_dx)  # the golden row's too


def test_verify_refuses_tampered_graph(bundled, tmp_path):
    import shutil

    for p in bundled.iterdir():
        if p.is_file():
            shutil.copy(p, tmp_path / p.name)
    data = bytearray((tmp_path / "flow.onnx").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "flow.onnx").write_bytes(bytes(data))
    line = assert_one_line_error(run_cli("verify", "--artifacts", str(tmp_path)), 1)
    assert "sha256" in line and "--no-verify" in line


def test_info_and_verify_without_torch(no_torch_env):
    proc = run_cli("info", "--json", env=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert {g["graph"] for g in info["graphs"]} == {"ae.onnx", "ae.int8.onnx", "flow.onnx", "flow_sampler.onnx"}
    assert all(g["sha256_ok"] and g["check"] == "ok" for g in info["graphs"]) and not info["problems"]
    assert all(g["provider"] == "CPUExecutionProvider" for g in info["graphs"])
    proc = run_cli("verify", "--device", "cpu", env=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    assert "golden outputs" in proc.stdout and "PyTorch is not installed" in proc.stdout
    assert "all 9 outputs within tolerance" in proc.stdout
    proc = run_cli("verify", "--device", "cpu", "--json", env=no_torch_env)  # each row: its fields and tolerance
    rows = json.loads(proc.stdout)["golden"]
    assert len(rows) == 9 and all(r["passed"] for r in rows) and rows[0]["tolerance"] == "5e-05 abs"
    assert set(rows[0]) == {"name", "n", "max_abs", "max_rel", "atol", "rtol", "passed", "log_relative", "tolerance"}


def test_cuda_is_strict_where_it_cannot_run():
    from aeflow.runtime.providers import cuda_missing

    if not cuda_missing():
        pytest.skip("CUDA really runs here")
    pytest.importorskip("torch")
    line = assert_one_line_error(run_cli("verify", "--device", "cuda"), 1)
    assert "CUDA provider cannot run here" in line and "missing" in line


def test_bundled_graphs_hold_no_exporter_paths(bundled):
    """The exporter's stack traces (absolute paths of the exporting checkout) are stripped, so the
    same weights give the same graphs and sha256s wherever they are exported."""
    for path in sorted(bundled.glob("*.onnx")):
        assert b"stack_trace" not in path.read_bytes(), path.name
