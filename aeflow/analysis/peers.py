"""The engines a user would pick instead of aeflow's onnxruntime graphs, for ``aeflow bench``.

- OpenVINO (``pip install 'aeflow[bench]'``) on the same ae.onnx, float32 forced (on CPUs with
  AMX or AVX-512 BF16 it would otherwise run bfloat16 and score differently), same threads.
- ``torch.compile`` (inductor) on the same checkpoint. Compiling takes a minute or more per batch
  shape on a small CPU and cannot be interrupted, so a child process (``python -m
  aeflow.analysis.peers compile ...``) compiles and times it under a time limit, interleaved with
  PyTorch eager and onnxruntime float32 on the same inputs; its ratios are the ones reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from aeflow.analysis.timing import input_buffers, measure

OPENVINO, TORCH_COMPILE, TORCH, FP32 = "openvino-fp32", "torch-compile", "torch-eager", "ort-fp32"
COMPILE_TIMEOUT_S = 420.0


def openvino_engine(onnx_path: Path, threads: int, notes: list[str]) -> Callable[[np.ndarray], np.ndarray] | None:
    """OpenVINO's CPU plugin on ``onnx_path`` (float32 [N, 1, H, W] -> score float32 [N]), or None
    with a note when ``openvino`` is not installed or cannot compile the graph."""
    try:
        import openvino as ov
    except ImportError:
        notes.append("openvino is not installed (pip install 'aeflow[bench]'): no OpenVINO row")
        return None
    try:
        compiled = ov.Core().compile_model(str(onnx_path), "CPU", {
            "INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    except Exception as e:  # OpenVINO raises its own RuntimeError subclasses
        notes.append(f"OpenVINO could not compile {onnx_path.name} ({str(e).strip().splitlines()[0][:120]}): no row")
        return None
    request, score = compiled.create_infer_request(), compiled.output("score")
    notes.append(f"{OPENVINO}: OpenVINO {ov.get_version().split('-')[0]} CPU plugin, f32 hint, {threads} threads")
    return lambda x: request.infer({"images": x})[score]


def _child(directory: Path, threads: int, repeats: int, seconds: float, batches: list[int]) -> None:
    """Print the torch-compile rows as JSON (see the module docstring)."""
    import torch

    from aeflow.export import reference
    from aeflow.runtime.artifacts import demo_images
    from aeflow.runtime.providers import create_session

    reference.set_threads(threads)
    model = reference.ScoringAutoencoder(reference.load_autoencoder(directory / "ae.pt")[0]).eval()
    compiled = torch.compile(model, backend="inductor", dynamic=False)
    session = create_session(directory / "ae.onnx", "cpu", threads, spinning=False)

    def run_compiled(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return compiled(torch.from_numpy(x))[1].numpy()

    engines = {TORCH: reference.autoencoder_scorer(directory / "ae.pt"), TORCH_COMPILE: run_compiled,
               FP32: lambda x: session.run(["score"], {"images": x})[0]}
    rows = []
    for batch in batches:
        buffers = input_buffers(demo_images(directory), batch)
        diff = float(np.max(np.abs(run_compiled(buffers[0]) - engines[FP32](buffers[0]))))  # compiles
        t = measure(engines, buffers, repeats, seconds)
        ips = {name: t[name]["images_per_s"]["median"] for name in t}
        rows.append({"engine": TORCH_COMPILE, "batch": batch, **t[TORCH_COMPILE], "max_abs_diff_vs_ort_fp32": diff,
                     "vs_torch": ips[TORCH_COMPILE] / ips[TORCH], "vs_fp32": ips[TORCH_COMPILE] / ips[FP32]})
    print(json.dumps({"rows": rows, "torch": torch.__version__}))


def torch_compile_rows(directory: Path, threads: int, batches, repeats: int, seconds: float, notes: list[str],
                       timeout: float = COMPILE_TIMEOUT_S) -> list[dict]:
    """torch-compile scoring rows measured by a child process, or [] with a note when PyTorch or
    ae.pt is missing, compiling fails or the child runs past ``timeout`` seconds."""
    import importlib.util

    if importlib.util.find_spec("torch") is None or not (directory / "ae.pt").is_file():
        notes.append("PyTorch or ae.pt missing: no torch-compile row")
        return []
    cmd = [sys.executable, "-m", "aeflow.analysis.peers", str(directory), str(threads), str(repeats), str(seconds),
           *map(str, batches)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        notes.append(f"torch.compile (inductor) did not finish compiling and timing within {timeout:.0f} s: no row")
        return []
    if proc.returncode != 0:
        notes.append(f"torch.compile (inductor) failed here ({(proc.stderr.strip().splitlines() or ['?'])[-1][:160]})")
        return []
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    notes.append(f"{TORCH_COMPILE}: torch {result['torch']} inductor, timed in a child process beside its own "
                 f"{TORCH} and {FP32}: its 'vs' columns are those ratios")
    return result["rows"]


if __name__ == "__main__":
    _child(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), [int(b) for b in sys.argv[5:]])
