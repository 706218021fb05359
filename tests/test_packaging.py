"""aeflow installed as a wheel (not editable) finds its bundled artifacts and scores the demo set."""

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip().splitlines()[-1:]}")
    wheel = next(out.glob("aeflow-*.whl"))
    site = out / "site"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(site)
    assert "aeflow/artifacts/ae.onnx" in names and "aeflow/artifacts/demo.npz" in names
    assert "aeflow/runtime/scorer.py" in names and "aeflow/train/models.py" in names
    assert not any(n.startswith(("tests/", "runtime/", "train/")) for n in names)
    return site


def test_wheel_scores_with_its_own_bundled_artifacts(wheel_dir):
    env = dict(os.environ, PYTHONPATH=str(wheel_dir))
    code = ("import aeflow, aeflow.runtime.artifacts as a; print(aeflow.__file__); print(a.bundled_dir()); "
            "from aeflow.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "score", "--device", "cpu", "--json"], capture_output=True,
                          text=True, env=env, timeout=120, cwd=wheel_dir)
    assert proc.returncode == 0, proc.stderr
    module_file, artifacts, *_ = proc.stdout.splitlines()
    assert module_file.startswith(str(wheel_dir)) and artifacts.startswith(str(wheel_dir))
    assert '"provider"' in proc.stdout
