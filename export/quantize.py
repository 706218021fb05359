"""``aeflow export --quantize int8``: ae.onnx -> ae.int8.onnx, checked against the float32 graph.

The int8 graph is made in two steps:

1. ``float_graph_for_quantization`` rebuilds ae.onnx's six fully connected layers as MatMul + Add
   (onnxruntime's dynamic quantiser handles MatMul, not Gemm), reshapes to [N, 1, 28, 28] *before*
   the sigmoid so the reconstruction output needs no copy, and computes the score as
   ReduceMean((images - reconstruction)^2) with Mul instead of Pow. This float graph must match
   ae.onnx within ``aeflow.parity.TOLERANCES`` on the validation images.
2. ``onnxruntime.quantization.quantize_dynamic`` turns the MatMuls into int8 MatMulInteger:
   weights int8 per output channel (reduce_range: 7-bit, so the u8 x s8 kernels of CPUs without
   VNNI cannot saturate and every CPU computes the same integers), activations uint8 with a scale
   computed per batch at run time. The two bottleneck layers (128-32 and 32-128, under 1% of the
   FLOPs) stay float32: quantising them cost the most agreement (on the test sets 99.75% -> 99.78%
   for MNIST, and on the demo images at batch 1024 99.55% -> 99.9%) for no measurable speed.
   Everything after the last layer (sigmoid, the score) stays float32.

Why dynamic rather than static (calibrated) quantisation: on the 2-core Xeon this was developed on,
static QDQ graphs reached only ~1.5x the float32 graph's images/s with 2 threads (their
Quantize/DequantizeLinear nodes scale poorly), dynamic ~2x. The price: an image's int8 score
depends slightly on the other images in its batch (the activation scales are per batch); measured
on the 20,000 test images, 16 decisions differ between batch 1 and batch 1000.

``quantize_int8`` raises ``ParityError`` (the exporter then writes nothing) when the int8
decisions agree with float32's on less than ``AGREEMENT_TARGET`` of any test set, or the type I or
type II error moves by more than ``RATE_TOLERANCE``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from aeflow.datasets import available, load_images, to_float
from aeflow.errors import ArtifactError, ParityError
from aeflow.files import sha256_file
from aeflow.metrics import auroc, threshold_from_scores, type_i_error, type_ii_error
from aeflow.parity import Comparison, compare

INT8_FILE = "ae.int8.onnx"
AGREEMENT_TARGET = 0.995  # share of test images whose int8 decision equals the float32 one
RATE_TOLERANCE = 0.005  # type I / type II may move by at most half a percentage point
LAYER_SIZES = (784, 256, 128, 32, 128, 256, 784)
METHOD = {
    "quantization": "dynamic",
    "library": "onnxruntime.quantization.quantize_dynamic",
    "quantized_ops": ["MatMul"],
    "float32_layers": ["fc2 (128-32)", "fc3 (32-128)"],
    "weight_type": "int8",
    "per_channel": True,
    "reduce_range": True,
    "activation_type": "uint8 (scale and zero point computed per batch at run time)",
    "float32_ops": ["Sigmoid", "Sub", "Mul", "ReduceMean"],
    "note": "an image's score depends slightly on the other images in its batch",
}
BATCH = 1000
FLOAT32_NODES = ("fc2_MatMul", "fc3_MatMul")


def _dense_layers(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight [in, out], bias [out]) of ae.onnx's Gemm layers in graph order; ``ArtifactError``
    unless they are the six layers 784-256-128-32-128-256-784."""
    inits = {i.name: i for i in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type != "Gemm":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 \
                or len(node.input) != 3 or node.input[1] not in inits or node.input[2] not in inits:
            raise ArtifactError(f"ae.onnx: unexpected Gemm node {node.name!r}; re-export the float32 graph")
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        w = w.T if attrs.get("transB", 0) else w
        layers.append((np.ascontiguousarray(w), numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)))
    shapes = [w.shape for w, _ in layers]
    if shapes != list(zip(LAYER_SIZES[:-1], LAYER_SIZES[1:])):
        raise ArtifactError(f"ae.onnx: layers {shapes} are not the 784-256-128-32-128-256-784 autoencoder; re-export")
    return layers


