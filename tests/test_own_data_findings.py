"""People's own data (the review of 2026-12-07): a text file of one value a line, --column only for tables, CSV
blank lines and spaced headers, the detector on images of another size, numpy seeds, "score > threshold" decided
in float64 everywhere, the flow's train NLL of the final model, a sub-folder beside PNGs; then (the readers' attack)
text values converted one by one, CSV headers, empty rows and values, file line numbers, score's --column."""

import json
import math
import re

import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli, synthetic_digits

from aeflow.errors import DataError, InputError, UsageError
from aeflow.runtime import AnomalyScorer, demo_images


def _values(n: int = 300, seed: int = 3) -> list[float]:
    return np.random.default_rng(seed).normal(0.0, 1.0, n).tolist()


@pytest.mark.parametrize("name, sep", [("two_cols.txt", " "), ("two_cols.tsv", "\t")])
def test_a_text_file_of_two_columns_is_refused_naming_the_line(tmp_path, capfd, name, sep):
    """'x y' lines (or a header-less .tsv) were split on whitespace: the flow trained on both columns interleaved."""
    a, b = _values(), [v + 100 for v in _values(seed=4)]
    (tmp_path / name).write_text("".join(f"{x}{sep}{y}\n" for x, y in zip(a, b)))
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / name), "--epochs", "1", "-o",
                                            str(tmp_path / "run"), capfd=capfd), 1)
    assert "line 1 holds 2 values" in line and "CSV with a header line" in line and "--column" in line, line
    assert not (tmp_path / "run").exists()
    (tmp_path / "one.txt").write_text("\n".join(map(repr, a[:50])) + "\n\n" + "\n".join(map(repr, a[50:])) + "\n")
    from aeflow.train.data import read_values

    np.testing.assert_array_equal(read_values(tmp_path / "one.txt"), a)  # blank lines skipped, as before


@pytest.mark.parametrize("suffix", [".txt", ".npy"])
def test_column_is_refused_for_a_file_without_named_columns(tmp_path, capfd, suffix):
    """--column hum was ignored for .txt / .npy, yet flow.pt recorded column 'hum'."""
    path = tmp_path / f"v{suffix}"
    np.save(path, _values()) if suffix == ".npy" else path.write_text("".join(f"{v}\n" for v in _values()))
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(path), "--column", "hum", "--epochs", "1",
                                            "-o", str(tmp_path / "run"), capfd=capfd), 1)
    assert "no named columns" in line and "drop --column" in line, line
    assert not (tmp_path / "run").exists()


def test_csv_blank_lines_are_skipped_and_header_names_stripped(tmp_path):
    """A CSV ending in a blank line was refused ('line 302 has 0 fields'); header 'a, b' had no column 'b'."""
    from aeflow.train.data import read_values

    a, b = _values(), _values(seed=4)
    (tmp_path / "end.csv").write_text("a\n" + "".join(f"{x!r}\n" for x in a) + "\n  \n")
    np.testing.assert_array_equal(read_values(tmp_path / "end.csv"), a)
    (tmp_path / "spaced.csv").write_text("a, b\n\n" + "".join(f"{x!r}, {y!r}\n" for x, y in zip(a, b)))
    np.testing.assert_array_equal(read_values(tmp_path / "spaced.csv", "b"), b)
    (tmp_path / "short.csv").write_text("a, b\n1, 2\n\n3\n")  # the line number counts the blank line
    with pytest.raises(DataError, match="line 4 has 1 fields, the header 2"):
        read_values(tmp_path / "short.csv", "b")


def test_sample_count_shows_what_was_given():
    from aeflow.checks import check_count

    with pytest.raises(UsageError, match=r"got '3'$"):
        check_count("3")


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("torch")
    from aeflow.train.api import AutoencoderDetector

    return AutoencoderDetector(epochs=1, batch_size=40, seed=0).fit(synthetic_digits(120, 0))


