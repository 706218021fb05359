"""``aeflow export --quantize int8``: ae.onnx -> ae.int8.onnx, checked against the float32 graph.

The int8 graph is ``onnxruntime.quantization.quantize_static`` applied to ae.onnx itself (six
Gemm + Relu layers, then Reshape, Sigmoid, Sub, Mul, ReduceMean), in the QOperator format:

- every Gemm becomes a ``QGemm`` (com.microsoft) with int8 weights quantised per output channel
  with ``reduce_range`` (7-bit, so the u8 x s8 kernels of CPUs without VNNI cannot saturate their
  16-bit pair sums and every x86 CPU computes the same integers) and an int32 bias;
- activations are uint8 with ONE scale and zero point per tensor, fixed at export by calibration
  (min/max over the validation images the threshold comes from); each Relu disappears into the
  zero point of the layer before it;
- the input images are quantised once (QuantizeLinear), the last layer's output dequantised once;
  the sigmoid and the score (mean squared error over the 784 pixels) stay float32.

Why an image's score cannot depend on its batch (the dynamic graph this replaces computed the
activation scales from each batch's min/max, so an image's score moved with its companions):
every per-image value is a function of that image's row alone. Quantisation uses constants; a
QGemm row is an int32 sum of exact integer products (integer addition is associative, so neither
the kernel's blocking over M, N or K nor the thread split can change it), requantised
elementwise with per-column constants; the float tail is elementwise (Sigmoid, Sub, Mul) and a
reduction of one image's 784 contiguous pixels (its order fixed by the row, not by the batch;
every row starts at the same 64-byte alignment, 784 x 4 bytes being 49 x 64).
QOperator rather than QDQ because the file then names the integer kernels that run: a QDQ graph
runs them only where onnxruntime's optimiser fuses DequantizeLinear -> Gemm -> QuantizeLinear,
and unfused it would run float GEMMs whose blocking may depend on the batch. ``quantize_int8``
checks it anyway: the validation scores at batch 1, 7 and ``BATCH`` and shuffled among test
images must be bit-identical, or nothing is written.

Measured alternatives (BENCHMARKS.md, 2026-11-25): dynamic quantisation (per-batch scales, not
batch-invariant), static QDQ (same speed where fused), per-tensor weights (agreement 99.6%),
no ``reduce_range`` (0.1% more agreement, but CPU-dependent integers), the two 32-wide
bottleneck layers kept float32 (no gain in agreement, a float GEMM in the middle).

``quantize_int8`` raises ``ParityError`` (the exporter then writes nothing) when the int8
decisions agree with float32's on less than ``AGREEMENT_TARGET`` of any test set, the type I or
type II error moves by more than ``RATE_TOLERANCE``, or the scores depend on the batch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from aeflow.datasets import available, load_images, to_float
from aeflow.errors import ArtifactError, ParityError
from aeflow.export.metadata import threshold_fields
from aeflow.metrics import error_rates, threshold_from_scores
from aeflow.parity import Comparison, compare
from aeflow.runtime import contract
from aeflow.runtime.contract import AE_FILE, INT8_FILE
from aeflow.runtime.providers import create_session, run_batched

AGREEMENT_TARGET = 0.995  # share of test images whose int8 decision equals the float32 one
RATE_TOLERANCE = 0.005  # type I / type II may move by at most half a percentage point
METHOD = {
    "quantization": "static",
    "library": "onnxruntime.quantization.quantize_static",
    "format": "QOperator",
    "quantized_ops": ["Gemm", "Relu"],
    "float32_layers": [],
    "weight_type": "int8",
    "per_channel": True,
    "reduce_range": True,
    "activation_type": "uint8, one scale and zero point per tensor, fixed at export",
    "calibration": "MinMax over the validation images",
    "float32_ops": ["Sigmoid", "Sub", "Mul", "ReduceMean"],
    "batch_invariant": True,
    "note": "an image's score does not depend on the batch size or the other images in its batch "
            "(bit-identical, checked at export)",
}
BATCH = 1000
CALIBRATION_BATCH = 128
INVARIANCE_BATCHES = (1, 7)  # besides BATCH: checked bit for bit at export


def _session(path: str | os.PathLike) -> ort.InferenceSession:
    """A CPU session as the runtime makes it (all graph optimisations, spinning off)."""
    return create_session(path, "cpu", spinning=False)


def scores_of(session: ort.InferenceSession, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """The ``score`` output over float32 images [N, 1, 28, 28] in batches of ``batch`` -> float32 [N]."""
    return run_batched(session, images, batch, outputs=["score"])[0]


def _calibration_reader(images: np.ndarray):
    """A ``CalibrationDataReader`` over float32 images [N, 1, 28, 28] in batches of
    ``CALIBRATION_BATCH`` (MinMax calibration keeps the min and max over all batches, so the
    batching does not change the scales)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(range(0, len(images), CALIBRATION_BATCH))

        def get_next(self):
            i = next(self._batches, None)
            return None if i is None else {"images": images[i:i + CALIBRATION_BATCH]}

    return Reader()


