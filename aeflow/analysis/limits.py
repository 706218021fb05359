"""The machine's own limit, measured in the same ``aeflow bench`` run as the scoring rows: the
throughput of one large matrix product, float32 (numpy's BLAS and onnxruntime's MatMul) and int8
(onnxruntime's MatMulInteger, u8 x s8 -> s32, the kernels the int8 graph's QGemm layers use).

A scoring row's share of the limit is its GFLOP/s (median) over the limit of its precision (the
best repeat of the GEMM): what is left
between the autoencoder (six layers at most 784 wide, plus a float32 tail) and what this CPU's
GEMM kernels can do at all.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

LIMIT_SIZE = 2048  # square GEMM: 2 * 2048^3 = 17.2 GFLOP per call, ~0.1 s float32 on 2 cores
QUICK_LIMIT_SIZE = 512
FP32, INT8 = "fp32", "int8"


def _time_calls(fn: Callable[[], object], repeats: int, calls: int = 2) -> list[float]:
    """Seconds per call: one warm-up, then ``repeats`` rounds of ``calls`` calls (the mean of each round)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return times


def _matmul_model(n: int, int8: bool) -> bytes:
    """A serialized ONNX graph A [n, n] x B [n, n] (B a constant): float32 MatMul, or int8
    MatMulInteger (A uint8, B int8, int32 out)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        b = numpy_helper.from_array(rng.integers(-63, 64, (n, n), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        b = numpy_helper.from_array(rng.random((n, n), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "gemm_limit", [helper.make_tensor_value_info("A", a_type, [n, n])],
                              [helper.make_tensor_value_info("Y", y_type, [n, n])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _row(name: str, precision: str, n: int, times: list[float]) -> dict:
    t = np.array(times)
    flop = 2.0 * n ** 3
    return {"name": name, "precision": precision, "size": n, "gflops": flop / float(np.median(t)) / 1e9,
            "gflops_min": flop / float(t.max()) / 1e9, "gflops_max": flop / float(t.min()) / 1e9,
            "repeats": int(t.size)}


def measure_limits(threads: int, repeats: int, quick: bool, notes: list[str]) -> list[dict]:
    """GEMM throughput rows (``name``, ``precision`` fp32/int8, ``size``, ``gflops`` median
    [``gflops_min``, ``gflops_max``]) for numpy float32 and, where the ``onnx`` package can build the
    graphs, onnxruntime float32 and int8 with ``threads`` threads. Notes what was skipped."""
    from aeflow.runtime.providers import create_session

    n = QUICK_LIMIT_SIZE if quick else LIMIT_SIZE
    rng = np.random.default_rng(1)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    rows = [_row("numpy-sgemm", FP32, n, _time_calls(lambda: a @ b, repeats))]
    notes.append(f"the limit rows time one {n}x{n}x{n} matrix product (median of {repeats}); numpy's BLAS "
                 f"picks its own thread count")
    try:
        models = {FP32: _matmul_model(n, False), INT8: _matmul_model(n, True)}
    except ImportError:
        notes.append("the onnx package is not installed: no onnxruntime GEMM limit rows (numpy's only)")
        return rows
    inputs = {FP32: a, INT8: rng.integers(0, 256, (n, n), dtype=np.uint8)}
    for precision, model in models.items():
        session = create_session(model, "cpu", threads, spinning=False)
        x = inputs[precision]
        name = "ort-matmul-fp32" if precision == FP32 else "ort-matmulinteger-int8"
        rows.append(_row(name, precision, n, _time_calls(lambda: session.run(None, {"A": x}), repeats)))
    return rows


def limit_of(rows: list[dict], precision: str) -> float | None:
    """The limit for ``precision``: the best repeat among its GEMM rows (None if none ran). The
    best, not the median: the limit is what the machine can do at all, and on a shared machine a
    median taken at another moment than a scoring row could fall below that row."""
    values = [r["gflops_max"] for r in rows if r["precision"] == precision]
    return max(values) if values else None
