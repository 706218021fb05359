"""Calibration: the maths (quantile rank, Clopper-Pearson against exact binomial sums, coverage on
synthetic scores), ``aeflow calibrate`` on halves of the demo set's normal images, the file it
writes (through the contract), the Python API, and one-line refusals."""

from __future__ import annotations

import json
import math
import os
import shutil
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import assert_one_line_error, copy_artifacts, run_cli

from aeflow import metrics
from aeflow.cli import cli
from aeflow.errors import ArtifactError, OutputError, UsageError
from aeflow.files import sha256_file
from aeflow.runtime import contract
from aeflow.runtime.scorer import AnomalyScorer


def calibrate(*args: str):
    return CliRunner().invoke(cli, ["calibrate", "--device", "cpu", *args])


# ---------------------------------------------------------------- the maths


def binomial_tail(k: int, n: int, x: float) -> float:
    """P(Binomial(n, x) >= k), exactly in rationals."""
    x = Fraction(x)
    return float(sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(k, n + 1)))


@pytest.mark.parametrize("flagged, n", [(0, 50), (1, 50), (5, 200), (24, 200), (50, 50), (90, 300)])
def test_clopper_pearson_solves_the_exact_binomial_equations(flagged, n):
    lower, upper = metrics.clopper_pearson(flagged, n, 0.95)
    assert 0 <= lower <= flagged / n <= upper <= 1
    # lower: P(X >= flagged | lower) = 2.5%; upper: P(X <= flagged | upper) = 2.5%
    if flagged > 0:
        assert binomial_tail(flagged, n, lower) == pytest.approx(0.025, abs=1e-9)
    else:
        assert lower == 0
    if flagged < n:
        assert 1 - binomial_tail(flagged + 1, n, upper) == pytest.approx(0.025, abs=1e-9)
    else:
        assert upper == 1


def test_quantile_rank_and_the_smallest_n():
    s = np.arange(1.0, 100.0)  # 99 scores 1..99
    value, rank = metrics.threshold_for_false_alarm_rate(s, 0.05)
    assert (rank, value) == (95, 95.0) and np.sum(s > value) == 4  # (4 + 1) / 100 = P
    assert metrics.threshold_for_false_alarm_rate(s[::-1], 0.05)[0] == 95.0
    for rate in (0.5, 0.1, 0.05, 0.01, 0.003, 0.001):
        n = metrics.min_n_for_rate(rate)
        metrics.threshold_for_false_alarm_rate(np.arange(float(n)), rate)
        with pytest.raises(ValueError, match="needs at least"):
            metrics.threshold_for_false_alarm_rate(np.arange(float(n - 1)), rate)


@pytest.mark.parametrize("text", ["0.0999999999995", "0.29", "0.07", "0.1", "0.3333333333333333", "0.0101"])
def test_the_rank_is_the_formula_on_the_rate_as_written(text):
    """r = n + 1 - floor(P (n + 1)) for P as written, in rationals: a fudge (+1e-9) gave rank 90 for P =
    0.0999999999995, n = 99 (a chance 10/100 > P of a false alarm); float arithmetic gives 0.29 * 100 = 28.99..."""
    exact = Fraction(text)
    for n in range(1, 400):
        above = math.floor(exact * (n + 1))
        if above < 1:
            with pytest.raises(ValueError, match="needs at least"):
                metrics.threshold_for_false_alarm_rate(np.arange(1.0, n + 1.0), float(text))
            continue
        assert metrics.threshold_for_false_alarm_rate(np.arange(1.0, n + 1.0), float(text))[1] == n + 1 - above
        assert Fraction(above, n + 1) <= exact and metrics.min_n_for_rate(float(text)) <= n


