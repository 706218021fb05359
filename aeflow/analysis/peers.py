"""The engines a user would pick instead of aeflow's onnxruntime graphs, for ``aeflow bench``.

- OpenVINO (where the ``openvino`` package is installed: ``pip install 'aeflow[bench]'``) reading
  the same ae.onnx, float32 inference forced (``INFERENCE_PRECISION_HINT f32``: on CPUs with AMX
  or AVX-512 BF16 OpenVINO would otherwise run bfloat16 and score differently), same threads.
- ``torch.compile`` (inductor) on the same checkpoint. Compiling takes a minute or more per batch
  shape on a small CPU and cannot be interrupted, so it runs in a child process
  (``python -m aeflow.analysis.peers compile ...``) under a time limit; the child times
  torch-compile interleaved with PyTorch eager and onnxruntime float32 on the same inputs, and its
  ratios are the ones reported (its absolute figures come from another process).

Each engine's scores are compared with ae.onnx's on the first buffer of each batch; the largest
difference is reported with its row, so a peer that computes something else shows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

OPENVINO = "openvino-fp32"
TORCH_COMPILE = "torch-compile"
COMPILE_TIMEOUT_S = 420.0


def openvino_engine(onnx_path: Path, threads: int, notes: list[str]) -> Callable[[np.ndarray], np.ndarray] | None:
    """OpenVINO's CPU plugin on ``onnx_path`` (float32 [N, 1, 28, 28] -> score float32 [N]), or None
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
    request = compiled.create_infer_request()
    score = compiled.output("score")
    notes.append(f"{OPENVINO}: OpenVINO {ov.get_version().split('-')[0]} CPU plugin on ae.onnx, "
                 f"f32 precision hint, {threads} threads, latency hint")
    return lambda x: request.infer({"images": x})[score]


def _child(argv: list[str]) -> None:
    """``compile ARTIFACTS THREADS REPEATS SECONDS BATCH...``: print the child's JSON result."""
    import torch

    from aeflow.analysis.bench import FP32, TORCH, input_buffers, measure
    from aeflow.export import reference
    from aeflow.runtime.artifacts import demo_images, read_threshold
    from aeflow.runtime.golden import load_graph

    directory, threads, repeats, seconds = Path(argv[0]), int(argv[1]), int(argv[2]), float(argv[3])
    batches = [int(b) for b in argv[4:]]
    reference.set_threads(threads)
    eager = reference.autoencoder_scorer(directory / "ae.pt")
    model = reference.ScoringAutoencoder(reference.load_autoencoder(directory / "ae.pt")[0]).eval()
    compiled = torch.compile(model, backend="inductor", dynamic=False)

    def run_compiled(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return compiled(torch.from_numpy(x))[1].numpy()

    meta = read_threshold(directory)
    session = load_graph(directory, meta, "ae", "cpu", threads, spinning=False, golden=False)
    engines = {TORCH: eager, TORCH_COMPILE: run_compiled, FP32: lambda x: session.run(["score"], {"images": x})[0]}
    images = demo_images(directory)
    rows, compile_s = [], {}
    for batch in batches:
        buffers = input_buffers(images, batch)
        t0 = time.perf_counter()
        diff = float(np.max(np.abs(run_compiled(buffers[0]) - engines[FP32](buffers[0]))))
        compile_s[str(batch)] = time.perf_counter() - t0
        timings = measure(engines, buffers, repeats, seconds)
        ips = {name: float(np.median(t.per_repeat)) for name, t in timings.items()}
        rows.append({"engine": TORCH_COMPILE} | timings[TORCH_COMPILE].summary(batch) | {
            "max_abs_diff_vs_ort_fp32": diff, "vs_torch_same_process": ips[TORCH_COMPILE] / ips[TORCH],
            "vs_fp32_same_process": ips[TORCH_COMPILE] / ips[FP32]})
    print(json.dumps({"rows": rows, "compile_seconds": compile_s, "torch": torch.__version__}))


def torch_compile_rows(directory: Path, threads: int, batches: tuple[int, ...], repeats: int, seconds: float,
                       notes: list[str], timeout: float = COMPILE_TIMEOUT_S) -> list[dict]:
    """torch-compile scoring rows measured by a child process (see the module docstring), or []
    with a note when PyTorch is missing, compiling fails or the child runs past ``timeout`` s."""
    import importlib.util

    if importlib.util.find_spec("torch") is None or not (directory / "ae.pt").is_file():
        notes.append("PyTorch or ae.pt missing: no torch-compile row")
        return []
    cmd = [sys.executable, "-m", "aeflow.analysis.peers", "compile", str(directory), str(threads), str(repeats),
           str(seconds), *map(str, batches)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        notes.append(f"torch.compile (inductor) did not finish compiling and timing within {timeout:.0f} s: no row")
        return []
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1][:160]
        notes.append(f"torch.compile (inductor) failed here ({last}): no row")
        return []
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    total = sum(result["compile_seconds"].values())
    notes.append(f"{TORCH_COMPILE}: torch {result['torch']} inductor, dynamic=False, measured in a child process "
                 f"interleaved with its own torch-eager and ort-fp32 (its 'vs' columns are those ratios); "
                 f"compiling took {total:.0f} s over {len(batches)} batch sizes")
    return result["rows"]


if __name__ == "__main__":
    if sys.argv[1:2] == ["compile"]:
        _child(sys.argv[2:])
    else:
        sys.exit("usage: python -m aeflow.analysis.peers compile ARTIFACTS THREADS REPEATS SECONDS BATCH...")
