"""``aeflow export --quantize int8``: ae.onnx -> ae.int8.onnx as ``METHOD`` records (``reduce_range``: 7-bit weights,
so CPUs without VNNI cannot saturate and every x86 CPU computes the same integers)."""

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from aeflow.errors import ArtifactError, ParityError
from aeflow.metrics import error_rates, threshold_from_scores
from aeflow.parity import Comparison, compare
from aeflow.runtime import contract
from aeflow.runtime.contract import AE_FILE, INT8_FILE
from aeflow.runtime.providers import create_session, run_batched

AGREEMENT_TARGET = 0.995  # share of test images whose int8 decision equals the float32 one
RATE_TOLERANCE = 0.005  # type I / type II may move by at most half a percentage point
METHOD = {
    "quantization": "static", "library": "onnxruntime.quantization.quantize_static", "format": "QOperator",
    "quantized_ops": ["Gemm", "Relu"], "float32_layers": [], "weight_type": "int8", "per_channel": True,
    "reduce_range": True, "activation_type": "uint8, one scale and zero point per tensor, fixed at export",
    "calibration": "MinMax over the validation images",
    "float32_ops": ["last QGemm's output", "Sigmoid", "Sub", "Mul", "ReduceMean"], "batch_invariant": True,
    "note": "an image's score does not depend on the batch size or the other images in its batch "
            "(bit-identical, checked at export)",
}
BATCH, CALIBRATION_BATCH = 1000, 128
INVARIANCE_BATCHES = (1, 7)  # besides BATCH: checked bit for bit at export


