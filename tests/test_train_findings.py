"""Regressions from an attacker's report on training: complex values cast silently, plots that
raised after the checkpoint was written, a BOM in an Excel CSV."""

import re

import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli

pytest.importorskip("torch")

from aeflow.errors import DataError, InputError  # noqa: E402
from aeflow.train.api import FlowModel  # noqa: E402


def test_complex_values_are_refused_not_cast(tmp_path, capfd):
    """The imaginary part was dropped with a ComplexWarning and exit 0."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=500) + 1j * rng.normal(size=500)
    np.save(tmp_path / "vc.npy", values)
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / "vc.npy"), "--epochs", "1",
                                            "-o", str(tmp_path / "r"), capfd=capfd), 1)
    assert "complex values (dtype complex128)" in line and not (tmp_path / "r").exists()
    with pytest.raises(DataError, match="complex values"):
        FlowModel(epochs=1).fit(values)
    with pytest.raises(DataError, match="complex values"):
        FlowModel(epochs=1).fit(list(values))
    flow = FlowModel(epochs=1).fit(values.real)
    with pytest.raises(InputError, match="complex values"):  # FlowSampler.forward's check (aeflow.checks.as_floats)
        flow.score_samples(values[:5])
    np.save(tmp_path / "when.npy", np.arange(30).astype("datetime64[s]"))  # another dtype that is no real number
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / "when.npy"),
                                            "-o", str(tmp_path / "r"), capfd=capfd), 1)
    assert "dtype datetime64[s]" in line and not (tmp_path / "r").exists()
    np.save(tmp_path / "ic.npy", np.full((30, 12, 16), 0.5 + 0.5j, np.complex64))  # the image path refuses them too
    line = assert_one_line_error(invoke_cli("train", "ae", "--data", str(tmp_path / "ic.npy"),
                                            "-o", str(tmp_path / "r"), capfd=capfd), 1)
    assert "complex values (dtype complex64)" in line and not (tmp_path / "r").exists()


NOISE = np.random.default_rng(0).normal(0, 1, 500)


@pytest.mark.parametrize("values, needle", [(1e8 + NOISE, "resolves only steps of 8"),
                                            (1e300 * NOISE, "float32 (range 3.4e38)"),
                                            (1e-46 * NOISE, "resolves only steps")])
def test_values_float32_cannot_hold_are_refused_before_training(tmp_path, capfd, values, needle):
    """1e8 + N(0, 1) gave matplotlib's 'Too many bins' traceback with flow.pt left behind; 1e300
    numpy warnings and a misleading 'diverged ... try a smaller learning rate'."""
    np.save(tmp_path / "v.npy", values)
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / "v.npy"), "--epochs", "2",
                                            "-o", str(tmp_path / "r"), capfd=capfd), 1)
    assert needle in line and not (tmp_path / "r").exists()
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        FlowModel(epochs=1).fit(values)


def test_a_failed_figure_or_publish_leaves_nothing_of_the_run(tmp_path, monkeypatch):
    """Figures are made before anything is written; the checkpoint and figures are published together."""
    from aeflow.errors import OutputError
    from aeflow.train import flow

    config = lambda: flow.FlowConfig(epochs=2, n_train=200, n_test=50)  # noqa: E731
    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")
    with monkeypatch.context() as m:
        m.setattr(flow, "line_png", broken)
        with pytest.raises(RuntimeError, match="plotting failed"):
            flow.train_flow(tmp_path / "r", config(), quiet=True)
    assert not (tmp_path / "r").exists()
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "flow.pt").write_bytes(b"theirs")  # appeared after the CLI's check: kept, no figures
    with pytest.raises(OutputError, match="another file appeared"):
        flow.train_flow(tmp_path / "r", config(), quiet=True)
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["flow.pt"]
    assert (tmp_path / "r" / "flow.pt").read_bytes() == b"theirs"
    flow.train_flow(tmp_path / "r", config(), quiet=True, force=True)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["flow.pt", "flow_data.png", "flow_density.png",
                                                                   "flow_loss.png", "flow_map.png"]


@pytest.mark.parametrize("shape", [(12, 16), (28, 28)])
def test_verify_catches_a_retrained_checkpoint_of_any_run(tmp_path, shape):
    """verify checked the recorded sha256 only for 28x28 runs holding both models: a detector of
    own-size images (or a detector alone, or a flow alone) retrained after export passed, exit 0."""
    from aeflow.analysis.verify import verify_artifacts
    from aeflow.errors import ArtifactError
    from aeflow.train.api import AutoencoderDetector

    images = (np.random.default_rng(0).random((40, *shape)) * 255).astype(np.uint8)
    AutoencoderDetector(epochs=1, batch_size=20).fit(images).export(tmp_path / "run")
    assert verify_artifacts(tmp_path / "run").passed
    _retrain(AutoencoderDetector(epochs=1, batch_size=20, seed=5).fit(images), tmp_path / "run")
    with pytest.raises(ArtifactError, match="ae.pt: the checkpoint and the graph disagree"):
        verify_artifacts(tmp_path / "run")
    if shape == (12, 16):  # a flow alone, once
        values = np.random.default_rng(1).gamma(2.0, size=200)
        FlowModel(epochs=1).fit(values).export(tmp_path / "flow")
        _retrain(FlowModel(epochs=1, seed=3).fit(values), tmp_path / "flow")
        with pytest.raises(ArtifactError, match="flow.pt: the checkpoint and the graph disagree"):
            verify_artifacts(tmp_path / "flow")


def _retrain(model, run) -> None:
    """Write ``model``'s checkpoint over the run's, as 'aeflow train --force' does, without exporting."""
    from dataclasses import asdict

    from aeflow.train.checkpoint import save_checkpoint

    kind, name = ("flow", "flow.pt") if isinstance(model, FlowModel) else ("autoencoder", "ae.pt")
    save_checkpoint(run / name, kind, model.model_, asdict(model.config), model.history_, force=True)


def test_bench_and_score_use_the_runs_own_demo_set(tmp_path, capfd):
    """bench fed 28x28 demo images to a 12x16 run: onnxruntime's INVALID_ARGUMENT traceback; score
    without INPUT read the bundled demo set even where the run folder held its own."""
    import json

    from aeflow.analysis.bench import flops_per_image
    from aeflow.runtime import AnomalyScorer
    from aeflow.train.api import AutoencoderDetector

    images = (np.random.default_rng(0).random((40, 12, 16)) * 255).astype(np.uint8)
    AutoencoderDetector(epochs=1, batch_size=20).fit(images).export(tmp_path / "run")
    line = assert_one_line_error(invoke_cli("bench", "--artifacts", str(tmp_path / "run"), "--quick", capfd=capfd), 1)
    assert "no demo.npz of 12x16 images in" in line and "uint8 [N, 12, 16]" in line
    line = assert_one_line_error(invoke_cli("score", "--artifacts", str(tmp_path / "run"), capfd=capfd), 2)
    assert "bundled demo set is of 28x28 images while this run's are 12x16" in line
    np.savez(tmp_path / "run" / "demo.npz", images=images)
    proc = invoke_cli("score", "--artifacts", str(tmp_path / "run"), "--json", capfd=capfd)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["total"]["images"] == 40 and doc["inputs"][0]["name"] == "demo.npz"
    expected = AnomalyScorer(artifacts=tmp_path / "run").score(images)
    assert doc["total"]["flagged"] == int((expected > doc["threshold"]).sum())
    proc = invoke_cli("bench", "--artifacts", str(tmp_path / "run"), "--quick", "--json", capfd=capfd)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["settings"]["image_shape"] == [12, 16] and result["sampling"] == []
    assert flops_per_image((28, 28)) == 950_272
    for r in result["scoring"]:
        assert r["gflops"] == pytest.approx(r["images_per_s"]["median"] * flops_per_image((12, 16)) / 1e9)


def test_the_side_limit_stated_is_the_one_applied(tmp_path, capfd):
    """1x784 images said '4 to 4096 pixels a side' where training takes 4 to 1,024."""
    np.save(tmp_path / "flat.npy", np.zeros((30, 1, 784), np.uint8))
    np.save(tmp_path / "wide.npy", np.zeros((30, 4, 2000), np.uint8))  # inside the old 4096, beyond 1,024
    for name in ("flat.npy", "wide.npy"):
        line = assert_one_line_error(invoke_cli("train", "ae", "--data", str(tmp_path / name), "-o",
                                                str(tmp_path / "r"), capfd=capfd), 1)
        assert "4 to 1,024 pixels a side" in line and not (tmp_path / "r").exists()


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_holding_more_than_its_header_count_is_refused(tmp_path, capfd, suffix):
    """A header saying 25 images in a file of 50 scored 25 rows, exit 0."""
    import gzip
    import struct

    from conftest import write_idx

    images = (np.random.default_rng(0).random((50, 28, 28)) * 255).astype(np.uint8)
    payload = struct.pack(">HBB3I", 0, 8, 3, 25, 28, 28) + images.tobytes()
    path = tmp_path / f"short-header{suffix}"
    path.write_bytes(gzip.compress(payload) if suffix else payload)
    line = assert_one_line_error(invoke_cli("score", str(path), "-o", str(tmp_path / "s.csv"), capfd=capfd), 1)
    assert ("holds 39200 data bytes, the IDX header promises 19600" in line if not suffix
            else "holds data after the 25 images its header promises" in line)
    assert not (tmp_path / "s.csv").exists()
    write_idx(tmp_path / f"exact{suffix}", images)  # the other input: the same file with its right count
    proc = invoke_cli("score", str(tmp_path / f"exact{suffix}"), "-o", str(tmp_path / "s.csv"), capfd=capfd)
    assert proc.returncode == 0 and len((tmp_path / "s.csv").read_text().splitlines()) == 51, proc.stderr


def test_a_csv_or_text_file_with_a_byte_order_mark_is_read(tmp_path):
    """Excel's UTF-8 CSV starts with a BOM: 'no column 'temperature' (columns: \\ufefftemperature, ...)'."""
    from aeflow.train.data import read_values

    values = np.random.default_rng(0).gamma(2.0, size=60)
    text = "temperature,site\n" + "".join(f"{float(v)!r},a\n" for v in values)
    (tmp_path / "values.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    np.testing.assert_array_equal(read_values(tmp_path / "values.csv", "temperature"), values)
    (tmp_path / "values.txt").write_bytes(b"\xef\xbb\xbf" + "".join(f"{float(v)!r}\n" for v in values).encode())
    np.testing.assert_array_equal(read_values(tmp_path / "values.txt"), values)


def test_flow_figures_of_values_clustered_at_float32_resolution(tmp_path, capfd):
    """499 values at 1e8 + N(0, 1) and one 0 passed the checks (std 4.5e6); a training split without
    the 0 made matplotlib raise 'Too many bins' after flow.pt was written. Such values are refused now, before
    training (their middle half spans fewer than 100 float32 steps at 1e8), with nothing written."""
    from aeflow.train.flow import _bins

    for data in (np.full(10, 1e8, np.float32), np.float32(1e8) + np.arange(3, dtype=np.float32) * 8, np.zeros(4)):
        edges = _bins(data)
        assert len(edges) == 51 and np.all(np.diff(edges) > 0) and edges[0] <= data.min() <= data.max() <= edges[-1]
    np.save(tmp_path / "v.npy", np.r_[1e8 + NOISE[:499], 0.0])
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / "v.npy"), "--epochs", "2",
                                            "-o", str(tmp_path / "r"), capfd=capfd), 1)
    assert "resolves only steps of 8; drop or clip the outliers" in line and not (tmp_path / "r").exists()