def float_graph_for_quantization(fp32_path: str | os.PathLike) -> onnx.ModelProto:
    """ae.onnx's weights as a MatMul + Add graph with the same signature (``images`` float32
    [N, 1, 28, 28] -> ``reconstruction`` [N, 1, 28, 28], ``score`` [N]) and the same opset."""
    source = onnx.load(str(fp32_path))
    opset = next(o.version for o in source.opset_import if o.domain in ("", "ai.onnx"))
    init = [numpy_helper.from_array(np.array([-1, 784], np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([-1, 1, 28, 28], np.int64), "image_shape")]
    nodes = [helper.make_node("Reshape", ["images", "flat_shape"], ["flat"], name="flatten")]
    h = "flat"
    layers = _dense_layers(source)
    for i, (w, b) in enumerate(layers):
        init += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(b, f"fc{i}.bias")]
        nodes.append(helper.make_node("MatMul", [h, f"fc{i}.weight"], [f"fc{i}.matmul"], name=f"fc{i}_MatMul"))
        nodes.append(helper.make_node("Add", [f"fc{i}.matmul", f"fc{i}.bias"], [f"fc{i}"], name=f"fc{i}_Add"))
        h = f"fc{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [h], [f"relu{i}"], name=f"relu{i}"))
            h = f"relu{i}"
    nodes += [helper.make_node("Reshape", [h, "image_shape"], ["logits"], name="unflatten"),
              helper.make_node("Sigmoid", ["logits"], ["reconstruction"], name="sigmoid"),
              helper.make_node("Sub", ["images", "reconstruction"], ["error"], name="error"),
              helper.make_node("Mul", ["error", "error"], ["squared_error"], name="square")]
    if opset >= 18:
        init.append(numpy_helper.from_array(np.array([1, 2, 3], np.int64), "pixel_axes"))
        nodes.append(helper.make_node("ReduceMean", ["squared_error", "pixel_axes"], ["score"], keepdims=0, name="score"))
    else:
        nodes.append(helper.make_node("ReduceMean", ["squared_error"], ["score"], axes=[1, 2, 3], keepdims=0, name="score"))
    graph = helper.make_graph(
        nodes, "aeflow_autoencoder_int8_source",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["N", 1, 28, 28]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="aeflow")
    model.ir_version = source.ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def _session(path: str | os.PathLike) -> ort.InferenceSession:
    """A CPU session with all graph optimisations (as the runtime runs it)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def scores_of(session: ort.InferenceSession, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """The ``score`` output over float32 images [N, 1, 28, 28] in batches of ``batch`` -> float32 [N]."""
    return np.concatenate([session.run(["score"], {"images": images[i:i + batch]})[0]
                           for i in range(0, len(images), batch)])


def write_int8_graph(fp32_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Quantise ae.onnx into ``out_path`` (self-contained, onnx.checker clean). Returns the path
    of the intermediate float graph (beside ``out_path``; the caller checks and removes it)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = Path(out_path)
    prep = out_path.with_name(out_path.stem + ".prep.onnx")
    onnx.save(float_graph_for_quantization(fp32_path), str(prep))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice about pre-processing that does not apply here
    try:
        quantize_dynamic(str(prep), str(out_path), op_types_to_quantize=["MatMul"], per_channel=METHOD["per_channel"],
                         reduce_range=METHOD["reduce_range"], weight_type=QuantType.QInt8,
                         nodes_to_exclude=list(FLOAT32_NODES))
    finally:
        root.setLevel(level)
    model = onnx.load(str(out_path))
    onnx.checker.check_model(model, full_check=True)
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer) or \
            os.path.exists(f"{out_path}.data"):
        raise ArtifactError(f"{out_path}: the quantiser wrote external data; expected a self-contained graph")
    return prep


def _rates(normal: np.ndarray, anomalies: dict[str, np.ndarray], threshold: float) -> dict:
    ev = {"type_i": {"set": "mnist-test", "n": int(normal.size), "rate": type_i_error(normal, threshold)},
          "type_ii": {}, "auroc": {}}
    for name, s in anomalies.items():
        ev["type_ii"][name] = {"n": int(s.size), "rate": type_ii_error(s, threshold)}
        ev["auroc"][name] = auroc(normal, s)
    return ev


def quantize_int8(tmp_dir: str | os.PathLike, val_images: np.ndarray, data_dir, anomaly_sets: tuple[str, ...]
                  ) -> tuple[dict, list[Comparison]]:
    """Write ``tmp_dir``/ae.int8.onnx from ``tmp_dir``/ae.onnx and return (threshold.json's
    ``"int8"`` entry, the parity checks of the intermediate float graph against ae.onnx).

    ``val_images`` float32 [N, 1, 28, 28] are the validation images the float32 threshold came
    from; the int8 threshold is mean + 3 std (ddof 1) of the int8 graph's own scores on them. The
    MNIST test set and every available set of ``anomaly_sets`` (test split, from ``data_dir``)
    measure agreement with float32. Raises ``ParityError`` when a target is missed.
    """
    tmp = Path(tmp_dir)
    out = tmp / INT8_FILE
    prep = write_int8_graph(tmp / "ae.onnx", out)
    try:
        fp32, prep_sess, int8 = _session(tmp / "ae.onnx"), _session(prep), _session(out)
        ref_rec, ref_score = fp32.run(None, {"images": val_images[:BATCH]})
        rec, score = prep_sess.run(None, {"images": val_images[:BATCH]})
        checks = [replace(compare("reconstruction", rec, ref_rec), name="int8-src rec"),
                  replace(compare("score", score, ref_score), name="int8-src score")]
    finally:
        prep.unlink(missing_ok=True)
    if not all(c.passed for c in checks):
        raise ParityError("the float graph rebuilt for quantisation differs from ae.onnx; nothing was written")

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
    same = {k: (s8[k] > th8.value) == (s32[k] > th32) for k in sets}
    by_set = {k: float(v.mean()) for k, v in same.items()}
    pooled = float(np.concatenate(list(same.values())).mean())
    anomalies8 = {k: v for k, v in s8.items() if k != "mnist-test"}
    anomalies32 = {k: v for k, v in s32.items() if k != "mnist-test"}
    ev8 = _rates(s8["mnist-test"], anomalies8, th8.value)
    ev32 = _rates(s32["mnist-test"], anomalies32, th32)
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
    entry = {
        "onnx_file": INT8_FILE,
        "sha256": sha256_file(out),
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "method": METHOD,
        "threshold": th8.value,
        "k": th8.k,
        "validation": {"mean": th8.mean, "std": th8.std, "ddof": 1, "n": th8.n},
        "evaluation": ev8 | {
            "decision_agreement_with_fp32": pooled,
            "decision_agreement_by_set": by_set,
            "score_relative_difference_to_fp32": {"median": float(np.median(rel)),
                                                  "p99": float(np.quantile(rel, 0.99)), "max": float(rel.max())},
        },
    }
    return entry, checks
