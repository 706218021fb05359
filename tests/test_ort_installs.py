"""`aeflow info` finds onnxruntime and onnxruntime-gpu installed side by side and says the fix."""

from __future__ import annotations

from aeflow.runtime.providers import onnxruntime_conflict, onnxruntime_installs
from conftest import run_cli


class FakeDist:
    def __init__(self, name: str, version: str):
        self.metadata = {"Name": name}
        self.version = version


def test_side_by_side_installs_are_found_with_the_fix():
    dists = [FakeDist("numpy", "2.0"), FakeDist("onnxruntime", "1.20.0"), FakeDist("onnxruntime_gpu", "1.20.1")]
    installs = onnxruntime_installs(dists)
    assert installs == [("onnxruntime", "1.20.0"), ("onnxruntime-gpu", "1.20.1")]
    msg = onnxruntime_conflict(installs)
    assert "side by side" in msg and "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in msg
    assert "\n" not in msg


def test_one_install_is_fine():
    assert onnxruntime_conflict(onnxruntime_installs([FakeDist("onnxruntime", "1.20.0")])) is None
    assert onnxruntime_conflict([]) is None


def test_info_lists_this_machines_install():
    proc = run_cli("info", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("onnxruntime installed as:"))
    assert "onnxruntime" in line.split(":", 1)[1]