def test_detector_reads_what_the_scorer_reads_and_refuses_the_rest_alike(detector, bundled):
    """32x32 or 4x196 images raised a bare torch RuntimeError; [N, 784] was refused with a hint naming an
    image_shape=(H, W) that decision_function does not take. The bundled scorer (28x28 too) is the reference."""
    scorer, x = AnomalyScorer(bundled, device="cpu"), synthetic_digits(4, 1)
    np.testing.assert_array_equal(detector.decision_function(x.reshape(4, 784)), detector.decision_function(x))
    np.testing.assert_array_equal(detector.predict(x[:, None]), detector.predict(x))
    for bad in (np.zeros((2, 32, 32), np.uint8), x[:2].reshape(2, 4, 196), x[0], x.reshape(-1)):
        with pytest.raises(InputError) as want:
            scorer.score(bad)
        for call in (detector.decision_function, detector.predict):
            with pytest.raises(InputError) as got:
                call(bad)
            assert str(got.value) == str(want.value) and "image_shape" not in str(got.value)
    with pytest.raises(InputError, match=r"shape \(4, 784\) does not say the image size"):
        type(detector)(epochs=1).fit(x.reshape(4, 784))  # fit takes the size from the images: none given here


@pytest.mark.parametrize("cls", ["AutoencoderDetector", "FlowModel"])
def test_a_numpy_integer_seed_trains_and_exports(tmp_path, cls):
    """seed=np.uint64(3) passed the check, then torch.Generator().manual_seed raised TypeError."""
    torch = pytest.importorskip("torch")
    from aeflow.train import api

    data = synthetic_digits(60, 0) if cls == "AutoencoderDetector" else _values()
    model = getattr(api, cls)(epochs=1, seed=np.uint64(3)).fit(data)
    assert type(model.config.seed) is int and model.config.seed == 3
    reference = getattr(api, cls)(epochs=1, seed=3).fit(data)
    for k, v in reference.model_.state_dict().items():
        assert torch.equal(model.model_.state_dict()[k], v), k
    model.export(tmp_path)  # the checkpoint holds plain ints, loaded with weights_only=True


def _just_below(score) -> float:
    """A float64 threshold strictly below the float32 ``score`` that float32 rounds up to it."""
    t = float(np.nextafter(np.float64(score), 0.0))
    assert t < float(score) and np.float32(t) == np.float32(score)
    return t


def test_a_float32_score_just_above_a_float64_threshold_is_flagged_by_scorer_and_cli(bundled, tmp_path, capfd):
    """NumPy 2 compared float32 scores with the threshold rounded to float32: a score above it was 'normal'."""
    scorer, x = AnomalyScorer(bundled, device="cpu"), demo_images()[:3]
    s = scorer.score(x)
    scorer.threshold = t = _just_below(s[2])
    assert scorer.predict(x).tolist() == (s.astype(np.float64) > t).tolist() == [s[0] > s[2], s[1] > s[2], True]
    np.save(tmp_path / "x.npy", x)
    proc = invoke_cli("score", str(tmp_path / "x.npy"), "--artifacts", str(bundled), "--device", "cpu",
                      "--threshold", repr(t), "--json", "--maps", str(tmp_path / "maps"), capfd=capfd)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["threshold"] == t and [r["predicted_anomaly"] for r in doc["images"]] == scorer.predict(x).tolist()
    assert doc["total"]["flagged"] == doc["maps_written"] == len(list((tmp_path / "maps").iterdir())) == sum(
        scorer.predict(x))


def test_calibrates_count_agrees_with_predict_at_a_threshold_between_float32_steps(bundled):
    """calibrate counted 'flagged' in float64, predict in float32: a k that puts the threshold just below a
    score (in float64) but on it in float32 made them disagree."""
    scorer, x = AnomalyScorer(bundled, device="cpu"), demo_images()[:200]
    s = scorer.score(x).astype(np.float64)
    mean, std, top = s.mean(), s.std(ddof=1), np.sort(s)[-5]
    for d in (1e-8, 2e-8, 3e-8):  # mean + k std a hair below the 5th highest score, which float32 rounds up to it
        k = (top * (1 - d) - mean) / std
        if mean + k * std < top and np.float32(mean + k * std) == np.float32(top):
            break
    cal = scorer.calibrate(x, k=k)
    assert cal < top and np.float32(cal) == np.float32(top)
    assert scorer.calibration["flagged"] == int(scorer.predict(x).sum()) == int((s > cal).sum()) == 5


