"""Measuring the runtime: autoencoder images/s and latency per engine and batch size, and the time
to draw samples from the flow per inversion method, all in one process on the same inputs.

Engines: PyTorch eager (only where torch and the train extra are installed, through
``aeflow.export.reference``, which only this command and ``verify`` load), onnxruntime float32 (ae.onnx) and onnxruntime int8
(ae.int8.onnx, where threshold.json names one). Method: every engine is warmed up on every input
buffer first; then each repeat runs every engine in turn (interleaved, so a burst of load from
elsewhere hits all of them alike) over ``BUFFERS`` distinct input buffers in rotation, so no timing
measures a cache that holds one input; images/s is the median over repeats, latency percentiles are
over all timed calls. onnxruntime's threads do not spin while torch shares the process (a separate
ort-fp32-spin row shows the graph with spinning on, as `aeflow score` runs it).

Every run also measures the machine's own GEMM limit (``aeflow.analysis.limits``) and gives each
scoring row's share of it, the peers a user would pick instead (``aeflow.analysis.peers``:
OpenVINO on the same ae.onnx where installed, torch.compile in a child process, not with
``quick``), next to the sampler one forward pass of flow.onnx over the same n and the cost of
drawing the z's, and the cold start of the CLI and of an embedded caller
(``aeflow.analysis.coldstart``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from aeflow.analysis.limits import FP32 as FP32_PRECISION, INT8 as INT8_PRECISION, limit_of, measure_limits
from aeflow.provenance import cpu_name, package_versions
from aeflow.runtime.artifacts import artifacts_dir, demo_images, graph_path, read_threshold
from aeflow.runtime.golden import load_graph
from aeflow.runtime.providers import provider_of, short_provider

# multiply-adds of the six layers, two FLOPs each (the elementwise tail is left out)
FLOPS_PER_IMAGE = 2 * (784 * 256 + 256 * 128 + 128 * 32 + 32 * 128 + 128 * 256 + 256 * 784)
BATCHES = (1, 64, 1024, 8192)
BUFFERS = 3
SAMPLES = 1_000_000
QUICK_SAMPLES = 20_000
TORCH, FP32, INT8 = "torch-eager", "ort-fp32", "ort-int8"
FP32_SPIN = "ort-fp32-spin"  # threads spinning, as `aeflow score` runs it; only measured beside torch
PHASE_GAP_S = 0.02  # lets spinning threads (onnxruntime's, OpenMP's) go idle before the next engine
HOMEWORK = "torch-bisection (homework)"
FORWARD = "flow.onnx forward (one call)"  # the sampler's reference rows: what one pass over n costs
DRAW_Z = "drawing z (numpy)"
COLD_START_REPEATS, QUICK_COLD_START_REPEATS = 5, 1


@dataclass
class BenchSettings:
    """What to measure: ``repeats`` per measurement, ``batches``, ``n_samples`` drawn per sampling
    run, ``seconds_per_repeat`` (each repeat times enough calls to last about this long),
    ``threads`` (None: the CPUs this process may use)."""

    artifacts: str | os.PathLike | None = None
    device: str = "auto"
    repeats: int = 5
    batches: tuple[int, ...] = BATCHES
    n_samples: int = SAMPLES
    seconds_per_repeat: float = 0.2
    threads: int | None = None
    verify: bool = True
    quick: bool = False
    peers: bool = True
    cold_start: bool = True
    progress: Callable[[str], None] | None = None

    @classmethod
    def quick_settings(cls, **kw) -> "BenchSettings":
        """Few repeats, short repeats, ``QUICK_SAMPLES`` samples: for tests and smoke runs."""
        return cls(**({"repeats": 2, "n_samples": QUICK_SAMPLES, "seconds_per_repeat": 0.02, "quick": True} | kw))


@dataclass
class Timing:
    """One engine at one batch size: images/s per repeat and the latency of every timed call (s)."""

    per_repeat: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def summary(self, batch: int) -> dict:
        ips = np.array(self.per_repeat)
        lat = np.array(self.latencies) * 1e3
        med = float(np.median(ips))
        return {"batch": batch, "images_per_s": med, "images_per_s_min": float(ips.min()),
                "images_per_s_max": float(ips.max()), "latency_ms": {"p50": float(np.percentile(lat, 50)),
                                                                    "p99": float(np.percentile(lat, 99))},
                "gflops": med * FLOPS_PER_IMAGE / 1e9, "calls": int(lat.size), "repeats": int(ips.size)}


def default_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def input_buffers(images: np.ndarray, batch: int, n: int = BUFFERS, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct float32 [batch, 1, 28, 28] buffers in [0, 1], drawn (with replacement) from
    uint8 ``images`` [M, 28, 28]."""
    rng = np.random.default_rng(seed + batch)
    return [np.ascontiguousarray(images[rng.integers(0, len(images), batch)], dtype=np.float32)
            .reshape(batch, 1, 28, 28) / np.float32(255) for _ in range(n)]


