"""Training on one's own data (issue 18): images of any size, real values at any scale, the
PyOD-style API, export of what a run holds, conformal p-values, the model card."""

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli, run_cli, synthetic_digits

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from aeflow.errors import ArtifactError, DataError, InputError  # noqa: E402
from aeflow.runtime import artifacts, contract  # noqa: E402
from aeflow.metrics import conformal_p_values  # noqa: E402
from aeflow.train.api import AutoencoderDetector, FlowModel  # noqa: E402


def gamma_values(n: int, seed: int) -> np.ndarray:
    """Skewed, not a Gaussian mixture."""
    return np.random.default_rng(seed).gamma(2.0, size=n)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """A flow fitted at scale 1e4 exported alone, then a 12x16 detector exported beside it."""
    out = tmp_path_factory.mktemp("api")
    flow = FlowModel(epochs=4, seed=0).fit(gamma_values(600, 0) * 1000 + 1e4)
    flow.export(out)
    flow_only = sorted(p.name for p in out.iterdir())
    wide = np.ascontiguousarray(synthetic_digits(120, 3)[:, 6:18, 4:20])  # 12x16
    det = AutoencoderDetector(epochs=2, batch_size=20, seed=0).fit(wide)
    det.export(out)
    return out, flow, det, wide, flow_only


def test_flow_alone_exports_flow_files_only(api_run):
    out, _, _, _, flow_only = api_run
    assert "flow.json" in flow_only and "flow_sampler.onnx" in flow_only and "MODEL_CARD.md" in flow_only
    assert "threshold.json" not in flow_only and "ae.onnx" not in flow_only


def test_flow_at_scale_1e4_samples_and_forward_match_pytorch(api_run):
    from aeflow.runtime.sampler import FlowSampler

    out, flow, _, _, _ = api_run
    sampler = FlowSampler(out)
    x = sampler.sample(2000, seed=0)
    lo, hi = json.loads((out / "flow.json").read_text())["x_bracket"]
    assert lo < 1e4 and hi > 2e4 and np.all((x > lo) & (x < hi))
    assert 1e4 < np.median(x) < 1e4 + 4000
    _, _, log_p = sampler.forward(x[:200])
    np.testing.assert_allclose(log_p, flow.score_samples(x[:200]), atol=1e-5, rtol=1e-5)


def test_other_image_size_exports_with_its_shape_and_parity(api_run):
    from aeflow.runtime.golden import load_graph

    out, _, det, wide, _ = api_run
    meta = artifacts.read_threshold(out)
    assert meta.image_shape == (12, 16) and meta.graph.signature["inputs"]["images"] == ["N", 1, 12, 16]
    assert "192 pixels" in meta.to_json()["score"]
    session = load_graph(out, meta, "ae", "cpu")  # signature and golden check at 12x16
    score = session.run(None, {"images": wide[:, None].astype(np.float32) / 255})[1]
    np.testing.assert_allclose(score, det.decision_scores_, atol=1e-5)
    assert abs(meta.threshold - det.threshold_) < 1e-5
    assert np.array_equal(det.labels_, (det.decision_scores_ > det.threshold_).astype(np.int64))
    card = (out / "MODEL_CARD.md").read_text()
    assert "12x16" in card and "1-D flow" in card and meta.golden.sha256