def test_false_alarm_rate_and_intervals_hold_on_synthetic_scores():
    """Exponential scores: the true false-alarm rate of a threshold t is exp(-t). Over 1,000
    calibrations on 200 scores, by either rule, the Clopper-Pearson interval covers the true rate
    and the prediction interval the count among 200 fresh scores in at least ~95% of them; the
    quantile rule's mean true rate is (n - r + 1) / (n + 1) <= P (split-conformal)."""
    rng = np.random.default_rng(0)
    trials, n, rate = 1000, 200, 0.05
    true_rates, covered, predicted = [], {"rate": 0, "k": 0}, {"rate": 0, "k": 0}
    for _ in range(trials):
        s, fresh = rng.exponential(size=n), rng.exponential(size=n)
        for rule, t in (("rate", metrics.threshold_for_false_alarm_rate(s, rate)[0]),
                        ("k", metrics.threshold_from_scores(s, 3.0).value)):
            flagged = int(np.sum(s > t))
            lo, hi = metrics.clopper_pearson(flagged, n)
            c_lo, c_hi = metrics.false_alarm_prediction(flagged, n, n)
            covered[rule] += lo <= math.exp(-t) <= hi
            predicted[rule] += c_lo <= np.sum(fresh > t) <= c_hi
            if rule == "rate":
                true_rates.append(math.exp(-t))
    # E[q] = (n - r + 1) / (n + 1) = 10 / 201 exactly; its standard error here is 0.0005
    assert np.mean(true_rates) == pytest.approx(10 / 201, abs=0.002) and 10 / 201 <= rate
    for rule in ("rate", "k"):
        assert covered[rule] / trials >= 0.93 and predicted[rule] / trials >= 0.94, (rule, covered, predicted)


# ---------------------------------------------------------------- aeflow calibrate on the demo set


@pytest.fixture(scope="module")
def halves(bundled, tmp_path_factory):
    """The demo set's 1,000 MNIST test images split at random into two halves of 500 (.npy, uint8)."""
    with np.load(bundled / "demo.npz") as d:
        normal = d["images"][~d["is_anomaly"]]
    order = np.random.default_rng(0).permutation(len(normal))
    folder = tmp_path_factory.mktemp("halves")
    np.save(folder / "a.npy", normal[order[:500]])
    np.save(folder / "b.npy", normal[order[500:]])
    return folder / "a.npy", folder / "b.npy"


@pytest.mark.parametrize("rule", [("--k", "3"), ("--false-alarm-rate", "0.05"), ("--false-alarm-rate", "0.02")])
def test_rate_on_the_other_half_lies_in_the_reported_interval(halves, bundled, tmp_path, rule):
    a, b = halves
    before = sha256_file(bundled / "threshold.json")
    r = calibrate(str(a), "-o", str(tmp_path / "cal"), *rule, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc["calibration"]) == {"ae.onnx", "ae.int8.onnx"}
    for graph, precision in (("ae.onnx", "fp32"), ("ae.int8.onnx", "int8")):
        cal = doc["calibration"][graph]
        scorer = AnomalyScorer(tmp_path / "cal", device="cpu", precision=precision)
        assert scorer.threshold == cal["threshold"] and scorer.calibration["rule"] == cal["rule"]
        # the count on the other half (500 new normal images) lies in the prediction interval for
        # 500 new images, which holds with probability >= 95% whatever the scores' distribution
        other = int(np.sum(scorer.score(np.load(b)).astype(np.float64) > scorer.threshold))
        assert cal["prediction"]["images"] == 500
        assert cal["prediction"]["lower"] <= other <= cal["prediction"]["upper"], (graph, other, cal["prediction"])
        own = scorer.score(np.load(a)).astype(np.float64)  # the decision in float64, as calibrate's count
        assert cal["achieved_false_alarm_rate"] == float(np.mean(own > scorer.threshold))
    assert sha256_file(bundled / "threshold.json") == before


def test_the_written_file_records_the_calibration(halves, bundled, tmp_path):
    a, _ = halves
    art = tmp_path / "art"
    shutil.copytree(bundled, art)
    old = json.loads((art / "threshold.json").read_text())
    r = calibrate(str(a), "--artifacts", str(art), "--false-alarm-rate", "0.05")
    assert r.exit_code == 0, r.output
    assert "ae.int8.onnx" in r.stdout and "on 500 new images (95%)" in r.stdout
    new = json.loads((art / "threshold.json").read_text())
    # export's fields kept: the graph's hash, validation, k, evaluation ...
    for key in ("sha256", "validation", "k", "evaluation", "data", "golden"):
        assert new[key] == old[key], key
    assert new["int8"]["sha256"] == old["int8"]["sha256"]
    cal = new["calibration"]
    assert cal["rule"] == "false-alarm rate" and cal["false_alarm_rate"] == 0.05 and cal["n"] == 500
    assert cal["data"] == [{"name": str(a), "kind": "file", "sha256": sha256_file(a), "n": 500}]
    assert cal["previous_threshold"] == old["threshold"] and cal["date"].endswith("Z")
    # each graph calibrated on its own scores: the 476th smallest of them
    for entry, precision in ((new, "fp32"), (new["int8"], "int8")):
        scores = np.sort(AnomalyScorer(bundled, device="cpu", precision=precision).score(np.load(a)).astype(np.float64))
        assert entry["threshold"] == scores[entry["calibration"]["rank"] - 1] and entry["calibration"]["rank"] == 476
        assert entry["calibration"]["flagged"] == 24 and entry["calibration"]["achieved_false_alarm_rate"] == 0.048
    assert new["threshold"] != new["int8"]["threshold"]
    assert new["int8"]["calibration"]["previous_threshold"] == old["int8"]["threshold"]
    # an edited calibrated threshold is caught by the contract's content hash
    new["threshold"] *= 1.5
    (art / "threshold.json").write_text(json.dumps(new))
    with pytest.raises(ArtifactError, match="content_sha256"):
        AnomalyScorer(art, device="cpu")