@pytest.mark.parametrize("offset", [1000.0])
def test_values_far_from_zero_export_and_sample_to_float32_resolution(offset, tmp_path):
    """Values at 1000 + N(0, 1) (100 + N(0, 1) already failed): the sampler graph's checks allow float32's step at
    the data's size (an export of such data was refused), and its samples are within the recorded two
    steps of the float64 bisection's (one, on the machines tried)."""
    from aeflow.runtime import FlowSampler
    from aeflow.train.api import FlowModel

    values = offset + np.random.default_rng(0).standard_normal(1200)
    FlowModel(epochs=5, seed=0).fit(values).export(tmp_path)
    sampler = FlowSampler(tmp_path)
    graph, exact = sampler.sample(50_000, seed=1), sampler.sample(50_000, seed=1, method="bisection")
    tolerance, step = sampler.metadata.sampler.check["x_tolerance"], float(np.spacing(np.float32(offset)))
    assert abs(float(np.median(graph)) - offset) < 0.5 and tolerance == pytest.approx(2 * step, rel=0.01)
    assert np.abs(graph.astype(np.float64) - exact).max() <= tolerance  # two float32 steps: the promise


def test_bisection_of_values_at_a_small_scale_keeps_the_recorded_tolerance(tmp_path):
    """Values at 1e-3 * N(0, 1): "bisection" trusted float32 roots to 4e-6 in absolute terms, 400 times the
    1e-5 of the data's spread that the graph keeps (most samples were 10-45x beyond flow.json's x_tolerance)."""
    from aeflow.runtime import FlowSampler
    from aeflow.runtime.inversion import polish64

    FlowModel(epochs=5, seed=0).fit(1e-3 * np.random.default_rng(0).standard_normal(1200)).export(tmp_path)
    sampler = FlowSampler(tmp_path, device="cpu")
    z = sampler.draw_z(np.random.default_rng(5), 20_000)
    exact = polish64(sampler._comp, z, np.full(z.shape, np.nan), *sampler.x_bracket)
    for method in ("graph", "bisection"):
        error = np.abs(sampler.invert(z, method=method).astype(np.float64) - exact).max()
        assert error <= sampler.metadata.sampler.check["x_tolerance"], (method, error)


