"""The layering rules: the edge library runs with the heavy packages blocked, the CLI starts
without numpy or onnxruntime, and runtime imports nothing from train, export, cli or analysis."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "torchvision", "onnx", "click", "matplotlib")

BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=120)


def test_runtime_scores_and_samples_with_heavy_packages_blocked():
    proc = _run("""
import numpy as np
import aeflow.runtime as rt
scorer = rt.AnomalyScorer(device="cpu")
images = rt.demo_images()[:64]
s = scorer.score(images)
assert s.shape == (64,) and s.dtype == np.float32
x = rt.FlowSampler(device="cpu").sample(1000, seed=0)
assert x.shape == (1000,)
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r}))
""".replace("{blocked!r}", repr(BLOCKED)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok []"


def test_runtime_public_api():
    import aeflow.runtime as rt

    assert {"AnomalyScorer", "FlowSampler", "open_source"} <= set(rt.__all__)
    for name in rt.__all__:
        assert getattr(rt, name) is not None


def test_cli_help_imports_neither_numpy_nor_onnxruntime():
    code = ("import sys; from aeflow.cli import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'onnxruntime')), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "score" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "[]"


def test_score_command_loads_neither_the_sampler_nor_analysis():
    """Cold start: `aeflow score` imports what scoring needs (aeflow.runtime's names load lazily, IOBinding on CUDA)."""
    code = ("import sys, aeflow.cli.score\n"
            "print(sorted(m for m in sys.modules if m.startswith(('aeflow.runtime.sampler', 'aeflow.runtime.inversion', "
            "'aeflow.runtime.device', 'aeflow.analysis', 'aeflow.export'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cli_devices_match_runtime():
    from aeflow.cli.options import DEVICES
    from aeflow.runtime.providers import DEVICES as RUNTIME_DEVICES

    assert DEVICES == RUNTIME_DEVICES


@pytest.mark.parametrize("path", sorted((ROOT / "runtime").glob("*.py")), ids=lambda p: p.name)
def test_runtime_imports_only_lower_layers(path):
    """runtime/ may import the standard library, numpy, onnxruntime and aeflow's core modules."""
    allowed_aeflow = ("aeflow.errors", "aeflow.files", "aeflow.targets", "aeflow.checks", "aeflow.runtime",
                      "aeflow.metrics", "aeflow.parity", "aeflow.optional",
                      "aeflow")
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            assert top not in BLOCKED, f"{path.name} imports {name}"
            if top == "aeflow":
                assert name in allowed_aeflow or name.startswith("aeflow.runtime"), f"{path.name} imports {name}"
