"""Anomaly maps (against the graph's scores and a float64 reference), the normalised score,
per-image rows on stdout (CSV and JSON lines), the few-images table and ``score --maps``."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from aeflow import metrics
from aeflow.cli import cli
from aeflow.runtime.outputs import COLUMNS
from aeflow.runtime.scorer import AnomalyScorer


@pytest.fixture(scope="module")
def demo(bundled):
    with np.load(bundled / "demo.npz") as d:
        return d["images"], d["is_anomaly"]


@pytest.fixture(scope="module")
def scorer():
    return AnomalyScorer(device="cpu", batch_size=256)


def score(*args: str):
    return CliRunner().invoke(cli, ["score", "--device", "cpu", *args])


# ---------------------------------------------------------------- anomaly maps


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_anomaly_map_averages_to_the_graphs_score(demo, precision):
    images, _ = demo
    s = AnomalyScorer(device="cpu", batch_size=300, precision=precision)
    maps = s.anomaly_map(images)
    assert maps.shape == (2000, 28, 28) and maps.dtype == np.float32 and maps.min() >= 0
    # the graph's own score output, from the same batches (int8 scores depend on the batch)
    np.testing.assert_allclose(maps.reshape(2000, -1).mean(axis=1, dtype=np.float64), s.score(images),
                               rtol=2e-6, atol=1e-9)


def test_anomaly_map_matches_a_float64_reference(demo, scorer, bundled):
    """(x - AE(x))^2 with the autoencoder evaluated in float64 numpy from ae.onnx's weights (the
    graph's parity with PyTorch is tested by export and test_bundled_artifacts)."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    w = {i.name.removeprefix("autoencoder."): numpy_helper.to_array(i).astype(np.float64)
         for i in onnx.load(str(bundled / "ae.onnx")).graph.initializer if i.name.startswith("autoencoder.")}
    images, _ = demo
    x = images[::10].reshape(-1, 784).astype(np.float64) / 255.0
    h = x
    for layer in ("encoder.fc1", "encoder.fc2", "encoder.fc3", "decoder.fc1", "decoder.fc2"):
        h = np.maximum(h @ w[f"{layer}.weight"].T + w[f"{layer}.bias"], 0)
    rec = 1 / (1 + np.exp(-(h @ w["decoder.fc3.weight"].T + w["decoder.fc3.bias"])))
    ref = ((x - rec) ** 2).reshape(-1, 28, 28)
    maps = scorer.anomaly_map(images[::10])
    assert np.abs(maps - ref).max() <= 2e-5
    np.testing.assert_allclose(maps.reshape(len(ref), -1).mean(1), ref.reshape(len(ref), -1).mean(1), rtol=1e-4)


def test_on_reconstruction_sees_the_images_reconstructions_and_scores_of_each_batch(demo, scorer):
    images, _ = demo
    seen = []

    def keep(offset, x, rec, s):
        assert x.shape == rec.shape == (len(s), 28, 28) and x.dtype == rec.dtype == np.float32
        seen.append((offset, np.square(x - rec).reshape(len(s), -1).mean(1), s.copy(), rec.copy()))

    from aeflow.runtime.inputs import ArraySource

    scores = scorer.score_source(ArraySource(images[:700]), on_reconstruction=keep)
    assert [o for o, *_ in seen] == [0, 256, 512]
    np.testing.assert_array_equal(np.concatenate([s for _, _, s, _ in seen]), scores)
    np.testing.assert_allclose(np.concatenate([m for _, m, _, _ in seen]), scores, rtol=2e-6, atol=1e-9)
    np.testing.assert_array_equal(np.concatenate([r for *_, r in seen]), scorer.reconstruct(images[:700])[:, 0])


# ---------------------------------------------------------------- the normalised score


def test_normalized_score_puts_the_threshold_at_one_half(demo, scorer):
    images, _ = demo
    s, t = scorer.score(images), scorer.threshold
    z = scorer.normalized_score(images)
    assert z.dtype == np.float32 and z.min() >= 0 and z.max() <= 1
    np.testing.assert_allclose(z, np.clip(s.astype(np.float64) / (2 * t), 0, 1), rtol=1e-7)
    np.testing.assert_array_equal(z > 0.5, scorer.predict(images))  # no score within rounding of t here
    assert metrics.normalized_scores(np.array([0.0, t, 2 * t, 10 * t]), t).tolist() == [0.0, 0.5, 1.0, 1.0]
    order = np.argsort(s)
    assert np.all(np.diff(z[order]) >= 0)  # monotone in the score
    scorer.threshold = 0.05
    try:
        np.testing.assert_allclose(scorer.normalized_score(images[:5]), np.minimum(s[:5] / 0.1, 1), rtol=1e-6)
    finally:
        scorer.threshold = scorer.default_threshold
    assert metrics.normalized_scores(np.array([0.0, 0.1]), 0.0).tolist() == [0.5, 1.0]