def test_score_samples_checks_values_as_forward_does():
    """score_samples flattened 2-D values, read text ("1.5") and gave -inf with a RuntimeWarning beyond float32's
    range; it refuses them with FlowSampler.forward's one line, and scores what forward takes."""
    from aeflow.runtime.sampler import FlowSampler

    flow, sampler = FlowModel(epochs=1).fit(np.random.default_rng(0).normal(size=60)), FlowSampler(device="cpu")
    for bad in ([[0.0, 1.0], [2.0, 3.0]], ["1.5", "2"], [1e39, 0.0], [1 + 1j], [True, False], [[1.0], 2.0]):
        with pytest.raises(InputError) as got:
            flow.score_samples(bad)
        with pytest.raises(InputError) as want:
            sampler.forward(bad)
        assert str(got.value) == str(want.value).replace("x:", "values:", 1) and "\n" not in str(got.value)
    for good in ([0.5, 2.0], np.arange(3, dtype=np.int64), 1.5, np.array([1e38])):
        assert flow.score_samples(good).shape == (np.size(good),) and flow.score_samples(good).dtype == np.float32


def test_an_estimator_used_before_fit_says_so_in_one_line(tmp_path):
    """decision_function, predict, score_samples and export before fit raised AttributeError: 'model_'."""
    from aeflow.errors import UsageError
    from aeflow.train.api import AutoencoderDetector

    images = np.zeros((3, 28, 28), dtype=np.uint8)
    calls = [lambda: AutoencoderDetector().decision_function(images), lambda: AutoencoderDetector().predict(images),
             lambda: AutoencoderDetector().export(tmp_path), lambda: FlowModel().score_samples([0.0, 1.0]),
             lambda: FlowModel().export(tmp_path)]
    for call in calls:
        with pytest.raises(UsageError, match=r"is not fitted yet; call fit\(\.\.\.\) first"):
            call()
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("text, words", [
    ("0.5\n1.5\n2.5\n", "the first line holds numbers (0.5), not column names"),  # its first value was lost
    ("t,t\n1,2\n3,4\n", "column names repeat (t)"),  # the second column was read
    ("t\n1\n2,3\n", "line 3 has 2 fields, the header 1"),  # the extra field was dropped
    ("", "empty; a CSV needs a header line"),
])
def test_a_csv_the_header_rule_cannot_read_is_refused(tmp_path, text, words):
    from aeflow.train.data import read_values

    (tmp_path / "v.csv").write_text(text)
    with pytest.raises(DataError, match=re.escape(words)):
        read_values(tmp_path / "v.csv")


