"""AnomalyScorer on the bundled artifacts: equal to a direct onnxruntime run, layouts, batching, thresholds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from conftest import copy_artifacts, edit_metadata

from aeflow.errors import ArtifactError, InputError, UsageError
from aeflow.files import sha256_file
from aeflow.runtime.inputs import open_source
from aeflow.runtime.scorer import AnomalyScorer

N = 300


@pytest.fixture(scope="module")
def demo(bundled):
    with np.load(bundled / "demo.npz") as d:
        # both classes: the demo set is 1,000 MNIST then 1,000 Fashion-MNIST images
        idx = np.r_[0:N // 2, 1000:1000 + N // 2]
        return d["images"][idx], d["is_anomaly"][idx]


@pytest.fixture(scope="module")
def scorer():
    return AnomalyScorer(device="cpu")


@pytest.fixture(scope="module")
def reference(bundled, demo):
    sess = ort.InferenceSession(str(bundled / "ae.onnx"), providers=["CPUExecutionProvider"])
    x = demo[0].astype(np.float32)[:, None] / np.float32(255)
    rec, score = sess.run(["reconstruction", "score"], {"images": x})
    return rec, score


def test_scores_equal_a_direct_onnxruntime_run(scorer, demo, reference):
    s = scorer.score(demo[0])
    assert s.dtype == np.float32 and s.shape == (N,)
    np.testing.assert_allclose(s, reference[1], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(scorer.decision_function(demo[0]), s)


def test_reconstruction_equals_direct_run_and_gives_the_score(scorer, demo, reference):
    rec = scorer.reconstruct(demo[0])
    assert rec.dtype == np.float32 and rec.shape == (N, 1, 28, 28)
    np.testing.assert_allclose(rec, reference[0], rtol=1e-6, atol=1e-7)
    x = demo[0].astype(np.float32)[:, None] / 255
    np.testing.assert_allclose(((x - rec) ** 2).mean(axis=(1, 2, 3)), scorer.score(demo[0]), rtol=1e-4)


def test_uint8_and_float_inputs_agree(scorer, demo):
    x = demo[0]
    s = scorer.score(x)
    np.testing.assert_array_equal(scorer.score(x.astype(np.float32) / np.float32(255)), s)
    np.testing.assert_allclose(scorer.score(x / 255.0), s, rtol=1e-6, atol=1e-9)  # float64


@pytest.mark.parametrize("shape", [(N, 1, 28, 28), (N, 784), (N, 28, 28, 1)])
def test_layouts_agree(scorer, demo, shape):
    np.testing.assert_array_equal(scorer.score(demo[0].reshape(shape)), scorer.score(demo[0]))


@pytest.mark.parametrize("batch_size", [1, 7, 128, 4096])
def test_batch_size_does_not_change_scores(demo, scorer, batch_size):
    other = AnomalyScorer(device="cpu", batch_size=batch_size)
    np.testing.assert_allclose(other.score(demo[0]), scorer.score(demo[0]), rtol=1e-6, atol=1e-9)


def test_predict_is_score_above_threshold_and_separates_the_demo(scorer, demo):
    s, flags = scorer.score(demo[0]), scorer.predict(demo[0])
    assert flags.dtype == np.bool_
    np.testing.assert_array_equal(flags, s > scorer.threshold)
    assert (flags == demo[1]).mean() > 0.9


def test_threshold_override_and_validation(demo):
    sc = AnomalyScorer(device="cpu")
    recorded = json.loads((sc.directory / "threshold.json").read_text())["threshold"]
    assert sc.threshold == sc.default_threshold == recorded
    s = sc.score(demo[0])
    sc.threshold = float(np.median(s))
    assert sc.predict(demo[0]).sum() == (s > np.median(s)).sum()
    sc.threshold = 0
    assert sc.predict(demo[0]).all()
    for bad in (float("nan"), -0.1, float("inf"), "high", "0.1", b"0.1", None, True):  # text: no number
        with pytest.raises(UsageError):
            sc.threshold = bad
    assert sc.threshold == 0


def test_provider_and_metadata(scorer):
    assert scorer.provider == "CPUExecutionProvider"
    meta = scorer.metadata
    assert meta.threshold == scorer.default_threshold and scorer.precision == "fp32"
    assert meta.image_shape == (28, 28) and str(scorer.graph).endswith("ae.onnx")


def test_nan_found_in_a_later_batch_names_the_global_index(demo):
    sc = AnomalyScorer(device="cpu", batch_size=4)
    x = demo[0][:12] / 255.0
    x[9, 5, 5] = np.nan
    with pytest.raises(InputError, match=r"image 9\b"):
        sc.score(x)


def test_bad_inputs_raise_input_error(scorer):
    for bad in (np.zeros((28, 28), np.uint8), np.zeros((2, 28, 28), np.int64), np.zeros((2, 3, 28, 28), np.float32),
                np.zeros((0, 784), np.float32), "images.npy"):
        with pytest.raises(InputError):
            scorer.score(bad)


def test_scores_an_image_source(scorer, demo, tmp_path):
    np.save(tmp_path / "x.npy", demo[0])
    with open_source(tmp_path / "x.npy") as src:
        np.testing.assert_array_equal(scorer.score(src), scorer.score(demo[0]))


def test_bad_arguments():
    with pytest.raises(UsageError):
        AnomalyScorer(batch_size=0)
    with pytest.raises(UsageError):
        AnomalyScorer(precision="fp16")
    with pytest.raises(UsageError):
        AnomalyScorer(device="tpu")
    with pytest.raises(ArtifactError):
        AnomalyScorer(artifacts="/nonexistent/artifacts")


def without_int8(bundled, dest, edit=None):
    copy_artifacts(bundled, dest)
    (dest / "ae.int8.onnx").unlink()

    def change(meta):
        meta.pop("int8", None)
        if edit:
            edit(meta, dest)

    edit_metadata(dest / "threshold.json", change)
    return dest


def test_int8_missing_says_how_to_make_it(bundled, tmp_path):
    d = without_int8(bundled, tmp_path / "a")
    with pytest.raises(ArtifactError, match=r"no int8 graph in .*aeflow export --quantize int8"):
        AnomalyScorer(d, precision="int8")


def test_int8_graph_is_loaded_with_its_threshold(bundled, tmp_path, demo):
    d = copy_artifacts(bundled, tmp_path / "a")
    want = json.loads((d / "threshold.json").read_text())["int8"]["threshold"]
    sc = AnomalyScorer(d, device="cpu", precision="int8")
    assert sc.threshold == want != AnomalyScorer(d, device="cpu").threshold
    assert sc.graph.name == "ae.int8.onnx" and sc.precision == "int8"
    assert sc.score(demo[0][:5]).shape == (5,)
    (d / "ae.int8.onnx").write_bytes((d / "ae.int8.onnx").read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        AnomalyScorer(d, precision="int8")
    with pytest.raises(ArtifactError):  # a corrupted graph does not load even unverified
        AnomalyScorer(d, precision="int8", verify=False)


def test_tampered_graph_refused_unless_unverified(bundled, tmp_path):
    d = without_int8(bundled, tmp_path / "a", lambda meta, dest: meta.update(sha256="0" * 64))
    with pytest.raises(ArtifactError, match="sha256"):
        AnomalyScorer(d)
    assert AnomalyScorer(d, verify=False).provider == "CPUExecutionProvider"


def test_wrong_graph_signature_refused(bundled, tmp_path):
    def use_flow(meta, dest):
        shutil.copy(bundled / "flow.onnx", dest / "ae.onnx")
        meta["sha256"] = sha256_file(dest / "ae.onnx")

    d = without_int8(bundled, tmp_path / "a", use_flow)
    with pytest.raises(ArtifactError, match="not an aeflow graph"):
        AnomalyScorer(d)
