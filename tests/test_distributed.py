"""Scoring on a dask.distributed LocalCluster (2 worker processes): scores, decisions and written
rows bit for bit those of the single process, over mixed shard formats; a failed shard is named in
one line and nothing is published."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from aeflow.errors import AeflowError, InputError, OutputError, UsageError  # noqa: E402
from aeflow.runtime import AnomalyScorer, demo_images, open_source  # noqa: E402
from aeflow.runtime.outputs import COLUMNS, ScoredInput, results_table  # noqa: E402
from conftest import assert_one_line_error, run_cli, write_idx  # noqa: E402
from pngdata import encode_png  # noqa: E402


def png_bytes(image) -> bytes:
    from PIL import Image

    f = io.BytesIO()
    Image.fromarray(image).save(f, "PNG")
    return f.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict:
    """Mixed shards of demo images: .npy, labelled .npz, gzipped IDX, a PNG folder, and Parquet
    files with PNG bytes, list<uint8> and 784-byte images."""
    d = tmp_path_factory.mktemp("shards")
    x = demo_images()
    labels = np.arange(len(x)) % 3 == 0
    np.save(d / "a.npy", x[:700])
    np.savez_compressed(d / "b.npz", images=x[700:1000], is_anomaly=labels[700:1000])
    write_idx(d / "c-idx3-ubyte.gz", x[1000:1200])
    (d / "pngs").mkdir()
    for i, im in enumerate(x[1200:1450]):
        (d / "pngs" / f"{i:04d}.png").write_bytes(encode_png(im, ["paeth", "sub", "up", "average", "none"]))
    pq.write_table(pa.table({"image": pa.array([png_bytes(im) for im in x[1450:1650]], pa.binary()),
                             "is_anomaly": pa.array(labels[1450:1650])}), d / "e.parquet", row_group_size=64)
    pq.write_table(pa.table({"pixels": pa.array([im.ravel().tolist() for im in x[1650:1850]],
                                                pa.list_(pa.uint8()))}), d / "f.parquet", row_group_size=50)
    pq.write_table(pa.table({"raw": pa.array([im.tobytes() for im in x[1850:2000]], pa.binary(784))}),
                   d / "g.parquet")
    names = ["a.npy", "b.npz", "c-idx3-ubyte.gz", "pngs", "e.parquet", "f.parquet", "g.parquet"]
    return {"dir": d, "paths": [str(d / n) for n in names], "images": x}


@pytest.fixture(scope="module")
def client():
    """One LocalCluster of 2 worker processes (1 thread each) for the module."""
    from aeflow.distributed import connect

    with connect("local:2") as c:
        yield c


def single_process(scorer, paths):
    out = {}
    for p in paths:
        with open_source(p) as src:
            files = getattr(src, "files", None)
            out[p] = (scorer.score_source(src), src.labels, None if files is None else [str(f) for f in files])
    return out


def test_distributed_scores_bit_for_bit_on_mixed_shards(client, shards, tmp_path):
    from aeflow.distributed import score_on_cluster

    scorer = AnomalyScorer(device="cpu", batch_size=64)
    reference = single_process(scorer, shards["paths"])
    # chunks of 128 images: the .npy, PNG folder and Parquet shards are split across tasks
    run = score_on_cluster(client, shards["paths"], tmp_path / "s.parquet", scorer, chunk_size=100)
    assert run.workers == 2 and run.tasks > len(shards["paths"])
    table = pq.read_table(tmp_path / "s.parquet")
    assert tuple(table.column_names) == COLUMNS
    expected = results_table([ScoredInput(p, s, scorer.threshold, lab, files, scorer.p_values_of(s))
                              for p, (s, lab, files) in reference.items()])
    for c in COLUMNS:
        assert table.column(c).to_pylist() == expected.column(c).to_pylist(), c
    scores = table.column("score").to_numpy()
    assert np.array_equal(scores, scorer.score(shards["images"]))  # and the images in one array
    # kept in memory, with counts for the type I/II table
    run = score_on_cluster(client, shards["paths"], None, scorer, chunk_size=100)
    for r in run.shards:
        s, lab, _ = reference[r.name]
        flags = s.astype(np.float64) > scorer.threshold  # the decision in float64, as every path takes it
        assert np.array_equal(r.scores, s) and r.flagged == int(flags.sum())
        if lab is not None:
            assert (r.normal, r.false_alarms) == (int((~lab).sum()), int((flags & ~lab).sum()))


def test_dataset_output_globs_and_int8(client, shards, tmp_path):
    from aeflow.distributed import score_on_cluster

    scorer = AnomalyScorer(device="cpu", precision="int8")
    scorer.threshold = 0.02
    pattern = str(shards["dir"] / "*.parquet")
    run = score_on_cluster(client, [pattern], tmp_path / "out/", scorer, chunk_size=64)
    parts = sorted(os.listdir(tmp_path / "out"))
    assert parts == [f"part-{i:05d}.parquet" for i in range(run.tasks)]
    table = pq.read_table(tmp_path / "out")
    files = sorted(str(p) for p in shards["dir"].glob("*.parquet"))
    reference = single_process(scorer, files)
    assert np.array_equal(table.column("score").to_numpy(), np.concatenate([s for s, *_ in reference.values()]))
    assert np.array_equal(table.column("predicted_anomaly").to_numpy(zero_copy_only=False),
                          np.concatenate([s > 0.02 for s, *_ in reference.values()]))
    assert table.column("index").to_pylist()[:3] == [0, 1, 2]
    assert table.column("p_value").null_count == table.num_rows  # int8: no p-values (as AnomalyScorer.p_value)
    with pytest.raises(OutputError, match="exists"):
        score_on_cluster(client, [pattern], tmp_path / "out/", scorer)
    again = score_on_cluster(client, files[:1], tmp_path / "out", scorer, force=True)  # ours: replaced whole
    assert again.tasks < run.tasks and sorted(os.listdir(tmp_path / "out")) == parts[:again.tasks]
    assert np.array_equal(pq.read_table(tmp_path / "out").column("score").to_numpy(), reference[files[0]][0])
    (tmp_path / "out" / "notes.txt").write_text("mine")  # a user's file: --force never deletes it
    (tmp_path / "out" / "photos").mkdir()
    with pytest.raises(UsageError, match=r"more than an earlier run's Parquet parts \(notes.txt, photos\)"):
        score_on_cluster(client, [pattern], tmp_path / "out", scorer, force=True)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(parts[:again.tasks] + ["notes.txt", "photos"])
    for name in ("notes.txt", "photos"):
        shutil.rmtree(tmp_path / "out" / name) if name == "photos" else os.unlink(tmp_path / "out" / name)
    (tmp_path / "out" / "part-99999.parquet").mkdir()  # a folder with a part's name is not a part
    (tmp_path / "out" / "part-99999.parquet" / "thesis.tex").write_text("mine")
    (tmp_path / "out" / "part-\u0660\u0660\u0660\u0660\u0660.parquet").write_text("mine")  # not ASCII digits
    with pytest.raises(UsageError, match="more than an earlier run's Parquet parts"):
        score_on_cluster(client, [pattern], tmp_path / "out", scorer, force=True)
    assert (tmp_path / "out" / "part-99999.parquet" / "thesis.tex").read_text() == "mine"
    (tmp_path / "link").symlink_to(tmp_path / "out")  # the link would be replaced, the folder kept stale
    with pytest.raises(UsageError, match="a link to .*out; pass that folder itself"):
        score_on_cluster(client, [pattern], tmp_path / "link", scorer, force=True)


def test_a_dataset_folder_keeps_what_appeared_meanwhile(client, shards, tmp_path):
    """-o DIR/ without force: a folder DIR with a user's file, made while the tasks run, is kept (one line
    naming output); with force the parts go in beside the file; and a dataset being replaced whole with force
    is put back as it was when a file was put into it meanwhile (README: your files are never deleted)."""
    from aeflow.distributed import score_on_cluster

    out = tmp_path / "ds"

    def appear(done: int, total: int) -> None:  # on the client, after each task
        out.mkdir(exist_ok=True)
        (out / "notes.txt").write_text("mine")

    with pytest.raises(OutputError, match=f"^output {out}: another file appeared there while aeflow was writing"):
        score_on_cluster(client, shards["paths"][:1], f"{out}/", chunk_size=100, on_progress=appear)
    assert os.listdir(out) == ["notes.txt"]
    shutil.rmtree(out)
    run = score_on_cluster(client, shards["paths"][:1], f"{out}/", chunk_size=100, force=True, on_progress=appear)
    parts = [f"part-{i:05d}.parquet" for i in range(run.tasks)]
    assert sorted(os.listdir(out)) == ["notes.txt", *parts]
    os.unlink(out / "notes.txt")
    with pytest.raises(OutputError, match="another file appeared there"):
        score_on_cluster(client, shards["paths"][:1], f"{out}/", chunk_size=300, force=True, on_progress=appear)
    assert sorted(os.listdir(out)) == ["notes.txt", *parts] and sorted(os.listdir(tmp_path)) == ["ds"]


def test_cli_dataset_race_names_the_option(client, shards, tmp_path, monkeypatch):
    """The same race through 'aeflow score --scheduler ... -o DIR/': the line names --output."""
    from click.testing import CliRunner

    import aeflow.distributed as distributed
    from aeflow.cli import cli

    out, real = tmp_path / "ds", distributed._Writer.add

    def appear(self, *args):
        out.mkdir(exist_ok=True)
        (out / "notes.txt").write_text("mine")
        return real(self, *args)

    monkeypatch.setattr(distributed._Writer, "add", appear)
    r = CliRunner().invoke(cli, ["score", shards["paths"][0], "--scheduler", client.scheduler.address, "-o",
                                 f"{out}/", "-q", "--device", "cpu"])
    assert r.exit_code == 1 and r.stderr.startswith(f"aeflow: error: --output {out}: another file appeared"), r.stderr
    assert os.listdir(out) == ["notes.txt"]


def test_failed_shard_named_in_one_line_nothing_published(client, shards, tmp_path):
    from aeflow.distributed import score_on_cluster

    bad = tmp_path / "bad"
    bad.mkdir()
    for i, im in enumerate(shards["images"][:150]):
        (bad / f"{i:04d}.png").write_bytes(encode_png(im))
    (bad / "0120.png").write_bytes(encode_png(shards["images"][0])[:60])
    before = set(os.listdir(tmp_path))
    for output in (tmp_path / "x.parquet", tmp_path / "ds/"):
        with pytest.raises(InputError) as e:
            score_on_cluster(client, [shards["paths"][0], str(bad)], output, chunk_size=64)
        msg = str(e.value)
        assert "\n" not in msg and "0120.png" in msg and "nothing written" in msg
        assert set(os.listdir(tmp_path)) == before  # no file, no staging left behind


def test_usage_errors(client, shards, tmp_path):
    from aeflow.distributed import connect, score_on_cluster

    with pytest.raises(UsageError, match="Parquet"):
        score_on_cluster(client, shards["paths"][:1], tmp_path / "x.csv")
    with pytest.raises(InputError, match="no file or folder matches"):
        score_on_cluster(client, [str(tmp_path / "nothing-*.npy")])
    with pytest.raises(UsageError, match="threads"):
        score_on_cluster(client, shards["paths"][:1], threads=0)
    with pytest.raises(UsageError, match="local:N"):
        with connect("local:0"):
            pass
    with pytest.raises(UsageError, match="tcp://"):
        with connect("somewhere"):
            pass


def test_cli_scheduler_on_a_running_cluster(client, shards, tmp_path):
    """`aeflow score --scheduler tcp://...` against the module's cluster; the file equals the single
    process's -o x.parquet row for row."""
    address = client.scheduler.address
    proc = run_cli("score", *shards["paths"], "--scheduler", address, "-o", str(tmp_path / "d.parquet"), "--device",
                   "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "2 Dask workers" in proc.stdout and "wrote" in proc.stdout
    single = run_cli("score", *shards["paths"], "-o", str(tmp_path / "s.parquet"), "--device", "cpu")
    assert single.returncode == 0, single.stderr
    a, b = pq.read_table(tmp_path / "d.parquet"), pq.read_table(tmp_path / "s.parquet")
    for c in COLUMNS:
        assert a.column(c).to_pylist() == b.column(c).to_pylist(), c
    meta_d, meta_s = (json.loads(t.schema.metadata[b"aeflow"]) for t in (a, b))
    assert meta_d.pop("scheduler") == address  # what the user passed
    assert meta_d == meta_s and os.path.isabs(meta_s["artifacts"])
    assert {"graph", "batch_size", "threshold_source"} <= set(meta_s)
    bad = run_cli("score", str(shards["dir"] / "pngs"), "--scheduler", address, "-o", str(tmp_path / "e.csv"))
    assert "Parquet" in assert_one_line_error(bad, 2)


@pytest.mark.parametrize("address", ["http://x:1", "tcp://host:notaport", "tcp://", "tcp://host:0", "tcp://[::1",
                                     "local:0", "local:abc", "local:99999", "inproc://x", "garbage", ""])
def test_scheduler_addresses_refused_in_one_line(address):
    from aeflow.checks import check_scheduler

    with pytest.raises(UsageError) as e:
        check_scheduler(address, "--scheduler")
    assert "\n" not in str(e.value) and ("local:N" in str(e.value) or "tcp://HOST:PORT" in str(e.value))


def test_scheduler_addresses_accepted():
    from aeflow.checks import check_scheduler

    assert check_scheduler("local:2") == ("local", 2)
    for a in ("tcp://127.0.0.1:8786", "tls://host.example:1", "tcp://[::1]:8786"):
        assert check_scheduler(a) == ("remote", a)


@pytest.mark.parametrize("address,word", [("http://x:1", "tcp://HOST:PORT"), ("tcp://", "tcp://HOST:PORT"),
                                          ("tls://127.0.0.1:8786", "certificates"), ("local:abc", "local:N")])
def test_cli_scheduler_address_before_any_work(address, word, shards, tmp_path):
    proc = run_cli("score", shards["paths"][0], "--scheduler", address, "-o", str(tmp_path / "x.parquet"))
    assert word in assert_one_line_error(proc, 2)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("output", [".", "./", "..", "sub/.."])
def test_cli_dataset_folder_holding_the_current_one_refused_before_any_work(output, shards, tmp_path):
    """-o . went through the whole cluster run, then failed to rename the current folder."""
    (tmp_path / "sub").mkdir()
    proc = run_cli("score", shards["paths"][0], "--scheduler", "local:1", "-o", output, "--force",
                   cwd=tmp_path / "sub")
    assert "the current folder (or one holding it) cannot become the dataset" in assert_one_line_error(proc, 2)
    assert os.listdir(tmp_path) == ["sub"] and os.listdir(tmp_path / "sub") == []


def _live(group: int) -> list[str]:
    """Processes of a process group still alive (zombies waiting for init do not count)."""
    out = subprocess.run(["ps", "-o", "stat=,args=", "-g", str(group)], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if ln.strip() and not ln.strip().startswith("Z")]


def _handles_sigterm(pid: int) -> bool:
    """The process has installed its SIGTERM handler (Linux: the SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    caught = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), None)
    return caught is None or bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


# the moments are awaited, not guessed from a delay (fixed delays of 3.5 and 6 s fell after the end on
# a quiet machine), except "starting workers": 0.8 s, as before. Sent as soon as the first worker
# process exists (psutil's children()), the signal often leaves that child printing a multiprocessing
# traceback (FileNotFoundError unpickling a SemLock, or EOFError): distributed._kill now also kills
# children still being spawned.
MOMENTS = {
    "importing": lambda p, d, t: _handles_sigterm(p.pid),  # aeflow's handler is in place, its imports follow
    "starting workers": lambda p, d, t: t >= 0.8,
    "scoring": lambda p, d, t: any(n.endswith(".tmp") for n in os.listdir(d)),  # the output is being written
    "closing the cluster": lambda p, d, t: "x.parquet" in os.listdir(d),  # published, workers going
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_sigterm_while_local_workers_start_or_score(moment, shards, tmp_path):
    """SIGTERM at each moment of `--scheduler local:2` (imports, workers starting, scoring, closing):
    one line, exit 143 (or 0 when it had finished), no traceback, no process left."""
    from conftest import wait_for

    start = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "aeflow", "score", *shards["paths"], "--scheduler", "local:2", "-o",
                          str(tmp_path / "x.parquet"), "--device", "cpu"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert wait_for(lambda: p.poll() is not None or MOMENTS[moment](p, tmp_path, time.monotonic() - start), 120), moment
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) <= 1, err
    assert p.returncode in (143, 0), err
    if p.returncode == 143:
        assert lines and lines[0].startswith("aeflow: ") and "SIGTERM" in lines[0], err
    # complete or absent: a signal after the publish (while the cluster closes) leaves the whole file
    assert os.listdir(tmp_path) in ([], ["x.parquet"])
    if os.listdir(tmp_path):
        assert pq.read_table(tmp_path / "x.parquet").num_rows == len(shards["images"])
    assert wait_for(lambda: not _live(p.pid), 10), _live(p.pid)