def test_an_empty_npy_of_values_is_one_line_not_an_interruption(tmp_path, capfd):
    """np.load raises EOFError for an empty file, which click takes for Ctrl-D: 'aeflow: interrupted', exit 130."""
    from aeflow.train.data import read_values

    (tmp_path / "v.npy").write_bytes(b"")
    with pytest.raises(DataError, match="not a list of numbers"):
        read_values(tmp_path / "v.npy")
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / "v.npy"), "-o",
                                            str(tmp_path / "r"), capfd=capfd), 1)
    assert "v.npy: not a list of numbers" in line and not (tmp_path / "r").exists()


def test_values_from_a_folder_or_nothing_say_which(tmp_path):
    """read_values(a folder) said 'no such file'."""
    from aeflow.train.data import read_values

    with pytest.raises(DataError, match="a folder, not a file; pass one file of values"):
        read_values(tmp_path)
    with pytest.raises(DataError, match="no such file; pass one file of values"):
        read_values(tmp_path / "absent.csv")


@pytest.mark.parametrize("values, words", [
    (np.r_[np.zeros(50), np.ones(50)], "only 2 distinct values for 5 components"),
    (np.arange(100) % 5, "only 5 distinct values for 5 components"),
    (np.arange(100) % 2 == 0, "dtype bool; the flow fits real numbers"),
])
def test_values_a_continuous_flow_cannot_fit_are_refused_at_fit(values, words):
    """Two-valued or boolean values were fitted (the likelihood has no maximum there); export then failed
    with a parity error about dz_dx."""
    with pytest.raises(DataError, match=words):
        FlowModel(epochs=1).fit(values)


