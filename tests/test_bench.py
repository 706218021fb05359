"""aeflow bench --quick: runs, reports sane positive numbers with the expected keys, works without torch."""

import importlib.util
import json
import math

import pytest

from conftest import run_cli

SCORING_KEYS = {"engine", "batch", "images_per_s", "images_per_s_min", "images_per_s_max", "latency_ms",
                "gflops", "calls", "repeats"}
SAMPLING_KEYS = {"method", "n", "seconds", "seconds_min", "seconds_max", "samples_per_s", "repeats"}


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


OPENVINO = importlib.util.find_spec("openvino") is not None


def _check_common(result: dict, engines: set[str]) -> None:
    from aeflow.analysis.bench import BATCHES, DRAW_Z, FLOPS_PER_IMAGE, FORWARD, QUICK_SAMPLES
    from aeflow.analysis.coldstart import HELP, SCORE_PNG

    engines = engines | ({"openvino-fp32"} if OPENVINO else set())
    limits = {r["name"]: r for r in result["limit"]}
    assert {"numpy-sgemm", "ort-matmul-fp32", "ort-matmulinteger-int8"} <= set(limits)
    for r in limits.values():
        assert r["precision"] in ("fp32", "int8") and r["gflops_min"] <= r["gflops"] <= r["gflops_max"]
        assert _positive(r["gflops_min"])

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
        precision = "int8" if r["engine"] == "ort-int8" else "fp32"
        limit = max(x["gflops_max"] for x in limits.values() if x["precision"] == precision)
        assert r["share_of_limit"] == pytest.approx(r["gflops"] / limit)
        if r["engine"] in ("torch-eager", "openvino-fp32"):  # the peers compute the same scores
            assert r["max_abs_diff_vs_ort_fp32"] <= 1e-5
    methods = [r["method"] for r in result["sampling"]]
    assert {"ort-graph", "ort-bisection", FORWARD, DRAW_Z} <= set(methods)
    assert [r["method"] for r in result["sampling"] if r.get("reference")] == [FORWARD, DRAW_Z]
    cold = {r["what"]: r for r in result["cold_start"]}
    assert cold[HELP]["goal_s"] == 0.1 and cold[SCORE_PNG]["goal_s"] == 0.2
    assert all(_positive(r["seconds"]) and r["repeats"] == 1 for r in cold.values())
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
                                       "ort-int8/ort-fp32"} | ({"openvino-fp32/ort-fp32"} if OPENVINO else set())
    assert any("torch.compile not measured" in n for n in result["notes"])
    assert all(_positive(v) for ratios in result["speedups"].values() for v in ratios.values())


def test_bench_without_torch_skips_torch_rows(no_torch_env):
    proc = run_cli("bench", "--quick", "--json", "--repeats", "1", env=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    _check_common(result, {"ort-fp32", "ort-int8"})
    assert not any("torch" in r["method"] for r in result["sampling"])
    assert set(result["speedups"]) == {"ort-int8/ort-fp32"} | ({"openvino-fp32/ort-fp32"} if OPENVINO else set())
    assert any("PyTorch" in n and "not installed" in n for n in result["notes"])


def test_bench_text_table_names_cpu_threads_and_providers():
    proc = run_cli("bench", "--quick", "--repeats", "1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    from aeflow.provenance import cpu_name

    assert cpu_name() in out and "1 threads" in out
    assert "ort-fp32" in out and "ort-int8" in out and "GFLOP/s" in out
    assert "ort-graph" in out and "images/s" in out
    assert "the machine's limit" in out and "numpy-sgemm" in out and "cold start" in out
    assert "aeflow score one.png" in out and "flow.onnx forward" in out


def test_bench_bad_repeats_is_a_usage_error():
    from conftest import assert_one_line_error

    assert_one_line_error(run_cli("bench", "--repeats", "0"), 2)


def test_bench_notes_a_missing_openvino(no_torch_env, tmp_path):
    """Without openvino the OpenVINO row is skipped with a note (the package is optional)."""
    shim = tmp_path / "noov"
    (shim / "openvino").mkdir(parents=True)
    (shim / "openvino" / "__init__.py").write_text('raise ImportError("openvino is blocked in this test")\n')
    env = dict(no_torch_env, PYTHONPATH=f"{shim}:{no_torch_env['PYTHONPATH']}")
    proc = run_cli("bench", "--quick", "--json", "--repeats", "1", "--threads", "1", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "openvino-fp32" not in {r["engine"] for r in result["scoring"]}
    assert any("openvino is not installed" in n for n in result["notes"])


def test_torch_compile_child_timeout_is_a_note(tmp_path, bundled):
    """A torch.compile child that runs past its time limit leaves a note and no row."""
    pytest.importorskip("torch")
    from aeflow.analysis.peers import torch_compile_rows

    notes = []
    assert torch_compile_rows(bundled, 1, (1,), 1, 0.01, notes, timeout=0.5) == []
    assert any("did not finish" in n for n in notes)
