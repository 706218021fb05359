"""Shared fixtures: a tiny synthetic IDX data folder, the bundled artifacts, a torch-blocking path."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
try:
    from hypothesis import settings
except ImportError:  # `make gpu-check` runs the CUDA tests where only pytest is installed
    settings = None

# the suite must give the same verdict on every run: fuzz with fixed seeds by default, and
# explore new ones with HYPOTHESIS_PROFILE=explore (or pytest --hypothesis-seed=N)
if settings is not None:
    settings.register_profile("ci", derandomize=True, deadline=None)
    settings.register_profile("explore", derandomize=False, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array (1 to 4 dimensions) as an IDX file; gzip when ``compress`` or the name ends in .gz."""
    array = np.ascontiguousarray(array)
    assert array.dtype == np.uint8 and 1 <= array.ndim <= 4
    payload = struct.pack(f">HBB{array.ndim}I", 0, 8, array.ndim, *array.shape) + array.tobytes()
    compress = Path(path).suffix == ".gz" if compress is None else compress
    Path(path).write_bytes(gzip.compress(payload, mtime=0) if compress else payload)


def synthetic_digits(n: int, seed: int) -> np.ndarray:
    """Blurry strokes on black, uint8 [n, 28, 28]: enough structure for an autoencoder to learn."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        r0, c0 = rng.integers(4, 12, size=2)
        images[i, r0:r0 + rng.integers(8, 14), c0:c0 + 3] = 255
        images[i, r0:r0 + 3, c0:c0 + rng.integers(6, 12)] = 200
    return images


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """An IDX data folder shaped like ../shared/data, with small synthetic sets (gz and raw)."""
    d = tmp_path_factory.mktemp("data")
    (d / "mnist").mkdir()
    (d / "fashion-mnist").mkdir()
    write_idx(d / "mnist" / "train-images-idx3-ubyte.gz", synthetic_digits(120, 0))
    write_idx(d / "mnist" / "t10k-images-idx3-ubyte", synthetic_digits(40, 1))
    noise = np.random.default_rng(2).integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    write_idx(d / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", noise)
    return d


@pytest.fixture(scope="session")
def bundled() -> Path:
    """The artifacts folder shipped in the repository."""
    from aeflow.runtime.artifacts import bundled_dir

    return bundled_dir()


@pytest.fixture(scope="session")
def no_torch_env(tmp_path_factory) -> dict:
    """Environment for a subprocess in which ``import torch`` fails."""
    shim = tmp_path_factory.mktemp("notorch")
    (shim / "torch").mkdir()
    (shim / "torch" / "__init__.py").write_text('raise ImportError("torch is blocked in this test")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", "")])
    return env


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m aeflow ARGS`` in a subprocess and capture its output."""
    return subprocess.run([sys.executable, "-m", "aeflow", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def invoke_cli(*args: str, capfd=None) -> subprocess.CompletedProcess:
    """Run ``aeflow ARGS`` in this process (click's CliRunner, through the same ``cli.main`` as
    the console script) and report it as ``run_cli`` does, without a new interpreter's start-up.
    As in a new process, Python warnings print on stderr under the interpreter's default filters;
    with pytest's ``capfd``, what native code writes straight to file descriptors 1 and 2 is added
    to stdout and stderr; an exception that escapes the command shows as its traceback, exit 1."""
    import traceback
    import warnings

    from click.testing import CliRunner

    from aeflow.cli import cli

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    if capfd is not None:
        capfd.readouterr()
    with warnings.catch_warnings():
        warnings.resetwarnings()  # the interpreter's defaults (pytest records and hides warnings)
        for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        warnings.showwarning = show
        r = CliRunner().invoke(cli, list(args), prog_name="aeflow")
    out, err = r.stdout, r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += "".join(traceback.format_exception(*r.exc_info))
    if capfd is not None:
        native = capfd.readouterr()
        out, err = out + native.out, err + native.err
    return subprocess.CompletedProcess(["aeflow", *args], r.exit_code, out, err)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int) -> str:
    """The process failed with ``code`` and printed exactly one line on stderr, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def edit_metadata(path: Path, edit=None, seal: bool = True, **changes) -> dict:
    """Change threshold.json or flow.json at ``path``: top-level ``changes`` and/or ``edit(meta)``
    in place. ``seal`` recomputes content_sha256, so the edit reaches the field checks (as a
    buggy export would); ``seal=False`` leaves the hash stale (as a hand edit does). Returns the
    written document."""
    import json

    from aeflow.runtime.contract import seal as seal_doc

    meta = json.loads(path.read_text())
    meta.update(changes)
    if edit is not None:
        edit(meta)
    if seal:
        meta = {k: v for k, v in meta.items() if k != "content_sha256"}
        try:
            meta = seal_doc(meta)
        except ValueError:  # NaN cannot be sealed: it is refused as JSON anyway
            pass
    path.write_text(json.dumps(meta))
    return meta


def copy_artifacts(src: Path, dest: Path) -> Path:
    """A copy of the artifact files (graphs, JSON, golden.npz, checkpoints) of ``src`` in ``dest``."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and p.suffix in (".onnx", ".json", ".npz", ".pt"):
            shutil.copy(p, dest / p.name)
    return dest


def wait_for(predicate, seconds: float) -> bool:
    """Poll ``predicate()`` every 5 ms until it is true (True) or ``seconds`` pass (False)."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False
