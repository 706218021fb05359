"""Pickling AnomalyScorer and FlowSampler: settings travel, sessions are rebuilt on first use, and
results are bit for bit those of the original object."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from aeflow.errors import ArtifactError, UsageError
from aeflow.runtime import AnomalyScorer, FlowSampler, demo_images
from conftest import edit_metadata


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return demo_images()[:300]


def round_trip(obj):
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_scorer_round_trip_bit_for_bit(images, precision):
    scorer = AnomalyScorer(device="cpu", precision=precision, batch_size=128)
    copy = round_trip(scorer)
    assert not copy.loaded  # nothing built until first use
    assert np.array_equal(copy.score(images), scorer.score(images))
    assert copy.loaded
    assert np.array_equal(copy.reconstruct(images[:5]), scorer.reconstruct(images[:5]))
    assert (copy.precision, copy.batch_size, copy.threshold) == (precision, 128, scorer.threshold)
    assert copy.provider == scorer.provider


def test_scorer_threshold_override_travels(images):
    scorer = AnomalyScorer(device="cpu")
    scorer.threshold = 0.01
    copy = round_trip(round_trip(scorer))  # a pending copy pickles its settings again
    assert copy.threshold == 0.01
    assert np.array_equal(copy.predict(images), scorer.predict(images))
    assert round_trip(AnomalyScorer(device="cpu")).settings()["threshold"] is None


def test_bundled_artifacts_travel_as_none_others_as_absolute_paths(bundled, tmp_path, monkeypatch):
    assert AnomalyScorer(device="cpu").settings()["artifacts"] is None
    shutil.copytree(bundled, tmp_path / "art")
    monkeypatch.chdir(tmp_path)
    scorer = AnomalyScorer("art", device="cpu")
    assert scorer.settings()["artifacts"] == str(tmp_path / "art")
    monkeypatch.chdir("/")
    assert round_trip(scorer).directory == tmp_path / "art"


def test_receiver_refuses_different_artifacts(bundled, tmp_path, images):
    shutil.copytree(bundled, tmp_path / "art")
    scorer = AnomalyScorer(tmp_path / "art", device="cpu")
    sampler = FlowSampler(tmp_path / "art", device="cpu")
    blob, blob_s = pickle.dumps(scorer), pickle.dumps(sampler)
    for name in ("threshold.json", "flow.json"):  # the same document in other bytes is the same metadata
        path = tmp_path / "art" / name
        path.write_text(path.read_text() + "\n")
    assert np.array_equal(pickle.loads(blob).score(images), scorer.score(images))
    for name in ("threshold.json", "flow.json"):  # still valid, other fields
        edit_metadata(tmp_path / "art" / name, edit=lambda m: m["training"].update(epochs=m["training"]["epochs"] + 1))
    copy = pickle.loads(blob)
    with pytest.raises(ArtifactError, match="threshold.json here differs"):
        copy.score(images)
    with pytest.raises(ArtifactError, match="flow.json here differs"):
        pickle.loads(blob_s).sample(10, seed=0)


def test_replace_and_thread_settings(images):
    scorer = AnomalyScorer(device="cpu")
    one = scorer.replace(threads=1)
    assert one.settings()["threads"] == 1 and scorer.settings()["threads"] is None
    assert np.array_equal(one.score(images), scorer.score(images))
    with pytest.raises(UsageError, match="unknown setting"):
        scorer.replace(thread=1)
    with pytest.raises(UsageError, match="threads"):
        scorer.replace(threads=0)
    with pytest.raises(UsageError, match="threads"):
        AnomalyScorer(device="cpu", threads=-2)


def test_numpy_integer_threads_are_kept_as_int(images):
    """threads=np.int64(2) is accepted as an integer and kept as a Python int: the settings stay
    JSON (a Dask worker keys its scorers by them) and the copies score as the original."""
    import json

    for obj in (AnomalyScorer(device="cpu", threads=np.int64(2)), FlowSampler(device="cpu", threads=np.int64(2)),
                AnomalyScorer(device="cpu").replace(threads=np.int64(2))):
        assert type(obj.settings()["threads"]) is int, type(obj.settings()["threads"])
        assert json.loads(json.dumps(obj.settings()))["threads"] == 2
        assert type(pickle.loads(pickle.dumps(obj)).settings()["threads"]) is int


def test_lazy_rebuild_happens_once_when_threads_race():
    copy = round_trip(AnomalyScorer(device="cpu", batch_size=64))
    barrier = threading.Barrier(4)
    results = [None] * 4

    def work(i):
        barrier.wait()
        results[i] = (copy.threshold, id(copy._session))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0][0] == AnomalyScorer(device="cpu").threshold


def test_sampler_round_trip_bit_for_bit():
    for method in ("graph", "bisection"):
        sampler = FlowSampler(device="cpu", method=method, chunk_size=4096)
        copy = round_trip(sampler)
        assert not copy.loaded
        assert copy.method == method and copy.chunk_size == 4096
        assert np.array_equal(copy.sample(20_000, seed=3), sampler.sample(20_000, seed=3))


def test_unpickled_in_another_process(tmp_path, images):
    """The receiving process resolves the bundled artifacts itself and scores bit for bit."""
    scorer = AnomalyScorer(device="cpu", batch_size=100)
    (tmp_path / "scorer.pkl").write_bytes(pickle.dumps(scorer))
    np.save(tmp_path / "x.npy", images)
    code = ("import pickle, sys, numpy as np\n"
            "s = pickle.loads(open(sys.argv[1], 'rb').read())\n"
            "np.save(sys.argv[3], s.score(np.load(sys.argv[2])))\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "scorer.pkl"), str(tmp_path / "x.npy"),
                    str(tmp_path / "s.npy")], check=True, timeout=120)
    assert np.array_equal(np.load(tmp_path / "s.npy"), scorer.score(images))


def test_copies_of_a_calibrated_scorer_keep_its_threshold_and_its_p_values(tmp_path):
    """A replace() or pickled copy of a scorer calibrated but not saved kept the new threshold and
    compared p-values with the folder's scores: a mixed state."""
    import pickle

    from aeflow.runtime import bundled_dir

    with np.load(bundled_dir() / "demo.npz") as d:
        normal, held = d["images"][~d["is_anomaly"]][:300], d["images"][900:1100]
    scorer = AnomalyScorer(device="cpu")
    scorer.calibrate(normal, k=2)
    for copy in (scorer.replace(threads=1), pickle.loads(pickle.dumps(scorer))):
        assert copy.threshold == scorer.threshold
        assert np.array_equal(copy.p_value(held), scorer.p_value(held))
    assert not np.array_equal(AnomalyScorer(device="cpu").p_value(held), scorer.p_value(held))


