"""Faults midway and races: exclusive publish, outputs that name inputs, signals, a full disk or
file system out of inodes, a full or closed stdout, inputs cut short while they are read. Each
ends with one line and nothing half-written; none kills the process."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli, wait_for

from aeflow.errors import OutputError, UsageError
from aeflow.files import atomic_path, human_bytes, write_atomic
from aeflow.targets import check_target

CPU = ["--device", "cpu"]


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


# ---------------------------------------------------------------- exclusive publish

def test_exclusive_publish_keeps_a_file_that_appeared_meanwhile(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(OutputError, match="appeared there while aeflow was writing"):
        with atomic_path(target, replace=False) as tmp:
            tmp.write_text("mine\n")
            target.write_text("theirs\n")  # another writer got there first
    assert target.read_text() == "theirs\n"
    assert temporaries(tmp_path) == []
    with atomic_path(target, replace=True) as tmp:  # --force replaces
        tmp.write_text("mine\n")
    assert target.read_text() == "mine\n" and temporaries(tmp_path) == []


def test_exclusive_publish_without_hard_links(tmp_path, monkeypatch):
    """File systems without hard links (FAT, some network mounts) claim the name with O_EXCL."""
    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    write_atomic(tmp_path / "a.txt", "one\n", replace=False)
    assert (tmp_path / "a.txt").read_text() == "one\n"
    with pytest.raises(OutputError, match="appeared"):
        write_atomic(tmp_path / "a.txt", "two\n", replace=False)
    assert (tmp_path / "a.txt").read_text() == "one\n" and temporaries(tmp_path) == []

    def failing_replace(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)  # the name is claimed, then filling it fails
    with pytest.raises(OutputError, match="Input/output error"):
        write_atomic(tmp_path / "b.txt", "three\n", replace=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no empty b.txt, no temporary


def test_folder_that_cannot_be_set_aside_is_left_as_it_was(tmp_path, monkeypatch):
    """Replacing a folder that cannot be moved (the current folder, a mount point): one error, the
    folder untouched, no empty folder left beside it."""
    from aeflow.files import publish_folder

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "new.txt").write_text("new")

    def busy(src, dst):
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(os, "replace", busy)
    with pytest.raises(OSError):
        publish_folder(tmp_path / "staging", tmp_path / "out", ["new.txt"], replace=["old.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "staging"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]


def test_a_folder_where_a_file_goes_stops_the_publish_before_any_file_moves(tmp_path):
    """Files moved into an existing folder one by one (a report, calibrate -o over a copy, with force): a
    folder standing at one of their names is found first, so no file of the set is moved in."""
    from aeflow.files import publish_folder

    (tmp_path / "out" / "b.png").mkdir(parents=True)
    (tmp_path / "out" / "a.html").write_text("old")
    (tmp_path / "out" / ".staging").mkdir()
    for name in ("a.html", "b.png", "c.json"):
        (tmp_path / "out" / ".staging" / name).write_text("new")
    with pytest.raises(IsADirectoryError, match="b.png is a folder where a file goes"):
        publish_folder(tmp_path / "out" / ".staging", tmp_path / "out", ["c.json", "b.png", "a.html"], force=True)
    assert (tmp_path / "out" / "a.html").read_text() == "old"
    assert sorted(os.listdir(tmp_path / "out")) == [".staging", "a.html", "b.png"]


def staged(target, theirs=None, **kw) -> None:
    """Stage a.txt and b.txt for the folder ``target``; meanwhile make ``target`` with ``theirs`` in it."""
    from aeflow.files import staged_folder

    with staged_folder(target, what="--maps", **kw) as staging:
        for name in ("a.txt", "b.txt"):
            (staging / name).write_text("ours")
        if theirs:
            target.mkdir(exist_ok=True)
            (target / theirs).write_text("theirs")


def contents(folder: Path) -> dict:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_folder_that_appeared_meanwhile_is_kept(tmp_path):
    """A folder with a file made at a new output folder while aeflow works: the rename onto it is
    refused by the kernel, it is kept, one line; with force our files go in beside the file."""
    with pytest.raises(OutputError, match=f"^--maps {tmp_path / 'new'}: another file appeared there"):
        staged(tmp_path / "new", "notes.txt")
    assert contents(tmp_path / "new") == {"notes.txt": "theirs"}
    shutil.rmtree(tmp_path / "new")
    staged(tmp_path / "new", "notes.txt", force=True)
    assert contents(tmp_path / "new") == {"notes.txt": "theirs", "a.txt": "ours", "b.txt": "ours"}
    assert [p.name for p in tmp_path.iterdir()] == ["new"]  # no staging left


def test_a_name_that_appeared_in_an_empty_folder_is_kept_and_nothing_moves_in(tmp_path):
    """An existing empty output folder: a file made meanwhile at one of the names (the last one published)
    is kept and none of the others is moved in (every name checked first); with force it is replaced,
    other files kept."""
    (tmp_path / "maps").mkdir()
    with pytest.raises(OutputError, match="another file appeared there"):
        staged(tmp_path / "maps", "b.txt")
    assert contents(tmp_path / "maps") == {"b.txt": "theirs"}
    (tmp_path / "maps" / "mine.txt").write_text("mine")
    staged(tmp_path / "maps", "b.txt", force=True)
    assert contents(tmp_path / "maps") == {"b.txt": "ours", "a.txt": "ours", "mine.txt": "mine"}


def test_a_folder_replaced_whole_keeps_a_file_put_into_it_meanwhile(tmp_path):
    """``replace`` (a Dask dataset with --force) replaces the folder as it was at the start: a file put
    into it meanwhile puts it all back and is one line; a folder that appeared meanwhile is never
    replaced whole (without force: kept, one line)."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.txt").write_text("old")
    with pytest.raises(OutputError, match="another file appeared there") as refused:
        staged(tmp_path / "ds", "notes.txt", replace=True, force=True)
    assert "pass force=True" not in str(refused.value)  # force was passed: no advice to pass it
    assert contents(tmp_path / "ds") == {"a.txt": "old", "notes.txt": "theirs"}
    os.unlink(tmp_path / "ds" / "notes.txt")
    staged(tmp_path / "ds", replace=True, force=True)  # as it was: replaced whole
    assert contents(tmp_path / "ds") == {"a.txt": "ours", "b.txt": "ours"}
    with pytest.raises(OutputError, match="another file appeared there"):
        staged(tmp_path / "new", "notes.txt", replace=True)
    assert contents(tmp_path / "new") == {"notes.txt": "theirs"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "new"]  # nothing set aside is left


