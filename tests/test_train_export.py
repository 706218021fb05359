"""A tiny end-to-end run: train both models briefly on synthetic data, export, check the files."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli, run_cli

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from aeflow import parity  # noqa: E402
from aeflow.files import sha256_file  # noqa: E402
from aeflow.metrics import threshold_from_scores  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("art")
    for args in (["train", "ae", "--data-dir", str(tiny_data_dir), "--epochs", "2", "--batch-size", "20", "-o", str(out), "-q"],
                 ["train", "flow", "--epochs", "3", "--n-train", "600", "--n-test", "200", "-o", str(out), "-q"],
                 ["export", "--checkpoints", str(out), "-o", str(out), "--data-dir", str(tiny_data_dir)]):
        proc = invoke_cli(*args)  # in this process: torch is imported once (a new process: test_checkpoints_...)
        assert proc.returncode == 0, proc.stderr
    return out


def test_export_writes_self_contained_checked_graphs(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"ae.onnx", "flow.onnx", "threshold.json", "flow.json", "ae.pt", "flow.pt", "ae_loss.png"} <= names
    assert not any(n.endswith(".onnx.data") or n.endswith(".tmp") for n in names)
    for name in ("ae.onnx", "flow.onnx"):
        onnx.checker.check_model(onnx.load(str(exported / name)), full_check=True)


def test_onnx_matches_pytorch_within_1e5(exported, tiny_data_dir):
    import onnxruntime as ort

    from aeflow.datasets import load_images, to_float
    from aeflow.export.reference import load_autoencoder, load_flow, torch_ae

    images = to_float(load_images("mnist", "test", tiny_data_dir))
    sess = ort.InferenceSession(str(exported / "ae.onnx"), providers=["CPUExecutionProvider"])
    rec, score = sess.run(None, {"images": images})
    t_rec, t_score = torch_ae(load_autoencoder(exported / "ae.pt")[0], images)
    assert rec.shape == (40, 1, 28, 28) and score.shape == (40,)
    assert np.abs(rec - t_rec).max() <= parity.TOLERANCES["reconstruction"][0]
    assert np.abs(score - t_score).max() <= 1e-5
    np.testing.assert_allclose(score, ((images - rec) ** 2).reshape(40, -1).mean(1), rtol=1e-5)

    flow, _ = load_flow(exported / "flow.pt")
    x = np.linspace(-5, 5, 501, dtype=np.float32)
    fs = ort.InferenceSession(str(exported / "flow.onnx"), providers=["CPUExecutionProvider"])
    z, dz, lp = fs.run(None, {"x": x})
    with torch.inference_mode():
        tz, tdz, tlp = (v.numpy() for v in flow(torch.from_numpy(x)))
    assert np.abs(z - tz).max() <= 1e-5
    assert np.all(np.abs(dz - tdz) <= 1e-5 * np.abs(tdz))
    assert np.abs(lp - tlp).max() <= 1e-5 * max(1.0, np.abs(tlp).max())


def test_threshold_json_comes_from_the_graphs_scores(exported, tiny_data_dir):
    import onnxruntime as ort

    from aeflow.datasets import load_images, split_indices, to_float

    meta = json.loads((exported / "threshold.json").read_text())
    assert meta["schema_version"] == 2 and meta["k"] == 3.0 and meta["validation"]["ddof"] == 1
    assert meta["sha256"] == sha256_file(exported / "ae.onnx")
    images = load_images("mnist", "train", tiny_data_dir)
    _, val = split_indices(len(images), meta["data"]["split_seed"])
    sess = ort.InferenceSession(str(exported / "ae.onnx"), providers=["CPUExecutionProvider"])
    scores = sess.run(["score"], {"images": to_float(images[val])})[0]
    th = threshold_from_scores(scores, 3)
    assert meta["validation"]["n"] == len(val) == 20
    assert th.value == pytest.approx(meta["threshold"], rel=1e-6)
    assert set(meta["evaluation"]["type_ii"]) == {"fashion-mnist-test"}
    assert 0 <= meta["evaluation"]["type_i"]["rate"] <= 1


def test_calibrate_k3_on_the_validation_images_reproduces_exports_threshold(exported, tiny_data_dir, tmp_path):
    """``aeflow calibrate --k 3`` on the very validation images export used gives export's
    threshold, mean and std bit for bit (same graph scores, same float64 statistics)."""
    from aeflow.datasets import load_images, split_indices

    meta = json.loads((exported / "threshold.json").read_text())
    images = load_images("mnist", "train", tiny_data_dir)
    _, val = split_indices(len(images), meta["data"]["split_seed"])
    np.save(tmp_path / "val.npy", images[val])
    proc = run_cli("calibrate", str(tmp_path / "val.npy"), "--artifacts", str(exported), "-o", str(tmp_path / "cal"),
                   "--k", "3", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    new = json.loads((tmp_path / "cal" / "threshold.json").read_text())
    cal = new["calibration"]
    assert new["threshold"] == meta["threshold"] and cal["previous_threshold"] == meta["threshold"]
    assert (cal["mean"], cal["std"], cal["n"]) == (meta["validation"]["mean"], meta["validation"]["std"], 20)
    assert json.loads((exported / "threshold.json").read_text()) == meta  # -o leaves the folder as it was


def test_flow_metadata_records_range_and_components(exported):
    meta = json.loads((exported / "flow.json").read_text())
    assert meta["sha256"] == sha256_file(exported / "flow.onnx")
    w = sum(meta["components"]["weight"])
    assert meta["W"] == pytest.approx(w) and meta["z_range"] == pytest.approx([-w / 2, w / 2])
    assert meta["n_components"] == 5 and len(meta["components"]["mu"]) == 5
    lo, hi = meta["x_bracket"]
    assert meta["z_at_bracket"][0] == pytest.approx(-w / 2, abs=1e-5) and meta["z_at_bracket"][1] == pytest.approx(w / 2, abs=1e-5)
    assert lo < min(meta["components"]["mu"]) and hi > max(meta["components"]["mu"])


def test_run_folder_is_used_end_to_end_and_bundled_files_stay(exported, bundled, tmp_path, no_torch_env, capfd):
    """A new user's run folder: verify (with and without torch) and score use its models, the
    bundled artifacts are untouched, and a checkpoint retrained after export is told apart."""
    import shutil

    before = {p.name: sha256_file(p) for p in bundled.iterdir() if p.is_file()}
    meta = json.loads((exported / "threshold.json").read_text())
    for proc, with_torch in ((invoke_cli("verify", "--artifacts", str(exported), "--device", "cpu"), True),
                             (run_cli("verify", "--artifacts", str(exported), "--device", "cpu", env=no_torch_env), False)):
        assert proc.returncode == 0, proc.stderr
        assert ("PyTorch checkpoints" in proc.stdout) == with_torch
    proc = run_cli("score", "--artifacts", str(exported), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert f"threshold {meta['threshold']:.6f}" in proc.stdout
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    line = assert_one_line_error(invoke_cli("train", "flow", "--epochs", "1", "--n-train", "300", "--n-test", "100",
                                            "-o", str(run), "-q", capfd=capfd), 1)
    assert "flow.pt exists; pass --force" in line
    proc = invoke_cli("train", "flow", "--epochs", "1", "--n-train", "300", "--n-test", "100", "-o", str(run), "-q",
                      "--force")
    assert proc.returncode == 0, proc.stderr
    line = assert_one_line_error(invoke_cli("verify", "--artifacts", str(run), "--device", "cpu", capfd=capfd), 1)
    assert "flow.pt: the checkpoint and the graph disagree" in line
    assert {p.name: sha256_file(p) for p in bundled.iterdir() if p.is_file()} == before


def test_checkpoints_load_weights_only_and_training_is_reproducible(exported, tiny_data_dir, tmp_path):
    ckpt = torch.load(exported / "ae.pt", weights_only=True)
    assert set(ckpt) == {"kind", "state_dict", "config", "history"}
    assert ckpt["config"]["epochs"] == 2 and len(ckpt["history"]["loss"]) == 2 * 5
    proc = run_cli("train", "ae", "--data-dir", str(tiny_data_dir), "--epochs", "2", "--batch-size", "20",
                   "-o", str(tmp_path), "-q")
    assert proc.returncode == 0, proc.stderr
    again = torch.load(tmp_path / "ae.pt", weights_only=True)
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(v, again["state_dict"][k]), k


def test_crafted_checkpoint_is_refused(tmp_path):
    import pickle

    from aeflow.errors import ArtifactError
    from aeflow.train.checkpoint import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(tmp_path / "ae.pt", "wb") as f:
        pickle.dump({"kind": "autoencoder", "state_dict": Evil()}, f, protocol=2)
    with pytest.raises(ArtifactError) as excinfo:
        load_checkpoint(tmp_path / "ae.pt", "autoencoder")
    assert not (tmp_path / "pwned").exists()
    line = str(excinfo.value)  # torch's first line, cut with "..." where it is long, never mid-word unmarked
    assert "refused to load, it holds more than weights (" in line and "\n" not in line
    assert line.endswith("...)") or len(line.split("(", 1)[1]) <= 121


def test_failed_parity_writes_nothing(exported, tiny_data_dir, tmp_path, monkeypatch):
    import shutil

    from aeflow import parity
    from aeflow.errors import ParityError
    from aeflow.export.exporter import export_artifacts

    for name in ("ae.pt", "flow.pt"):
        shutil.copy(exported / name, tmp_path / name)
    monkeypatch.setitem(parity.TOLERANCES, "score", (0.0, 0.0))
    monkeypatch.setitem(parity.TOLERANCES, "reconstruction", (0.0, 0.0))
    with pytest.raises(ParityError, match=r"max diff \S+ abs, \S+ rel \(tolerance .*; nothing was written"):
        export_artifacts(tmp_path, tmp_path, tiny_data_dir)  # both figures: a relative tolerance fails on rel
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae.pt", "flow.pt"]


def test_kill_during_export_keeps_previous_artifacts(exported, tiny_data_dir, tmp_path):
    import shutil

    for p in exported.iterdir():
        shutil.copy(p, tmp_path / p.name)
    before = {n: sha256_file(tmp_path / n) for n in ("ae.onnx", "flow.onnx", "threshold.json", "flow.json")}
    proc = subprocess.Popen([sys.executable, "-m", "aeflow", "export", "--checkpoints", str(tmp_path), "-o", str(tmp_path),
                             "--data-dir", str(tiny_data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = {n: sha256_file(tmp_path / n) for n in before}
    assert after == before
    meta = json.loads((tmp_path / "threshold.json").read_text())
    assert meta["sha256"] == sha256_file(tmp_path / "ae.onnx")


@pytest.mark.parametrize("args, code, needle", [
    (["train", "ae", "--epochs", "0"], 2, "--epochs must be an integer from 1"),
    (["train", "ae", "--epochs", "ten"], 2, "not a valid integer"),
    (["train", "flow", "--lr", "-1"], 2, "--lr must be > 0"),
    (["train", "ae", "--bogus"], 2, "No such option"),
    (["export", "--opset", "5"], 2, "--opset"),
    (["export", "--opset", "17"], 2, "18<=x<=23"),  # the exporter kept 18 (ae.onnx) or failed with a traceback (flow)
])
def test_bad_options_one_line(args, code, needle, capfd):
    line = assert_one_line_error(invoke_cli(*args, capfd=capfd), code)
    assert needle in line


def test_missing_data_folder_one_line(tmp_path, capfd):
    line = assert_one_line_error(invoke_cli("train", "ae", "--data-dir", str(tmp_path / "nope"), "-o", str(tmp_path),
                                            capfd=capfd), 1)
    assert "does not exist" in line and "--data-dir" in line
    assert not (tmp_path / "ae.pt").exists()


def test_data_folder_without_mnist(tmp_path, capfd):
    line = assert_one_line_error(invoke_cli("train", "ae", "--data-dir", str(tmp_path), "-o", str(tmp_path),
                                            capfd=capfd), 1)
    assert "no mnist train images" in line


def test_export_refuses_other_mnist_training_images_than_the_recorded_ones(exported, tiny_data_dir, tmp_path, capfd):
    """ae.pt records the sha256 of its training pixels; export --data-dir OTHER (as many images, other pixels) set
    the threshold on images that were not its held-out split, and recorded the first folder: now one line, nothing
    written. The recorded folder still exports."""
    import shutil

    from conftest import synthetic_digits, write_idx

    other = tmp_path / "other"
    shutil.copytree(tiny_data_dir, other)
    write_idx(other / "mnist" / "train-images-idx3-ubyte.gz", synthetic_digits(120, 7))  # same count and size
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(exported / "ae.pt", run)
    line = assert_one_line_error(invoke_cli("export", "--checkpoints", str(run), "-o", str(run), "--data-dir",
                                            str(other), capfd=capfd), 1)
    assert "the MNIST training images differ from those the autoencoder was trained on" in line, line
    assert sorted(p.name for p in run.iterdir()) == ["ae.pt"]
    proc = invoke_cli("export", "--checkpoints", str(run), "-o", str(run), "--data-dir", str(tiny_data_dir),
                      capfd=capfd)
    assert proc.returncode == 0 and (run / "threshold.json").is_file(), proc.stderr
