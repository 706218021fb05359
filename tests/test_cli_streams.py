"""Every command with stdout or stderr closed (``>&-``), full (/dev/full) or a broken pipe: one
line where it can be written, the right exit code, no traceback (the CLI's one exit path)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

CPU = ["--device", "cpu"]
MODES = ["closed", "full", "pipe"]
STDOUT_LINE = "aeflow: error: cannot write to standard output ("


def run(argv: list[str], stream: int, mode: str, cwd) -> tuple[int, str, str]:
    """Run ``python -m aeflow ARGV`` with fd ``stream`` (1 or 2) closed, on /dev/full or on a pipe
    whose reader is gone; returns the exit code and the other stream's text."""
    keep = {1: subprocess.PIPE, 2: subprocess.PIPE}
    r = w = full = None
    if mode == "full":
        full = open("/dev/full", "w")
        keep[stream] = full
    elif mode == "pipe":
        r, w = os.pipe()
        os.close(r)
        keep[stream] = w
    pre = (lambda: os.close(stream)) if mode == "closed" else None
    try:
        p = subprocess.run([sys.executable, "-m", "aeflow", *argv], stdout=keep[1], stderr=keep[2], text=True,
                           preexec_fn=pre, cwd=cwd, timeout=300)
    finally:
        for f in (full,):
            if f is not None:
                f.close()
        if w is not None:
            os.close(w)
    return p.returncode, p.stdout or "", p.stderr or ""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("streams")
    np.save(d / "x.npy", np.random.default_rng(0).random((40, 28, 28), dtype=np.float32))
    return d


# argv, exit code when every stream works, whether it writes to stdout
COMMANDS = {
    "score -o -": (["score", "x.npy", "-o", "-", *CPU], 0, True),
    "sample": (["sample", "-n", "10", *CPU], 0, True),
    "calibrate -o": (["calibrate", "x.npy", "-o", "cal-{n}", *CPU], 0, True),
    "score --json": (["score", "x.npy", "--json", *CPU], 0, True),
    "info": (["info", *CPU], 0, True),
    "--help": (["--help"], 0, True),
    "score missing": (["score", "missing.npy", *CPU], 1, False),
    "sample -n 0": (["sample", "-n", "0"], 2, False),
    "evaluate bad": (["evaluate", "--in-dist", "missing.npy", *CPU], 2, False),
    "train bad": (["train", "ae", "--epochs", "0"], 2, False),
    "export bad": (["export", "--quantize", "int8", "--no-eval", "-o", "out"], 2, False),
}
CASES = [(name, stream, mode) for name in ("score -o -", "sample", "calibrate -o") for stream in (1, 2)
         for mode in MODES]
CASES += [(name, 1, "closed") for name in COMMANDS if name not in ("score -o -", "sample", "calibrate -o")]
CASES += [(name, 2, "full") for name in ("score --json", "sample -n 0", "--help", "evaluate bad")]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("name,stream,mode", CASES, ids=lambda v: str(v))
def test_closed_full_or_broken_stream(folder, name, stream, mode):
    argv, code, writes = COMMANDS[name]
    argv = [a.replace("{n}", f"{stream}{mode}") for a in argv]
    rc, out, err = run(argv, stream, mode, folder)
    assert "Traceback" not in out + err
    if stream == 2:  # stderr lost: the exit code and stdout are as ever
        assert rc == code, (rc, out)
        if writes:
            assert out.strip()
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if name == "calibrate -o" and rc == 0:  # calibrate's summary only reports what it wrote: a warning
        assert len(lines) == 1 and lines[0].startswith("aeflow: warning: wrote"), err
    elif code == 0 and writes:
        assert rc == 1 and len(lines) == 1 and lines[0].startswith(STDOUT_LINE), err
    else:
        assert rc == code and len(lines) == 1 and lines[0].startswith(("aeflow", "Usage")), err
    if name == "calibrate -o":  # the folder was published before the summary failed
        assert (folder / f"cal-{stream}{mode}" / "threshold.json").is_file()
