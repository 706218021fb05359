"""What the ``aeflow bench`` sections share (CPU and CUDA): the timing loops, the spread of
repeats, the CPU's vector ISA and the machine's own GEMM limit."""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

# multiply-adds of the six layers, two FLOPs each (the elementwise tail is left out)
FLOPS_PER_IMAGE = 2 * (784 * 256 + 256 * 128 + 128 * 32 + 32 * 128 + 128 * 256 + 256 * 784)
BUFFERS = 3  # distinct inputs in rotation, so no timing measures a cache holding one input
PHASE_GAP_S = 0.02  # lets spinning threads (onnxruntime's, OpenMP's) go idle before the next engine


def spread(values) -> dict:
    """``{"median", "min", "max"}`` of ``values`` (a sequence of floats)."""
    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def input_buffers(images: np.ndarray, batch: int, n: int = BUFFERS, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct float32 [batch, 1, H, W] buffers in [0, 1], drawn with replacement from uint8
    ``images`` [M, H, W]."""
    rng = np.random.default_rng(seed + batch)
    return [(images[rng.integers(0, len(images), batch)][:, None] / np.float32(255)).astype(np.float32)
            for _ in range(n)]


def measure(engines: dict[str, Callable[[np.ndarray], object]], buffers: list[np.ndarray], repeats: int,
            seconds: float) -> dict[str, dict]:
    """Time every engine on ``buffers`` (one batch size), warmed up, in ``repeats`` interleaved
    rounds of about ``seconds`` each: per engine ``{"images_per_s": spread, "p50_ms", "p99_ms", "calls"}``."""
    batch, slowest = len(buffers[0]), 0.0
    for fn in engines.values():
        for x in buffers:  # warm-up; the last call, warm, sets how many calls a round makes
            t0 = time.perf_counter()
            fn(x)
        slowest = max(slowest, time.perf_counter() - t0)
    calls = max(1, min(2000, math.ceil(seconds / max(slowest, 1e-6))))
    rates = {name: [] for name in engines}
    latencies = {name: [] for name in engines}
    for r in range(repeats):
        for name, fn in engines.items():
            time.sleep(PHASE_GAP_S)
            times = []
            for c in range(calls):
                x = buffers[(r * calls + c) % len(buffers)]
                t0 = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - t0)
            rates[name].append(calls * batch / sum(times))
            latencies[name] += times
    return {name: {"images_per_s": spread(rates[name]), "p50_ms": float(np.percentile(latencies[name], 50)) * 1e3,
                   "p99_ms": float(np.percentile(latencies[name], 99)) * 1e3, "calls": len(latencies[name])}
            for name in engines}


def cpu_isa(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The widest vector ISA in ``cpuinfo``'s flags (``AVX-512 VNNI``, ``AVX-512``, ``AVX-VNNI``,
    ``AVX2``, ``SSE``; ``+ AMX`` with AMX-INT8), ``unknown`` where it cannot be read."""
    try:
        with open(cpuinfo) as f:
            flags = set(next((line for line in f if line.startswith("flags")), ":").split(":", 1)[1].split())
    except OSError:
        return "unknown"
    isa = next((name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx512bw", "AVX-512"),
                                        ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2")) if flag in flags), "SSE")
    return isa + (" + AMX" if "amx_int8" in flags else "")


def _matmul_model(n: int, int8: bool) -> bytes:
    """A serialized ONNX graph A [n, n] x B [n, n], B a constant: float32 MatMul, or MatMulInteger
    (A uint8, B int8 with 7-bit values as the int8 graph's weights, int32 out)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = rng.integers(-63, 64, (n, n), dtype=np.int8) if int8 else rng.random((n, n), dtype=np.float32)
    a_type, y_type = (TensorProto.UINT8, TensorProto.INT32) if int8 else (TensorProto.FLOAT, TensorProto.FLOAT)
    graph = helper.make_graph([helper.make_node("MatMulInteger" if int8 else "MatMul", ["A", "B"], ["Y"])], "limit",
                              [helper.make_tensor_value_info("A", a_type, [n, n])],
                              [helper.make_tensor_value_info("Y", y_type, [n, n])], [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def gemm_limits(n: int, threads: int, repeats: int, notes: list[str]) -> list[dict]:
    """One n^3 matrix product: numpy float32 and (with the ``onnx`` package) onnxruntime MatMul and
    MatMulInteger u8 x s8 (the int8 graph's kernels). Rows ``{"name", "precision", "size", "gflops"}``."""
    from aeflow.runtime.providers import create_session

    rng = np.random.default_rng(1)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    runs = [("numpy-sgemm", "fp32", lambda: a @ b)]
    try:
        for name, int8, x in (("ort-matmul-fp32", False, a),
                              ("ort-matmulinteger-int8", True, rng.integers(0, 256, (n, n), dtype=np.uint8))):
            session = create_session(_matmul_model(n, int8), "cpu", threads, spinning=False)
            runs.append((name, "int8" if int8 else "fp32", lambda s=session, x=x: s.run(None, {"A": x})))
    except ImportError:
        notes.append("the onnx package is not installed: numpy's GEMM limit only")
    return [{"name": name, "precision": precision, "size": n,
             "gflops": spread([2.0 * n ** 3 / t / 1e9 for t in time_calls(fn, repeats)])} for name, precision, fn in runs]