def scores_of(session: ort.InferenceSession, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """The ``score`` output over float32 images [N, 1, H, W] in batches of ``batch`` -> float32 [N]."""
    return run_batched(session, images, batch, outputs=["score"])[0]


def write_int8_graph(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: np.ndarray) -> int:
    """Quantise ae.onnx into ``out_path`` as ``METHOD`` says, calibrated on float32 images ``calibration``
    [N, 1, H, W]; returns its opset, or ``ArtifactError`` unless it has six QGemm layers."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        batches = iter([{"images": calibration[i:i + CALIBRATION_BATCH]}
                        for i in range(0, len(calibration), CALIBRATION_BATCH)])

        def get_next(self):
            return next(self.batches, None)

    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # the quantiser logs advice about pre-processing that does not apply here
    try:
        quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QOperator,
                        op_types_to_quantize=METHOD["quantized_ops"], per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        root.setLevel(level)
    model = onnx.load(str(out_path))
    _float_output(model)
    onnx.save(model, str(out_path))
    onnx.checker.check_model(model, full_check=True)
    gemms = [n.op_type for n in model.graph.node if n.op_type in ("Gemm", "QGemm", "MatMul")]
    if gemms != ["QGemm"] * 6:
        raise ArtifactError(f"{out_path}: expected six QGemm layers after quantisation, found {gemms}")
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _float_output(model: onnx.ModelProto) -> None:
    """Let the last QGemm write float32 itself, in place of the DequantizeLinear that read its uint8 output."""
    g = model.graph
    dq = next(n for n in g.node if n.op_type == "DequantizeLinear")
    last = next(n for n in g.node if n.output[0] == dq.input[0])
    unused = set(last.input[7:]) | set(dq.input[1:])
    del last.input[7:]
    last.output[0] = dq.output[0]
    g.node.remove(dq)
    unused -= {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name in unused]:
        g.initializer.remove(t)


def check_batch_invariance(session: ort.InferenceSession, images: np.ndarray, companions: np.ndarray,
                           reference: np.ndarray) -> Comparison:
    """Scores of float32 ``images`` [N, 1, H, W] at each of ``INVARIANCE_BATCHES`` and shuffled among ``companions``
    [M, 1, H, W], compared bit for bit with ``reference`` (float32 [N])."""
    runs = [scores_of(session, images, b) for b in INVARIANCE_BATCHES]
    mixed = np.concatenate([images, companions])
    order = np.random.default_rng(0).permutation(len(mixed))
    shuffled = np.empty(len(mixed), np.float32)
    shuffled[order] = scores_of(session, mixed[order])
    runs.append(shuffled[:len(images)])
    return compare("int8 any batch", np.concatenate(runs), np.tile(reference, len(runs)), atol=0.0, rtol=0.0)


def _compare(s32: dict[str, np.ndarray], s8: dict[str, np.ndarray], th32: float, th8: float) -> tuple[dict, list[str]]:
    """threshold.json's int8 ``evaluation`` from float32 and int8 scores (float32 [N] by set), and the targets missed."""
    same = {k: (s8[k] > th8) == (s32[k] > th32) for k in s32}
    by_set = {k: float(v.mean()) for k, v in same.items()}
    ev8, ev32 = (error_rates(s["mnist-test"], {k: v for k, v in s.items() if k != "mnist-test"}, t)
                 for s, t in ((s8, th8), (s32, th32)))
    a32, a8 = np.concatenate(list(s32.values())), np.concatenate(list(s8.values()))
    rel = np.abs(a8 - a32) / a32
    problems = [f"decisions agree with float32 on {v:.2%} of {k} (target {AGREEMENT_TARGET:.1%})"
                for k, v in by_set.items() if v < AGREEMENT_TARGET]
    moves = [("type I (mnist-test)", ev8["type_i"]["rate"], ev32["type_i"]["rate"])]
    moves += [(f"type II ({k})", v["rate"], ev32["type_ii"][k]["rate"]) for k, v in ev8["type_ii"].items()]
    problems += [f"{name} {a:.2%} vs float32 {b:.2%} (tolerance {RATE_TOLERANCE:.1%} points)"
                 for name, a, b in moves if abs(a - b) > RATE_TOLERANCE + 1e-12]
    return ev8 | {"decision_agreement_with_fp32": float(np.concatenate(list(same.values())).mean()),
                  "decision_agreement_by_set": by_set,
                  "score_relative_difference_to_fp32": {"median": float(np.median(rel)), "p99": float(np.quantile(
                      rel, 0.99)), "max": float(rel.max())}}, problems


def quantize_int8(tmp_dir: str | os.PathLike, val_images: np.ndarray, sets: dict[str, np.ndarray]
                  ) -> tuple[dict, list[Comparison]]:
    """Write ``tmp_dir``/ae.int8.onnx, calibrated and thresholded on ``val_images`` (float32 [N, 1, H, W]), measured on
    the test ``sets`` (float32 [M, 1, H, W] by name); returns (threshold.json's ``"int8"`` entry, [its batch check]),
    or ``ParityError`` when scores depend on the batch or decisions and error rates miss their targets."""
    tmp = Path(tmp_dir)
    out = tmp / INT8_FILE
    opset = write_int8_graph(tmp / AE_FILE, out, val_images)
    fp32, int8 = (create_session(p, "cpu", spinning=False) for p in (tmp / AE_FILE, out))
    val8 = scores_of(int8, val_images)
    if not np.all(np.isfinite(val8)) or np.any(val8 < 0):
        raise ParityError("the int8 graph gives non-finite or negative scores on the validation images; nothing was written")
    th8 = threshold_from_scores(val8)
    invariance = check_batch_invariance(int8, val_images, sets["mnist-test"][:BATCH], val8)
    if not invariance.passed:
        raise ParityError(f"int8 scores depend on the batch (max difference {invariance.max_abs:.2e} between batch "
                          f"sizes or companions); nothing was written")
    evaluation, problems = _compare({k: scores_of(fp32, v) for k, v in sets.items()},
                                    {k: scores_of(int8, v) for k, v in sets.items()},
                                    threshold_from_scores(scores_of(fp32, val_images)).value, th8.value)
    if problems:
        raise ParityError(f"int8 graph misses its targets: {'; '.join(problems)}; nothing was written")
    method = METHOD | {"calibration": f"MinMax over the {len(val_images)} validation images"}
    validation = {"mean": th8.mean, "std": th8.std, "ddof": 1, "n": th8.n}
    entry = {"method": method, "threshold": th8.value, "k": th8.k, "validation": validation, "evaluation": evaluation}
    return contract.Graph.of_file("int8", out, opset).to_json() | entry, [invariance]
