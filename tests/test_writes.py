"""One owner for every write (``aeflow.targets.check_target``): every command and API call that writes
refuses, before any work and whatever ``--force`` says, a target that is or holds what it reads
(inputs, the artifacts in use, the bundled artifacts), a dangling link or a name the file system
cannot hold; nothing on disk changes. Also: calibrate's lock, copies, globs, folder hash and
pickling after a save, and the ``-o -`` writers on a closed, full or broken stdout."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from aeflow.cli import cli
from aeflow.errors import ArtifactError, OutputError, UsageError
from aeflow.files import locked, sha256_file
from aeflow.runtime import artifacts, contract
from aeflow.runtime.calibration import calibrate_scores, write_calibration
from aeflow.runtime.outputs import ScoredInput, write_stdout
from aeflow.runtime.sampler import FlowSampler
from aeflow.runtime.scorer import AnomalyScorer
from conftest import copy_artifacts, edit_metadata

LONG = "b" * 245 + ".npy"  # its pictures would be named b..b_000002.png: 256 bytes


@pytest.fixture(scope="module")
def images(bundled):
    with np.load(bundled / "demo.npz") as d:
        return d["images"][~d["is_anomaly"]][:40]


@pytest.fixture
def place(tmp_path, images, bundled, monkeypatch):
    """A working folder with inputs of every kind, an artifacts copy and links, as the current folder."""
    np.save(tmp_path / "a.npy", images[:20])
    (tmp_path / "shards").mkdir()
    np.save(tmp_path / "shards" / "s1.npy", images[:10])
    np.save(tmp_path / "shards" / "s2.npy", images[10:20])
    (tmp_path / "pngs").mkdir()
    for i in range(3):
        Image.fromarray(images[i]).save(tmp_path / "pngs" / f"{i}.png")
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"image": [images[i].tobytes() for i in range(5)]}), tmp_path / "in.parquet")
    copy_artifacts(bundled, tmp_path / "art")
    (tmp_path / "link").symlink_to(tmp_path / "pngs")
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    (tmp_path / "dangling_dir").symlink_to(tmp_path / "nowhere")
    os.link(tmp_path / "a.npy", tmp_path / "hard.npy")
    os.link(tmp_path / "art" / contract.THRESHOLD_JSON, tmp_path / "th_hard.json")
    os.link(tmp_path / "art" / contract.FLOW_JSON, tmp_path / "fl_hard.npy")
    np.save(tmp_path / LONG, images[:3])
    (tmp_path / "run" / "ae_loss.png").mkdir(parents=True)  # a folder where train writes its loss figure
    (tmp_path / "piped").mkdir()
    os.mkfifo(tmp_path / "piped" / "ae_loss.png")  # a named pipe a reader waits on: never renamed over
    os.mkfifo(tmp_path / "pipe.csv")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(folder) -> dict:
    """Every entry below ``folder`` (hidden ones too): its kind, size and contents' hash."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            kind = "link" if os.path.islink(p) else "dir" if os.path.isdir(p) else "file" if os.path.isfile(p) \
                else "other"  # a pipe: never opened (that would block)
            out[os.path.relpath(p, folder)] = (kind, sha256_file(p) if kind == "file" else None)
    return out


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