def write_int8_graph(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: np.ndarray) -> None:
    """Quantise ae.onnx (``fp32_path``) into ``out_path`` as ``METHOD`` says, with activation
    scales calibrated on float32 images ``calibration`` [N, 1, 28, 28]. The result is
    self-contained and onnx.checker clean, or ``ArtifactError``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice about pre-processing that does not apply here
    try:
        quantize_static(str(fp32_path), str(out_path), _calibration_reader(calibration),
                        quant_format=QuantFormat.QOperator, op_types_to_quantize=METHOD["quantized_ops"],
                        per_channel=METHOD["per_channel"], reduce_range=METHOD["reduce_range"],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        root.setLevel(level)
    model = onnx.load(str(out_path))
    onnx.checker.check_model(model, full_check=True)
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer) or \
            os.path.exists(f"{out_path}.data"):
        raise ArtifactError(f"{out_path}: the quantiser wrote external data; expected a self-contained graph")
    gemms = [n.op_type for n in model.graph.node if n.op_type in ("Gemm", "QGemm", "MatMul")]
    if gemms != ["QGemm"] * 6:
        raise ArtifactError(f"{out_path}: expected six QGemm layers after quantisation, found {gemms}")


def check_batch_invariance(session: ort.InferenceSession, images: np.ndarray, companions: np.ndarray,
                           reference: np.ndarray, seed: int = 0) -> Comparison:
    """Score float32 ``images`` [N, 1, 28, 28] again at each batch size of ``INVARIANCE_BATCHES``
    and once shuffled among ``companions`` [M, 1, 28, 28] in batches of ``BATCH``; returns the
    comparison with ``reference`` (their scores at batch ``BATCH``, float32 [N]) that passes only
    when every score is bit-identical (tolerance 0)."""
    runs = [scores_of(session, images, b) for b in INVARIANCE_BATCHES]
    mixed = np.concatenate([images, companions])
    order = np.random.default_rng(seed).permutation(len(mixed))
    shuffled = np.empty(len(mixed), np.float32)
    shuffled[order] = scores_of(session, mixed[order])
    runs.append(shuffled[:len(images)])
    return compare("int8 any batch", np.concatenate(runs), np.tile(reference, len(runs)), atol=0.0, rtol=0.0)


def quantize_int8(tmp_dir: str | os.PathLike, val_images: np.ndarray, data_dir, anomaly_sets: tuple[str, ...]
                  ) -> tuple[dict, list[Comparison]]:
    """Write ``tmp_dir``/ae.int8.onnx from ``tmp_dir``/ae.onnx and return (threshold.json's
    ``"int8"`` entry, [the batch-invariance check]).

    ``val_images`` float32 [N, 1, 28, 28] are the validation images the float32 threshold came
    from; they calibrate the activation scales, and the int8 threshold is mean + 3 std (ddof 1)
    of the int8 graph's own scores on them. The MNIST test set and every available set of
    ``anomaly_sets`` (test split, from ``data_dir``) measure agreement with float32; the
    validation images scored again at other batch sizes and among test images must give
    bit-identical scores. Raises ``ParityError`` when a target is missed.
    """
    tmp = Path(tmp_dir)
    out = tmp / INT8_FILE
    write_int8_graph(tmp / AE_FILE, out, val_images)
    fp32, int8 = _session(tmp / AE_FILE), _session(out)
    th32 = threshold_from_scores(scores_of(fp32, val_images)).value
    val8 = scores_of(int8, val_images)
    if not np.all(np.isfinite(val8)) or np.any(val8 < 0):
        raise ParityError("the int8 graph gives non-finite or negative scores on the validation images; nothing was written")
    th8 = threshold_from_scores(val8)

    sets = {"mnist-test": to_float(load_images("mnist", "test", data_dir))}
    for name in anomaly_sets:
        if available(name, "test", data_dir):
            sets[f"{name}-test"] = to_float(load_images(name, "test", data_dir))
    s32 = {k: scores_of(fp32, v) for k, v in sets.items()}
    s8 = {k: scores_of(int8, v) for k, v in sets.items()}
    invariance = check_batch_invariance(int8, val_images, sets["mnist-test"][:BATCH], val8)
    if not invariance.passed:
        raise ParityError(f"int8 scores depend on the batch (max difference {invariance.max_abs:.2e} between batch "
                          f"sizes or companions); nothing was written")
    same = {k: (s8[k] > th8.value) == (s32[k] > th32) for k in sets}
    by_set = {k: float(v.mean()) for k, v in same.items()}
    pooled = float(np.concatenate(list(same.values())).mean())
    anomalies8 = {k: v for k, v in s8.items() if k != "mnist-test"}
    anomalies32 = {k: v for k, v in s32.items() if k != "mnist-test"}
    ev8 = error_rates(s8["mnist-test"], anomalies8, th8.value)
    ev32 = error_rates(s32["mnist-test"], anomalies32, th32)
    rel = np.abs(np.concatenate(list(s8.values())) - np.concatenate(list(s32.values()))) \
        / np.concatenate(list(s32.values()))

    problems = [f"decisions agree with float32 on {v:.2%} of {k} (target {AGREEMENT_TARGET:.1%})"
                for k, v in by_set.items() if v < AGREEMENT_TARGET]
    moves = [("type I (mnist-test)", ev8["type_i"]["rate"], ev32["type_i"]["rate"])]
    moves += [(f"type II ({k})", ev8["type_ii"][k]["rate"], ev32["type_ii"][k]["rate"]) for k in anomalies8]
    problems += [f"{name} {a:.2%} vs float32 {b:.2%} (tolerance {RATE_TOLERANCE:.1%} points)"
                 for name, a, b in moves if abs(a - b) > RATE_TOLERANCE + 1e-12]
    if problems:
        raise ParityError(f"int8 graph misses its targets: {'; '.join(problems)}; nothing was written")

    model = onnx.load(str(out))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    entry = contract.graph_entry("int8", out, opset) | {
        "method": METHOD | {"calibration": f"MinMax over the {len(val_images)} validation images"},
        **threshold_fields(th8),
        "evaluation": ev8 | {
            "decision_agreement_with_fp32": pooled,
            "decision_agreement_by_set": by_set,
            "score_relative_difference_to_fp32": {"median": float(np.median(rel)),
                                                  "p99": float(np.quantile(rel, 0.99)), "max": float(rel.max())},
        },
    }
    return entry, [invariance]
