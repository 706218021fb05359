"""The GPU path (aeflow.runtime.device): IOBinding with per-thread buffers, the uint8 graph, the
CUDA-graph replay. Every part runs here on the CPU provider, bit for bit against the plain
``session.run`` path; the tests named ``*_on_cuda`` run only where CUDA really runs (``make
gpu-check`` runs this file on a GPU machine). No hypothesis, no dask: the GPU box lacks them."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from aeflow.errors import ScaleWarning
from aeflow.parity import compare
from aeflow.runtime import AnomalyScorer, FlowSampler, demo_images
from aeflow.runtime import device
from aeflow.runtime.providers import create_session, cuda_missing

REPO = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(bool(cuda_missing()), reason="CUDA does not run here")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return demo_images()  # uint8 [2000, 28, 28]


def bound_scorer(uint8: bool, batch_size: int, graph: bool = False, device_name: str = "cpu") -> AnomalyScorer:
    """A scorer whose batches run through ``device.Bound`` (on the CPU provider: what CUDA runs)."""
    scorer = AnomalyScorer(device=device_name, batch_size=batch_size)
    if device_name == "cpu":
        replay = create_session(scorer.graph, "cpu") if graph else None  # the replay logic on a plain session
        scorer._bound = device.Bound(scorer._session, uint8, replay, batch_size)
    return scorer


def test_prep_graph_is_the_model_onnx_helper_builds():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["pixels"], ["cast"], to=TensorProto.FLOAT),
         helper.make_node("Div", ["cast", "c255"], ["images"]),
         helper.make_node("ReduceMax", ["images"], ["brightest"], keepdims=0)], "aeflow",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, list(device.DIMS))],
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(device.DIMS)),
         helper.make_tensor_value_info("brightest", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.array(255.0, dtype=np.float32), "c255")])
    want = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    got = onnx.load_from_string(device.PREP)
    onnx.checker.check_model(got, full_check=True)
    assert got == want and got.SerializeToString() == want.SerializeToString()


def test_prep_graph_divides_every_uint8_value_as_numpy_does():
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 1, 8, 8)
    got, brightest = create_session(device.PREP, "cpu").run(None, {"pixels": pixels})
    want = np.divide(pixels, np.float32(255.0), dtype=np.float32)  # inputs.to_float32's conversion
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert brightest.shape == () and brightest == np.float32(1.0)


@pytest.mark.parametrize("batch_size,n", [(300, 2000), (1024, 2000), (7, 7), (64, 1)])
def test_bound_paths_equal_plain_run_bit_for_bit(images, batch_size, n):
    plain = AnomalyScorer(device="cpu", batch_size=batch_size)
    x, f = images[:n], images[:n].astype(np.float32) / np.float32(255)
    want = plain.score(x)
    assert np.array_equal(plain.score(f), want)
    for uint8 in (False, True):
        scorer = bound_scorer(uint8, batch_size, graph=True)
        assert np.array_equal(scorer.score(x), want)  # uint8 through the prep graph (or to_float32)
        assert np.array_equal(scorer.score(f), want)  # float32 through the bound buffers
        assert np.array_equal(scorer.score(x), want)  # the replay set shared by both dtypes
    assert np.array_equal(scorer.reconstruct(x[:50]), plain.reconstruct(x[:50]))
    assert np.array_equal(scorer.anomaly_map(x[:50]), plain.anomaly_map(x[:50]))


def test_buffer_sets_per_thread_stay_few(images):
    plain, scorer = AnomalyScorer(device="cpu", batch_size=64), bound_scorer(True, 64)
    for n in (64, 7, 9, 11, 13, 64, 5):
        assert np.array_equal(scorer.score(images[:n]), plain.score(images[:n]))
    sets = scorer._bound._local.sets
    assert len(sets) == device._CACHED and ((64, 1, 28, 28), "|u1") in sets  # the full batch's, used last but one


def test_a_replay_that_fails_falls_back_to_the_plain_run(images):
    scorer = AnomalyScorer(device="cpu", batch_size=100)
    want = scorer.score(images[:250])
    broken = create_session(device.PREP, "cpu")  # its input is not "images": binding it fails
    scorer._bound = device.Bound(scorer._session, True, broken, 100)
    assert np.array_equal(scorer.score(images[:250]), want)
    assert scorer._bound._graph is None and "Error" in scorer._bound.graph_error


def test_uint8_path_takes_every_layout(images):
    plain, scorer = AnomalyScorer(device="cpu", batch_size=128), bound_scorer(True, 128)
    for x in (images[:300, None], images[:300, :, :, None], images[:300].reshape(300, -1),
              np.asfortranarray(images[:300]), images[:600:2], images[299::-1]):
        assert np.array_equal(scorer.score(x), plain.score(x))


def test_uint8_path_warns_for_binarised_masks(images):
    scorer = bound_scorer(True, 128)
    masks = (images[:200] > 127).astype(np.uint8)
    with pytest.warns(ScaleWarning, match="only 0 and 1 in images 0..127"):
        got = scorer.score(masks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScaleWarning)
        assert np.array_equal(got, AnomalyScorer(device="cpu", batch_size=128).score(masks))


def test_threads_share_one_bound_scorer(images):
    scorer = bound_scorer(True, 100, graph=True)
    slices = [images[i * 250:(i + 1) * 250] for i in range(8)]
    inputs = [s if i % 2 else s.astype(np.float32) / np.float32(255) for i, s in enumerate(slices)]
    want = [AnomalyScorer(device="cpu", batch_size=100).score(x) for x in inputs]
    got = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def work(i):
        barrier.wait()
        for _ in range(3):
            got[i] = scorer.score(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_bound_runs_the_sampler_graph_as_session_run():
    sampler = FlowSampler(device="cpu")
    session = sampler._sampler_graph()
    z = np.linspace(-2.5, 2.5, 4096, dtype=np.float32)
    want = session.run(None, {"z": z})
    bound = device.Bound(session)
    for _ in range(2):
        got = bound.run(z)
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert device.run_graph(session, "z", z)[0].tobytes() == want[0].tobytes()


def test_tiny_model_builds_a_matmul():
    model = device.tiny_model([("MatMul", ["A", "B"], ["Y"], {})], [("A", device.FLOAT, [3, 4]), ("B", device.FLOAT, [4, 2])],
                              [("Y", device.FLOAT, [3, 2])])
    a, b = np.arange(12, dtype=np.float32).reshape(3, 4), np.ones((4, 2), dtype=np.float32)
    assert np.array_equal(create_session(model, "cpu").run(None, {"A": a, "B": b})[0], a @ b)


def test_cuda_bench_rows_run_on_the_cpu_provider(monkeypatch):
    from aeflow.analysis import cuda_bench

    tiny = {"batch": 256, "host_images": 1024, "samples": 4096, "matmul": 64, "copy_bytes": 1 << 16}
    monkeypatch.setattr(cuda_bench, "QUICK", tiny)
    result = cuda_bench.run_cuda_bench(quick=True, repeats=1, where="cpu")
    rows = {r["name"]: r for r in result["rows"]}
    assert {"device-to-device copy", "fp32 MatMul 64^3, TF32 off", "device-resident fp32", "host-fed uint8",
            "host-fed float32", "latency, batch 1", "sampler graph, device-resident"} <= set(rows)
    assert all(r["check"]["passed"] for r in rows.values() if "check" in r)
    assert 0 < rows["device-resident fp32"]["flop_share"] and rows["host-fed uint8"]["target"] == 10e6
    assert "host-fed uint8" in cuda_bench.format_rows(result)


def test_gpu_check_without_a_gpu_says_so_and_runs_nothing(tmp_path):
    if Path("/dev/nvidia0").exists():
        pytest.skip("an NVIDIA GPU is here")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "no NVIDIA GPU" in lines[0], lines
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- where CUDA really runs

@cuda
def test_scorer_on_cuda_is_bound_and_agrees_with_the_cpu(images):
    scorer = AnomalyScorer(device="cuda", batch_size=256)
    assert scorer.provider == "CUDAExecutionProvider" and scorer._bound is not None
    assert scorer._bound.prep is not None
    want = AnomalyScorer(device="cpu").score(images)
    got = scorer.score(images)
    assert compare("score", got, want).passed
    assert np.array_equal(scorer.score(images.astype(np.float32) / np.float32(255)), got)  # uint8 == float, bit for bit
    assert compare("reconstruction", scorer.reconstruct(images[:300]), AnomalyScorer(device="cpu").reconstruct(images[:300])).passed


@cuda
def test_cuda_graph_replay_equals_the_plain_bound_run(images):
    scorer = AnomalyScorer(device="cuda", batch_size=250)
    assert scorer._bound._graph is not None, "onnxruntime could not build ae.onnx's session with enable_cuda_graph"
    plain = AnomalyScorer(device="cuda", batch_size=250)
    plain._bound = device.Bound(plain._session, True)
    for x in (images, images.astype(np.float32) / np.float32(255), images):
        assert np.array_equal(scorer.score(x), plain.score(x))
    assert scorer._bound.graph_error is None and scorer._bound._graph is not None


@cuda
def test_threads_share_one_cuda_scorer(images):
    scorer = AnomalyScorer(device="cuda", batch_size=200)
    want = [scorer.score(images[i::4]) for i in range(4)]
    got = [None] * 4

    def work(i):
        for _ in range(5):
            got[i] = scorer.score(images[i::4])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


@cuda
def test_sampler_on_cuda_agrees_with_the_cpu():
    gpu, cpu = FlowSampler(device="cuda"), FlowSampler(device="cpu")
    assert gpu.provider == "CUDAExecutionProvider"
    for method in ("graph", "table"):
        assert compare("sample", gpu.sample(100_000, seed=1, method=method), cpu.sample(100_000, seed=1, method=method)).passed


@cuda
def test_device_resident_ortvalues_on_cuda(images):
    scorer = AnomalyScorer(device="cuda")
    x = images[:512].reshape(512, 1, 28, 28).astype(np.float32) / np.float32(255)
    value = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    binding = scorer._session.io_binding()
    binding.bind_ortvalue_input("images", value)
    binding.bind_output("score", "cuda")
    scorer._session.run_with_iobinding(binding)
    assert np.array_equal(binding.get_outputs()[0].numpy(), scorer.score(x))
