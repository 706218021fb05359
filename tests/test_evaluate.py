"""``aeflow evaluate``: metrics equal to direct computations, the 1%-type-I threshold, JSON keys,
the HTML report, the flow's NLL/KL figures, and one-line errors for bad DATA."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import assert_one_line_error, run_cli

from aeflow import metrics
from aeflow.cli import cli
from aeflow.analysis.evaluation import HOMEWORK_REFERENCE, kl_estimate
from aeflow.analysis.report import MAPS_PER_SET
from aeflow.runtime.scorer import AnomalyScorer

JSON_KEYS = {"artifacts", "provider", "device_requested", "threshold", "artifacts_data", "artifacts_training",
             "in_dist", "anomalies", "at_target", "homework", "flow", "notes", "report"}


@pytest.fixture(scope="module")
def demo_split(bundled, tmp_path_factory):
    """The bundled demo set split into in-distribution and anomaly .npy files (uint8 [1000, 28, 28])."""
    d = tmp_path_factory.mktemp("demo_split")
    with np.load(bundled / "demo.npz") as demo:
        images, is_anomaly = demo["images"], demo["is_anomaly"]
    np.save(d / "normal.npy", images[~is_anomaly])
    np.save(d / "odd.npy", images[is_anomaly])
    return d / "normal.npy", d / "odd.npy"


def invoke(*args: str):
    result = CliRunner().invoke(cli, ["evaluate", "--device", "cpu", *args])
    assert result.exit_code == 0, (result.exit_code, result.output)
    return result


@pytest.fixture(scope="module")
def flow_summary(demo_split):
    normal, odd = demo_split
    return json.loads(invoke("--in-dist", str(normal), "--anomalies", str(odd), "--flow", "--json").output)


@pytest.fixture(scope="module")
def scored(demo_split):
    """Scores of both halves straight from the scorer, and its threshold."""
    from aeflow.runtime.scorer import AnomalyScorer

    scorer = AnomalyScorer(device="cpu")
    normal, odd = demo_split
    return scorer.score(np.load(normal)), scorer.score(np.load(odd)), scorer.threshold


def test_metrics_equal_direct_computation(flow_summary, scored, demo_split):
    s_in, s_out, threshold = scored
    summary = flow_summary
    assert summary["threshold"]["value"] == threshold
    assert summary["in_dist"]["n"] == 1000 and summary["in_dist"]["name"] == str(demo_split[0])
    assert summary["in_dist"]["type_i"] == metrics.type_i_error(s_in, threshold)
    (a,) = summary["anomalies"]
    assert a["name"] == str(demo_split[1]) and a["n"] == 1000
    assert a["type_ii"] == metrics.type_ii_error(s_out, threshold)
    assert a["auroc"] == metrics.auroc(s_in, s_out)
    assert 0.9 < a["auroc"] <= 1.0


def test_threshold_for_one_percent_type_i(flow_summary, scored):
    s_in, s_out, _ = scored
    at = flow_summary["at_target"]
    t = at["threshold"]
    assert at["type_i_target"] == 0.01
    # at most 1% strictly above it, and no lower threshold keeps to 1%: t is the smallest such score
    assert np.mean(s_in > t) <= 0.01 < np.mean(s_in >= t)
    assert at["type_i"] == pytest.approx(np.mean(s_in > t))
    assert flow_summary["anomalies"][0]["type_ii_at_target"] == pytest.approx(np.mean(s_out <= t))


def test_json_keys_and_homework_reference(flow_summary):
    assert set(flow_summary) == JSON_KEYS
    assert flow_summary["homework"] == HOMEWORK_REFERENCE
    assert flow_summary["provider"] == "CPUExecutionProvider"
    assert flow_summary["report"] is None
    assert set(flow_summary["anomalies"][0]) >= {"name", "n", "type_ii", "auroc", "type_ii_at_target"}
    assert flow_summary["artifacts_data"]["train_images"] > 0


def test_table_shows_homework_figures_and_notes(demo_split):
    normal, odd = demo_split
    out = invoke("--in-dist", str(normal), "--anomalies", str(odd), "--quiet").output
    assert "1.04%" in out and "2.95%" in out and "0.011" in out
    assert "CPUExecutionProvider" in out
    assert "differs from the homework's kmnist-test" in out
    assert re.search(r"training images\s+[\d,]+ \(", out)


def test_flow_figures(flow_summary, bundled):
    recorded = json.loads((bundled / "flow.json").read_text())
    fl = flow_summary["flow"]
    assert fl["training"] == {k: recorded["training"][k] for k in ("n_train", "n_test", "seed")}
    assert fl["nll"]["test"] == pytest.approx(recorded["nll"]["test"], abs=1e-5)
    assert fl["nll"]["true_mixture_test"] == pytest.approx(recorded["nll"]["true_mixture_test"], abs=1e-9)
    # the bundled flow.json's train NLL is the last epoch's running mean over batches (training records the final
    # model's since), not the final model's: close, not equal
    assert fl["nll"]["train"] == pytest.approx(recorded["nll"]["train"], abs=0.01)
    kl = fl["kl"]
    assert kl["n"] == 200_000 and 0 < kl["stderr"] < 0.01
    assert kl["estimate"] + 3 * kl["stderr"] >= 0
    assert abs(fl["z_train"]["mean"]) < 0.1 and 0.8 < fl["z_train"]["std"] < 1.2


def test_kl_estimate_known_values():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, 100_000)
    log_n01 = -0.5 * x**2 - 0.5 * np.log(2 * np.pi)
    assert kl_estimate(log_n01, log_n01) == (0.0, 0.0)
    # KL(N(0, 1) || N(1, 1)) = 1/2
    kl, se = kl_estimate(log_n01, -0.5 * (x - 1) ** 2 - 0.5 * np.log(2 * np.pi))
    assert abs(kl - 0.5) < 4 * se and se < 0.01
    with pytest.raises(ValueError):
        kl_estimate(np.array([0.0]), np.array([np.nan]))


def test_report_is_self_contained(demo_split, tmp_path, bundled):
    pytest.importorskip("matplotlib")
    normal, odd = demo_split
    out = tmp_path / "report"
    out.mkdir()
    (out / "scores.png").write_bytes(b"old")  # a folder with files: only --force writes into it
    (out / "notes.txt").write_text("mine")
    args = ("--in-dist", str(normal), "--anomalies", str(odd), "--report", str(out), "--json")
    refused = CliRunner().invoke(cli, ["evaluate", "--device", "cpu", *args])
    assert refused.exit_code == 1 and "not empty; pass --force" in refused.output, refused.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "scores.png"]
    assert (out / "scores.png").read_bytes() == b"old"
    summary = json.loads(invoke(*args, "--force").output)
    assert (out / "notes.txt").read_text() == "mine"  # its other files stay
    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # scores, ROC, two reconstruction grids, 4 flow figures, the worst images' anomaly maps, plus
    # the training PNGs bundled
    expected = 8 + 2 * MAPS_PER_SET + sum((bundled / n).is_file() for n in ("ae_loss.png", "flow_loss.png"))
    assert len(images) == expected
    # the anomaly maps of the highest-scoring anomalies, worst first, each titled with its score
    odd_scores = AnomalyScorer(device="cpu").score(np.load(odd))
    worst = np.argsort(odd_scores, kind="stable")[::-1][:MAPS_PER_SET]
    for j, index in enumerate(worst.tolist()):
        assert (out / f"map_1_{j}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"highest score no. {j + 1}: image {index}," in page
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["report"] == str(out / "report.html") and summary["flow"] is not None
    assert json.loads((out / "evaluation.json").read_text())["in_dist"]["n"] == 1000
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert "1.04%" in page and "KL(data || model)" in page


def test_report_needs_matplotlib(demo_split, tmp_path, no_torch_env):
    shim = tmp_path / "shim"
    (shim / "matplotlib").mkdir(parents=True)
    (shim / "matplotlib" / "__init__.py").write_text('raise ImportError("matplotlib is blocked in this test")\n')
    env = dict(no_torch_env, PYTHONPATH=f"{shim}:{no_torch_env['PYTHONPATH']}")
    normal, odd = demo_split
    proc = run_cli("evaluate", "--in-dist", str(normal), "--anomalies", str(odd), "--report", str(tmp_path / "r"), env=env)
    assert "pip install matplotlib" in assert_one_line_error(proc, 2)
    assert not (tmp_path / "r").exists()


def test_runs_without_torch(demo_split, no_torch_env):
    normal, odd = demo_split
    proc = run_cli("evaluate", "--in-dist", str(normal), "--anomalies", str(odd), "--flow", "--json",
                   "--device", "cpu", env=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["flow"]["kl"]["estimate"] > 0


def test_data_dir_names_and_offline_hint(tiny_data_dir):
    summary = json.loads(invoke("--data-dir", str(tiny_data_dir), "--anomalies", "fashion-mnist-test",
                                "--json").output)
    assert summary["in_dist"]["name"] == "mnist-test" and summary["in_dist"]["n"] == 40
    assert summary["anomalies"][0]["name"] == "fashion-mnist-test"
    # the homework's default anomaly set (KMNIST) is not in the folder: say how to run offline
    line = assert_one_line_error(run_cli("evaluate", "--data-dir", str(tiny_data_dir)), 1)
    assert "kmnist-test" in line and "--anomalies fashion-mnist-test" in line


@pytest.mark.parametrize("args, code, words", [
    (["--in-dist", "no-such-set"], 2, "neither a data set name"),
    (["--anomalies", "missing/odd.npy"], 2, "nor an existing file"),
    (["--anomalies", "{bad}"], 1, "unknown format"),
    (["--anomalies", "{normal}"], 2, "given twice"),
    (["--anomalies", "{link}"], 2, "given twice"),  # a link to it (AUROC 0.5 was reported)
    (["--anomalies", "kmnist-test", "--data-dir", "{tmp}"], 1, "no kmnist test images"),
    (["--anomalies", "{odd}", "--report", "{tmp}/missing/report"], 1, "does not exist"),
    (["--anomalies", "{odd}", "--report", "{bad}"], 1, "not a folder"),
])
def test_bad_data_and_outputs_are_one_line(demo_split, tmp_path, args, code, words):
    normal, odd = demo_split
    bad = tmp_path / "notes.txt"
    bad.write_text("not images\n")
    (tmp_path / "link.npy").symlink_to(normal)
    fill = {"normal": normal, "odd": odd, "bad": bad, "tmp": tmp_path, "link": tmp_path / "link.npy"}
    args = [a.format(**fill) for a in args]
    proc = run_cli("evaluate", "--device", "cpu", "--in-dist", str(normal), *args, cwd=tmp_path)
    assert words in assert_one_line_error(proc, code)


def test_labels_that_contradict_the_role_are_refused(bundled, demo_split, tmp_path):
    """A labelled .npz holding anomalies given as --in-dist (or normal images as --anomalies) is refused in one
    line: its labels were ignored, and the type I / type II figures silently counted the other class."""
    normal, odd = demo_split
    with np.load(bundled / "demo.npz") as demo:
        np.savez(tmp_path / "mixed.npz", images=demo["images"], is_anomaly=demo["is_anomaly"])
        n_odd, n = int(demo["is_anomaly"].sum()), len(demo["is_anomaly"])
    np.savez(tmp_path / "normal.npz", images=np.load(normal), is_anomaly=np.zeros(len(np.load(normal)), bool))
    mixed, normal_npz = str(tmp_path / "mixed.npz"), str(tmp_path / "normal.npz")
    line = assert_one_line_error(run_cli("evaluate", "--in-dist", mixed, "--anomalies", str(odd)), 1)
    assert f"{n_odd:,} of its {n:,} images are labelled anomalous" in line and "--in-dist" in line
    line = assert_one_line_error(run_cli("evaluate", "--in-dist", str(normal), "--anomalies", normal_npz), 1)
    assert "labelled normal" in line and "--anomalies" in line
    invoke("--in-dist", normal_npz, "--anomalies", str(odd))  # labels that agree are fine


def test_sets_are_scored_in_the_scorers_one_pass():
    """Each set goes through ``score_source`` whole: the scores of one call on all its images, and a scale
    warning (a 0/1 mask) once, naming the set and where it starts - not once per slice, as images 0 onwards."""
    import warnings

    from aeflow.analysis.evaluation import ImageSet, score_sets
    from aeflow.errors import ScaleWarning

    scorer = AnomalyScorer(device="cpu")
    masks = (np.random.default_rng(0).random((5000, 28, 28)) < 0.2).astype(np.uint8)
    sets = [ImageSet("masks.npy", "masks.npy", masks)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score_sets(scorer, sets, quiet=True)
        lines = [str(w.message) for w in caught if issubclass(w.category, ScaleWarning)]
        np.testing.assert_array_equal(sets[0].scores, scorer.score(masks))
    assert len(lines) == 1 and lines[0].startswith("masks.npy: uint8 pixels hold only 0 and 1 in images 0..")