SCHED = ("--scheduler", "local:2")
CASES = [
    # issue 16's list
    (("score", "shards/*.npy", *SCHED, "-o", "shards/", "--force"), 2, "holds the input"),
    (("score", "in.parquet", *SCHED, "-o", "in.parquet", "--force"), 2, "is also an input"),
    (("score", "a.npy", *SCHED, "--artifacts", "art", "-o", "art", "--force"), 2, "the artifacts folder art"),
    (("score", "a.npy", "--artifacts", "art", "-o", "art/flow.json", "--force"), 2, "the artifacts folder art"),
    (("calibrate", "a.npy", "-o", "{bundled}", "--force"), 2, "bundled artifacts"),
    (("calibrate", "pngs/", "-o", "pngs", "--force"), 2, "is also an input"),
    (("score", "pngs/", "--maps", "pngs", "--force"), 2, "is also an input"),
    # cases no fix was written for
    (("score", "pngs/", "--maps", "link", "--force"), 2, "is also an input"),
    (("score", "pngs/", "-o", "pngs/deeper/x.csv", "--force"), 2, "inside the input folder"),
    (("score", "pngs", "-o", "./pngs/../pngs/x.csv", "--force"), 2, "inside the input folder"),
    (("score", "shards/*.npy", *SCHED, "-o", ".", "--force"), 2, "holds the input"),
    (("score", "a.npy", "--maps", ".", "--force"), 2, "holds the input"),
    (("calibrate", "pngs", "--artifacts", "art", "-o", ".", "--force"), 2, "holds the input"),
    (("calibrate", "shards/*.npy", "--artifacts", "art", "-o", "shards", "--force"), 2, "holds the input"),
    (("calibrate", "a.npy", "--artifacts", "art", "-o", "art/copy", "--force"), 2, "the artifacts folder art"),
    (("calibrate", "a.npy", "--artifacts", "{bundled}"), 2, "bundled artifacts"),
    (("score", "a.npy", "-o", "hard.npy", "--force"), 2, "is also an input"),
    (("score", "a.npy", "--maps", "art", "--artifacts", "art", "--force"), 2, "the artifacts folder art"),
    (("score", "a.npy", "-o", "{bundled}/scores.csv"), 2, "bundled artifacts"),
    (("train", "flow", "--epochs", "1", "-o", "{bundled}", "--force"), 2, "bundled artifacts"),
    (("export", "-o", "{bundled}/"), 2, "bundled artifacts"),
    (("sample", "-n", "10", "--artifacts", "art", "-o", "art/s.npy", "--force"), 2, "the artifacts folder art"),
    (("evaluate", "--artifacts", "art", "--report", "art"), 2, "the artifacts folder art"),
    (("score", "a.npy", "-o", "o.csv", "--maps", "o.csv"), 2, "--maps o.csv and -o o.csv overlap"),
    (("score", "a.npy", "-o", "dangling.csv", "--force"), 1, "nowhere.csv, which does not exist"),
    (("score", "a.npy", "--maps", "dangling_dir", "--force"), 1, "which does not exist"),
    (("score", "a.npy", "-o", "x" * 252 + ".csv"), 1, "longer than the file system allows"),
    (("calibrate", "a.npy", "-o", "x" * 300), 1, "longer than the file system allows"),
    (("score", "a.npy", *SCHED, "-o", "x" * 300 + "/"), 1, "longer than the file system allows"),
    (("score", "a.npy", *SCHED, "-o", "x" * 300 + ".parquet"), 1, "longer than the file system allows"),
    (("score", LONG, "--maps", "m", "--maps-all"), 1, "--maps m: the pictures of"),
    # a hard link of a file of the artifacts in use (however spelled), a trailing separator on a file
    (("score", "a.npy", "--artifacts", "art", "-o", "th_hard.json", "--force"), 2, "also an input (art/threshold.json)"),
    (("sample", "-n", "9", "--artifacts", "art", "-o", "fl_hard.npy", "--force"), 2, "also an input (art/flow.json)"),
    (("score", "a.npy", "--artifacts", "art", "-o", "pngs/../th_hard.json", "--force"), 2, "(art/threshold.json)"),
    (("sample", "-n", "10", "-o", "ts.npy/"), 1, "ts.npy/: ends with '/', which names a folder"),
    (("sample", "-n", "10", "--histogram", "ts.png/"), 1, "ts.png/: ends with '/', which names a folder"),
    (("score", "a.npy", "-o", "ts.csv/"), 1, "ts.csv/: ends with '/', which names a folder"),
    # a folder, pipe or device where a file goes (a folder target's names too), whatever --force says
    (("train", "ae", "--data", "a.npy", "--epochs", "1", "-o", "run"), 1, "run/ae_loss.png: is a folder where a file"),
    (("train", "ae", "--data", "a.npy", "--epochs", "1", "-o", "piped", "--force"), 1,
     "piped/ae_loss.png: is not a regular file"),
    (("score", "a.npy", "-o", "pipe.csv", "--force"), 1, "pipe.csv: is not a regular file"),
    # a file the inputs' glob pattern (recorded, expanded again later) would match
    (("train", "ae", "--data", "shards/*", "--epochs", "1", "-o", "shards"), 2,
     "shards/ae.pt is matched by the input pattern"),
]


@pytest.mark.parametrize("args, code, words", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_writes_that_meet_what_they_read_are_refused_before_any_work(place, bundled, args, code, words):
    if args[0] == "evaluate":
        pytest.importorskip("matplotlib")
    before, bundled_before = snapshot(place), snapshot(bundled)
    r = invoke(*[a.format(bundled=bundled) for a in args])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == code and len(lines) == 1 and lines[0].startswith("aeflow: error: "), (r.exit_code, r.stderr)
    assert words in lines[0], lines[0]
    assert snapshot(place) == before and snapshot(bundled) == bundled_before


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_maps_over_a_file_an_input_folder_reads_through_a_link_is_refused(tmp_path, images, monkeypatch, link):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sp").mkdir()
    (tmp_path / "smaps").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "sp" / "b.png")
    Image.fromarray(images[1]).save(tmp_path / "smaps" / "b_map.png")
    link(tmp_path / "smaps" / "b_map.png", tmp_path / "sp" / "x.png")  # sp/x.png (an input) is smaps/b_map.png
    before = snapshot(tmp_path)
    r = invoke("score", "sp", "--maps", "smaps", "--maps-all", "--force", "--device", "cpu")
    assert r.exit_code == 2 and "--maps smaps/b_map.png is also an input (sp/x.png)" in r.stderr, r.stderr
    assert snapshot(tmp_path) == before


