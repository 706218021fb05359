"""aeflow bench --quick: runs, reports sane positive numbers with the expected keys, works without torch."""

import json
import math

import pytest

from conftest import run_cli

SCORING_KEYS = {"engine", "batch", "images_per_s", "images_per_s_min", "images_per_s_max", "latency_ms",
                "gflops", "calls", "repeats"}
SAMPLING_KEYS = {"method", "n", "seconds", "seconds_min", "seconds_max", "samples_per_s", "repeats"}


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _check_common(result: dict, engines: set[str]) -> None:
    from aeflow.analysis.bench import BATCHES, FLOPS_PER_IMAGE, QUICK_SAMPLES

    assert FLOPS_PER_IMAGE == 950_272
    assert result["machine"]["threads"] >= 1 and result["machine"]["cpu"]
    assert result["providers"]["ort-fp32"].endswith("ExecutionProvider")
    assert result["providers"]["sampler"].endswith("ExecutionProvider")
    rows = result["scoring"]
    assert {(r["engine"], r["batch"]) for r in rows} == {(e, b) for e in engines for b in BATCHES}
    for r in rows:
        assert SCORING_KEYS <= set(r)
        assert all(_positive(r[k]) for k in ("images_per_s", "images_per_s_min", "images_per_s_max", "gflops"))
        assert r["images_per_s_min"] <= r["images_per_s"] <= r["images_per_s_max"]
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        assert r["gflops"] == pytest.approx(r["images_per_s"] * FLOPS_PER_IMAGE / 1e9)
        assert r["repeats"] == result["settings"]["repeats"] and r["calls"] >= r["repeats"]
    methods = [r["method"] for r in result["sampling"]]
    assert {"ort-table", "ort-newton", "ort-bisection"} <= set(methods)
    for r in result["sampling"]:
        assert SAMPLING_KEYS <= set(r) and r["n"] == QUICK_SAMPLES
        assert _positive(r["seconds"]) and r["seconds_min"] <= r["seconds"] <= r["seconds_max"]
        assert r["samples_per_s"] == pytest.approx(r["n"] / r["seconds"])
    files = result["files"]
    assert files["n"] == 2000 and files["repeats"] >= 3
    for key in ("npy", "png_folder"):
        r = files[key]
        assert _positive(r["images_per_s"]) and r["images_per_s_min"] <= r["images_per_s"] <= r["images_per_s_max"]
    assert files["png_vs_npy"]["min"] <= files["png_vs_npy"]["median"] <= files["png_vs_npy"]["max"]


def test_bench_quick_json_with_torch():
    pytest.importorskip("torch")
    proc = run_cli("bench", "--quick", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    _check_common(result, {"torch-eager", "ort-fp32", "ort-int8", "ort-fp32-spin"})
    assert result["settings"]["onnxruntime_spinning"] is False  # torch shares the process
    assert result["sampling"][0]["method"] == "torch-bisection (homework)"
    assert result["sampling"][0]["speedup_vs_homework"] == pytest.approx(1.0)
    assert set(result["speedups"]) == {"ort-fp32/torch-eager", "ort-fp32-spin/torch-eager", "ort-int8/torch-eager",
                                       "ort-int8/ort-fp32"}
    assert all(_positive(v) for ratios in result["speedups"].values() for v in ratios.values())


def test_bench_without_torch_skips_torch_rows(no_torch_env):
    proc = run_cli("bench", "--quick", "--json", "--repeats", "1", env=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    _check_common(result, {"ort-fp32", "ort-int8"})
    assert not any("torch" in r["method"] for r in result["sampling"])
    assert set(result["speedups"]) == {"ort-int8/ort-fp32"}
    assert any("PyTorch" in n and "not installed" in n for n in result["notes"])


def test_bench_text_table_names_cpu_threads_and_providers():
    proc = run_cli("bench", "--quick", "--repeats", "1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    from aeflow.provenance import cpu_name

    assert cpu_name() in out and "1 threads" in out
    assert "ort-fp32" in out and "ort-int8" in out and "GFLOP/s" in out
    assert "ort-table" in out and "images/s" in out


def test_bench_bad_repeats_is_a_usage_error():
    from conftest import assert_one_line_error

    assert_one_line_error(run_cli("bench", "--repeats", "0"), 2)