def test_detector_predict_and_labels_decide_in_float64(detector):
    x = synthetic_digits(3, 2)
    scores = detector.decision_function(x)
    detector_threshold = detector.threshold_
    try:
        detector.threshold_ = _just_below(scores[0])
        assert detector.predict(x)[0] == 1
    finally:
        detector.threshold_ = detector_threshold


def test_dask_path_flags_a_score_just_above_the_threshold(bundled, tmp_path):
    """The Dask path flags on the client through the same decision (counts and written rows)."""
    pytest.importorskip("distributed")
    pq = pytest.importorskip("pyarrow.parquet")
    from aeflow.distributed import connect, score_on_cluster

    scorer, x = AnomalyScorer(bundled, device="cpu"), demo_images()[:3]
    np.save(tmp_path / "x.npy", x)
    scorer.threshold = _just_below(scorer.score(x)[2])
    with connect("local:1") as client:
        run = score_on_cluster(client, [tmp_path / "x.npy"], tmp_path / "s.parquet", scorer)
    rows = pq.read_table(tmp_path / "s.parquet").column("predicted_anomaly").to_pylist()
    assert rows == scorer.predict(x).tolist() and rows[2] and run.shards[0].flagged == sum(rows)


def test_flow_train_nll_is_the_final_models_on_the_training_values():
    """nll_['train'] was the mean of the last epoch's batch means (2.438 where the final model's is 2.471)."""
    pytest.importorskip("torch")
    from aeflow.datasets import split_indices
    from aeflow.train.api import FlowModel
    from aeflow.train.flow import HELD_OUT

    v = np.array(_values(200, 0)) * 3 + 10
    flow = FlowModel(epochs=30).fit(v)
    train_idx, test_idx = split_indices(v.size, 0, HELD_OUT)
    c = {k: np.array(val, np.float64) for k, val in flow.model_.components().items()}
    for name, idx in (("train", train_idx), ("test", test_idx)):
        x = v[idx].astype(np.float32).astype(np.float64)  # float64 from the components, PyTorch not involved
        t = (x[:, None] - c["mu"]) / c["sigma"]
        z = (c["weight"] * 0.5 * np.vectorize(math.erf)(t / math.sqrt(2))).sum(axis=1)
        dz_dx = (c["weight"] / c["sigma"] * np.exp(-0.5 * t * t)).sum(axis=1) / math.sqrt(2 * math.pi)
        nll = -np.mean(-0.5 * z * z - 0.5 * math.log(2 * math.pi) + np.log(dz_dx))
        assert flow.nll_[name] == pytest.approx(nll, rel=1e-5), name
    assert len(flow.history_["train_nll"]) == len(flow.history_["test_nll"]) == 30


def test_a_sub_folder_beside_pngs_is_refused_hidden_entries_skipped(tmp_path, capfd):
    """Its PNGs were skipped silently (a .txt beside the PNGs was refused)."""
    from pngdata import encode_png

    x = synthetic_digits(5, 0)
    (tmp_path / "pngs" / "more").mkdir(parents=True)
    (tmp_path / "pngs" / ".cache").mkdir()
    for i, im in enumerate(x):
        (tmp_path / "pngs" / ("more" if i > 2 else "") / f"{i}.png").write_bytes(encode_png(im, ["none"]))
    line = assert_one_line_error(invoke_cli("score", str(tmp_path / "pngs"), "--device", "cpu", capfd=capfd), 1)
    assert "(more is a sub-folder); move it out or pass the PNG files" in line, line
    (tmp_path / "pngs" / "more").rename(tmp_path / "pngs" / ".more")  # hidden: skipped, as before
    proc = invoke_cli("score", str(tmp_path / "pngs"), "--device", "cpu", "--json", capfd=capfd)
    assert proc.returncode == 0 and json.loads(proc.stdout)["total"]["images"] == 3, proc.stderr
    (tmp_path / "pngs" / "sub").mkdir()
    from aeflow.train.data import read_images

    with pytest.raises(InputError, match=r"\(sub is a sub-folder\)"):  # training reads folders through the same listing
        read_images([tmp_path / "pngs"])