def measure(engines: dict[str, Callable[[np.ndarray], object]], buffers: list[np.ndarray], repeats: int,
            seconds_per_repeat: float) -> dict[str, Timing]:
    """Time every engine on the buffers (all the same batch size): warm-up, then ``repeats``
    interleaved rounds of enough calls to last about ``seconds_per_repeat`` each."""
    batch = len(buffers[0])
    slowest = 0.0
    for fn in engines.values():
        for x in buffers:
            fn(x)
        t0 = time.perf_counter()
        fn(buffers[0])
        slowest = max(slowest, time.perf_counter() - t0)
    calls = max(1, min(2000, math.ceil(seconds_per_repeat / max(slowest, 1e-6))))
    timings = {name: Timing() for name in engines}
    for r in range(repeats):
        for name, fn in engines.items():
            time.sleep(PHASE_GAP_S)
            times = []
            for c in range(calls):
                x = buffers[(r * calls + c) % len(buffers)]
                t0 = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - t0)
            timings[name].per_repeat.append(calls * batch / sum(times))
            timings[name].latencies.extend(times)
    return timings


def _torch_engines(directory: Path, threads: int, notes: list[str]):
    """(autoencoder scoring function, homework sampler) from ``aeflow.export.reference``, or
    (None, None) with a note when PyTorch or the checkpoints are missing."""
    try:
        from aeflow.export import reference
    except ImportError:
        notes.append("PyTorch (the train extra) is not installed: no torch-eager or homework-bisection rows")
        return None, None
    missing = [n for n in ("ae.pt", "flow.pt") if not (directory / n).is_file()]
    if missing:
        notes.append(f"{' and '.join(missing)} not in {directory}: no PyTorch rows")
        return None, None
    reference.set_threads(threads)
    return reference.autoencoder_scorer(directory / "ae.pt"), reference.homework_sampler(directory / "flow.pt")


def _int8_session(directory: Path, meta, device: str, threads: int, spinning: bool, verify: bool, notes: list[str]):
    if meta.int8 is None:
        notes.append("threshold.json names no int8 graph (export with --quantize int8): no ort-int8 rows")
        return None
    return load_graph(directory, meta, "int8", device, threads, spinning, verify, golden=verify)


def _time_sampling(fn: Callable[[int, int], object], n: int, repeats: int) -> list[float]:
    fn(min(n, 10_000), 12345)  # warm-up: sessions, lazily built tables
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        fn(n, r)  # a new seed each repeat: new targets
        times.append(time.perf_counter() - t0)
    return times


FILE_IMAGES, QUICK_FILE_IMAGES = 20_000, 2_000


