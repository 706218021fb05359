"""Regressions from trying the README as a new user: inputs that used to give silently wrong
figures or misleading one-liners."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli, write_idx

from aeflow.datasets import available, idx_path


def test_a_flat_data_folder_never_stands_in_for_another_set(tmp_path):
    """IDX files of different sets share their names: a folder holding MNIST's files directly
    must not be read as fashion-mnist (that gave AUROC 0.5 with exit 0)."""
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    assert idx_path(tmp_path, "fashion-mnist", "test") is None
    assert not available("fashion-mnist", "test", tmp_path)
    (tmp_path / "fashion-mnist").mkdir()
    write_idx(tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    assert idx_path(tmp_path, "fashion-mnist", "test") == tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte"


def test_calibrate_refuses_images_labelled_anomalous(bundled, tmp_path):
    proc = run_cli("calibrate", str(bundled / "demo.npz"), "-o", str(tmp_path / "cal"), "--device", "cpu")
    line = assert_one_line_error(proc, 1)
    assert "labelled anomalous" in line and "1,000 of its 2,000" in line
    assert not (tmp_path / "cal").exists()


def test_calibrate_accepts_a_labelled_set_of_normal_images(bundled, tmp_path):
    with np.load(bundled / "demo.npz") as demo:
        normal = ~demo["is_anomaly"]
        np.savez(tmp_path / "normal.npz", images=demo["images"][normal], is_anomaly=demo["is_anomaly"][normal])
    proc = run_cli("calibrate", str(tmp_path / "normal.npz"), "-o", str(tmp_path / "cal"), "--device", "cpu", "-q")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cal" / "threshold.json").is_file()


@pytest.mark.parametrize("command", ["verify", "info", "score"])
def test_artifacts_that_name_a_file_say_so(tmp_path, command):
    f = tmp_path / "digits.npy"
    np.save(f, np.zeros((1, 28, 28), np.uint8))
    line = assert_one_line_error(run_cli(command, "--artifacts", str(f), "--device", "cpu"), 1)
    assert "is not a folder" in line


def test_png_folder_rows_name_their_own_files(bundled, tmp_path):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    with np.load(bundled / "demo.npz") as demo:
        images = demo["images"][[0, 1500, 1]]
        assert demo["is_anomaly"][[0, 1500, 1]].tolist() == [False, True, False]
    names = ["b.png", "a.png", "c.png"]
    for name, img in zip(names, images):
        Image.fromarray(img).save(folder / name)
    proc = run_cli("score", str(folder), "-o", "-", "--device", "cpu", "-q")
    assert proc.returncode == 0, proc.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["source"] for r in rows] == [str(folder / n) for n in sorted(names)]
    flagged = {r["source"] for r in rows if r["predicted_anomaly"] == "true"}
    assert flagged == {str(folder / "a.png")}  # a.png holds the Fashion-MNIST image


def test_bare_aeflow_prints_its_help_as_help():
    """A bare 'aeflow' shows the help, line by line (it was squashed into one error line)."""
    r = run_cli()
    shown = r.stdout + r.stderr
    assert r.returncode in (0, 2) and "aeflow: error" not in shown  # click 8.1 exits 0, 8.2 and later 2
    assert "\nCommands:\n" in shown and "\n  score " in shown and shown.count("\n") > 20


@pytest.mark.parametrize("command, before, after", [("ae", "--data-dir", "--epochs"),
                                                    ("flow", "--column", "--components")])
def test_train_help_lists_the_run_folder_after_the_data_options(command, before, after):
    """-o RUN stays where a reader of the data options looks for it (it had moved down to --seed)."""
    r = run_cli("train", command, "--help")
    names = [next(w for w in line.split() if w.startswith("--")) for line in r.stdout.splitlines()
             if line.startswith("  -")]
    assert r.returncode == 0 and names.index(before) + 1 == names.index("--output") == names.index(after) - 1


def test_verify_help_gives_its_example_as_an_example():
    """The example had been folded into 'saying which side differs (e.g. aeflow verify --device cuda)'."""
    r = run_cli("verify", "--help")
    assert r.returncode == 0 and "(e.g. aeflow verify" not in r.stdout and "aeflow verify" in r.stdout


def test_train_flow_column_without_data_is_refused(tmp_path):
    """--column without --data was ignored: the flow trained on the mixture, exit 0."""
    pytest.importorskip("torch")
    line = assert_one_line_error(run_cli("train", "flow", "--column", "x", "-o", str(tmp_path / "run")), 2)
    assert "--column" in line and "--data" in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, words", [("score", "no summary"), ("calibrate", "no summary"),
                                            ("sample", "No progress bars.")])
def test_quiet_help_says_what_it_drops(command, words):
    """score -q and calibrate -q drop the summary too; their help said only 'No progress bars'."""
    r = run_cli(command, "--help")
    assert r.returncode == 0 and words in next(ln for ln in r.stdout.splitlines() if "--quiet" in ln)


def test_train_flow_mixture_sizes_beside_data_are_refused(tmp_path):
    """--n-train with --data was ignored without a word (1/6 of the values is held out instead)."""
    np.save(tmp_path / "w.npy", np.random.default_rng(0).normal(size=200))
    line = assert_one_line_error(run_cli("train", "flow", "--data", str(tmp_path / "w.npy"), "--n-train", "50",
                                         "-o", str(tmp_path / "run")), 2)
    assert "--n-train sizes the mixture's sets" in line and not (tmp_path / "run").exists()