def _rows(values, fmt="{!r}\n") -> str:
    return "".join(fmt.format(v) for v in values)


def test_text_values_are_converted_one_by_one_not_padded_to_the_longest_line(tmp_path):
    """np.asarray(list of str) made every row as wide as the longest line: one 10,000-digit value among 3M lines
    asked for 112 GiB (a MemoryError traceback). Here 2,000 values and a 20,000-digit one: 160 MB before."""
    import tracemalloc

    from aeflow.train.data import read_values

    values = _values(2000)
    (tmp_path / "v.txt").write_text(_rows(values) + "0." + "1" * 20_000 + "\n")
    tracemalloc.start()
    try:
        got = read_values(tmp_path / "v.txt")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, values + [1 / 9])  # 0.111...: 1/9 to 20,000 digits, the same float64
    assert peak < 20e6, peak


@pytest.mark.parametrize("bad, words", [
    ("1\x00", r"v.txt: line 4 holds '1\x00', not a number; fix or drop it"),  # numpy's str dropped the NUL: 1.0
    ("1e400", "v.txt: line 4 holds 1e400, beyond float64's range; rescale the values to at most 1e+30"),
    ("-1E+999", "v.txt: line 4 holds -1E+999, beyond float64's range"),
    ("-Infinity", "v.txt: 1 values are NaN or infinite (first at line 4); drop them"),
    ("1,5", "v.txt: line 4 holds '1,5', not a number"),  # it said 'not a list of numbers (...)', no line
])
def test_a_value_that_is_not_a_float64_names_its_line(tmp_path, bad, words):
    from aeflow.train.data import read_values

    (tmp_path / "v.txt").write_text(f"1\n\n2\n{bad}\n" + _rows(_values(30)))
    with pytest.raises(DataError) as e:
        read_values(tmp_path / "v.txt")
    assert words in str(e.value), str(e.value)


def test_csv_first_line_is_numbers_only_when_all_are_and_empty_names_may_repeat(tmp_path):
    """A header naming a column 2024, NaN or Infinity was refused as 'the first line holds numbers'; Excel's
    'temperature,,' as 'column names repeat ()' even with --column temperature."""
    from aeflow.train.data import read_values

    a, b = _values(50), _values(50, seed=4)
    cases = {"years.csv": ("sensor,2023,2024\n" + "".join(f"s{i},{x!r},{y!r}\n" for i, (x, y) in enumerate(zip(a, b))),
                           "2024", b),
             "nan.csv": ("id,NaN\n" + "".join(f"{i},{x!r}\n" for i, x in enumerate(a)), "NaN", a),
             "inf.csv": ("Infinity\n" + _rows(a), None, a),
             "commas.csv": ("temperature,,\n" + _rows(a, "{!r},,\n"), "temperature", a),
             "names.csv": (",t,,u,t\n" + "".join(f",1,,{x!r},2\n" for x in a), "u", a)}
    for name, (text, column, want) in cases.items():
        (tmp_path / name).write_text(text)
        np.testing.assert_array_equal(read_values(tmp_path / name, column), want, err_msg=name)
    for text, column, words in (("1.5,nan\n" + _rows(a, "{!r},1\n"), None, "the first line holds numbers (1.5, nan)"),
                                ("t,,t\n" + _rows(a, "{!r},,1\n"), "t", "column names repeat (t)"),
                                ("t,,\n" + _rows(a, "{!r},,\n"), None, "3 columns (t, , ); pick one with --column")):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(DataError, match=re.escape(words)):
            read_values(tmp_path / "bad.csv", column)


