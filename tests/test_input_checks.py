"""Inputs that are accepted but likely wrong (a warning, never a silent blank score), and names an
output format cannot hold as they are."""

from __future__ import annotations

import csv
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

from aeflow.errors import ScaleWarning, UsageError
from aeflow.runtime.scorer import AnomalyScorer, check_threshold

CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def scorer():
    return AnomalyScorer(device="cpu")


@pytest.fixture(scope="module")
def demo(bundled):
    with np.load(bundled / "demo.npz") as d:
        return d["images"], d["is_anomaly"]


def test_binarised_uint8_warns(scorer, demo):
    mask = (demo[0][:64] > 127).astype(np.uint8)  # 0/1: a mask, read as 0..1 of 255
    with pytest.warns(ScaleWarning, match="only 0 and 1"):
        scorer.score(mask)


def test_floats_divided_twice_warn(scorer, demo):
    twice = demo[0][:64].astype(np.float32) / 255 / 255
    with pytest.warns(ScaleWarning, match="divided by 255 twice"):
        scorer.predict(twice)


def test_one_warning_per_call_and_none_for_right_scales(scorer, demo):
    x = demo[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails
        scorer.score(x)
        scorer.score(x.astype(np.float32) / 255)
        scorer.score(np.zeros((8, 28, 28), np.uint8))  # blank images are blank, not mis-scaled
        scorer.reconstruct(x[:16].astype(np.float64) / 255)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AnomalyScorer(device="cpu", batch_size=16).score((x[:64] > 0).astype(np.uint8))  # 4 batches
    assert [w.category for w in caught] == [ScaleWarning]


def test_cli_prints_the_warning_on_stderr_and_the_demo_set_gives_none(tmp_path, demo):
    np.save(tmp_path / "mask.npy", (demo[0][:20] > 127).astype(np.uint8))
    proc = run_cli("score", str(tmp_path / "mask.npy"), *CPU, "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aeflow: warning: ") and "only 0 and 1" in lines[0], lines
    json.loads(proc.stdout)
    proc = run_cli("score", *CPU)  # the bundled demo set: no warning
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_threshold_overflow_is_a_usage_error():
    for bad in (10**400, "9" * 400, float("inf"), -1, "abc", None, [0.1], True):
        with pytest.raises(UsageError):
            check_threshold(bad)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
@pytest.mark.parametrize("fmt", [".csv", ".json", ".npy"])
def test_non_utf8_file_name_is_escaped_in_outputs(tmp_path, fmt):
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.npy"  # Latin-1 byte: not UTF-8
    try:
        with open(raw, "wb") as f:
            np.save(f, np.zeros((3, 28, 28), np.uint8))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    name = os.fsdecode(raw)
    out = tmp_path / f"s{fmt}"
    proc = run_cli("score", name, "-o", str(out), *CPU)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "caf\\xe9.npy" in proc.stdout  # the table shows the byte escaped
    if fmt == ".csv":
        with open(out, newline="", encoding="utf-8") as f:
            sources = {r["source"] for r in csv.DictReader(f)}
    elif fmt == ".json":
        sources = {r["source"] for r in json.loads(out.read_text(encoding="utf-8"))["rows"]}
    else:
        sources = set(np.load(out)["source"].tolist())
    assert sources == {name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")}


def test_a_file_named_like_a_pattern_is_itself_or_refused_when_the_pattern_matches_others(tmp_path, monkeypatch):
    """'gl/b*.npy' where a file is literally named b*.npy scored that file alone and silently skipped bx.npy,
    which the pattern also matches: now refused in one line; b[*].npy names the file alone, and a folder named
    'run[1]' (a pattern matching nothing else) is itself."""
    from aeflow.checks import expand_inputs
    from aeflow.errors import InputError

    monkeypatch.chdir(tmp_path)
    for name in ("b*.npy", "bx.npy", "run[1]/x.npy"):
        Path(name).parent.mkdir(exist_ok=True)
        Path(name).write_bytes(b"")
    with pytest.raises(InputError, match=r"b\*.npy: names a file and is a pattern matching 1 other\(s\)"):
        expand_inputs(["b*.npy"])
    assert expand_inputs(["b[*].npy"]) == [Path("b*.npy")]
    assert expand_inputs(["b?.npy"]) == [Path("b*.npy"), Path("bx.npy")]
    assert expand_inputs(["run[1]/x.npy"]) == [Path("run[1]/x.npy")]
    assert expand_inputs(["nosuch.npy"]) == [Path("nosuch.npy")]
    with pytest.raises(InputError, match="no file or folder matches the pattern"):
        expand_inputs(["nosuch*.npy"])