def test_train_and_export_never_write_over_the_data_they_read(tmp_path, images, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    np.savez(tmp_path / "run" / "golden.npz", images=images)  # export writes a golden.npz of its own
    Image.fromarray(images[0]).save(tmp_path / "run" / "ae_loss.png")  # train ae writes its loss figure there
    before = snapshot(tmp_path)
    r = invoke("train", "ae", "--data", "run/golden.npz", "--data", "run/ae_loss.png", "--epochs", "1", "-o", "run")
    assert r.exit_code == 2 and "--output run/ae_loss.png is also an input" in r.stderr, r.stderr
    assert snapshot(tmp_path) == before
    r = invoke("train", "ae", "--data", "run/golden.npz", "--epochs", "1", "-o", "run", "-q")
    assert r.exit_code == 1 and "run/ae_loss.png exists; pass --force" in r.stderr, r.stderr  # no checkpoint there,
    assert snapshot(tmp_path) == before  # but a figure of that name is never replaced silently either
    r = invoke("train", "ae", "--data", "run/golden.npz", "--epochs", "1", "-o", "run", "-q", "--force")
    assert r.exit_code == 0, r.stderr
    before = snapshot(tmp_path)
    for args in (("-o", "run"), ("--checkpoints", "run", "-o", "run/../run")):
        r = invoke("export", *args, "--no-eval")
        assert r.exit_code == 2 and "golden.npz is also an input" in r.stderr, r.stderr
        assert snapshot(tmp_path) == before


def test_export_never_writes_a_file_the_recorded_data_pattern_would_match(tmp_path, images, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "G").mkdir()
    np.savez(tmp_path / "G" / "a.npz", images=images)
    r = invoke("train", "ae", "--data", "G/*.npz", "--epochs", "1", "-o", "G", "-q")  # ae.pt, ae_loss.png: no match
    assert r.exit_code == 0, r.stderr
    before = snapshot(tmp_path)
    r = invoke("export", "--checkpoints", "G", "-o", "G", "--no-eval")  # its golden.npz would join the data
    assert r.exit_code == 2 and "G/golden.npz is matched by the input pattern" in r.stderr, r.stderr
    assert snapshot(tmp_path) == before
    assert invoke("export", "--checkpoints", "G", "-o", "G2", "--no-eval").exit_code == 0


def test_an_existing_folder_needs_only_itself_writable_not_its_parent(place, monkeypatch):
    """A card mounted at a read-only folder: the files are staged inside the existing folder."""
    (place / "mnt" / "card").mkdir(parents=True)
    (place / "mnt").chmod(0o555)
    access, read_only = os.access, os.path.realpath(place / "mnt")
    monkeypatch.setattr(os, "access", lambda p, mode: os.path.realpath(p) != read_only and access(p, mode))
    try:
        for args in (("calibrate", "a.npy", "-o", "mnt/card"), ("score", "a.npy", "--maps", "mnt/card/../card",
                                                                "--maps-all")):
            r = invoke(*args, "-q", "--device", "cpu", "--force")
            assert r.exit_code == 0, r.stderr
        assert {"threshold.json", "a_000000.png"} <= set(os.listdir(place / "mnt" / "card"))
        r = invoke("calibrate", "a.npy", "-o", "mnt/new", "-q", "--device", "cpu")  # a new folder: the parent
        assert r.exit_code == 1 and "mnt is not writable" in r.stderr, r.stderr
    finally:
        (place / "mnt").chmod(0o755)


def test_each_input_and_target_is_resolved_once(tmp_path, monkeypatch):
    """Thousands of inputs (a glob) and a folder target's names: not one resolution per (target, input) pair."""
    from aeflow.targets import check_target

    (tmp_path / "in").mkdir()
    for i in range(200):
        (tmp_path / "in" / f"{i}.npy").touch()
    (tmp_path / "run").mkdir()
    calls, realpath = [], os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda *a, **k: calls.append(a) or realpath(*a, **k))
    inputs = sorted((tmp_path / "in").iterdir())
    check_target(tmp_path / "run", "folder", force=True, inputs=inputs, names=["a", "b", "c"])
    assert len(calls) < 20, len(calls)
    with pytest.raises(UsageError, match="is inside the input folder"):
        check_target(tmp_path / "in" / "sub", "folder", inputs=[tmp_path / "in"])


