"""The artifacts shipped in the repository: hashes, metadata, and PyTorch-vs-ONNX parity."""

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli

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
def test_parity_with_pytorch(bundled, device):
    pytest.importorskip("torch")
    from aeflow.errors import DeviceError
    from aeflow.cli.verify import run_parity

    try:
        provider, rows = run_parity(bundled, device)
    except DeviceError as e:
        pytest.skip(e.message)
    assert provider == {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[device]
    assert {r.name for r in rows} == {"reconstruction", "score", "decisions", "z", "dz_dx", "log_prob"}
    failed = [(r.name, r.max_abs) for r in rows if not r.passed]
    assert not failed


def test_verify_cli_passes_and_prints_table():
    pytest.importorskip("torch")
    proc = run_cli("verify", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "CPUExecutionProvider" in proc.stdout and "FAIL" not in proc.stdout


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
    assert all(g["sha256_ok"] for g in info["graphs"])
    assert all(g["provider"] == "CPUExecutionProvider" for g in info["graphs"])
    line = assert_one_line_error(run_cli("verify", env=no_torch_env), 2)
    assert "aeflow[train]" in line


def test_cuda_is_strict_where_it_cannot_run():
    from aeflow.runtime.providers import cuda_missing

    if not cuda_missing():
        pytest.skip("CUDA really runs here")
    pytest.importorskip("torch")
    line = assert_one_line_error(run_cli("verify", "--device", "cuda"), 1)
    assert "CUDA provider cannot run here" in line and "missing" in line