def test_evaluate_reads_files_at_the_run_image_size(api_run, tmp_path):
    """``aeflow evaluate`` on a 12x16 run reads 12x16 files (it once expected 28x28 whatever the run)."""
    out, _, _, wide, _ = api_run
    np.save(tmp_path / "normal.npy", wide[:60])
    np.save(tmp_path / "odd.npy", 255 - wide[:60])
    proc = invoke_cli("evaluate", "--artifacts", str(out), "--in-dist", str(tmp_path / "normal.npy"),
                      "--anomalies", str(tmp_path / "odd.npy"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["in_dist"]["n"] == 60 and summary["anomalies"][0]["n"] == 60
    from aeflow.runtime.scorer import AnomalyScorer

    assert summary["in_dist"]["type_i"] == np.mean(AnomalyScorer(out, device="cpu").predict(wide[:60]))


def test_evaluate_leaves_a_flow_of_own_values_out_of_the_report_and_refuses_it_for_flow(api_run, tmp_path):
    """The flow's evaluation measures a flow against the homework's mixture: a flow fitted to one's own
    values is refused in one line before any scoring with --flow, and left out of --report."""
    pytest.importorskip("matplotlib")
    out, _, _, wide, _ = api_run
    np.save(tmp_path / "normal.npy", wide[:40])
    np.save(tmp_path / "odd.npy", 255 - wide[:40])
    data = ("--artifacts", str(out), "--in-dist", str(tmp_path / "normal.npy"), "--anomalies", str(tmp_path / "odd.npy"))
    line = assert_one_line_error(invoke_cli("evaluate", *data, "--flow"), 2)
    assert "fitted to your own values" in line
    proc = invoke_cli("evaluate", *data, "--report", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "report" / "evaluation.json").read_text())["flow"] is None
    assert not list((tmp_path / "report").glob("flow_*.png"))


def test_flow_nll_is_equivariant_under_shift_and_scale():
    """NLL(a x + b) = NLL(x) + log|a|: the fit does not depend on the data's units."""
    x = gamma_values(400, 1)
    base = FlowModel(epochs=5, seed=0).fit(x).nll_
    for a, b in ((1e4, 3e4), (1e-3, -2e-3), (-7.0, 1.0)):
        fit = FlowModel(epochs=5, seed=0).fit(a * x + b).nll_
        assert fit["test"] == pytest.approx(base["test"] + np.log(abs(a)), abs=2e-3)


def test_fit_refuses_bad_values_and_images():
    with pytest.raises(DataError, match="NaN or infinite"):
        FlowModel().fit(np.r_[gamma_values(50, 0), np.nan])
    with pytest.raises(DataError, match="at least 20"):
        FlowModel().fit(np.arange(5.0))
    with pytest.raises(InputError, match="3000x3000 pixels; aeflow reads greyscale images of 4 to 1,024 pixels a side"):
        AutoencoderDetector().fit(np.zeros((2, 3000, 3000), np.uint8))
    with pytest.raises(DataError, match="300x300 pixels; aeflow trains on sides of 4 to 1,024 pixels"):
        AutoencoderDetector().fit(np.zeros((2, 300, 300), np.uint8))
    with pytest.raises(InputError, match="pixel values span"):
        AutoencoderDetector().fit(np.full((10, 8, 8), 3.0))


def test_training_warns_of_too_few_validation_images(tmp_path):
    """40 images gave a threshold from 7 validation scores (mean + 3 std of 7 numbers) without a word."""
    import warnings

    from aeflow.errors import ScaleWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AutoencoderDetector(epochs=1, batch_size=20).fit(synthetic_digits(40, 7))
    few = [w for w in caught if issubclass(w.category, ScaleWarning)]
    assert len(few) == 1 and "only 7 validation images" in str(few[0].message) and few[0].filename == __file__


def test_training_warns_of_images_that_read_as_blank(tmp_path):
    """train ae, export (which reads them again) and fit took 0/1 uint8 masks and floats divided by 255 twice
    without a word, where score warns: a detector of blank images. They warn as score does: one ScaleWarning."""
    import warnings

    from aeflow.errors import ScaleWarning

    digits = synthetic_digits(120, 7)  # 20 validation images: no warning of too few
    mask, twice = (digits > 127).astype(np.uint8), digits.astype(np.float32) / 255 / 255
    for x, words in ((mask, "uint8 pixels hold only 0 and 1 in images 0..119"), (twice, "divided by 255 twice")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            AutoencoderDetector(epochs=1, batch_size=20).fit(x)
        scale = [w for w in caught if issubclass(w.category, ScaleWarning)]
        assert len(scale) == 1 and words in str(scale[0].message) and scale[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleWarning)
        AutoencoderDetector(epochs=1, batch_size=20).fit(digits)  # the right scale: no warning
    np.save(tmp_path / "mask.npy", mask)
    for args in (["train", "ae", "--data", str(tmp_path / "mask.npy"), "--epochs", "1", "-o", str(tmp_path), "-q"],
                 ["export", "-o", str(tmp_path)]):
        proc = invoke_cli(*args)
        warned = [line for line in proc.stderr.splitlines() if "warning" in line]
        assert proc.returncode == 0 and len(warned) == 1, proc.stderr
        assert warned[0].startswith(f"aeflow: warning: {tmp_path / 'mask.npy'}: uint8 pixels hold only 0 and 1")


def test_mixed_sizes_refused_in_one_line(tmp_path):
    from aeflow.train import data

    np.save(tmp_path / "a.npy", np.zeros((3, 28, 28), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(InputError, match="32x32.*28x28|28x28.*32x32"):
        data.read_images([tmp_path / "a.npy", tmp_path / "b.npy"])
    np.savez(tmp_path / "c.npz", images=np.zeros((3, 28, 28), np.uint8), is_anomaly=np.array([0, 1, 0], bool))
    with pytest.raises(DataError, match="labelled anomalous"):
        data.read_images([tmp_path / "c.npz"])


def test_p_value_is_the_conformal_rank():
    p = conformal_p_values(np.array([0.0, 2.0, 5.0]), np.array([3.0, 1.0, 2.0]))
    assert p.tolist() == [1.0, 0.75, 0.25]
    rng = np.random.default_rng(0)  # exchangeable normal data: P(p <= alpha) <= alpha
    hits = [conformal_p_values(rng.normal(size=200), rng.normal(size=99)) <= 0.1 for _ in range(50)]
    assert np.mean(hits) <= 0.1 + 0.01


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    np.save(d / "normal.npy", synthetic_digits(150, 5))
    np.savetxt(d / "values.csv", np.c_[np.arange(300), gamma_values(300, 2)], delimiter=",", header="i,v", comments="")
    for args in (["train", "ae", "--data", str(d / "normal.npy"), "--epochs", "2", "--batch-size", "25",
                  "--val-fraction", "0.2", "-o", str(d / "run"), "-q"],
                 ["export", "-o", str(d / "run")]):
        proc = invoke_cli(*args)  # in this process: torch is imported once
        assert proc.returncode == 0, proc.stderr
    return d


def test_cli_detector_scores_like_pytorch_with_p_values(cli_run):
    from aeflow.export.reference import autoencoder_scorer
    from aeflow.runtime.artifacts import reference_scores
    from aeflow.runtime.scorer import AnomalyScorer

    run, images = cli_run / "run", np.load(cli_run / "normal.npy")
    scorer = AnomalyScorer(run)
    scores = scorer.score(images)
    np.testing.assert_allclose(scores, autoencoder_scorer(run / "ae.pt")(images[:, None] / np.float32(255)), atol=1e-5)
    meta = scorer.metadata
    assert meta.validation.n == meta.validation_scores == 30 and meta.data["train_images"] == 120
    ref = reference_scores(run, meta)
    np.testing.assert_array_equal(scorer.p_value(images), conformal_p_values(scores, ref))
    assert not (run / "flow.json").exists() and (run / "MODEL_CARD.md").is_file()
    proc = run_cli("info", "--artifacts", str(run))  # a run folder of the detector alone: no flow.json
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "model card: " + str(run / "MODEL_CARD.md") in proc.stdout


def test_cli_flow_on_a_csv_column_and_refusals(cli_run, tmp_path, capfd):
    proc = invoke_cli("train", "flow", "--data", str(cli_run / "values.csv"), "--column", "v", "--epochs", "3",
                      "-o", str(tmp_path), "-q")
    assert proc.returncode == 0 and "50 of 300 values held out" in proc.stdout, proc.stderr
    (tmp_path / "bad.txt").write_text("1\n2\nnan\n" * 10)
    for path, column, needle in (("values.csv", None, "pick one with --column"), ("values.csv", "w", "no column 'w'")):
        line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(cli_run / path),
                                                *(["--column", column] if column else []), "-o", str(tmp_path / "x"),
                                                capfd=capfd), 1)
        assert needle in line
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / "bad.txt"), "-o",
                                            str(tmp_path / "x"), capfd=capfd), 1)
    assert "values are NaN or infinite" in line and not (tmp_path / "x").exists()
    csv = str(cli_run / "values.csv")  # a repeated --data was dropped silently (click kept the last one)
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", csv, "--data", csv, "--column", "v", "-o",
                                            str(tmp_path / "x"), capfd=capfd), 2)
    assert "--data names one file of values for the flow, got 2" in line and not (tmp_path / "x").exists()