def test_a_name_too_long_is_one_output_error_in_the_api(images, bundled, tmp_path):
    scorer = AnomalyScorer(copy_artifacts(bundled, tmp_path / "art"), device="cpu")
    scorer.calibrate(images)
    with pytest.raises(OutputError, match="longer than the file system allows"):
        scorer.save_calibration(tmp_path / ("x" * 300))


def test_the_api_never_writes_the_bundled_artifacts(images, bundled):
    scorer = AnomalyScorer(device="cpu")
    scorer.calibrate(images)
    before = snapshot(bundled)
    for out in (None, bundled, str(bundled) + "/"):
        with pytest.raises(UsageError, match="bundled artifacts"):
            scorer.save_calibration(out)
    assert snapshot(bundled) == before


def test_a_250_character_name_is_written(place):
    name = "y" * 246 + ".csv"
    r = invoke("score", "a.npy", "-o", name, "--maps", "z" * 250, "--maps-all", "-q", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert len((place / name).read_text().splitlines()) == 21
    assert len(list((place / ("z" * 250)).iterdir())) == 20
    assert not [p for p in os.listdir(place) if p.endswith(".tmp")]


def _calibration(scores, previous):
    return calibrate_scores(np.asarray(scores, float), [{"name": "x", "kind": "array", "sha256": "0" * 64, "n": 3}],
                            previous, k=3)


def test_in_place_calibrations_follow_one_another(place):
    art = place / "art"
    original = artifacts.read_threshold(art).threshold
    first, second = _calibration([0.01, 0.02, 0.03], original), _calibration([0.02, 0.03, 0.05], original)
    with locked(art):  # another calibration holds the folder: this one must wait for it
        waiting = threading.Thread(target=write_calibration, args=(art, {"ae": second}))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and artifacts.read_threshold(art).threshold == original
        doc = artifacts.read_threshold(art).calibrated("ae", first.threshold, first.record)
        artifacts.write_metadata(art / "threshold.json", doc)  # what the other one wrote
    waiting.join(30)
    meta = artifacts.read_threshold(art)
    assert meta.threshold == second.threshold
    assert meta.calibration["previous_threshold"] == first.threshold  # nothing silently lost


def test_copies_made_crosswise_at_once_never_wait_on_each_other(tmp_path, bundled, monkeypatch):
    """calibrate --artifacts X -o Y --force and --artifacts Y -o X --force at once: each held its own folder's
    lock while it waited for the other's to publish - a deadlock. The source's lock is let go first now."""
    from aeflow.runtime import calibration

    x, y = copy_artifacts(bundled, tmp_path / "x"), copy_artifacts(bundled, tmp_path / "y")
    both_staged, write = threading.Barrier(2, timeout=10), calibration.write_metadata

    def staged(path, doc):  # each copy staged (the old code held its source's lock here), then both publish
        write(path, doc)
        both_staged.wait()

    monkeypatch.setattr(calibration, "write_metadata", staged)
    runs = [threading.Thread(target=write_calibration, args=(a, {"ae": _calibration([0.01, 0.02, 0.04], 1.0)}, b),
                             kwargs={"force": True}, daemon=True) for a, b in ((x, y), (y, x))]
    for t in runs:
        t.start()
    for t in runs:
        t.join(30)
    assert not any(t.is_alive() for t in runs)
    assert artifacts.read_threshold(x).calibration and artifacts.read_threshold(y).calibration


def test_two_calibrate_commands_at_once_both_land(place):
    original = artifacts.read_threshold(place / "art").threshold
    procs = [subprocess.Popen([os.sys.executable, "-m", "aeflow", "calibrate", "a.npy", "--artifacts", "art", "--k", k,
                               "--device", "cpu", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in ("2", "4")]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        docs.append(json.loads(out)["calibration"]["ae.onnx"])
    final = artifacts.read_threshold(place / "art").threshold
    first, last = sorted(docs, key=lambda d: d["threshold"] == final)
    assert last["threshold"] == final and last["previous_threshold"] == first["threshold"]
    assert first["previous_threshold"] == original


@contextlib.contextmanager
def _calibrating(art, images, times: int = 20):
    """A thread calibrating ``art`` in place ``times`` times; yields the Event set once it is done."""
    done = threading.Event()

    def recalibrate():
        scorer = AnomalyScorer(art, device="cpu", golden=False)
        for i in range(times):
            scorer.calibrate(images[: 20 + i % 10], k=2 + i % 3)
            scorer.save_calibration()
        done.set()

    writer = threading.Thread(target=recalibrate)
    writer.start()
    try:
        yield done
    finally:
        writer.join()


def test_bound_scores_never_reads_half_of_another_calibration(place, images):
    """A calibration in place writes calibration_scores.npy, then threshold.json: a reader between the two
    (a second calibrate's check) once saw the new scores with the old record and refused them as a user's."""
    from aeflow.runtime.calibration import bound_scores

    scorer = AnomalyScorer(place / "art", device="cpu", golden=False)
    scorer.calibrate(images, k=2)
    scorer.save_calibration()
    seen = []
    with _calibrating(place / "art", images, 30) as done:
        while not done.is_set():
            seen.append(bound_scores(place / "art"))
    assert seen and all(seen)


def test_a_scorer_loaded_while_the_folder_is_calibrated_holds_one_state_of_it(place, images):
    """Loading read threshold.json, then calibration_scores.npy and its sha256 for the pickle, unlocked: a
    calibration in place between the reads failed the load ("calibrate again") or pinned another file's digest."""
    seen, errors = {}, []
    with _calibrating(place / "art", images) as done:
        while not done.is_set():
            try:
                loaded = AnomalyScorer(place / "art", device="cpu", golden=False)
                seen.setdefault(loaded._digest, set()).add((loaded.threshold, loaded.p_value(images[:3]).tobytes()))
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(str(e))
    assert not errors and seen and all(len(states) == 1 for states in seen.values())


def test_a_calibration_is_refused_for_a_graph_exported_after_its_images_were_scored(place, images):
    """save_calibration put the threshold of the graph that scored the images on whatever graph the folder held
    when it wrote (an export landed meanwhile): the new graph flagged nearly every normal image."""
    art = place / "art"
    scorer = AnomalyScorer(art, device="cpu", golden=False)
    scorer.calibrate(images, k=3)
    shutil.copy(art / "ae.int8.onnx", art / "ae.onnx")  # another export's detector, of the same signature
    edit_metadata(art / "threshold.json", sha256=hashlib.sha256((art / "ae.onnx").read_bytes()).hexdigest())
    before = {p.name: p.read_bytes() for p in art.iterdir()}
    with pytest.raises(ArtifactError, match="ae.onnx changed after the images were scored"):
        scorer.save_calibration()
    assert {p.name: p.read_bytes() for p in art.iterdir()} == before


def test_verify_and_info_read_one_state_of_a_folder_being_calibrated(place, images):
    """verify and info read threshold.json, then calibration_scores.npy, unlocked: a calibration in place between
    the two reads failed them with "calibrate again"."""
    from aeflow.analysis.verify import verify_artifacts
    from aeflow.cli.info import gather_info

    problems = []
    with _calibrating(place / "art", images) as done:
        while not done.is_set():
            try:
                verify_artifacts(place / "art", device="cpu", checkpoints=False).raise_for_failure()
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                problems.append(str(e))
            problems += gather_info(place / "art", device="cpu")["problems"]
    assert not problems


def test_a_flow_sampler_refuses_the_sampler_graph_of_a_later_export(place):
    """flow_sampler.onnx loads at the first sample: after an export replaced the folder, a sampler built before
    sampled with the new graph against the old flow.json (silently, without verify)."""
    sampler = FlowSampler(place / "art", device="cpu", verify=False)
    edit_metadata(place / "art" / "flow.json", edit=lambda m: m["training"].update(epochs=m["training"]["epochs"] + 1))
    with pytest.raises(ArtifactError, match="flow.json: changed since this FlowSampler was created"):
        sampler.sample(10, seed=0)
    assert FlowSampler(place / "art", device="cpu", verify=False).sample(10, seed=0).shape == (10,)
    assert sampler.sample(10, seed=0, method="bisection").shape == (10,)  # flow.onnx: loaded with flow.json


def test_a_file_replaced_keeps_its_permissions(place):
    """Replacing a file wrote a new one with the umask's mode: an in-place calibration made a threshold.json kept
    0640 (or 0444 for the world) 0644, and 'score -o out.csv --force' did the same to the user's file."""
    (place / "out.csv").write_text("mine\n")
    shutil.copy(artifacts.bundled_dir() / "MODEL_CARD.md", place / "art")
    for path, mode in ((place / "art" / "threshold.json", 0o640), (place / "art" / "MODEL_CARD.md", 0o604),
                       (place / "out.csv", 0o600)):
        path.chmod(mode)
    assert invoke("calibrate", "a.npy", "--artifacts", "art", "--device", "cpu").exit_code == 0
    assert invoke("score", "a.npy", "--artifacts", "art", "-o", "out.csv", "--force", "--device", "cpu").exit_code == 0
    assert (place / "art" / "threshold.json").stat().st_mode & 0o777 == 0o640
    assert (place / "art" / "MODEL_CARD.md").stat().st_mode & 0o777 == 0o604
    assert (place / "out.csv").stat().st_mode & 0o777 == 0o600 and (place / "out.csv").read_text() != "mine\n"
    assert (place / "art" / "calibration_scores.npy").stat().st_mode & 0o777 == 0o666 & ~_umask()
    (place / "art" / "threshold.json").chmod(0o600)  # a folder's files replaced: each keeps its own
    assert invoke("calibrate", "a.npy", "--artifacts", "art", "-o", "copy", "--device", "cpu").exit_code == 0
    (place / "copy" / "threshold.json").chmod(0o640)
    assert invoke("calibrate", "a.npy", "--artifacts", "art", "-o", "copy", "--force", "--device", "cpu").exit_code == 0
    assert (place / "copy" / "threshold.json").stat().st_mode & 0o777 == 0o640


def test_permissions_kept_are_a_files_own_rwx_bits(tmp_path):
    """The mode copied was S_IMODE of the target followed through links: setuid kept on a file now the writer's,
    a link replaced by a file with its target's mode."""
    from aeflow.files import write_atomic

    (tmp_path / "s").write_text("x")
    (tmp_path / "s").chmod(0o4755)
    (tmp_path / "t").write_text("x")
    (tmp_path / "t").chmod(0o600)
    (tmp_path / "link").symlink_to(tmp_path / "t")
    for name in ("s", "link"):
        write_atomic(tmp_path / name, "new", replace=True)
    assert (tmp_path / "s").stat().st_mode & 0o7777 == 0o755
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "link").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_file_digest_never_reads_a_pipe_or_a_device(tmp_path):
    """export hashed its checkpoints before checking they were files: a FIFO flow.pt hung it, /dev/zero never ended."""
    from aeflow.files import file_digest

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "f").write_bytes(b"abc")
    assert [file_digest(tmp_path / n) for n in ("fifo", "zero", "missing", ".")] == [None] * 4
    assert file_digest(tmp_path / "f") == hashlib.sha256(b"abc").hexdigest()


def test_a_folder_replaced_whole_keeps_its_permissions(tmp_path):
    """A Dask dataset folder (-o DS/ --force) is replaced by a staging folder made with the umask's mode: a 0700
    folder became 0755, and parts written there later readable by all."""
    from aeflow.files import staged_folder

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "part.0.parquet").write_bytes(b"old")
    (tmp_path / "ds").chmod(0o700)
    with staged_folder(tmp_path / "ds", replace=True, force=True) as tmp:
        (tmp / "part.0.parquet").write_bytes(b"new")
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "ds" / "part.0.parquet").read_bytes() == b"new"