def test_a_calibrated_scorer_refuses_a_copy_for_the_other_graph(tmp_path):
    """replace(precision="int8") of a scorer calibrated on ae.onnx's scores gave an int8 scorer with
    ae.onnx's calibrated threshold, and save_calibration() then wrote it as ae.int8.onnx's threshold."""
    from aeflow.runtime import bundled_dir

    with np.load(bundled_dir() / "demo.npz") as d:
        normal = d["images"][~d["is_anomaly"]][:300]
    scorer = AnomalyScorer(device="cpu", golden=False)
    scorer.calibrate(normal, false_alarm_rate=0.01)
    with pytest.raises(UsageError, match="calibrate"):
        scorer.replace(precision="int8")
    assert scorer.replace(precision="fp32", threads=1).threshold == scorer.threshold
    uncalibrated = AnomalyScorer(device="cpu", golden=False).replace(precision="int8")
    assert uncalibrated.threshold == uncalibrated.default_threshold


def test_replace_artifacts_gives_a_scorer_of_that_folder(tmp_path):
    """replace(artifacts=other) kept the first folder's digest: always an ArtifactError ('differs from the one
    the AnomalyScorer was created with') on first use; a calibrated scorer's copy would carry its calibration."""
    from aeflow.runtime import bundled_dir

    other = tmp_path / "other"
    shutil.copytree(bundled_dir(), other, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    with open(other / "threshold.json", "a") as f:  # the same document, other bytes: another digest
        f.write("\n")
    images = demo_images()[:50]
    scorer = AnomalyScorer(device="cpu", golden=False)
    copy = scorer.replace(artifacts=other)
    assert copy.directory == other and np.array_equal(copy.score(images), scorer.score(images))
    assert round_trip(copy).score(images).shape == (50,)  # pins the new folder's threshold.json
    with pytest.raises(UsageError, match="not a setting one may change|unknown setting"):
        scorer.replace(digest="0" * 64)
    scorer.calibrate(images, k=3)
    with pytest.raises(UsageError, match="calibrate"):
        scorer.replace(artifacts=other)