def test_labelled_anomalies_and_empty_runs_refused(cli_run, tmp_path, capfd):
    np.savez(tmp_path / "mixed.npz", images=synthetic_digits(20, 0), is_anomaly=np.arange(20) % 7 == 0)
    line = assert_one_line_error(invoke_cli("train", "ae", "--data", str(tmp_path / "mixed.npz"), "-o",
                                            str(tmp_path / "r"), capfd=capfd), 1)
    assert "3 of the images are labelled anomalous" in line and not (tmp_path / "r" / "ae.pt").exists()
    with pytest.raises(ArtifactError, match="neither ae.pt nor flow.pt"):
        from aeflow.export.exporter import export_artifacts

        export_artifacts(tmp_path, tmp_path)


def test_readme_api_snippet_runs(tmp_path, monkeypatch, capsys):
    """The README's API example, run as written (the autoencoder for 1 epoch) in this process:
    torch is imported already."""
    import re

    from conftest import REPO

    text = (REPO / "README.md").read_text()
    section = text[text.index("### Python API (PyOD's convention)"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.count("epochs=20") == 1
    code = code.replace("epochs=20", "epochs=1")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("held-out NLL") and "max |ONNX - PyTorch|" in lines[2]
    assert float(lines[2].split("PyTorch| ")[1].split(";")[0]) <= 1e-5


def test_scorer_scores_maps_and_p_values_at_the_run_size(api_run):
    """AnomalyScorer takes the image size from threshold.json: a 12x16 run scores, maps, gives p-values."""
    from aeflow.runtime.scorer import AnomalyScorer

    out, _, det, wide, _ = api_run
    scorer = AnomalyScorer(out, device="cpu")
    assert scorer.image_shape == (12, 16)
    np.testing.assert_allclose(scorer.score(wide), det.decision_scores_, atol=1e-5)
    np.testing.assert_array_equal(scorer.score(wide.reshape(len(wide), -1)), scorer.score(wide.astype(np.float32) / 255))
    maps = scorer.anomaly_map(wide[:4])
    assert maps.shape == (4, 12, 16) and scorer.reconstruct(wide[:4]).shape == (4, 1, 12, 16)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), scorer.score(wide[:4]), rtol=1e-5)
    p = scorer.p_value(wide)
    assert p.shape == (len(wide),) and np.all((p > 0) & (p <= 1))
    np.testing.assert_array_equal(p, scorer.p_values_of(scorer.score(wide)))
    from aeflow.runtime.inputs import ArraySource

    with pytest.raises(InputError, match="28x28 pixels, this run's are 12x16"):
        scorer.score_source(ArraySource(np.zeros((2, 28, 28), np.uint8)))
    for other in (np.zeros((2, 28, 28), np.uint8), np.zeros((2, 16, 12), np.uint8)):
        with pytest.raises(InputError, match="12x16") as e:
            scorer.score(other)
        assert "\n" not in str(e.value)