def test_k3_reproduces_the_mean_plus_3_std_of_the_scores(halves, tmp_path):
    a, _ = halves
    r = calibrate(str(a), "-o", str(tmp_path / "cal"), "--json", "-q")
    assert r.exit_code == 0, r.output
    cal = json.loads(r.stdout)["calibration"]["ae.onnx"]
    th = metrics.threshold_from_scores(AnomalyScorer(device="cpu").score(np.load(a)), 3.0)
    assert (cal["threshold"], cal["mean"], cal["std"], cal["k"], cal["ddof"]) == (th.value, th.mean, th.std, 3.0, 1)


def test_python_api_calibrates_sets_and_saves(halves, tmp_path):
    a, b = halves
    scorer = AnomalyScorer(device="cpu")
    previous = scorer.threshold
    t = scorer.calibrate(np.load(a), false_alarm_rate=0.05)
    assert scorer.threshold == t != previous and scorer.calibration["rule"] == "false-alarm rate"
    assert scorer.calibration["data"][0]["kind"] == "array"
    assert scorer.calibration["previous_threshold"] == previous
    path = scorer.save_calibration(tmp_path / "mine")
    again = AnomalyScorer(tmp_path / "mine", device="cpu")
    assert again.threshold == again.default_threshold == t
    assert again.calibration["rank"] == 476
    assert AnomalyScorer(tmp_path / "mine", device="cpu", precision="int8").calibration is None  # fp32 only
    assert path == tmp_path / "mine" / "threshold.json"
    with pytest.raises(UsageError, match="needs at least 999"):
        scorer.calibrate(np.load(b)[:10], false_alarm_rate=0.001)
    with pytest.raises(UsageError, match="call calibrate"):
        AnomalyScorer(device="cpu").save_calibration(tmp_path / "x")
    with pytest.raises(UsageError, match="not both"):
        scorer.calibrate(np.load(b), k=3, false_alarm_rate=0.01)


def test_contract_refuses_an_inconsistent_calibration(halves, tmp_path):
    a, _ = halves
    scorer = AnomalyScorer(device="cpu")
    scorer.calibrate(np.load(a), k=3)
    scorer.save_calibration(tmp_path / "c")
    doc = json.loads((tmp_path / "c" / "threshold.json").read_text())
    bad = json.loads(json.dumps(doc))
    del bad["calibration"]["mean"]
    with pytest.raises(ArtifactError, match="calibration.mean"):
        contract.ThresholdMeta.from_json(contract.seal(bad))
    bad = json.loads(json.dumps(doc))
    bad["calibration"]["flagged"] += 1
    with pytest.raises(ArtifactError, match="achieved_false_alarm_rate"):
        contract.ThresholdMeta.from_json(contract.seal(bad))


# ---------------------------------------------------------------- refusals


def test_an_edited_threshold_json_is_not_sealed_again_even_unverified(halves, bundled, tmp_path):
    a, _ = halves
    art = tmp_path / "art"
    shutil.copytree(bundled, art)
    doc = json.loads((art / "threshold.json").read_text())
    doc["evaluation"]["type_i"]["rate"] = 0.0001  # a better figure than export measured
    (art / "threshold.json").write_text(json.dumps(doc))
    before = sha256_file(art / "threshold.json")
    line = assert_one_line_error(run_cli("calibrate", str(a), "--artifacts", str(art), "--no-verify"), 1)
    assert "content_sha256" in line and sha256_file(art / "threshold.json") == before


