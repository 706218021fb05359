"""aeflow bench --quick: runs, reports sane positive numbers in every section, works without torch."""

import json
import math

import pytest

from conftest import assert_one_line_error, run_cli


def _spread_ok(s) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in s.values()) and \
        s["min"] <= s["median"] <= s["max"]


def _check_common(result: dict, engines: set[str]) -> None:
    from aeflow.analysis.bench import BATCHES, DRAW_Z, FORWARD, QUICK_FILE_IMAGES, QUICK_SAMPLES
    from aeflow.analysis.bench import FLOOR, HELP, SCORE_PNG
    from aeflow.analysis.bench import flops_per_image

    limits = {r["name"]: r for r in result["limit"]}
    assert set(limits) == {"numpy-sgemm", "ort-matmul-fp32", "ort-matmulinteger-int8"}
    assert all(_spread_ok(r["gflops"]) for r in limits.values())
    assert flops_per_image() == 950_272
    assert result["machine"]["threads"] >= 1 and result["machine"]["cpu"] and result["machine"]["isa"]
    assert result["providers"]["ort-fp32"].endswith("ExecutionProvider")
    assert result["providers"]["sampler"].endswith("ExecutionProvider")
    rows = result["scoring"]
    assert {(r["engine"], r["batch"]) for r in rows} == {(e, b) for e in engines for b in BATCHES}
    assert [r["batch"] for r in rows] == sorted(r["batch"] for r in rows)
    for r in rows:
        assert _spread_ok(r["images_per_s"]) and 0 < r["p50_ms"] <= r["p99_ms"] and r["calls"] >= 1
        assert r["gflops"] == pytest.approx(r["images_per_s"]["median"] * flops_per_image() / 1e9)
        precision = "int8" if r["engine"] == "ort-int8" else "fp32"
        limit = max(x["gflops"]["max"] for x in limits.values() if x["precision"] == precision)
        assert r["share_of_limit"] == pytest.approx(r["gflops"] / limit)
        if r["engine"] in ("torch-eager", "openvino-fp32"):  # the peers compute the same scores
            assert r["max_abs_diff_vs_ort_fp32"] <= 1e-5
        if r["engine"] == "ort-int8":
            fp32 = next(x for x in rows if x["engine"] == "ort-fp32" and x["batch"] == r["batch"])
            assert r["vs_fp32"] == pytest.approx(r["images_per_s"]["median"] / fp32["images_per_s"]["median"])
    sampling = {r["method"]: r for r in result["sampling"]}
    assert {"ort-graph", "ort-bisection", FORWARD, DRAW_Z} <= set(sampling)
    for r in sampling.values():
        assert r["n"] == QUICK_SAMPLES and _spread_ok(r["seconds"])
        assert r["samples_per_s"] == pytest.approx(r["n"] / r["seconds"]["median"])
    assert sampling[FORWARD]["x_forward"] == pytest.approx(1.0)
    npy, png = result["files"]
    assert npy["n"] == png["n"] == QUICK_FILE_IMAGES and _spread_ok(npy["images_per_s"]) and _spread_ok(png["vs_npy"])
    cold = {r["what"]: r for r in result["cold_start"]}
    assert cold[FLOOR]["vs_floor"] == 1.0 and cold[FLOOR]["goal"] is None
    assert cold[HELP]["goal"].startswith("<= 0.1 s: ") and cold[SCORE_PNG]["goal"].startswith("<= 1.3x the floor: ")
    met = cold[SCORE_PNG]["vs_floor"] <= 1.3
    assert cold[SCORE_PNG]["goal"].endswith(": met" if met else ": NOT met")
    assert all(_spread_ok(r["seconds"]) for r in cold.values())


def test_bench_quick_json_with_torch():
    pytest.importorskip("torch")
    from aeflow.analysis.bench import HOMEWORK, format_table
    from aeflow.provenance import cpu_name

    proc = run_cli("bench", "--quick", "--json", "--device", "cpu", "--repeats", "1")  # spreads of 3: the files rows
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["settings"]["repeats"] == 1 and result["settings"]["quick"] is True
    engines = {"torch-eager", "ort-fp32", "ort-int8", "ort-fp32-spin"}
    _check_common(result, engines | ({"openvino-fp32"} if "openvino-fp32" in result["providers"] else set()))
    assert result["sampling"][0]["method"] == HOMEWORK and result["sampling"][0]["vs_homework"] == 1.0
    assert any("torch.compile not measured" in n for n in result["notes"])
    table = format_table(result)  # the text table: every section, the CPU and its ISA
    for text in (cpu_name(), result["machine"]["isa"], "the machine's limit", "numpy-sgemm", "ort-int8", "GFLOP/s",
                 "ort-graph", HOMEWORK, "flow.onnx forward", "folder of PNGs", "aeflow score one.png", "x floor"):
        assert text in table