def test_dask_scores_a_12x16_run_as_the_single_process(api_run, tmp_path):
    """--scheduler local:1 opens inputs at the run's size on client and worker: the same scores."""
    pytest.importorskip("distributed")
    pq = pytest.importorskip("pyarrow.parquet")
    from aeflow.runtime.scorer import AnomalyScorer

    out, _, _, wide, _ = api_run
    np.save(tmp_path / "wide.npy", wide[:40])
    proc = run_cli("score", str(tmp_path / "wide.npy"), "--artifacts", str(out), "--scheduler", "local:1",
                   "-o", str(tmp_path / "x.parquet"), "-q")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(tmp_path / "x.parquet")
    scorer = AnomalyScorer(out, device="cpu")
    np.testing.assert_array_equal(table["score"].to_numpy(), scorer.score(wide[:40]))
    np.testing.assert_array_equal(table["p_value"].to_numpy(), scorer.p_values_of(scorer.score(wide[:40])))


def test_score_without_input_on_another_size_says_so(api_run):
    """No INPUT: the demo set is 28x28; a run of 12x16 images says so (it named demo.npz's shape)."""
    proc = invoke_cli("score", "--artifacts", str(api_run[0]))
    assert proc.returncode == 2 and "no INPUT given" in proc.stderr and "this run's are 12x16" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_api_export_over_a_checkpoint_needs_force_and_says_what_it_removed(api_run, tmp_path):
    """FlowModel.export never replaces a checkpoint without force=True: one line before any work (it
    said another file 'appeared'), the folder unchanged. With force it exports, and a file of the
    graphs it replaces goes with a note (ae.int8.onnx went silently)."""
    import shutil

    from aeflow.errors import OutputError

    out, flow, _, _, flow_only = api_run
    for name in flow_only:
        shutil.copy(out / name, tmp_path / name)
    for name in ("threshold.json", "ae.onnx"):  # an earlier detector's, no checkpoint of it now
        shutil.copy(out / name, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(OutputError, match=r"flow.pt: file exists; pass force=True"):
        flow.export(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    report = flow.export(tmp_path, force=True)
    assert not (tmp_path / "threshold.json").exists() and not (tmp_path / "ae.onnx").exists()
    assert (tmp_path / "flow.json").is_file()
    assert "removed threshold.json, ae.onnx: the earlier export's, which this one replaced" in report.notes

def test_cli_export_never_removes_another_models_export_without_force(api_run, tmp_path, capfd):
    """export -o RUN --checkpoints OTHER (flow.pt only) deleted RUN's exported detector, exit 0, a note only."""
    import shutil

    out = api_run[0]
    shutil.copytree(out, tmp_path / "run")
    (tmp_path / "other").mkdir()
    shutil.copy(out / "flow.pt", tmp_path / "other")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    args = ("export", "-o", str(tmp_path / "run"), "--checkpoints", str(tmp_path / "other"))
    line = assert_one_line_error(invoke_cli(*args, capfd=capfd), 1)
    assert "holds an exported detector (threshold.json)" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    proc = invoke_cli(*args, "--force", capfd=capfd)
    assert proc.returncode == 0, proc.stderr
    assert "removed threshold.json, ae.onnx" in proc.stdout and not (tmp_path / "run" / "ae.onnx").exists()


def test_a_signal_during_the_export_publish_leaves_a_consistent_run_and_says_it_was_written(api_run, tmp_path,
                                                                                            capfd, monkeypatch):
    """A SIGTERM as export --force published its files (held to the end of that step) exited 143 saying only
    'interrupted', the new files in place but the earlier detector's not yet removed; now they go in the same
    step, the line says the folder was written, and verify passes on it."""
    import os
    import shutil
    import signal

    from aeflow import files

    shutil.copytree(api_run[0], tmp_path / "run")
    (tmp_path / "other").mkdir()
    shutil.copy(api_run[0] / "flow.pt", tmp_path / "other")
    real = files.publish

    def publish(tmp, path, replace):
        real(tmp, path, replace)
        if path == tmp_path / "run" / "flow.json":  # the last file: before the earlier detector's removal
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(files, "publish", publish)
    proc = invoke_cli("export", "-o", str(tmp_path / "run"), "--checkpoints", str(tmp_path / "other"), "--force",
                      capfd=capfd)
    line = assert_one_line_error(proc, 143)
    assert f"interrupted after writing {tmp_path / 'run'} (complete) (SIGTERM)" in line, line
    assert not (tmp_path / "run" / "ae.onnx").exists() and not (tmp_path / "run" / "threshold.json").exists()
    assert invoke_cli("verify", "--artifacts", str(tmp_path / "run"), capfd=capfd).returncode == 0


def test_a_failed_api_export_leaves_the_run_folder_as_it_was(api_run, tmp_path, monkeypatch):
    """export(force=True) wrote the new checkpoint before exporting: a failed export then left a
    checkpoint the graphs did not come from ('nothing was written' was false)."""
    import shutil

    import aeflow.train.api as api
    from aeflow.errors import ParityError

    out, flow, _, _, flow_only = api_run
    for name in flow_only:
        shutil.copy(out / name, tmp_path / name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fails(*args, **kwargs):
        raise ParityError("flow_sampler.onnx misses its accuracy targets; nothing was written")

    monkeypatch.setattr(api, "export_artifacts", fails)
    with pytest.raises(ParityError):
        FlowModel(epochs=1, seed=7).fit(np.random.default_rng(7).normal(size=300)).export(tmp_path, force=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_api_exports_beside_a_cli_trained_flow_and_into_a_folder_named_array(api_run, tmp_path, monkeypatch):
    """A run folder holding only a flow.pt (trained, not yet exported): AutoencoderDetector.export(run) was
    refused ("flow.pt exists and is not an earlier aeflow export's file"), though it exports that very flow.pt
    beside the detector. And a flow fitted in Python records data="array", which export took for an input
    path: exporting into ./array was refused as "inside the input folder array"."""
    out, flow, det, _, _ = api_run
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "flow.pt").write_bytes((out / "flow.pt").read_bytes())
    det.export(tmp_path / "run")
    assert {"threshold.json", "flow.json", "ae.pt", "flow.pt"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert (tmp_path / "run" / "flow.pt").read_bytes() == (out / "flow.pt").read_bytes()
    monkeypatch.chdir(tmp_path)
    flow.export("array")
    assert (tmp_path / "array" / "flow.json").is_file()


def test_export_never_replaces_a_runs_own_checkpoint_or_a_file_that_only_looks_like_aeflows(api_run, tmp_path):
    """export --checkpoints A -o B replaced B's own trained ae.pt (any aeflow threshold.json in B made every
    name 'an earlier export's'); a flow.json holding just a "schema_version" counted as aeflow's."""
    import shutil

    from aeflow.errors import OutputError
    from aeflow.export.exporter import export_artifacts

    out = api_run[0]
    for name in ("threshold.json", "ae.onnx", "golden.npz"):
        shutil.copy(out / name, tmp_path)
    (tmp_path / "ae.pt").write_bytes(b"my own training")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(OutputError, match=r"ae.pt exists and is not an earlier aeflow export's file"):
        export_artifacts(out, tmp_path, evaluate=False)
    (tmp_path / "ae.pt").unlink()
    (tmp_path / "flow.json").write_text('{"schema_version": 3, "mine": true}')
    with pytest.raises(OutputError, match=r"flow.json exists and is not an earlier aeflow export's file"):
        export_artifacts(out, tmp_path, evaluate=False)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    mine = b'{"schema_version": 3, "mine": true}'
    assert after == {**{k: v for k, v in before.items() if k != "ae.pt"}, "flow.json": mine}


def test_export_keeps_a_calibration_that_lands_while_it_works(api_run, tmp_path, monkeypatch):
    """export checked for a calibration before its work only: one saved while it staged was replaced by the
    training threshold, without a note, its calibration_scores.npy left unbound. Now refused as it publishes."""
    import shutil

    from aeflow.errors import OutputError
    from aeflow.export import exporter
    from aeflow.runtime import AnomalyScorer

    out, _, det, wide, _ = api_run
    run = shutil.copytree(out, tmp_path / "run")
    stage = exporter.stage_detector

    def calibrated_meanwhile(*args, **kwargs):
        staged = stage(*args, **kwargs)
        scorer = AnomalyScorer(run)
        scorer.calibrate(wide, k=2)
        scorer.save_calibration()
        return staged

    monkeypatch.setattr(exporter, "stage_detector", calibrated_meanwhile)
    with pytest.raises(OutputError, match="threshold.json: another command wrote it while aeflow worked from it"):
        det.export(run, force=True)
    doc = json.loads((run / "threshold.json").read_text())
    assert doc["calibration"]["rule"] == "mean + k std" and AnomalyScorer(run).threshold == doc["threshold"]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("into", ["another folder", "the run folder"])
def test_export_refuses_a_checkpoint_trained_again_while_it_exported(api_run, tmp_path, monkeypatch, into):
    """threshold.json recorded the sha256 of the ae.pt found at its end, and the copy was that file too, though the
    graphs came from the one loaded at the start ('train -o RUN --force' meanwhile): refused now, nothing written."""
    import shutil

    from aeflow.errors import OutputError
    from aeflow.export import exporter

    run = shutil.copytree(api_run[0], tmp_path / "run")
    dest = run if into == "the run folder" else tmp_path / "out"
    stage = exporter.stage_detector

    def trained_meanwhile(*args, **kwargs):
        staged = stage(*args, **kwargs)
        with open(run / "ae.pt", "ab") as f:  # another training's checkpoint, as far as its bytes go
            f.write(b"\0")
        return staged

    monkeypatch.setattr(exporter, "stage_detector", trained_meanwhile)
    before = {p.name: p.read_bytes() for p in dest.iterdir()} if dest.exists() else {}
    with pytest.raises(OutputError, match="ae.pt: another command wrote it while aeflow"):
        exporter.export_artifacts(run, dest, evaluate=False, force=True, validation=api_run[2]._validation)
    after = {p.name: p.read_bytes() for p in dest.iterdir()} if dest.exists() else {}
    assert {k: v for k, v in after.items() if k != "ae.pt"} == {k: v for k, v in before.items() if k != "ae.pt"}


def test_export_api_refuses_int8_without_the_evaluation_first(tmp_path):
    """export_artifacts(evaluate=False, quantize="int8") raised KeyError 'mnist-test' after the work (only the CLI
    refused --quantize with --no-eval)."""
    from aeflow.errors import UsageError
    from aeflow.export.exporter import export_artifacts

    with pytest.raises(UsageError, match="int8 quantization is checked on the test sets"):
        export_artifacts(tmp_path, tmp_path / "out", evaluate=False, quantize="int8")
    with pytest.raises(UsageError, match="unknown quantization 'fp16'"):  # it wrote no int8 graph, silently
        export_artifacts(tmp_path, tmp_path / "out", quantize="fp16")
    assert not (tmp_path / "out").exists()


def test_export_never_drops_a_calibration_silently(api_run, tmp_path, capfd):
    """Re-exporting a calibrated run put the training threshold back without a word (calibration_scores.npy was
    left unbound): now refused before any work, the folder unchanged; with force a note says so and the scores go."""
    import shutil

    from aeflow.runtime import AnomalyScorer

    out, _, det, wide, _ = api_run
    run = shutil.copytree(out, tmp_path / "run")
    trained = json.loads((run / "threshold.json").read_text())["threshold"]
    scorer = AnomalyScorer(run)
    scorer.calibrate(wide, k=2)
    scorer.save_calibration()
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    line = assert_one_line_error(invoke_cli("export", "-o", str(run), "--checkpoints", str(run), capfd=capfd), 1)
    assert "threshold.json holds a calibration (ae.onnx's of " in line and "replace with the training threshold" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    report = det.export(run, force=True)  # fitted on an array: the API exports it
    doc = json.loads((run / "threshold.json").read_text())
    assert doc["threshold"] == trained and "calibration" not in doc and not (run / "calibration_scores.npy").exists()
    assert any(note.startswith("replaced the calibration (ae.onnx's of ") for note in report.notes)