def test_csv_rows_of_empty_fields_are_skipped_and_an_empty_value_names_its_line(tmp_path, capfd):
    """Excel's trailing ',,' rows were refused without a line number; a one-column CSV's "" was dropped (49 of 50
    values trained on) while a two-column CSV's was refused without a line number."""
    from aeflow.train.data import read_values

    a = _values(50)
    (tmp_path / "excel.csv").write_text("id,temperature,note\r\n" + "".join(f"{i},{x!r},ok\r\n" for i, x in
                                                                           enumerate(a)) + ",,\r\n , ,\r\n,,\r\n")
    np.testing.assert_array_equal(read_values(tmp_path / "excel.csv", "temperature"), a)
    for name, head, row in (("one.csv", "temperature\n", '""\n'), ("two.csv", "id,temperature\n", '30,""\n'),
                            ("bare.csv", "id,temperature\n", "30, \n")):
        fmt = "{!r}\n" if name == "one.csv" else "1,{!r}\n"
        (tmp_path / name).write_text(head + _rows(a[:30], fmt) + row + _rows(a[31:], fmt))
        with pytest.raises(DataError, match=re.escape(f"{name}: line 32: no value in column 'temperature'; fill it "
                                                      f"in or drop the row")):
            read_values(tmp_path / name, None if name == "one.csv" else "temperature")
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / "one.csv"), "--epochs", "1",
                                            "-o", str(tmp_path / "run"), capfd=capfd), 1)
    assert "line 32: no value in column 'temperature'" in line and not (tmp_path / "run").exists()


def test_nan_in_a_file_names_its_line_in_an_array_its_row(tmp_path):
    """'first at row 2' (0-based, blank lines and the header not counted) for a NaN on line 6 of a text file."""
    from aeflow.train.data import checked_values, read_values

    (tmp_path / "v.txt").write_text("1\n\n\n2\n\nnan\n" + _rows(range(3, 40)))
    (tmp_path / "v.csv").write_text("v\n1\nnan\n" + _rows(range(3, 40)))
    for name, line in (("v.txt", 6), ("v.csv", 3)):
        with pytest.raises(DataError, match=re.escape(f"1 values are NaN or infinite (first at line {line})")):
            read_values(tmp_path / name)
    with pytest.raises(DataError, match=re.escape("values: 1 values are NaN or infinite (first at row 2)")):
        checked_values(np.r_[1.0, 2.0, np.nan, np.arange(3.0, 40.0)], "values")  # FlowModel().fit's check


def test_text_values_read_as_python_float_reads_them_and_csv_limits_are_one_line(tmp_path):
    """1_000 and full-width digits are numbers to Python's float() (documented: kept); a CSV field over the csv
    module's 131,072 characters raised csv.Error (a traceback)."""
    from aeflow.train.data import read_values

    (tmp_path / "v.txt").write_text("1_000\n\uff11\uff12\n" + _rows(_values(30)))
    np.testing.assert_array_equal(read_values(tmp_path / "v.txt")[:2], [1000.0, 12.0])
    (tmp_path / "v.csv").write_text("v\n" + "1" * 200_000 + "\n" + _rows(_values(30)))
    with pytest.raises(DataError, match="v.csv: not a list of numbers .*field larger than field limit"):
        read_values(tmp_path / "v.csv")


@pytest.mark.parametrize("extra", [[], ["--scheduler", "local:1"]])
def test_score_refuses_column_when_no_input_is_parquet(bundled, tmp_path, capfd, extra):
    """--column was ignored for .npy inputs (exit 0), on the Dask path too."""
    np.save(tmp_path / "x.npy", demo_images()[:3])
    out = tmp_path / ("s.parquet" if extra else "s.csv")
    for inputs in ([str(tmp_path / "x.npy")], []):
        if extra and not inputs:
            continue  # --scheduler needs INPUT files: its own line
        line = assert_one_line_error(invoke_cli("score", *inputs, "--column", "no_such_column", "-o", str(out),
                                                *extra, capfd=capfd), 2)
        assert "--column picks the image column of Parquet inputs, and no INPUT is a Parquet file" in line, line
        assert not out.exists()


def test_score_takes_column_for_parquet_found_by_its_magic_bytes(bundled, tmp_path, capfd):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x = demo_images()[:3]
    pq.write_table(pa.table({"pixels": [im.tobytes() for im in x]}), tmp_path / "shard")  # no .parquet suffix
    np.save(tmp_path / "x.npy", x)
    proc = invoke_cli("score", str(tmp_path / "x.npy"), str(tmp_path / "shard"), "--column", "pixels", "--device",
                      "cpu", "--json", capfd=capfd)
    assert proc.returncode == 0 and json.loads(proc.stdout)["total"]["images"] == 6, proc.stderr