def test_normalized_score_of_extreme_thresholds_is_a_number_without_a_warning():
    """--threshold 5e-324 (a finite number >= 0, accepted) printed numpy's two-line overflow warning into the CSV:
    score / (2 * t) is beyond float64, so the score reads 1 (0 and a score of 0 read 0; a huge threshold reads 0)."""
    import warnings

    s = np.array([0.0, 1e-30, 0.002])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.normalized_scores(s, 5e-324).tolist() == [0.0, 1.0, 1.0]
        assert metrics.normalized_scores(s, 1e-310).tolist() == [0.0, 1.0, 1.0]
        assert metrics.normalized_scores(np.array([5e-324]), 5e-324).tolist() == [0.5]
        assert metrics.normalized_scores(s, float(np.finfo(np.float64).max)).tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- rows on stdout, the few-images table


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, demo):
    images, labels = demo
    d = tmp_path_factory.mktemp("few")
    pick = np.r_[0:6, 1000:6 + 1000]
    np.savez(d / "labelled.npz", images=images[pick], is_anomaly=labels[pick])
    np.save(d / "plain.npy", images[990:1010])
    return d / "labelled.npz", d / "plain.npy", images[pick], labels[pick], images[990:1010]


def test_dash_output_writes_csv_rows_to_stdout(inputs, scorer):
    npz, npy, x, labels, y = inputs
    r = score(str(npz), str(npy), "-o", "-")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 32
    s = np.r_[scorer.score(x), scorer.score(y)]
    np.testing.assert_array_equal(np.array([float(row["score"]) for row in rows], np.float32), s)
    flags = ["true" if v > scorer.threshold else "false" for v in s.tolist()]  # in float64
    assert [row["predicted_anomaly"] for row in rows] == flags
    assert [row["label_anomaly"] for row in rows] == ["true" if v else "false" for v in labels] + [""] * 20
    assert [row["source"] for row in rows] == [str(npz)] * 12 + [str(npy)] * 20
    assert [int(row["index"]) for row in rows] == list(range(12)) + list(range(20))
    assert "threshold" in r.stderr and "total" in r.stderr  # the summary goes to stderr


@pytest.mark.parametrize("form", ["csv", "json"])
def test_rows_read_back_decide_as_predicted_when_a_score_ties_the_threshold(inputs, scorer, form):
    """The threshold is one image's float32 score (as calibrate --false-alarm-rate makes it): the score written
    to 9 digits rounded above it, and a reader deciding score > threshold again disagreed with the row's flag."""
    _, npy, _, _, y = inputs
    s = scorer.score(y)
    tie = next(v for v in s.tolist() if float(f"{v:.9g}") != v)  # one whose 9-digit text is not the float64
    r = score(str(npy), "--threshold", repr(tie), "-o", "-", *(["--json"] if form == "json" else []))
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout))) if form == "csv" else \
        [json.loads(line) for line in r.stdout.splitlines()]
    written = np.array([float(row["score"]) for row in rows])
    flags = [row["predicted_anomaly"] in (True, "true") for row in rows]
    assert (written > tie).tolist() == flags == (s.astype(np.float64) > tie).tolist()
    np.testing.assert_array_equal(written, s.astype(np.float64))  # exact


def test_dash_output_writes_json_lines_with_json(inputs, scorer):
    npz, npy, x, labels, y = inputs
    r = score(str(npz), str(npy), "-o", "-", "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 32 and all(tuple(row) == COLUMNS for row in rows)
    assert [row["label_anomaly"] for row in rows] == labels.tolist() + [None] * 20
    s = np.r_[scorer.score(x), scorer.score(y)]
    np.testing.assert_array_equal(np.array([row["score"] for row in rows], np.float32), s)
    assert [row["predicted_anomaly"] for row in rows] == (s.astype(np.float64) > scorer.threshold).tolist()
    np.testing.assert_allclose([row["normalized_score"] for row in rows], np.minimum(s / (2 * scorer.threshold), 1),
                               atol=5e-5)
    assert r.stderr == ""


def test_few_images_are_listed_one_per_line(inputs, scorer):
    npz, npy, x, labels, _ = inputs
    r = score(str(npz))
    assert r.exit_code == 0, r.output
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.startswith(str(npz)) and len(ln.split()) == 7]
    s = scorer.score(x)
    assert [int(ln[1]) for ln in lines] == list(range(12))
    assert [ln[2] for ln in lines] == [f"{v:.6f}" for v in s.tolist()]
    assert [ln[4] for ln in lines] == [f"{v:.4f}" for v in scorer.p_values_of(s)]
    assert [ln[5] for ln in lines] == ["anomaly" if v > scorer.threshold else "normal" for v in s.tolist()]
    assert [ln[6] for ln in lines] == ["anomaly" if v else "normal" for v in labels]
    many = score(str(npz), str(npy))  # 32 images: the summary only
    assert many.exit_code == 0 and "normalised" not in many.stdout