def test_outputs_are_never_required_to_be_readable():
    """click.Path checks that an existing path is readable by default: a user's write-only output file (0200) could
    not be replaced ("Path ... is not readable") though aeflow never reads it."""
    import click

    checked = []
    for name in cli.list_commands(None):
        command = cli.get_command(None, name)
        for param in command.params:
            if param.name in ("output", "histogram", "maps_dir", "report_dir") and isinstance(param.type, click.Path):
                checked.append(f"{name} {param.name}")
                assert param.type.readable is False, f"{name} {param.name}"
    assert {"score output", "score maps_dir", "sample histogram", "evaluate report_dir"} <= set(checked)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_calibrate_takes_globs_and_hashes_exactly_the_files_scored(place):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(place / "pngs" / ".hidden.png")  # not read, not hashed
    r = invoke("calibrate", "shards/*.npy", "pngs", "--artifacts", "art", "--json", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)["calibration"]["ae.onnx"]["data"]
    assert [(d["name"], d["kind"], d["n"]) for d in data] == [("shards/s1.npy", "file", 10), ("shards/s2.npy", "file", 10),
                                                              ("pngs", "folder", 3)]
    assert data[0]["sha256"] == hashlib.sha256((place / "shards" / "s1.npy").read_bytes()).hexdigest()
    listing = "".join(f"{hashlib.sha256((place / 'pngs' / n).read_bytes()).hexdigest()}  {n}\n"
                      for n in ("0.png", "1.png", "2.png"))
    assert data[2]["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    if shutil.which("sha256sum") and shutil.which("sh"):  # the README's recipe
        recipe = "cd pngs && sha256sum -- *.[pP][nN][gG] | LC_ALL=C sort -k2 | sha256sum"
        assert subprocess.run(["sh", "-c", recipe], capture_output=True, text=True).stdout.split()[0] == data[2]["sha256"]


def test_a_scorer_that_saved_its_calibration_pickles(place, images):
    scorer = AnomalyScorer(place / "art", device="cpu")
    threshold = scorer.calibrate(images, k=2)
    scorer.save_calibration()
    again = pickle.loads(pickle.dumps(scorer))
    assert again.threshold == threshold and np.array_equal(again.score(images[:5]), scorer.score(images[:5]))


def test_a_calibrated_copy_is_a_copy_with_the_figures(tmp_path, bundled, images):
    np.save(tmp_path / "a.npy", images)
    r = invoke("calibrate", str(tmp_path / "a.npy"), "-o", str(tmp_path / "cal"), "-q", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    for name in ("ae.onnx", "ae.pt", "ae_loss.png", "flow_loss.png"):
        assert not os.path.samefile(tmp_path / "cal" / name, bundled / name), name
        assert sha256_file(tmp_path / "cal" / name) == sha256_file(bundled / name)
    before = sha256_file(bundled / "ae.onnx")
    with open(tmp_path / "cal" / "ae.onnx", "r+b") as f:  # an edit in place of the copy
        f.write(b"x")
    assert sha256_file(bundled / "ae.onnx") == before


def test_a_copy_over_another_models_files_is_refused_and_a_recalibration_keeps_the_users_files(tmp_path, bundled,
                                                                                                 images):
    """calibrate -o DIR --force over a folder holding another model's files (a run's flow.pt and flow graphs, an
    earlier copy of other artifacts) deleted them (or left them beside the new detector, inconsistent): refused
    before any work, nothing changed. Over a copy of the same artifacts, the user's own files stay."""
    np.save(tmp_path / "a.npy", images)
    detector = copy_artifacts(bundled, tmp_path / "detector")
    for name in ("flow.json", "flow.onnx", "flow_sampler.onnx", "flow.pt", "demo.npz"):
        (detector / name).unlink()
    assert invoke("calibrate", str(tmp_path / "a.npy"), "-o", str(tmp_path / "cal"), "-q", "--device", "cpu").exit_code == 0
    before = {p.name: sha256_file(p) for p in (tmp_path / "cal").iterdir()}
    r = invoke("calibrate", str(tmp_path / "a.npy"), "--artifacts", str(detector), "-o", str(tmp_path / "cal"),
               "--force", "-q", "--device", "cpu")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "holds flow.json, flow.onnx, flow_sampler.onnx, flow.pt, another model's files" in r.stderr
    assert {p.name: sha256_file(p) for p in (tmp_path / "cal").iterdir()} == before
    mine = tmp_path / "mine"
    assert invoke("calibrate", str(tmp_path / "a.npy"), "--artifacts", str(detector), "-o", str(mine), "-q",
                  "--device", "cpu").exit_code == 0
    (mine / "notes.txt").write_text("mine")
    (mine / "demo.npz").write_bytes(b"my demo set")
    (mine / "MODEL_CARD.md").write_text("my notes")
    r = invoke("calibrate", str(tmp_path / "a.npy"), "--artifacts", str(detector), "-o", str(mine), "--force", "-q",
               "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert (mine / "notes.txt").read_text() == "mine" and (mine / "demo.npz").read_bytes() == b"my demo set"
    assert (mine / "threshold.json").is_file() and (mine / "MODEL_CARD.md").read_text() == "my notes"


APPEARED = "another file appeared there while aeflow was writing; it was kept and nothing was written; pass --force"


def test_a_calibrated_copy_keeps_a_folder_that_appeared_meanwhile(place, monkeypatch):
    """calibrate -o NEW: a folder NEW with a user's file, made while calibrate works, is kept; one line
    naming --output (as a full disk's would), exit 1; with --force the copy goes in beside the file."""
    import aeflow.runtime.calibration as calibration

    real = calibration.write_metadata

    def appear(path, meta):  # while the copy is staged
        (place / "co").mkdir(exist_ok=True)
        (place / "co" / "notes.txt").write_text("mine")
        return real(path, meta)

    monkeypatch.setattr(calibration, "write_metadata", appear)
    r = invoke("calibrate", "a.npy", "--artifacts", "art", "-o", "co", "-q", "--device", "cpu")
    assert (r.exit_code, r.stderr) == (1, f"aeflow: error: --output co: {APPEARED} to replace it\n")
    assert os.listdir(place / "co") == ["notes.txt"]
    shutil.rmtree(place / "co")
    r = invoke("calibrate", "a.npy", "--artifacts", "art", "-o", "co", "-q", "--device", "cpu", "--force")
    assert r.exit_code == 0 and (place / "co" / "notes.txt").read_text() == "mine", r.stderr
    assert artifacts.read_threshold(place / "co").threshold > 0


@pytest.mark.parametrize("existing", [False, True])
def test_maps_keep_what_appeared_meanwhile(place, monkeypatch, existing):
    """score --maps DIR: a folder made at a new DIR while scoring runs, or a picture's name made in an
    empty DIR, is kept (one line, no picture moved in); with --force the pictures go in, only theirs replaced."""
    import aeflow.cli.score as score

    real, maps = score._score_all, place / "maps"

    def appear(*args, **kwargs):
        out = real(*args, **kwargs)
        maps.mkdir(exist_ok=True)
        (maps / "a_000000.png").write_bytes(b"mine")
        return out

    if existing:
        maps.mkdir()
    monkeypatch.setattr(score, "_score_all", appear)
    r = invoke("score", "a.npy", "--maps", "maps", "--maps-all", "-q", "--device", "cpu")
    assert (r.exit_code, r.stderr) == (1, f"aeflow: error: --maps maps: {APPEARED} to replace it\n")
    assert os.listdir(maps) == ["a_000000.png"] and (maps / "a_000000.png").read_bytes() == b"mine"
    (maps / "notes.txt").write_text("mine")
    r = invoke("score", "a.npy", "--maps", "maps", "--maps-all", "-q", "--device", "cpu", "--force")
    assert r.exit_code == 0, r.stderr
    assert len(os.listdir(maps)) == 21 and (maps / "notes.txt").read_text() == "mine"
    assert (maps / "a_000000.png").read_bytes() != b"mine"


def test_rows_that_cannot_reach_stdout_publish_no_maps(place):
    """score -o - --maps DIR: the rows on stdout are part of the result, so a reader that quit leaves no
    pictures (and a rerun is not refused for a folder of them)."""
    proc = subprocess.Popen([os.sys.executable, "-m", "aeflow", "score", "a.npy", "-o", "-", "--maps", "m",
                             "--maps-all", "-q", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.stdout.close()  # the reader quits before the rows are written
    err = proc.stderr.read()
    assert proc.wait(timeout=240) == 1 and err == "aeflow: error: cannot write to standard output (the reader quit)\n"
    assert not (place / "m").exists() and not [p for p in os.listdir(place) if p.startswith(".m")]


@pytest.mark.parametrize("stream, words", [(None, "it is closed"), ("broken", "the reader quit"),
                                           ("full", "no space")])
def test_stdout_that_cannot_be_written_is_one_output_error(monkeypatch, stream, words):
    class Broken(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    if stream == "full":
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full")
        stream = open("/dev/full", "w")
    elif stream == "broken":
        stream = Broken()
    monkeypatch.setattr("sys.stdout", stream)
    rows = [ScoredInput("x.npy", np.arange(5000, dtype=np.float32), 0.5)]
    with pytest.raises(OutputError, match=f"cannot write to standard output \\({words}"):
        write_stdout(rows)


def test_calibrate_with_a_reader_that_quit_keeps_exit_0(place):
    before = sha256_file(place / "art" / "threshold.json")
    proc = subprocess.Popen([os.sys.executable, "-m", "aeflow", "calibrate", "a.npy", "--artifacts", "art",
                             "--device", "cpu", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader quits before the summary is printed
    err = proc.stderr.read()
    assert proc.wait(timeout=240) == 0 and "Traceback" not in err
    assert err.strip().splitlines() == [f"aeflow: warning: wrote art/threshold.json; cannot write the summary to "
                                        f"standard output (the reader quit)"]
    assert sha256_file(place / "art" / "threshold.json") != before


def test_train_sees_an_existing_checkpoint_through_a_missing_folder_and_dotdot(tmp_path, images, monkeypatch):
    """-o nosuch/../R: os.path.lexists("nosuch/../R/ae.pt") is False (nosuch does not exist) while the write
    goes to R/ae.pt: it trained, then said another file 'appeared'. Refused up front now."""
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", images[:50])
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / "ae.pt").write_bytes(b"trained before")
    r = invoke("train", "ae", "--data", "x.npy", "--epochs", "1", "-o", "nosuch/../R", "-q")
    assert r.exit_code == 1 and "ae.pt exists; pass --force" in r.stderr, r.stderr
    assert (tmp_path / "R" / "ae.pt").read_bytes() == b"trained before"


def test_a_pattern_refuses_what_glob_would_read_not_more(tmp_path, images, monkeypatch):
    """The pattern refusal matched with fnmatch: '*' crossed '/' and matched hidden names, so imgs/sub/new.png
    and imgs/.new.png were refused for 'imgs/*.png', though glob never reads them."""
    from aeflow.targets import check_target

    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.fromarray(images[0]).save(tmp_path / "imgs" / "a.png")
    for ok in ("imgs/sub/new.png", "imgs/.new.png", "imgs/new.npy"):
        check_target(ok, inputs=["imgs/*.png"])
    with pytest.raises(UsageError, match="matched by the input pattern"):
        check_target("imgs/new.png", inputs=["imgs/*.png"])
    Image.fromarray(images[0]).save(tmp_path / "imgs" / ".b.png")
    with pytest.raises(UsageError, match="matched by the input pattern"):
        check_target("imgs/.new.png", inputs=["imgs/.*.png"])
