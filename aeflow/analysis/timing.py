"""What the ``aeflow bench`` sections share (CPU and CUDA): timing loops, spreads, the CPU's ISA, the GEMM limit."""

import math
import time
from typing import Callable

import numpy as np

from aeflow.runtime.device import FLOAT, UINT8, tiny_model
from aeflow.runtime.providers import create_session

PHASE_GAP_S = 0.02  # lets spinning threads (onnxruntime's, OpenMP's) go idle before the next engine


def flops_per_image(image_shape=(28, 28)) -> int:
    """FLOPs of the autoencoder's six layers (two a multiply-add; the elementwise tail left out) for (H, W) images."""
    pixels = int(np.prod(image_shape))
    return 2 * (pixels * 256 + 256 * 128 + 128 * 32 + 32 * 128 + 128 * 256 + 256 * pixels)


def spread(values) -> dict:
    """``{"median", "min", "max"}`` of ``values`` (a sequence of floats)."""
    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, gap: float = 0.0) -> dict[str, list[float]]:
    """Seconds of each call of ``fns``, in turn for ``repeats`` rounds after an untimed one; ``gap`` s sleep first."""
    times = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            if gap:
                time.sleep(gap)
            t0 = time.perf_counter()
            fn()
            times[name] += [time.perf_counter() - t0] * (r > 0)
    return times


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    return interleaved({"": fn}, repeats)[""]


def measure(engines: dict[str, Callable[[np.ndarray], object]], buffers: list[np.ndarray], repeats: int,
            seconds: float) -> dict[str, dict]:
    """Every engine on the rotating ``buffers`` (float32 [batch, 1, H, W] each), warmed up, in ``repeats`` interleaved
    rounds of about ``seconds``: per engine ``{"images_per_s": spread, "p50_ms", "p99_ms", "calls"}``."""
    # a warm-up call, then a warm call of the slowest engine sets how many calls a round makes
    slowest = max(time_calls(lambda: fn(buffers[-1]), 1)[0] for fn in engines.values())
    calls, batch = max(1, min(2000, math.ceil(seconds / max(slowest, 1e-6)))), len(buffers[0])
    rates, latencies = {name: [] for name in engines}, {name: [] for name in engines}
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
    """The widest vector ISA in ``cpuinfo``'s flags ("AVX-512 VNNI" ... "SSE", "+ AMX"), or "unknown"."""
    try:
        with open(cpuinfo) as f:
            flags = set(next((line for line in f if line.startswith("flags")), ":").split(":", 1)[1].split())
    except OSError:
        return "unknown"
    isa = next((name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx512bw", "AVX-512"),
                                        ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2")) if flag in flags), "SSE")
    return isa + (" + AMX" if "amx_int8" in flags else "")


def matmul_model(n: int, op: str = "MatMul", types: tuple[int, int, int] = (FLOAT, FLOAT, FLOAT)) -> bytes:
    """The ONNX model Y = ``op``(A, B) of n x n matrices (``types``: the ONNX element types of A, B, Y)."""
    return tiny_model([(op, ["A", "B"], ["Y"], {})], [("A", types[0], [n, n]), ("B", types[1], [n, n])],
                      [("Y", types[2], [n, n])])


def gemm_limits(n: int, threads: int, repeats: int) -> list[dict]:
    """Rows ``{"name", "precision", "size", "gflops"}`` of one n^3 matrix product: numpy float32, onnxruntime MatMul
    and MatMulInteger u8 x s8 (the int8 graph's kernels, B with 7-bit values as its weights)."""
    rng = np.random.default_rng(1)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a8, b8 = rng.integers(0, 256, (n, n), dtype=np.uint8), rng.integers(-63, 64, (n, n), dtype=np.int8)
    fp32 = create_session(matmul_model(n), "cpu", threads, spinning=False)
    int8 = create_session(matmul_model(n, "MatMulInteger", (UINT8, 3, 6)), "cpu", threads, spinning=False)  # s8, s32
    runs = [("numpy-sgemm", "fp32", lambda: a @ b),
            ("ort-matmul-fp32", "fp32", lambda: fp32.run(None, {"A": a, "B": b})),
            ("ort-matmulinteger-int8", "int8", lambda: int8.run(None, {"A": a8, "B": b8}))]
    return [{"name": name, "precision": precision, "size": n,
             "gflops": spread([2.0 * n ** 3 / t / 1e9 for t in time_calls(fn, repeats)])} for name, precision, fn in runs]