# ---------------------------------------------------------------- score --maps


def test_maps_for_the_flagged_images_only_or_all(inputs, scorer, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    npz, npy, x, labels, _ = inputs
    flagged = np.flatnonzero(scorer.predict(x))
    assert 0 < len(flagged) < len(x)
    r = score(str(npz), "--maps", str(tmp_path / "maps"), "-q")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert names == [f"labelled_{i:06d}.png" for i in flagged]
    with Image.open(tmp_path / "maps" / names[0]) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.width > 3 * 28 * 8
    r = score(str(npz), str(npy), "--maps", str(tmp_path / "all"), "--maps-all", "-q")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "all").iterdir())) == 32
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_maps_refuses_a_non_empty_folder_and_maps_all_alone(inputs, tmp_path):
    npz = inputs[0]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("x")
    r = score(str(npz), "--maps", str(tmp_path / "m"))
    assert r.exit_code == 1 and "not empty" in r.stderr and "--force" in r.stderr
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["keep.txt"]
    r = score(str(npz), "--maps", str(tmp_path / "m"), "--force", "-q")
    assert r.exit_code == 0 and len(list((tmp_path / "m").iterdir())) > 1
    r = score(str(npz), "--maps-all")
    assert r.exit_code == 2 and "--maps" in r.stderr


def test_shared_stems_get_the_inputs_position(inputs, tmp_path):
    npz = inputs[0]
    (tmp_path / "b").mkdir()
    other = tmp_path / "b" / "labelled.npz"
    other.write_bytes(npz.read_bytes())
    r = score(str(npz), str(other), "--maps", str(tmp_path / "m"), "--maps-all", "-q")
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert len(names) == 24 and "1-labelled_000000.png" in names and "2-labelled_000011.png" in names


def test_png_folder_maps_named_after_each_png(inputs, tmp_path):
    """A PNG folder's pictures take each PNG's own stem; two folders with the same names get positions;
    a PNG name too long for the file system is refused before any work."""
    pytest.importorskip("PIL.Image")
    from PIL import Image

    x = inputs[2]
    for folder, stems in (("a", ["3_007", "0_001"]), ("b", ["3_007"])):
        (tmp_path / folder).mkdir()
        for stem, im in zip(stems, x):
            Image.fromarray(im).save(tmp_path / folder / f"{stem}.png")
    r = score(str(tmp_path / "a"), str(inputs[1]), "--maps", str(tmp_path / "m"), "--maps-all", "-q")
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"3_007_map.png", "0_001_map.png", "plain_000000.png", "plain_000019.png"} <= names and len(names) == 22
    r = score(str(tmp_path / "a"), str(tmp_path / "b"), "--maps", str(tmp_path / "m2"), "--maps-all", "-q")
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "m2").iterdir()} == {"1-3_007_map.png", "1-0_001_map.png", "2-3_007_map.png"}
    Image.fromarray(x[0]).save(tmp_path / "b" / ("z" * 250 + ".png"))
    r = score(str(tmp_path / "b"), "--maps", str(tmp_path / "m3"), "--maps-all", "-q")
    assert r.exit_code == 1 and "--maps" in r.stderr and "longer than the file system allows" in r.stderr
    assert not (tmp_path / "m3").exists()
    (tmp_path / "c").mkdir()  # two PNG names that clean to one stem: the folder's STEM_INDEX names
    for stem, im in zip(["a b", "a_b"], x):
        Image.fromarray(im).save(tmp_path / "c" / f"{stem}.png")
    r = score(str(tmp_path / "c"), "--maps", str(tmp_path / "m4"), "--maps-all", "-q")
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "m4").iterdir()} == {"c_000000.png", "c_000001.png"}