def test_the_flows_test_nll_history_is_returned_by_training_one_per_epoch():
    """run_epochs returns the held-out NLL of each epoch (not filled in by a progress callback): one per epoch,
    the last the trained flow's NLL of the test values, recomputed here in float64 from its components."""
    import math

    import torch

    from aeflow.train.checkpoint import run_epochs
    from aeflow.train.flow import FlowConfig, flow_data, train_flow_on

    config = FlowConfig(epochs=4, n_train=500, n_test=200)
    train_x, test_x = flow_data(config)
    flow, history = train_flow_on(train_x, test_x, config, quiet=True)
    assert len(history["test_nll"]) == len(history["train_nll"]) == 4
    c = {k: np.array(v, np.float64) for k, v in flow.components().items()}
    t = (test_x.astype(np.float64)[:, None] - c["mu"]) / c["sigma"]
    z = (c["weight"] * 0.5 * np.vectorize(math.erf)(t / math.sqrt(2))).sum(axis=1)
    dz_dx = (c["weight"] / c["sigma"] * np.exp(-0.5 * t * t)).sum(axis=1) / math.sqrt(2 * math.pi)
    nll = -np.mean(-0.5 * z * z - 0.5 * math.log(2 * math.pi) + np.log(dz_dx))
    assert history["test_nll"][-1] == pytest.approx(nll, rel=1e-5)
    assert run_epochs(flow, torch.from_numpy(train_x), lambda x: -flow(x)[2].mean(), config, "flow", True)[1] == {}


def test_values_are_read_by_their_format_and_text_takes_comments(tmp_path):
    """Values in an .npz, or an .npy without its suffix, were read as text ("'utf-8' codec can't decode byte");
    a '# comment' line was "line 1 holds 3 values". Now: an .npy by its magic, the .npz refused naming the format,
    comment lines skipped."""
    from aeflow.train.data import read_values

    values = np.random.default_rng(0).normal(size=50)
    np.save(tmp_path / "v.npy", values)
    (tmp_path / "v.npy").rename(tmp_path / "values")
    np.testing.assert_array_equal(read_values(tmp_path / "values"), values)
    np.savez(tmp_path / "v.npz", values=values)
    with pytest.raises(DataError, match=r"v.npz: an .npz archive, not a list of values; save them as a 1-D .npy"):
        read_values(tmp_path / "v.npz")
    (tmp_path / "c.txt").write_text("# sensor 7, degrees\n" + "\n".join(f"{float(v)!r}  # ok" for v in values) + "\n")
    np.testing.assert_array_equal(read_values(tmp_path / "c.txt"), values)