def test_bench_without_torch_or_openvino_skips_their_rows(no_torch_env, tmp_path):
    shim = tmp_path / "noov"
    (shim / "openvino").mkdir(parents=True)
    (shim / "openvino" / "__init__.py").write_text('raise ImportError("openvino is blocked in this test")\n')
    env = dict(no_torch_env, PYTHONPATH=f"{shim}:{no_torch_env['PYTHONPATH']}")
    proc = run_cli("bench", "--quick", "--json", "--repeats", "1", "--threads", "1", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["machine"]["threads"] == 1
    _check_common(result, {"ort-fp32", "ort-int8"})
    assert not any("torch" in r["method"] for r in result["sampling"])
    assert any("PyTorch" in n and "not installed" in n for n in result["notes"])
    assert any("openvino is not installed" in n for n in result["notes"])


def test_bench_bad_repeats_is_a_usage_error():
    assert_one_line_error(run_cli("bench", "--repeats", "0"), 2)


def test_torch_compile_child_timeout_is_a_note(bundled):
    """A torch.compile child that runs past its time limit leaves a note and no row."""
    pytest.importorskip("torch")
    from aeflow.analysis.bench import torch_compile_rows

    notes = []
    assert torch_compile_rows(bundled, 1, (1,), 1, 0.01, notes, timeout=0.5) == []
    assert any("did not finish" in n for n in notes)


@pytest.mark.parametrize("flags, isa", [("fpu avx avx2 fma", "AVX2"), ("avx2 avx512f avx512bw", "AVX-512"),
                                        ("avx2 avx512bw avx512_vnni amx_int8", "AVX-512 VNNI + AMX"),
                                        ("avx2 avx_vnni", "AVX-VNNI"), ("sse2", "SSE")])
def test_cpu_isa_reads_the_flags(tmp_path, flags, isa):
    from aeflow.provenance import cpu_isa

    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_isa(str(tmp_path / "cpuinfo")) == isa
    assert cpu_isa(str(tmp_path / "missing")) == "unknown"


def test_interleaved_calls_in_turn_and_times_all_but_the_first_round():
    from aeflow.analysis.bench import interleaved, time_calls

    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2)
    assert calls == ["a", "b"] * 3 and {k: len(t) for k, t in times.items()} == {"a": 2, "b": 2}
    assert len(time_calls(lambda: calls.append("c"), 3)) == 3 and calls.count("c") == 4


def test_sampling_warms_up_on_one_chunk_and_times_all_n_with_new_seeds(bundled, monkeypatch):
    """The untimed warm-up call of each sampling method draws one chunk (it drew all n, ~4 s a method at 1e6);
    the timed calls draw n each, seeds 0, 1, 2."""
    from types import SimpleNamespace

    import numpy as np

    from aeflow.analysis.bench import sampling_rows
    from aeflow.runtime.sampler import DEFAULT_CHUNK, FlowSampler

    calls, real, n = [], FlowSampler.sample, 100_000
    monkeypatch.setattr(FlowSampler, "sample", lambda self, k, seed=None, method=None:
                        calls.append((method, k, seed)) or real(self, k, seed, method))
    run = SimpleNamespace(directory=bundled, notes=[], n_samples=n, device="cpu", threads=1, verify=False,
                          providers={}, repeats=5, progress=lambda text: None,
                          homework=lambda k, seed: calls.append(("homework", k, seed)) or np.zeros(k, np.float32))
    rows = sampling_rows(run)
    for method in ("homework", "graph", "bisection"):
        assert [c[1:] for c in calls if c[0] == method] == [(DEFAULT_CHUNK, 12345), (n, 0), (n, 1), (n, 2)], method
    assert [r["n"] for r in rows] == [n] * 5