def test_two_writers_of_one_output_one_wins(tmp_path):
    """Two 'aeflow score -o same.csv' at once without --force: exactly one writes, the other fails
    with one line (at the start or at publish), and the file is the winner's, complete."""
    np.save(tmp_path / "x.npy", images(3000))
    argv = [sys.executable, "-m", "aeflow", "score", str(tmp_path / "x.npy"), "-o", str(tmp_path / "same.csv"),
            *CPU, "-q"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    loser = outs[[p.returncode for p in procs].index(1)][1]
    assert len(loser.strip().splitlines()) == 1 and ("file exists" in loser or "appeared" in loser), loser
    assert len((tmp_path / "same.csv").read_text().splitlines()) == 3001
    assert temporaries(tmp_path) == []


# ---------------------------------------------------------------- outputs that are inputs

def test_output_naming_an_input_is_refused_by_file_not_string(tmp_path):
    np.save(tmp_path / "x.npy", images(4))
    os.link(tmp_path / "x.npy", tmp_path / "hard.npy")
    (tmp_path / "soft.npy").symlink_to(tmp_path / "x.npy")
    (tmp_path / "sub").mkdir()
    before = (tmp_path / "x.npy").read_bytes()
    for out in ("x.npy", "./x.npy", "sub/../x.npy", "hard.npy", "soft.npy"):
        proc = run_cli("score", "x.npy", "-o", out, "--force", *CPU, cwd=tmp_path)
        line = assert_one_line_error(proc, 2)
        assert "is also an input" in line, line
    assert (tmp_path / "x.npy").read_bytes() == before
    with pytest.raises(UsageError):
        check_target(tmp_path / "hard.npy", force=True, inputs=[tmp_path / "x.npy"])
    check_target(tmp_path / "other.npy", inputs=[tmp_path / "x.npy"])  # a new file is fine


def test_output_naming_the_artifacts_is_refused(tmp_path, bundled):
    art = tmp_path / "art"
    shutil.copytree(bundled, art)
    proc = run_cli("score", "--artifacts", str(art), "-o", str(art / "threshold.json"), "--force", *CPU)
    assert "is also an input" in assert_one_line_error(proc, 2)
    assert (art / "threshold.json").read_bytes() == (bundled / "threshold.json").read_bytes()


def test_sample_output_and_histogram_compared_as_files(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "h.png").write_text("old\n")
    os.link(tmp_path / "h.png", tmp_path / "s.csv")  # the names differ, the file is one
    proc = run_cli("sample", "-n", "10", "-o", "s.csv", "--histogram", "./h.png", "--force", *CPU, cwd=tmp_path)
    assert "overlap" in assert_one_line_error(proc, 2)
    assert (tmp_path / "h.png").read_text() == "old\n"


# ---------------------------------------------------------------- signals

def signal_once(argv: list[str], cwd: Path, started, sig: int) -> subprocess.CompletedProcess:
    """Run ``python -m aeflow ARGV``, send ``sig`` 0.3 s after ``started(process)`` is true (well
    inside the phase, past the imports it starts with); how it ended."""
    proc = subprocess.Popen([sys.executable, "-m", "aeflow", *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: started(proc), 90), "never started"
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])  # SIGINT: test_errors_table's Ctrl-C test
def test_signal_during_sample_leaves_no_temp_file(tmp_path, sig):
    """The signal lands while sample writes its temporary file."""
    proc = signal_once(["sample", "-n", "500000000", "-o", "big.npy", *CPU, "-q"], tmp_path,
                       lambda p: temporaries(tmp_path), sig)
    line = assert_one_line_error(proc, 128 + sig)
    assert "no output written" in line and signal.Signals(sig).name in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_while_score_writes_leaves_no_temp_file(tmp_path, sig):
    """The signal lands while the output's temporary file exists (polled), i.e. mid-write."""
    x = np.zeros((60_000, 28, 28), np.uint8)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.Popen([sys.executable, "-m", "aeflow", "score", "x.npy", "-o", "s.json", *CPU, "-q",
                             "--batch-size", "4096"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert wait_for(lambda: temporaries(tmp_path), 90), "never started writing"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def reading(pid: int, path: Path) -> bool:
    """Process ``pid`` has read past the first 64 KiB of ``path`` (Linux: /proc/PID/fdinfo), i.e. it is
    scoring it; elsewhere, true after 3 s."""
    fds = Path(f"/proc/{pid}/fd")
    if not Path("/proc/self/fdinfo").is_dir():
        time.sleep(2.7)
        return True
    with contextlib.suppress(OSError):  # the process or the descriptor went away meanwhile
        for fd in fds.iterdir():
            if os.readlink(fd) == str(path):
                info = (fds.parent / "fdinfo" / fd.name).read_text().split()
                if int(info[info.index("pos:") + 1]) > 65536:
                    return True
    return False


def test_signal_during_score_exits_128_plus_signal(tmp_path):
    """The signal lands while score reads and scores its inputs (before any output exists)."""
    for name in ("x.npy", "y.npy"):  # each input once: one given twice is refused
        np.save(tmp_path / name, np.zeros((100_000, 28, 28), np.uint8))
    proc = signal_once(["score", "x.npy", "y.npy", "-o", "s.csv", *CPU, "-q"], tmp_path,
                       lambda p: reading(p.pid, tmp_path / "x.npy"), signal.SIGTERM)
    line = assert_one_line_error(proc, 128 + signal.SIGTERM)
    assert "SIGTERM" in line and "interrupted after" in line and "no output written" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.npy"]


def test_signal_while_the_interpreter_finalizes_keeps_the_exit_code():
    """A SIGTERM after the command has ended, while the interpreter tears its modules down (it has
    reset the signal handlers by then), does not turn exit 0 into death by the signal (-15)."""
    _main_after("import json, os, signal\n"
                "class Late:\n"
                "    def __del__(self): os.kill(os.getpid(), signal.SIGTERM)\n"
                "json.late = Late()  # deleted during module teardown\n", "--version")


def _main_after(setup: str, *args: str) -> str:
    """Run ``setup`` then ``aeflow ARGS`` through the console script's ``main`` in a new process; it must
    exit 0 with nothing on stderr. Returns its stdout."""
    code = f"import sys\n{setup}sys.argv = ['aeflow', *{list(args)!r}]\nfrom aeflow.cli import main\nmain()\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", (proc.returncode, proc.stderr)
    return proc.stdout


LEAKY_COMMAND = """
import click, multiprocessing
from multiprocessing import util

@click.command()
def command():
    lock = multiprocessing.get_context("spawn").Lock()  # the resource tracker starts and records it
    for f in list(util._finalizer_registry.values()):  # an exit that cuts its clean-up short
        if f._args == (lock._semlock.name,):
            f.cancel()
    print(lock._semlock.name)
"""


def test_semaphores_left_by_a_cut_short_exit_are_removed_without_warnings(tmp_path):
    """CI saw a SIGTERM during `score --scheduler local:2` end with the interrupt line and then
    the resource tracker's two leak warnings: the process left while Dask's loop thread was between
    unlinking a worker queue's semaphore and unregistering it. The tracker still removes what is
    left; the command prints its one line and nothing else."""
    (tmp_path / "leaky.py").write_text(LEAKY_COMMAND)
    name = _main_after(f"sys.path.insert(0, {str(tmp_path)!r})\nfrom aeflow import cli\n"
                       "cli.COMMANDS['leak'] = ('leaky', 'command', 'a semaphore left behind')\n", "leak").strip()
    assert name and not Path("/dev/shm", "sem." + name.lstrip("/")).exists()


SIGNAL_COMMANDS = """
import os, signal, threading, time, click
from aeflow import files

@click.command()
@click.argument("out")
def swallowed(out):
    with files.atomic_path(out, replace=False) as tmp:
        tmp.write_text("complete")
        try:  # a library that catches everything while the signal arrives (numpy's lazy imports did)
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException:
            pass
        print("went on")

@click.command()
@click.argument("out")
def held(out):
    go = threading.Event()  # a thread started before the block (as onnxruntime's and Dask's are) gets the signal
    sender = threading.Thread(target=lambda: go.wait() and os.kill(os.getpid(), signal.SIGTERM))
    sender.start()
    with files._signals_held():
        go.set()
        sender.join()
        time.sleep(0.05)
        print("held")  # the handler only records the signal inside the block
        files.track(out).write_text("temporary")
    print("never")
"""


@pytest.mark.parametrize("command,printed", [("swallowed", "went on"), ("held", "held")])
def test_a_signal_swallowed_or_held_still_ends_the_command(command, printed, tmp_path):
    """A signal whose exception a library swallowed, or that arrived while aeflow.files held signals
    (a temporary file being made), still ends the command: exit 143, one line, nothing published, no
    temporary left."""
    (tmp_path / "signalled.py").write_text(SIGNAL_COMMANDS)
    out = tmp_path / "out" / "x.txt"
    out.parent.mkdir()
    code = (f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nfrom aeflow import cli\n"
            f"cli.COMMANDS[{command!r}] = ('signalled', {command!r}, '')\n"
            f"sys.argv = ['aeflow', {command!r}, {str(out)!r}]\ncli.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and proc.stderr == "aeflow: interrupted (SIGTERM)\n", (proc.returncode, proc.stderr)
    assert proc.stdout == printed + "\n"
    assert os.listdir(out.parent) == []


# ---------------------------------------------------------------- full disk, no inodes, stdout

@contextmanager
def small_tmpfs(folder: Path, options: str):
    """A tmpfs mounted at ``folder`` (root only); skips the test where mounting is not permitted."""
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount not permitted here ({r.stderr.strip()[:80]})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_disk_full_at_the_start_names_real_sizes(tmp_path):
    with small_tmpfs(tmp_path / "full", "size=1m") as full:
        fill(full / "ballast")
        for argv in (["sample", "-n", "100", "-o", str(full / "s.npy")], ["score", "-o", str(full / "s.csv")]):
            line = assert_one_line_error(run_cli(*argv, *CPU), 1)
            assert "0.0 GiB" not in line and "KiB" in line, line
        assert sorted(p.name for p in full.iterdir()) == ["ballast"]


@pytest.mark.parametrize("name", ["s.npy", "s.csv"])
def test_disk_full_midway_through_sample(tmp_path, name, monkeypatch):
    """The free-space check passes (another process fills the disk later): the writes fail with
    ENOSPC -> one line, no temp file, no SIGBUS (sample -o .npy no longer writes through a map)."""
    from click.testing import CliRunner

    import aeflow.cli.sample as sample_cli
    from aeflow.cli import cli

    with small_tmpfs(tmp_path / "full", "size=2m") as full:
        monkeypatch.setattr(sample_cli, "check_space", lambda *a, **k: None)
        r = CliRunner().invoke(cli, ["sample", "-n", "2000000", "-o", str(full / name), *CPU, "-q"])
        assert r.exit_code == 1, r.output
        assert "no space" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert list(full.iterdir()) == []


def test_disk_full_midway_portable(tmp_path, monkeypatch):
    """Without root: a write that fails with ENOSPC halfway through sample -o x.npy."""
    from click.testing import CliRunner

    from aeflow.cli import cli

    real_open = open
    written = [0]

    class FillingFile:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            written[0] += len(data)
            if written[0] > 300_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def fake_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return FillingFile(f) if "w" in mode and str(path).endswith(".tmp") else f

    import aeflow.cli.sample as sample_cli
    monkeypatch.setattr(sample_cli, "open", fake_open, raising=False)
    r = CliRunner().invoke(cli, ["sample", "-n", "1000000", "-o", str(tmp_path / "x.npy"), *CPU, "-q"])
    assert r.exit_code == 1 and "no space" in r.stderr, r.output
    assert list(tmp_path.iterdir()) == []


def test_out_of_inodes(tmp_path):
    with small_tmpfs(tmp_path / "full", "size=4m,nr_inodes=4") as full:
        for i in range(10):
            try:
                (full / f"f{i}").write_bytes(b"")
            except OSError:
                break
        before = sorted(p.name for p in full.iterdir())
        for argv in (["sample", "-n", "100", "-o", str(full / "s.npy")], ["score", "-o", str(full / "s.csv")]):
            line = assert_one_line_error(run_cli(*argv, *CPU), 1)
            assert "no space (or no free inodes)" in line, line
        assert sorted(p.name for p in full.iterdir()) == before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("argv", [["score"], ["score", "--json"], ["sample", "-n", "10"]])
def test_full_stdout(argv):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "aeflow", *argv, *CPU], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == "aeflow: error: cannot write to standard output (no space (or no free inodes) " \
                                  "left on the device)", proc.stderr


def test_closed_stdout(tmp_path):
    """stdout closed before aeflow writes (a reader that already quit): one line, exit 1, the
    output file still complete (it was published before the summary)."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, "-m", "aeflow", "score", "-o", str(tmp_path / "s.csv"), *CPU],
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr == "aeflow: error: cannot write to standard output (the reader quit)\n"
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 2001
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("rows", [["-o", "-"], ["-o", "-", "--json"], ["-o", "-", "--json", "-q"]])
def test_closed_stdout_for_rows_on_stdout(rows):
    """``-o -`` (CSV or JSON lines) with stdout closed (``>&-``): one line, exit 1, no traceback."""
    proc = subprocess.run(["sh", "-c", 'exec "$0" -m aeflow "$@" >&-', sys.executable, "score", *rows, *CPU],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert assert_one_line_error(proc, 1) == "aeflow: error: cannot write to standard output (it is closed)"


def test_free_space_message_units():
    assert human_bytes(100) == "100 bytes" and human_bytes(4500) == "4.4 KiB"
    assert human_bytes(5 * 2**20) == "5.0 MiB" and human_bytes(3 * 2**30) == "3.0 GiB"


# ---------------------------------------------------------------- inputs cut short while read

CUT_WHILE_READING = """
import os, sys
import numpy as np
from aeflow.runtime.inputs import open_source
from aeflow.errors import InputError
path = sys.argv[1]
with open_source(path) as src:
    seen = 0
    try:
        for batch in src.batches(1000):
            if seen == 0:
                os.truncate(path, os.path.getsize(path) // 3)   # another process cuts the file
            seen += len(batch)
            float(np.asarray(batch, dtype=np.float64).sum())    # touch every byte
    except InputError as e:
        print("InputError:", e)
        sys.exit(3)
print("read", seen)
"""


@pytest.mark.parametrize("kind", ["npy", "npz", "idx"])
def test_input_truncated_while_scored_is_an_error_not_sigbus(tmp_path, kind):
    from conftest import write_idx

    x = images(20_000)
    path = tmp_path / {"npy": "x.npy", "npz": "x.npz", "idx": "x-idx3-ubyte"}[kind]
    if kind == "npy":
        np.save(path, x)
    elif kind == "npz":
        np.savez(path, images=x)
    else:
        write_idx(path, x)
    proc = subprocess.run([sys.executable, "-c", CUT_WHILE_READING, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)  # -7 would be SIGBUS
    assert "truncated" in proc.stdout or "corrupted" in proc.stdout, proc.stdout


PUBLISH_COMMANDS = """
import os, shutil, signal, click
from aeflow import files

def _kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)

@click.command()
@click.argument("out")
def into(out):  # an export over an earlier one: the signal lands after the last new file is published
    real = files.publish
    files.publish = lambda tmp, path, replace: (real(tmp, path, replace), path.name == "z.json" and _kill())
    with files.staged_folder(out, last=("z.json",), force=True, remove=["stale.json"]) as tmp:
        (tmp / "a.bin").write_text("new")
        (tmp / "z.json").write_text("new")
    print("never")

@click.command()
@click.argument("out")
def replacing(out):  # score --scheduler -o DIR/ --force: the signal lands as the old folder is removed
    real = shutil.rmtree
    files.shutil.rmtree = lambda p, *a, **k: (str(p).endswith(".old") and _kill(), real(p, *a, **k))
    with files.staged_folder(out, replace=True, force=True) as tmp:
        (tmp / "part-0.txt").write_text("new")
    print("never")
"""


@pytest.mark.parametrize("command", ["into", "replacing"])
def test_a_signal_during_a_folder_publish_ends_it_whole_and_says_so(command, tmp_path):
    """A signal while a folder is published (files moved in one by one, an earlier export's stale files
    removed; or the old folder set aside and removed) is held to the end of that one step: the folder is
    whole and consistent (the stale file gone, no set-aside folder left), and the line says it was written."""
    (tmp_path / "published.py").write_text(PUBLISH_COMMANDS)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.bin", "z.json", "stale.json", "part-0.txt", "part-1.txt"):
        (out / name).write_text("old")
    code = (f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nfrom aeflow import cli\n"
            f"cli.COMMANDS[{command!r}] = ('published', {command!r}, '')\n"
            f"sys.argv = ['aeflow', {command!r}, {str(out)!r}]\ncli.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and proc.stdout == "", (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr == f"aeflow: error: interrupted after writing {out} (complete) (SIGTERM)\n", proc.stderr
    expected = {"into": {"a.bin": "new", "z.json": "new", "part-0.txt": "old", "part-1.txt": "old"},
                "replacing": {"part-0.txt": "new"}}[command]
    assert {p.name: p.read_text() for p in out.iterdir()} == expected
    assert sorted(os.listdir(tmp_path)) == ["out", "published.py"]


SIGNAL_AFTER_A_FILE = """
import os, signal, sys, time
from aeflow import cli
from aeflow.cli import sample

real = sample._histogram

def _kill(*args, **kwargs):  # the signal lands after the histogram was published, before the samples are
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)

sample._histogram = _kill
sys.argv = ["aeflow", "sample", "-n", "1000", "--seed", "0", "-o", sys.argv[1], "--histogram", sys.argv[2], "-q",
            "--device", "cpu"]
cli.main()
"""


def test_a_signal_after_one_file_was_published_says_it_was_written(tmp_path):
    """sample -o s.npy --histogram h.png, a signal after h.png was published and before s.npy is: the line said
    'no output written' beside a whole h.png. It names what was written (a single file counts as a folder does)."""
    pytest.importorskip("matplotlib")
    out, hist = tmp_path / "s.npy", tmp_path / "h.png"
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_A_FILE, str(out), str(hist)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143 and proc.stdout == "", (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr == f"aeflow: error: interrupted after writing {hist} (complete) (SIGTERM)\n", proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["h.png"] and hist.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_signal_while_a_copy_is_kept_leaves_no_copy(tmp_path, monkeypatch):
    """keep_copy (in-place calibrate's undo copies): a signal while .NAME.*.old was made and filled left it behind
    (it is untracked), since the KeyboardInterrupt came before keep_copy knew its name."""
    from aeflow import files

    (tmp_path / "scores.npy").write_bytes(b"old")
    real = files.shutil.copyfile
    monkeypatch.setattr(files.shutil, "copyfile", lambda a, b: (real(a, b), files.RECEIVED.append(15)))
    try:
        with pytest.raises(KeyboardInterrupt):
            files.keep_copy(tmp_path / "scores.npy")
    finally:
        files.RECEIVED.clear()
    assert sorted(os.listdir(tmp_path)) == ["scores.npy"]