@pytest.mark.parametrize("args, code, words", [
    (["{a}", "--artifacts", "{art}", "--false-alarm-rate", "0.001"], 2, "needs at least 999 normal images"),
    (["{a}", "--artifacts", "{art}", "--k", "3", "--false-alarm-rate", "0.01"], 2, "exclude each other"),
    (["{a}"], 2, "--artifacts DIR"),
    (["{a}", "--artifacts", "{art}", "--false-alarm-rate", "1.5"], 2, "--false-alarm-rate"),
    (["{a}", "-o", "{full}"], 1, "not empty"),
    (["{tmp}/missing.npy", "--artifacts", "{art}"], 1, "no such file"),
    (["{tmp}/missing.npy", "--artifacts", "{art}", "--batch-size", "100000000000"], 2, "--batch-size=100,000,000,000"),
    (["{a}", "--artifacts", "{art}", "--batch-size", "10" * 10], 2, "--batch-size must be an integer from 1"),
])
def test_refusals_are_one_line_and_change_nothing(halves, bundled, tmp_path, args, code, words):
    a, _ = halves
    art = tmp_path / "art"
    shutil.copytree(bundled, art)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    before = sha256_file(art / "threshold.json")
    fmt = {"a": str(a), "art": str(art), "full": str(tmp_path / "full"), "tmp": str(tmp_path)}
    line = assert_one_line_error(run_cli("calibrate", *[s.format(**fmt) for s in args]), code)
    assert words in line
    assert sha256_file(art / "threshold.json") == before
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep"]


# ---------------------------------------------------------------- p-values against the calibration scores