def time_files(directory: Path, device: str, verify: bool, n: int, repeats: int) -> dict:
    """End to end scoring from files: the same ``n`` demo images (uint8) as one .npy and as a
    folder of PNGs (written to a temporary folder), each opened and scored by ``AnomalyScorer``
    as ``aeflow score`` does; the two alternate ``repeats`` times after a warm-up. Returns
    {"n", "npy": {images_per_s, min, max}, "png_folder": {...}, "png_vs_npy": median of the
    per-repeat ratios, ratios measured back to back in the same repeat}."""
    import tempfile

    from aeflow.runtime.inputs import open_source
    from aeflow.runtime.pngfiles import pillow
    from aeflow.runtime.scorer import AnomalyScorer

    Image = pillow()
    base = demo_images(directory)
    images = base[np.arange(n) % len(base)]
    scorer = AnomalyScorer(directory, device, verify=verify)
    rates: dict[str, list[float]] = {"npy": [], "png_folder": []}
    with tempfile.TemporaryDirectory(prefix="aeflow-bench-") as tmp:
        npy, folder = Path(tmp) / "images.npy", Path(tmp) / "pngs"
        np.save(npy, images)
        folder.mkdir()
        for i, im in enumerate(images):
            Image.fromarray(im).save(folder / f"{i:06d}.png")
        inputs = {"npy": npy, "png_folder": folder}
        for path in inputs.values():  # warm-up: sessions, page cache
            with open_source(path) as src:
                scorer.score_source(src)
        for _ in range(repeats):
            for key, path in inputs.items():
                time.sleep(PHASE_GAP_S)
                t0 = time.perf_counter()
                with open_source(path) as src:
                    scorer.score_source(src)
                rates[key].append(n / (time.perf_counter() - t0))
    out: dict = {"n": n, "repeats": repeats, "provider": scorer.provider}
    for key, r in rates.items():
        out[key] = {"images_per_s": float(np.median(r)), "images_per_s_min": min(r), "images_per_s_max": max(r)}
    ratios = [p / q for p, q in zip(rates["png_folder"], rates["npy"])]
    out["png_vs_npy"] = {"median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios)}
    return out


def run_bench(settings: BenchSettings) -> dict:
    """Run every measurement; returns the result as a JSON-ready dict (see ``format_table``)."""
    say = settings.progress or (lambda msg: None)
    directory = artifacts_dir(settings.artifacts)
    threads = settings.threads or default_threads()
    notes: list[str] = []
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    meta = read_threshold(directory, settings.verify)
    say("the GEMM limit")
    limits = measure_limits(threads, max(1, min(settings.repeats, 5)), settings.quick, notes)
    torch_score, homework = _torch_engines(directory, threads, notes)
    with_torch = torch_score is not None
    spinning = not with_torch
    fp32 = load_graph(directory, meta, "ae", settings.device, threads, spinning, settings.verify, settings.verify)
    int8 = _int8_session(directory, meta, settings.device, threads, spinning, settings.verify, notes)
    providers = {FP32: provider_of(fp32)} | ({INT8: provider_of(int8)} if int8 else {})
    if with_torch and providers[FP32] != "CPUExecutionProvider":
        notes.append("torch-eager runs on the CPU while onnxruntime runs on " + short_provider(providers[FP32]))

    engines: dict[str, Callable] = {}
    if torch_score:
        engines[TORCH] = torch_score
    engines[FP32] = lambda x: fp32.run(["score"], {"images": x})
    if int8:
        engines[INT8] = lambda x: int8.run(["score"], {"images": x})
    if settings.peers:
        from aeflow.analysis.peers import OPENVINO, openvino_engine

        openvino = openvino_engine(graph_path(directory, meta, "ae", settings.verify), threads, notes)
        if openvino is not None:
            engines[OPENVINO] = openvino
    if with_torch:
        fp32_spin = load_graph(directory, meta, "ae", settings.device, threads, True, settings.verify, golden=False)
        engines[FP32_SPIN] = lambda x: fp32_spin.run(["score"], {"images": x})
        notes.append(f"{FP32} and {INT8} run with onnxruntime's thread spinning off, as torch shares the process; "
                     f"{FP32_SPIN} is {FP32} with spinning on, as `aeflow score` runs it")
    images = demo_images(directory)
    scoring = []
    for batch in settings.batches:
        say(f"scoring, batch {batch}")
        buffers = input_buffers(images, batch)
        timings = measure(engines, buffers, settings.repeats, settings.seconds_per_repeat)
        reference = np.asarray(engines[FP32](buffers[0])[0])
        for name, t in timings.items():
            row = {"engine": name} | t.summary(batch)
            if name not in (FP32, FP32_SPIN, INT8):  # the peers compute the same scores, or the row says not
                row["max_abs_diff_vs_ort_fp32"] = float(np.max(np.abs(np.asarray(engines[name](buffers[0])) - reference)))
            scoring.append(row)
    if settings.peers and not settings.quick and with_torch:
        from aeflow.analysis.peers import torch_compile_rows

        say("torch.compile, in a child process")
        scoring += torch_compile_rows(directory, threads, settings.batches, settings.repeats,
                                      settings.seconds_per_repeat, notes)
    elif settings.peers and with_torch:
        notes.append("quick run: torch.compile not measured (compiling takes minutes)")
    _add_shares(scoring, limits)
    speedups = _speedups(scoring)

    from aeflow.runtime.sampler import FlowSampler

    sampler = FlowSampler(settings.artifacts, settings.device, threads=threads, verify=settings.verify,
                          golden=settings.verify)
    providers["sampler"] = sampler.provider
    sample_repeats = max(1, min(settings.repeats, 3))
    sampling = []
    runs: list[tuple[str, Callable[[int, int], object]]] = []
    if homework:
        runs.append((HOMEWORK, homework))
    for method in sampler.methods:
        runs.append((f"ort-{method}", lambda n, seed, m=method: sampler.sample(n, seed=seed, method=m)))
    for name, fn in runs:
        say(f"sampling, {name}")
        times = np.array(_time_sampling(fn, settings.n_samples, sample_repeats))
        sampling.append({"method": name, "n": settings.n_samples, "seconds": float(np.median(times)),
                         "seconds_min": float(times.min()), "seconds_max": float(times.max()),
                         "samples_per_s": settings.n_samples / float(np.median(times)), "repeats": int(times.size)})
    sampling += _sampling_references(sampler, settings.device, threads, settings.n_samples, sample_repeats)
    if homework:
        base = sampling[0]["seconds"]
        for row in sampling:
            row["speedup_vs_homework"] = base / row["seconds"]
    say("scoring from files: .npy versus a PNG folder")
    files = time_files(directory, settings.device, settings.verify,
                       QUICK_FILE_IMAGES if settings.quick else FILE_IMAGES, max(3, settings.repeats))
    if with_torch:
        notes.append("the homework bisection clamps z outside the flow's range to +-3 and stops at 30 steps; the "
                     "runtime's methods truncate z to the range and reach float32 resolution (see aeflow sample --help)")
    cold = []
    if settings.cold_start:
        from aeflow.analysis.coldstart import measure_cold_start

        say("cold start")
        cold = measure_cold_start(directory, images[0], QUICK_COLD_START_REPEATS if settings.quick else COLD_START_REPEATS,
                                  warm_up=not settings.quick)
        if sys.dont_write_bytecode:
            notes.append("PYTHONDONTWRITEBYTECODE is set: every cold start compiles aeflow's modules from source "
                         "(tens of ms); an installed package runs from its bytecode caches")
    return {
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "threads": threads,
                    "load_average_before": list(load_before) if load_before else None,
                    "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "providers": providers,
        "settings": {"repeats": settings.repeats, "sampling_repeats": sample_repeats, "batches": list(settings.batches),
                     "n_samples": settings.n_samples, "input_buffers": BUFFERS, "quick": settings.quick,
                     "device": settings.device, "onnxruntime_spinning": spinning,
                     "flops_per_image": FLOPS_PER_IMAGE},
        "limit": limits,
        "scoring": scoring,
        "speedups": speedups,
        "sampling": sampling,
        "files": files,
        "cold_start": cold,
        "versions": package_versions(),
        "notes": notes,
    }


def _sampling_references(sampler, device: str, threads: int, n: int, repeats: int) -> list[dict]:
    """The sampler's reference rows: one flow.onnx call over ``n`` float32 points (a session like
    the sampler's), and drawing ``n`` truncated standard normal z's as the sampler does."""
    session = load_graph(sampler.directory, sampler.metadata, "flow", device, threads, golden=False)
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    rows = []
    for name, fn in ((FORWARD, lambda n_, seed: session.run(None, {"x": x[:n_]})),
                     (DRAW_Z, lambda n_, seed: sampler.draw_z(np.random.default_rng(seed), n_))):
        times = np.array(_time_sampling(fn, n, repeats))
        rows.append({"method": name, "n": n, "seconds": float(np.median(times)), "seconds_min": float(times.min()),
                     "seconds_max": float(times.max()), "samples_per_s": n / float(np.median(times)),
                     "repeats": int(times.size), "reference": True})
    return rows


def _add_shares(scoring: list[dict], limits: list[dict]) -> None:
    """Each scoring row's ``share_of_limit``: its GFLOP/s over the GEMM limit of its precision
    (int8 for ort-int8, float32 for every other engine)."""
    for row in scoring:
        limit = limit_of(limits, INT8_PRECISION if row["engine"] == INT8 else FP32_PRECISION)
        if limit:
            row["share_of_limit"] = row["gflops"] / limit


def _speedups(scoring: list[dict]) -> dict[str, dict[str, float]]:
    """images/s ratios per batch: ort-fp32/torch, ort-int8/torch, ort-int8/ort-fp32 (where both ran)."""
    ips = {(r["engine"], r["batch"]): r["images_per_s"] for r in scoring}
    out: dict[str, dict[str, float]] = {}
    for num, den in ((FP32, TORCH), (FP32_SPIN, TORCH), (INT8, TORCH), (INT8, FP32), ("openvino-fp32", FP32)):
        ratios = {str(b): ips[(num, b)] / ips[(den, b)] for (e, b) in ips if e == num and (den, b) in ips}
        if ratios:
            out[f"{num}/{den}"] = ratios
    for key, name in (("vs_torch_same_process", f"torch-compile/{TORCH}"), ("vs_fp32_same_process", f"torch-compile/{FP32}")):
        ratios = {str(r["batch"]): r[key] for r in scoring if key in r}
        if ratios:
            out[name] = ratios
    return out


def format_files(files: dict | None) -> list[str]:
    """The .npy versus PNG folder rows of ``time_files``'s result, as lines."""
    if not files:
        return []
    lines = ["", f"scoring from files: {files['n']:,} images, opened and scored end to end (images/s: median of "
                 f"{files['repeats']} [min-max]; the two inputs alternate)"]
    for key, label in (("npy", "one .npy (uint8)"), ("png_folder", "folder of PNGs")):
        r = files[key]
        rng = f"[{r['images_per_s_min']:,.0f} - {r['images_per_s_max']:,.0f}]"
        lines.append(f"{label:<20}{r['images_per_s']:>11,.0f} {rng:>21}")
    q = files["png_vs_npy"]
    lines.append(f"PNG folder / .npy: {q['median']:.2f} (min {q['min']:.2f}, max {q['max']:.2f}, ratio per repeat)")
    return lines


def format_table(result: dict) -> str:
    """The result as plain-text tables."""
    m, s = result["machine"], result["settings"]
    prov = ", ".join(f"{k} {short_provider(v)}" for k, v in result["providers"].items())
    lines = [f"aeflow bench: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['threads']} threads; providers: {prov}"]
    if m.get("load_average_before"):
        lines.append(f"load average before/after: {m['load_average_before'][0]:.2f} / {m['load_average_after'][0]:.2f}"
                     f" (other processes share the CPU when these exceed 0)")
    lines.append("")
    if result.get("limit"):
        lines.append("the machine's limit: one large matrix product, measured in this run (GFLOP/s, or GOP/s for int8; "
                     "median [min-max]; the limit is the best)")
        for r in result["limit"]:
            rng = f"[{r['gflops_min']:,.0f} - {r['gflops_max']:,.0f}]"
            lines.append(f"  {r['name']:<24}{r['precision']:<6}{r['size']:>5}^3 {r['gflops']:>9,.1f} {rng:>15}")
        lines.append("")
    lines.append(f"scoring the autoencoder (images/s: median of {s['repeats']} repeats [min-max]; latency per call; "
                 f"GFLOP/s at {s['flops_per_image'] / 1e6:.2f} MFLOP per image; limit: share of the GEMM limit "
                 f"of its precision)")
    lines.append(f"{'batch':>6}  {'engine':<14}{'images/s':>11} {'[min - max]':>21}{'p50 ms':>10}{'p99 ms':>10}"
                 f"{'GFLOP/s':>9}{'limit':>7}{'vs torch':>10}{'vs fp32':>9}")
    ips = {(r["engine"], r["batch"]): r["images_per_s"] for r in result["scoring"]}
    for r in sorted(result["scoring"], key=lambda row: row["batch"]):  # stable: engines keep their order
        t = ips.get((TORCH, r["batch"]))
        f = ips.get((FP32, r["batch"]))
        vs_t = r.get("vs_torch_same_process") or (r["images_per_s"] / t if t and r["engine"] != TORCH else None)
        vs_f = r.get("vs_fp32_same_process") or (r["images_per_s"] / f if f and r["engine"] not in (TORCH, FP32, FP32_SPIN)
                                                 else None)
        share = f"{r['share_of_limit']:.0%}" if "share_of_limit" in r else ""
        rng = f"[{r['images_per_s_min']:,.0f} - {r['images_per_s_max']:,.0f}]"
        lines.append(f"{r['batch']:>6}  {r['engine']:<14}{r['images_per_s']:>11,.0f} {rng:>21}"
                     f"{r['latency_ms']['p50']:>10.3f}{r['latency_ms']['p99']:>10.3f}{r['gflops']:>9.1f}{share:>7}"
                     f"{f'{vs_t:.2f}x' if vs_t else '':>10}{f'{vs_f:.2f}x' if vs_f else '':>9}")
    diffs = {r["engine"]: max(x["max_abs_diff_vs_ort_fp32"] for x in result["scoring"] if x["engine"] == r["engine"])
             for r in result["scoring"] if "max_abs_diff_vs_ort_fp32" in r}
    if diffs:
        lines.append("largest score difference to ort-fp32 on the same images: "
                     + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    lines.append("")
    n = result["sampling"][0]["n"] if result["sampling"] else 0
    forward = next((r["seconds"] for r in result["sampling"] if r["method"] == FORWARD), None)
    lines.append(f"sampling the flow: time for {n:,} samples (median of {s['sampling_repeats']} [min-max]); "
                 f"the last two rows are what one pass costs")
    lines.append(f"{'method':<30}{'seconds':>9} {'[min - max]':>17}{'samples/s':>13}{'vs homework':>13}{'x forward':>11}")
    for r in result["sampling"]:
        rng = f"[{r['seconds_min']:.3f} - {r['seconds_max']:.3f}]"
        vs = f"{r['speedup_vs_homework']:.2f}x" if "speedup_vs_homework" in r and not r.get("reference") else ""
        fw = f"{r['seconds'] / forward:.2f}" if forward else ""
        lines.append(f"{r['method']:<30}{r['seconds']:>9.3f} {rng:>17}{r['samples_per_s']:>13,.0f}{vs:>13}{fw:>11}")
    lines.extend(format_files(result.get("files")))
    if result.get("cold_start"):
        lines.append("")
        lines.append("cold start: a new process from start to exit (seconds, median [min-max] of "
                     f"{result['cold_start'][0]['repeats']})")
        for r in result["cold_start"]:
            goal = f"goal <= {r['goal_s']:.1f} s: {'met' if r['seconds'] <= r['goal_s'] else 'NOT met'}" \
                if r.get("goal_s") else ""
            lines.append(f"  {r['what']:<44}{r['seconds']:>7.3f} [{r['seconds_min']:.3f} - {r['seconds_max']:.3f}]  {goal}")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
