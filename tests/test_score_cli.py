"""``aeflow score``: the demo summary, output files, --force, errors, Ctrl-C and a torch-free run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import assert_one_line_error, copy_artifacts, edit_metadata, invoke_cli, run_cli, write_idx

from aeflow.cli import cli
from aeflow.runtime.outputs import COLUMNS
from aeflow.runtime.scorer import AnomalyScorer


def score(*args: str):
    return CliRunner().invoke(cli, ["score", *args])


@pytest.fixture(scope="module")
def demo_scores(bundled):
    with np.load(bundled / "demo.npz") as d:
        images, labels = d["images"], d["is_anomaly"]
    sc = AnomalyScorer(device="cpu")
    return sc.score(images), labels, sc.threshold


def test_demo_default_prints_type_errors_and_provider(demo_scores):
    r = score("--device", "cpu")
    assert r.exit_code == 0, r.output
    scores, labels, t = demo_scores
    out = r.stdout
    assert "CPUExecutionProvider" in out and "demo.npz" in out and "total" in out and "images/s" in out
    type_i = f"{np.mean(scores[~labels] > t):.2%}"
    type_ii = f"{np.mean(scores[labels] <= t):.2%}"
    assert "type I" in out and "type II" in out and type_i in out and type_ii in out


def test_json_summary(demo_scores):
    r = score("--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    scores, labels, t = demo_scores
    assert doc["provider"] == "CPUExecutionProvider" and doc["threshold"] == t
    (inp,) = doc["inputs"]
    assert inp["images"] == 2000 and inp["flagged"] == int((scores > t).sum())
    assert inp["type_i"]["rate"] == pytest.approx(np.mean(scores[~labels] > t))
    assert inp["type_ii"]["rate"] == pytest.approx(np.mean(scores[labels] <= t))
    assert doc["total"]["images"] == 2000 and doc["total"]["images_per_s"] > 0


@pytest.mark.parametrize("ext", [".csv", ".json", ".npy"])
def test_outputs_are_readable(tmp_path, demo_scores, ext):
    out = tmp_path / f"scores{ext}"
    r = score("--device", "cpu", "-o", str(out), "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    scores, labels, t = demo_scores
    if ext == ".csv":
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        assert tuple(rows[0]) == COLUMNS
        got = np.array([float(row["score"]) for row in rows], dtype=np.float32)
        normalized = np.array([float(row["normalized_score"]) for row in rows])
        p = np.array([float(row["p_value"]) for row in rows])
        flags = np.array([row["predicted_anomaly"] == "true" for row in rows])
        got_labels = np.array([row["label_anomaly"] == "true" for row in rows])
        assert {row["label_anomaly"] for row in rows} == {"true", "false"}
        index, source = [int(row["index"]) for row in rows], {row["source"] for row in rows}
    elif ext == ".json":
        doc = json.loads(out.read_text())
        assert doc["threshold"] == t and doc["provider"] == "CPUExecutionProvider"
        got = np.array([row["score"] for row in doc["rows"]], dtype=np.float32)
        normalized = np.array([row["normalized_score"] for row in doc["rows"]])
        p = np.array([row["p_value"] for row in doc["rows"]])
        flags = np.array([row["predicted_anomaly"] for row in doc["rows"]])
        got_labels = np.array([row["label_anomaly"] for row in doc["rows"]])
        index, source = [row["index"] for row in doc["rows"]], {row["source"] for row in doc["rows"]}
    else:
        arr = np.load(out)
        assert arr.dtype.names == COLUMNS
        got, flags, index, source = arr["score"], arr["predicted_anomaly"], arr["index"].tolist(), set(arr["source"].tolist())
        normalized, got_labels, p = arr["normalized_score"], arr["label_anomaly"], arr["p_value"]
        assert got_labels.dtype == np.int8 and set(got_labels.tolist()) == {0, 1}
    np.testing.assert_array_equal(got, scores)
    np.testing.assert_array_equal(flags, scores > t)
    np.testing.assert_array_equal(got_labels.astype(bool), labels)  # the label apart from the prediction
    assert np.any(flags != labels)
    np.testing.assert_allclose(normalized, np.minimum(scores.astype(np.float64) / (2 * t), 1), atol=5e-5)
    np.testing.assert_allclose(p, AnomalyScorer(device="cpu").p_values_of(scores), rtol=1e-8 if ext == ".csv" else 0)
    assert index == list(range(2000)) and source == {"demo.npz"}
    assert [f.name for f in tmp_path.iterdir()] == [out.name]


def test_p_value_unknown_for_an_export_without_validation_scores(tmp_path, bundled):
    """An older export (no validation scores): the column is empty (CSV), null (JSON, Parquet), NaN (NPY)."""
    run = copy_artifacts(bundled, tmp_path / "old")
    edit_metadata(run / "threshold.json", lambda meta: meta.pop("validation_scores"))
    for ext in (".csv", ".json", ".npy"):
        r = score("--artifacts", str(run), "--device", "cpu", "-o", str(tmp_path / f"s{ext}"), "-q")
        assert r.exit_code == 0, r.output
    with open(tmp_path / "s.csv", newline="") as f:
        assert {row["p_value"] for row in csv.DictReader(f)} == {""}
    assert {row["p_value"] for row in json.loads((tmp_path / "s.json").read_text())["rows"]} == {None}
    assert np.isnan(np.load(tmp_path / "s.npy")["p_value"]).all()


def test_force_needed_to_overwrite(tmp_path):
    out = tmp_path / "s.csv"
    out.write_text("keep me")
    r = score("-o", str(out))
    assert r.exit_code == 1 and "--force" in r.stderr
    assert out.read_text() == "keep me"
    r = score("-o", str(out), "--force", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("index,score,normalized_score,p_value,predicted_anomaly,label_anomaly,source\n")
    assert f"wrote {out}" in r.stdout


def test_several_inputs_and_threshold_override(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "a.npy", x[:10])
    write_idx(tmp_path / "b.gz", x[10:])
    r = score(str(tmp_path / "a.npy"), str(tmp_path / "b.gz"), "--threshold", "0", "--json", "--batch-size", "8")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [i["name"] for i in doc["inputs"]] == [str(tmp_path / "a.npy"), str(tmp_path / "b.gz")]
    assert [i["images"] for i in doc["inputs"]] == [10, 20] and doc["total"]["flagged"] == 30
    assert doc["threshold"] == 0 and doc["threshold_source"] == "--threshold"
    assert doc["inputs"][0]["type_i"] is None
    table = score(str(tmp_path / "a.npy"), str(tmp_path / "b.gz")).stdout
    assert "a.npy" in table and "b.gz" in table and "total" in table


def make_nan_npy(tmp_path):
    x = np.full((5, 28, 28), 0.5, dtype=np.float32)
    x[3, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    return tmp_path / "nan.npy"


@pytest.mark.parametrize("case, code, words", [
    ("missing input", 1, "no such file"),
    ("nan input", 1, "image 3"),
    ("truncated gz", 1, "truncated"),
    ("bad extension", 2, "unknown format"),
    ("missing folder", 1, "does not exist"),
    ("nan threshold", 2, "--threshold"),
    ("negative threshold", 2, "--threshold"),
    ("zero batch", 2, "batch-size"),
    ("bad device", 2, "device"),
    ("no int8", 1, "no int8 graph"),
])
def test_errors_are_one_line_and_leave_no_file(tmp_path, bundled, case, code, words, capfd):
    """In this process (the same failures in a new one: test_errors_table's subset)."""
    out = tmp_path / "out" / "s.csv"
    out.parent.mkdir()
    args = ["-o", str(out)]
    if case == "missing input":
        args += [str(tmp_path / "nope.npy")]
    elif case == "nan input":
        args += [str(make_nan_npy(tmp_path))]
    elif case == "truncated gz":
        x = np.zeros((3000, 28, 28), np.uint8)
        write_idx(tmp_path / "t.gz", x)
        data = (tmp_path / "t.gz").read_bytes()
        (tmp_path / "t.gz").write_bytes(data[:len(data) // 2])
        args += [str(tmp_path / "t.gz"), "--batch-size", "512"]
    elif case == "bad extension":
        args = ["-o", str(tmp_path / "out" / "s.txt")]
    elif case == "missing folder":
        args = ["-o", str(tmp_path / "nowhere" / "s.csv")]
    elif case == "nan threshold":
        args += ["--threshold", "nan"]
    elif case == "negative threshold":
        args += ["--threshold", "-1"]
    elif case == "zero batch":
        args += ["--batch-size", "0"]
    elif case == "bad device":
        args += ["--device", "tpu"]
    else:
        art = copy_artifacts(bundled, tmp_path / "art")
        (art / "ae.int8.onnx").unlink()
        edit_metadata(art / "threshold.json", lambda meta: meta.pop("int8"))
        args += ["--artifacts", str(art), "--precision", "int8"]
    proc = invoke_cli("score", *args, capfd=capfd)
    line = assert_one_line_error(proc, code)
    assert words in line, line
    assert list(out.parent.iterdir()) == []


def test_ctrl_c_while_scoring_writes_nothing(tmp_path, monkeypatch):
    calls = []
    real = AnomalyScorer._run

    def interrupt_second_batch(self, output, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, output, images)

    monkeypatch.setattr(AnomalyScorer, "_run", interrupt_second_batch)
    out = tmp_path / "s.npy"
    r = score("-o", str(out), "--device", "cpu")
    assert r.exit_code == 130
    assert "interrupted after 1,024 of 2,000 images; no output written" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    import aeflow.runtime.outputs as outputs

    def write_then_interrupt(stream, results):
        stream.write("index,score\n0,")
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "write_csv_rows", write_then_interrupt)
    r = score("-o", str(tmp_path / "s.csv"), "--device", "cpu")
    assert r.exit_code == 130 and "no output written" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_has_an_example():
    r = score("--help")
    assert r.exit_code == 0 and "Example:" in r.stdout and "aeflow score" in r.stdout


def test_scores_without_torch(no_torch_env):
    proc = run_cli("score", "--device", "cpu", "--json", env=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["total"]["images"] == 2000 and doc["inputs"][0]["type_ii"] is not None
    check = run_cli("score", "--help", env=no_torch_env)
    assert check.returncode == 0


def test_plain_score_imports_neither_dask_nor_pyarrow(tmp_path):
    """The optional layer (aeflow.distributed: Dask, Parquet output) stays out of `aeflow score x.npy`."""
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", np.zeros((3, 28, 28), np.float32))
    code = ("import sys\nfrom aeflow.cli import cli\n"
            f"try:\n    cli.main(['score', {str(tmp_path / 'x.npy')!r}, '-o', {str(tmp_path / 'x.csv')!r}, "
            "'--device', 'cpu'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'pyarrow') "
            "or m == 'aeflow.distributed'), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "x.csv").is_file()


def test_few_images_rows_in_json_and_png_rows_by_their_own_names(tmp_path):
    """The report is built once: --json holds the per-image rows the table lists, and a PNG
    folder's rows name each PNG (not folder + index)."""
    from pngdata import encode_png

    from aeflow.runtime import demo_images

    x = demo_images()[:3]
    for name, im in zip(["b.png", "a.png", "c.png"], x):
        (tmp_path / name).write_bytes(encode_png(im))
    as_json = score(str(tmp_path), "--json", "--device", "cpu")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)["images"]
    assert [r["source"] for r in rows] == [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    assert all(tuple(r) == COLUMNS for r in rows)
    table = score(str(tmp_path), "--device", "cpu")
    listed = [ln.split()[0] for ln in table.stdout.splitlines() if ln.endswith(("normal", "anomaly", "-"))
              and ln.split()[0].endswith(".png")]
    assert listed == [r["source"] for r in rows]
    for r in rows:
        assert f"{r['score']:.6f}" in table.stdout


def test_relative_artifacts_recorded_as_an_absolute_path(bundled, tmp_path):
    copy_artifacts(bundled, tmp_path / "art")
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.float32))
    proc = run_cli("score", "x.npy", "--artifacts", "art", "-o", "x.json", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "x.json").read_text())["artifacts"] == str(tmp_path / "art")