def test_p_values_use_the_calibration_scores(halves, bundled, tmp_path):
    a, b = halves
    r = calibrate(str(a), "-o", str(tmp_path / "run2"), "-q")
    assert r.exit_code == 0, r.output
    reference = AnomalyScorer(bundled, device="cpu").score(np.load(a)).astype(np.float64)  # independent of the file
    images = np.load(b)[:50]
    s = AnomalyScorer(bundled, device="cpu").score(images).astype(np.float64)
    want = (1 + (reference[None, :] >= s[:, None]).sum(axis=1)) / (reference.size + 1)
    run2 = AnomalyScorer(tmp_path / "run2", device="cpu")
    np.testing.assert_allclose(run2.p_value(images), want, rtol=0, atol=1e-12)
    rec = run2.metadata.calibration["scores"]
    assert rec == {"file": "calibration_scores.npy", "n": 500,
                   "sha256": sha256_file(tmp_path / "run2" / "calibration_scores.npy")}
    out = tmp_path / "p.csv"  # the p_value column of the CLI's output says the same
    r = CliRunner().invoke(cli, ["score", str(b), "--artifacts", str(tmp_path / "run2"), "--device", "cpu",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    import csv
    rows = list(csv.DictReader(out.open()))
    np.testing.assert_allclose([float(row["p_value"]) for row in rows[:50]], want, rtol=1e-6)
    # the -o copy is self-contained: moved elsewhere (the source gone from view), it still loads and gives them
    moved = tmp_path / "elsewhere" / "run2"
    shutil.move(tmp_path / "run2", moved)
    np.testing.assert_allclose(AnomalyScorer(moved, device="cpu").p_value(images), want, rtol=0, atol=1e-12)
    # a tampered file is refused with one line; verify=False reads it as it is
    np.save(moved / "calibration_scores.npy", np.zeros(500, dtype=np.float32))
    with pytest.raises(ArtifactError, match="calibration_scores.npy: missing or not the file"):
        AnomalyScorer(moved, device="cpu").p_value(images)
    assert AnomalyScorer(moved, device="cpu", verify=False).p_value(images).max() == 1 / 501
    r = run_cli("score", str(b), "--artifacts", str(moved), "--device", "cpu", "-o", str(tmp_path / "q.csv"))
    assert "calibration_scores.npy" in assert_one_line_error(r, 1)
    assert not (tmp_path / "q.csv").exists()
    # a record's scores field is checked by the contract (the file name is fixed, n is the record's)
    doc = json.loads((moved / "threshold.json").read_text())
    for field, value in (("file", "../x.npy"), ("n", 499), ("sha256", "x")):
        bad = json.loads(json.dumps(doc))
        bad["calibration"]["scores"][field] = value
        with pytest.raises(ArtifactError, match=f"calibration.scores.{field}"):
            contract.ThresholdMeta.from_json(contract.seal(bad))


def test_in_memory_and_saved_calibration_p_values(halves, tmp_path):
    a, b = halves
    scorer = AnomalyScorer(device="cpu")
    images = np.load(b)[:20]
    before = scorer.p_value(images)  # export's validation scores (an old folder: no calibration scores)
    assert "scores" not in (scorer.metadata.calibration or {})
    scorer.calibrate(np.load(a), k=3)
    ref = np.sort(scorer.score(np.load(a)))
    s = scorer.score(images)
    want = (1 + ref.size - np.searchsorted(ref, s, side="left")) / (ref.size + 1)
    now = scorer.p_value(images)  # not saved yet: the calibration scores already
    np.testing.assert_array_equal(now, want)
    assert not np.array_equal(now, before)
    scorer.save_calibration(tmp_path / "c")
    np.testing.assert_array_equal(AnomalyScorer(tmp_path / "c", device="cpu").p_value(images), want)
    # calibrating the copy in place replaces the scores file and its record together
    again = AnomalyScorer(tmp_path / "c", device="cpu")
    again.calibrate(np.load(b), k=3)
    again.save_calibration()
    fresh = AnomalyScorer(tmp_path / "c", device="cpu")
    assert fresh.metadata.calibration["scores"]["n"] == 500
    np.testing.assert_array_equal(fresh.p_value(images), again.p_value(images))


def test_a_failed_in_place_write_leaves_the_scores_file_as_it_was(halves, tmp_path, monkeypatch):
    a, b = halves
    scorer = AnomalyScorer(device="cpu")
    scorer.calibrate(np.load(a), k=3)
    scorer.save_calibration(tmp_path / "c")
    before = {f: sha256_file(tmp_path / "c" / f) for f in ("threshold.json", "calibration_scores.npy", "MODEL_CARD.md")}
    again = AnomalyScorer(tmp_path / "c", device="cpu")
    again.calibrate(np.load(b), k=3)
    import aeflow.runtime.calibration as calibration

    def fail(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(calibration, "write_metadata", fail)
    with pytest.raises(OSError):
        again.save_calibration()
    assert {f: sha256_file(tmp_path / "c" / f) for f in before} == before
    assert AnomalyScorer(tmp_path / "c", device="cpu").p_value(np.load(b)[:5]).shape == (5,)


@pytest.mark.parametrize("damage", ["missing", "edited"])
def test_info_and_verify_check_the_calibration_scores_as_scoring_does(halves, tmp_path, damage):
    """A calibrated copy without its calibration_scores.npy (or with it edited) passed info and verify
    (exit 0), and then every fp32 'aeflow score' failed on it."""
    from aeflow.cli import cli

    runner = CliRunner()
    made = runner.invoke(cli, ["calibrate", str(halves[0]), "-o", str(tmp_path / "c"), "-q", "--device", "cpu"])
    assert made.exit_code == 0
    scores = tmp_path / "c" / "calibration_scores.npy"
    if damage == "missing":
        scores.unlink()
    else:
        data = bytearray(scores.read_bytes())
        data[-1] ^= 1
        scores.write_bytes(bytes(data))
    for command in (["info"], ["verify", "--device", "cpu"]):
        r = runner.invoke(cli, [*command, "--artifacts", str(tmp_path / "c")])
        assert r.exit_code == 1 and "calibration_scores.npy: missing or not the file threshold.json records" in r.output


def test_save_calibration_into_a_folder_with_files_takes_force(halves, tmp_path):
    """save_calibration(out) said 'pass --force' with no force argument to pass."""
    from aeflow.errors import OutputError
    from aeflow.runtime import AnomalyScorer

    scorer = AnomalyScorer(device="cpu")
    scorer.calibrate(np.load(halves[0]), k=2)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"not empty; pass force=True"):
        scorer.save_calibration(tmp_path)
    assert scorer.save_calibration(tmp_path, force=True) == tmp_path / "threshold.json"
    assert (tmp_path / "notes.txt").read_text() == "mine" and AnomalyScorer(tmp_path).threshold == scorer.threshold


def test_a_signal_while_threshold_json_is_written_puts_the_old_scores_back(halves, bundled, tmp_path, monkeypatch):
    """In place, the scores file goes first, then threshold.json; a signal during the second put the old scores
    back with write_atomic, which refused to publish after a signal: new scores beside the old threshold.json,
    a folder that no longer loads. The undo now lands."""
    from aeflow import files
    from aeflow.runtime import calibration

    calibrated, normal = copy_artifacts(bundled, tmp_path / "art"), np.load(halves[0])
    shutil.copy(bundled / "MODEL_CARD.md", calibrated)
    scorer = AnomalyScorer(calibrated, device="cpu")
    scorer.calibrate(normal[:200], k=3)
    scorer.save_calibration()
    before = {n: sha256_file(calibrated / n) for n in ("threshold.json", "calibration_scores.npy", "MODEL_CARD.md")}

    def interrupted(path, doc):  # the signal handler's effect: recorded, then KeyboardInterrupt
        files.RECEIVED.append(15)
        raise KeyboardInterrupt

    monkeypatch.setattr(calibration, "write_metadata", interrupted)
    scorer.calibrate(normal[200:], k=2)
    try:
        with pytest.raises(KeyboardInterrupt):
            scorer.save_calibration()
    finally:
        files.RECEIVED.clear()
    assert {n: sha256_file(calibrated / n) for n in before} == before
    AnomalyScorer(calibrated, device="cpu").score(normal[:5])  # loads: the pair is consistent


def test_a_signal_just_after_threshold_json_landed_keeps_the_new_pair(halves, bundled, tmp_path, monkeypatch):
    """A signal right after threshold.json was published (before write_metadata returned) put the old scores
    back beside the NEW threshold.json: a folder that no longer loaded. The new pair now stands."""
    from aeflow.runtime import calibration

    calibrated, normal = copy_artifacts(bundled, tmp_path / "art"), np.load(halves[0])
    scorer = AnomalyScorer(calibrated, device="cpu")
    scorer.calibrate(normal[:200], k=3)
    scorer.save_calibration()
    write = calibration.write_metadata

    def landed_then_interrupted(path, doc):
        write(path, doc)
        raise KeyboardInterrupt

    monkeypatch.setattr(calibration, "write_metadata", landed_then_interrupted)
    scorer.calibrate(normal[200:], k=2)
    with pytest.raises(KeyboardInterrupt):
        scorer.save_calibration()
    again = AnomalyScorer(calibrated, device="cpu")  # the scores file is the one threshold.json records
    assert again.threshold == scorer.threshold and again.p_value(normal[:5]).shape == (5,)


def test_calibrate_copy_refuses_a_pipe_or_folder_of_its_names_before_any_work(halves, bundled, tmp_path):
    """calibrate -o X --force replaced a FIFO named golden.npz (export refused the same); a folder named
    X/ae.onnx was refused only after the scoring."""
    for make, name in ((os.mkfifo, "golden.npz"), (os.mkdir, "ae.onnx")):
        out = tmp_path / f"x_{name}"
        out.mkdir()
        make(out / name)
        r = run_cli("calibrate", str(halves[0]), "-o", str(out), "--force", "--device", "cpu")
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and name in r.stderr, r.stderr
        assert sorted(p.name for p in out.iterdir()) == [name]


def test_an_input_given_twice_is_refused_before_any_work(halves, tmp_path, monkeypatch):
    """calibrate in/a.npy ./in/a.npy (or a glob and one of its matches, a link to it, a folder and a file in it)
    counted the images twice: n doubled and the recorded intervals shrank as if they were new images."""
    from PIL import Image

    from aeflow.errors import InputError
    from aeflow.runtime.inputs import read_images

    a, _ = halves
    monkeypatch.chdir(a.parent)
    (tmp_path / "link.npy").symlink_to(a)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(2):
        Image.fromarray(np.load(a)[i]).save(pngs / f"{i}.png")
    for inputs in ([a.name, f"./{a.name}"], ["*.npy", a.name], [str(a), str(tmp_path / "link.npy")],
                   [str(pngs), str(pngs / "1.png")], [str(pngs / "0.png"), str(tmp_path / "pngs/../pngs")]):
        r = calibrate(*inputs, "-o", str(tmp_path / "cal"))
        assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "pass each input once" in r.stderr, (inputs, r.stderr)
        assert not (tmp_path / "cal").exists()
        with pytest.raises(InputError, match="pass each input once"):
            read_images(inputs)
    assert calibrate(a.name, "-o", str(tmp_path / "cal"), "-q").exit_code == 0
    split = tmp_path / "split"  # a folder whose files are links into another folder given: read twice
    split.mkdir()
    (split / "0.png").symlink_to(pngs / "0.png")
    os.link(pngs / "1.png", split / "1.png")
    with pytest.raises(InputError, match=r"split/0.png in the folder .*split: read twice \(also as .*pngs/0.png in"):
        read_images([pngs, split])
    os.link(a, pngs / ".hidden.npy")  # hidden: the folder's reader skips it, so it is read once
    assert len(read_images([pngs, pngs / ".hidden.npy"])[0]) == 2 + len(np.load(a))


def test_the_model_card_says_which_threshold_is_in_force(halves, bundled, tmp_path):
    """A calibrated copy (and an in-place calibration) kept export's MODEL_CARD.md byte for byte: its threshold and
    p-value lines named export's figures while threshold.json held another. Now a section says what is in force
    (replaced by the next calibration); export's own lines stay; a card that is not export's is left alone."""
    a, b = halves
    r = calibrate(str(a), "-o", str(tmp_path / "c"), "-q")
    assert r.exit_code == 0, r.stderr
    card = (tmp_path / "c" / "MODEL_CARD.md").read_text()
    meta = json.loads((tmp_path / "c" / "threshold.json").read_text())
    export_card = (bundled / "MODEL_CARD.md").read_text()
    assert card.startswith(export_card.split("## Intended use")[0]) and card.endswith(export_card.split("\n\n## Intended")[1])
    assert f"- **ae.onnx**: threshold {meta['threshold']:.6g}, calibrated " in card
    assert f"- **ae.int8.onnx**: threshold {meta['int8']['threshold']:.6g}, calibrated " in card
    assert "compare with the 500 calibration scores (calibration_scores.npy)" in card
    r = calibrate(str(b), "--artifacts", str(tmp_path / "c"), "--false-alarm-rate", "0.05", "-q")
    assert r.exit_code == 0, r.stderr
    again = (tmp_path / "c" / "MODEL_CARD.md").read_text()
    threshold = json.loads((tmp_path / "c" / "threshold.json").read_text())["threshold"]
    assert again.count("## Calibration") == 1 and f"threshold {threshold:.6g}, calibrated " in again
    assert "false-alarm rate 0.05 of 500 normal images" in again and meta["threshold"] != threshold
    odd = again.replace("- **Data**: ", "- **Data**: runs/## Calibration/x.npy ", 1)  # a heading inside a line
    (tmp_path / "c" / "MODEL_CARD.md").write_text(odd)
    assert calibrate(str(a), "--artifacts", str(tmp_path / "c"), "-q").exit_code == 0
    third = (tmp_path / "c" / "MODEL_CARD.md").read_text()
    assert third.split("\n## Calibration\n")[0] == odd.split("\n## Calibration\n")[0]
    assert third.count("## Calibration\n") == 1
    (tmp_path / "c" / "MODEL_CARD.md").write_text("my own notes\n")
    assert calibrate(str(a), "--artifacts", str(tmp_path / "c"), "-q").exit_code == 0
    assert (tmp_path / "c" / "MODEL_CARD.md").read_text() == "my own notes\n"


def test_in_place_calibration_never_replaces_an_input_or_a_users_file(halves, bundled, tmp_path):
    """In place, calibrate wrote RUN/calibration_scores.npy unchecked: the user's images saved under that name and
    given as NORMAL became 500 float32 scores (exit 0), and a file of the user's of that name was replaced too. Both
    are refused before any work, from the CLI and the API; the scores threshold.json binds are replaced as before."""
    a, _ = halves
    run = copy_artifacts(bundled, tmp_path / "run")
    scores = run / "calibration_scores.npy"
    shutil.copy(a, scores)
    r = calibrate(str(scores), "--artifacts", str(run))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "is also an input" in r.stderr, r.stderr
    assert sha256_file(scores) == sha256_file(a)
    scorer = AnomalyScorer(run, device="cpu")
    scorer.calibrate(np.load(a), k=3)
    with pytest.raises(OutputError, match="is not the calibration scores threshold.json records; move it away"):
        scorer.save_calibration()
    r = calibrate(str(a), "--artifacts", str(run))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "is not the calibration scores threshold.json records" in r.stderr
    assert sha256_file(scores) == sha256_file(a) and "calibration" not in json.loads((run / "threshold.json").read_text())
    scores.unlink()
    for _ in range(2):  # its own scores file: replaced by the next calibration
        assert calibrate(str(a), "--artifacts", str(run), "-q").exit_code == 0
    assert np.load(scores).dtype == np.float32
