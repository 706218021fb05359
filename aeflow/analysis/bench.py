"""``aeflow bench``: the GEMM limit, scoring per engine and batch beside its peers (torch.compile in a child process,
this module's ``__main__``), sampling, scoring from files, cold start; the timing helpers the CUDA rows use too."""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from aeflow.datasets import to_float
from aeflow.progress import text_table
from aeflow.provenance import cpu_isa, cpu_name, package_versions
from aeflow.runtime import contract
from aeflow.runtime.artifacts import artifacts_dir, demo_images, graph_path, read_threshold
from aeflow.runtime.device import FLOAT, UINT8, tiny_model
from aeflow.runtime.golden import load_graph
from aeflow.runtime.inputs import open_source
from aeflow.runtime.providers import create_session, provider_of, short_provider
from aeflow.runtime.sampler import FlowSampler
from aeflow.runtime.scorer import AnomalyScorer

BATCHES = (1, 64, 1024, 8192)
SAMPLES, QUICK_SAMPLES = 1_000_000, 20_000
FILE_IMAGES, QUICK_FILE_IMAGES = 20_000, 2_000
LIMIT_SIZE, QUICK_LIMIT_SIZE = 2048, 512  # 2 x 2048^3 = 17 GFLOP a call
TORCH, FP32, INT8, FP32_SPIN = "torch-eager", "ort-fp32", "ort-int8", "ort-fp32-spin"
OPENVINO, TORCH_COMPILE, COMPILE_TIMEOUT_S = "openvino-fp32", "torch-compile", 420.0
HOMEWORK = "torch-bisection (homework)"
FORWARD, DRAW_Z = "flow.onnx forward (one call)", "drawing z (numpy)"
FLOOR, HELP = "python: import numpy, onnxruntime (the floor)", "aeflow --help"
SCORE_PNG, API = "aeflow score one.png", "python: AnomalyScorer().score(one image)"
GOALS = {HELP: (0.1, " s"), SCORE_PNG: (1.3, "x the floor")}  # help in seconds; a scoring run against its floor
API_SCRIPT = ("import sys, numpy as np\nfrom aeflow.runtime import AnomalyScorer\n"
              "AnomalyScorer(sys.argv[1]).score(np.load(sys.argv[2]))")
PHASE_GAP_S = 0.02  # lets spinning threads (onnxruntime's, OpenMP's) go idle before the next engine


def flops_per_image(image_shape=(28, 28)) -> int:
    """FLOPs of the autoencoder's six layers (two a multiply-add; the elementwise tail left out) for (H, W) images."""
    pixels = int(np.prod(image_shape))
    return 2 * (pixels * 256 + 256 * 128 + 128 * 32 + 32 * 128 + 128 * 256 + 256 * pixels)


def spread(values) -> dict:
    """``{"median", "min", "max"}`` of ``values`` (a sequence of floats)."""
    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, gap: float = 0.0) -> dict[str, list[float]]:
    """Seconds of each call of ``fns``, in turn for ``repeats`` rounds after an untimed one; ``gap`` s sleep first."""
    times = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            if gap:
                time.sleep(gap)
            t0 = time.perf_counter()
            fn()
            times[name] += [time.perf_counter() - t0] * (r > 0)
    return times


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    return interleaved({"": fn}, repeats)[""]


def matmul_model(n: int, op: str = "MatMul", types: tuple[int, int, int] = (FLOAT, FLOAT, FLOAT)) -> bytes:
    """The ONNX model Y = ``op``(A, B) of n x n matrices (``types``: the ONNX element types of A, B, Y)."""
    return tiny_model([(op, ["A", "B"], ["Y"], {})], [("A", types[0], [n, n]), ("B", types[1], [n, n])],
                      [("Y", types[2], [n, n])])


def gemm_limits(n: int, threads: int, repeats: int) -> list[dict]:
    """Rows ``{"name", "precision", "size", "gflops"}`` of one n^3 matrix product: numpy float32, onnxruntime MatMul
    and MatMulInteger u8 x s8 (the int8 graph's kernels, B with 7-bit values as its weights)."""
    rng = np.random.default_rng(1)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a8, b8 = rng.integers(0, 256, (n, n), dtype=np.uint8), rng.integers(-63, 64, (n, n), dtype=np.int8)
    fp32 = create_session(matmul_model(n), "cpu", threads, spinning=False)
    int8 = create_session(matmul_model(n, "MatMulInteger", (UINT8, 3, 6)), "cpu", threads, spinning=False)  # s8, s32
    runs = [("numpy-sgemm", "fp32", lambda: a @ b),
            ("ort-matmul-fp32", "fp32", lambda: fp32.run(None, {"A": a, "B": b})),
            ("ort-matmulinteger-int8", "int8", lambda: int8.run(None, {"A": a8, "B": b8}))]
    return [{"name": name, "precision": precision, "size": n,
             "gflops": spread([2.0 * n ** 3 / t / 1e9 for t in time_calls(fn, repeats)])} for name, precision, fn in runs]


class Run:
    """The checked artifacts, the options (``repeats`` None: 5, quick 2; ``threads`` None: the CPUs this process may
    use), PyTorch's scorer and the homework's sampler where they load, and the results, notes and providers so far."""

    def __init__(self, artifacts, device: str, repeats: int | None, threads: int | None, verify: bool, quick: bool,
                 progress: Callable[[str], None]):
        self.directory = artifacts_dir(artifacts)
        self.meta = read_threshold(self.directory, verify)
        self.images = demo_images(self.directory, self.meta.image_shape)  # the run's size; refused before any work
        self.device, self.verify, self.quick, self.progress = device, verify, quick, progress
        self.repeats = repeats or (2 if quick else 5)
        self.threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
        self.n_samples, self.seconds_per_repeat = (QUICK_SAMPLES, 0.02) if quick else (SAMPLES, 0.2)
        self.results, self.providers, self.notes = {}, {}, []
        self.torch_score = self.homework = None
        try:
            from aeflow.export import reference
        except ImportError:
            self.notes.append("PyTorch (the train extra) is not installed: no torch-eager or homework rows")
            return
        if not all((self.directory / n).is_file() for n in ("ae.pt", "flow.pt")):
            self.notes.append(f"ae.pt or flow.pt is not in {self.directory}: no PyTorch rows")
            return
        reference.set_threads(self.threads)
        self.torch_score = reference.autoencoder_scorer(self.directory / "ae.pt")
        self.homework = reference.homework_sampler(self.directory / "flow.pt")


def _ort(session) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: session.run(["score"], {"images": x})[0]


def timed_rows(engines: dict, images: np.ndarray, batches, repeats: int, seconds: float, peers: tuple[str, ...],
               progress: Callable[[str], None] = lambda msg: None) -> list[dict]:
    """Per batch, every engine on 3 rotating buffers of ``images`` (uint8 [M, H, W]), warmed up, in ``repeats`` rounds
    of about ``seconds`` taken in turn: images/s, p50/p99 ms, the ``peers``' largest score difference to ort-fp32,
    images/s over torch-eager's and ort-fp32's (``vs_*``)."""
    rows = []
    for batch in batches:
        progress(f"scoring, batch {batch}")
        rng = np.random.default_rng(batch)
        buffers = [to_float(images[rng.integers(0, len(images), batch)]) for _ in range(3)]
        reference = engines[FP32](buffers[0])
        diffs = {p: float(np.max(np.abs(engines[p](buffers[0]) - reference))) for p in peers if p in engines}
        # a warm-up call, then a warm call of the slowest engine sets how many calls a round makes
        slowest = max(time_calls(lambda: fn(buffers[-1]), 1)[0] for fn in engines.values())
        calls = max(1, min(2000, math.ceil(seconds / max(slowest, 1e-6))))
        times = {name: np.empty((repeats, calls)) for name in engines}
        for r in range(repeats):
            for name, fn in engines.items():
                time.sleep(PHASE_GAP_S)
                for c in range(calls):
                    x = buffers[(r * calls + c) % len(buffers)]
                    t0 = time.perf_counter()
                    fn(x)
                    times[name][r, c] = time.perf_counter() - t0
        rates = {name: batch * calls / t.sum(axis=1) for name, t in times.items()}
        for name, t in times.items():
            ratios = {key: np.median(rates[name]) / np.median(rates[base]) for key, base in
                      (("vs_torch", TORCH), ("vs_fp32", FP32)) if base in rates and name not in (TORCH, base)}
            rows.append({"engine": name, "batch": batch, "images_per_s": spread(rates[name]),
                         "p50_ms": float(np.percentile(t, 50)) * 1e3, "p99_ms": float(np.percentile(t, 99)) * 1e3,
                         "calls": t.size, "max_abs_diff_vs_ort_fp32": diffs.get(name), **ratios})
    return rows


def torch_compile_rows(directory: Path, threads: int, batches, repeats: int, seconds: float, notes: list[str],
                       timeout: float = COMPILE_TIMEOUT_S) -> list[dict]:
    """torch-compile rows from the child process, or [] with a note when it fails or runs past ``timeout`` s."""
    cmd = [sys.executable, "-m", "aeflow.analysis.bench", str(directory), str(threads), str(repeats), str(seconds),
           *map(str, batches)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        notes.append(f"torch.compile (inductor) did not finish compiling and timing within {timeout:.0f} s: no row")
        return []
    if proc.returncode != 0:
        notes.append(f"torch.compile (inductor) failed here ({(proc.stderr.strip().splitlines() or ['?'])[-1][:160]})")
        return []
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    notes.append(f"{TORCH_COMPILE}: torch {result['torch']} inductor, timed in a child process beside its own "
                 f"{TORCH} and {FP32}: its 'vs' columns are those ratios")
    return result["rows"]


def _engines(run: Run) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The scoring engines, float32 [N, 1, H, W] -> score float32 [N]; a note for each one missing."""
    engines = {TORCH: run.torch_score} if run.torch_score else {}
    if run.meta.int8 is None:
        run.notes.append("threshold.json names no int8 graph (export with --quantize int8): no ort-int8 rows")
    for name, which in ((FP32, "ae"), (INT8, "int8"))[:1 + (run.meta.int8 is not None)]:
        session = load_graph(run.directory, run.meta, which, run.device, run.threads, run.torch_score is None,
                             run.verify, run.verify)
        run.providers[name], engines[name] = provider_of(session), _ort(session)
    onnx = graph_path(run.directory, run.meta, "ae", run.verify)
    try:
        import openvino as ov

        compiled = ov.Core().compile_model(str(onnx), "CPU", {"INFERENCE_NUM_THREADS": int(run.threads),
                                                              "INFERENCE_PRECISION_HINT": "f32",
                                                              "PERFORMANCE_HINT": "LATENCY"})
    except ImportError:
        run.notes.append("openvino is not installed (pip install 'aeflow[bench]'): no OpenVINO row")
    except Exception as e:  # OpenVINO raises its own RuntimeError subclasses
        run.notes.append(f"OpenVINO could not compile {onnx.name} ({str(e).strip().splitlines()[0][:120]}): no row")
    else:
        request, score = compiled.create_infer_request(), compiled.output("score")
        engines[OPENVINO] = lambda x: request.infer({"images": x})[score]
        run.notes.append(f"{OPENVINO}: OpenVINO {ov.get_version().split('-')[0]} CPU plugin, f32 hint, "
                         f"{run.threads} threads")
    if run.torch_score:
        engines[FP32_SPIN] = _ort(load_graph(run.directory, run.meta, "ae", run.device, run.threads, True, run.verify,
                                             False))
        run.notes.append(f"{FP32} and {INT8} run with onnxruntime's thread spinning off, as torch shares the "
                         f"process; {FP32_SPIN} is {FP32} with spinning on, as `aeflow score` runs it")
    return engines


def scoring_rows(run: Run) -> list[dict]:
    """images/s per engine and batch, GFLOP/s, share of the GEMM limit of its precision (the best repeat),
    ratios to torch and ort-fp32, the peers' largest score difference to ort-fp32."""
    rows = timed_rows(_engines(run), run.images, BATCHES, run.repeats, run.seconds_per_repeat, (TORCH, OPENVINO),
                      run.progress)
    if run.torch_score and run.quick:
        run.notes.append("quick run: torch.compile not measured (compiling takes minutes)")
    elif run.torch_score:
        run.progress("torch.compile, in a child process")
        rows += torch_compile_rows(run.directory, run.threads, BATCHES, run.repeats, run.seconds_per_repeat, run.notes)
    best = {p: max(x["gflops"]["max"] for x in run.results["limit"] if x["precision"] == p) for p in ("fp32", "int8")}
    for r in rows:
        r["gflops"] = r["images_per_s"]["median"] * flops_per_image(run.meta.image_shape) / 1e9
        r["share_of_limit"] = r["gflops"] / best["int8" if r["engine"] == INT8 else "fp32"]
    return sorted(rows, key=lambda r: r["batch"])


def sampling_rows(run: Run) -> list[dict]:
    """Seconds for ``n_samples`` samples per method (and the homework's), one flow.onnx pass over as many
    points and drawing the z's, a new seed each repeat; ratios to the homework and to the pass."""
    if not (run.directory / contract.FLOW_JSON).exists():  # a detector alone (export writes what the run held)
        run.notes.append(f"no {contract.FLOW_JSON} in {run.directory}: no sampling rows")
        return []
    sampler = FlowSampler(run.directory, run.device, threads=run.threads, verify=run.verify, golden=run.verify)
    n, warm = run.n_samples, min(run.n_samples, sampler.chunk_size)  # the untimed warm-up: one chunk, not all n
    run.providers["sampler"] = sampler.provider
    flow = load_graph(run.directory, sampler.metadata, "flow", run.device, run.threads, golden=False)
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    methods = {HOMEWORK: run.homework} if run.homework else {}
    methods |= {f"ort-{m}": (lambda k, seed, m=m: sampler.sample(k, seed=seed, method=m)) for m in sampler.methods}
    methods |= {FORWARD: lambda k, seed: flow.run(None, {"x": x[:k]}),
                DRAW_Z: lambda k, seed: sampler.draw_z(np.random.default_rng(seed), k)}
    times = {}
    for name, fn in methods.items():
        run.progress(f"sampling, {name}")
        calls = iter([(warm, 12345), (n, 0), (n, 1), (n, 2)])  # the warm-up, then a new seed (new targets) each repeat
        times[name] = time_calls(lambda: fn(*next(calls)), min(run.repeats, 3))
    m = {name: float(np.median(t)) for name, t in times.items()}
    return [{"method": name, "n": n, "seconds": spread(t), "samples_per_s": n / m[name],
             "vs_homework": m[HOMEWORK] / m[name] if HOMEWORK in m else None, "x_forward": m[name] / m[FORWARD]}
            for name, t in times.items()]


def files_rows(run: Run) -> list[dict]:
    """The same demo images (uint8) as one .npy and as a folder of PNGs, opened and scored as ``aeflow score``
    does, alternating; the PNG row's ``vs_npy`` is the ratio per repeat."""
    n = QUICK_FILE_IMAGES if run.quick else FILE_IMAGES
    images = run.images[np.arange(n) % len(run.images)]
    scorer = AnomalyScorer(run.directory, run.device, verify=run.verify)

    def score(path: Path) -> None:
        with open_source(path, image_shape=run.meta.image_shape) as src:
            scorer.score_source(src)

    with tempfile.TemporaryDirectory(prefix="aeflow-bench-") as tmp:
        npy, pngs = Path(tmp) / "images.npy", Path(tmp) / "pngs"
        np.save(npy, images)
        pngs.mkdir()
        for i, im in enumerate(images):
            Image.fromarray(im).save(pngs / f"{i:06d}.png")
        t = interleaved({"npy": lambda: score(npy), "png": lambda: score(pngs)}, max(3, run.repeats), PHASE_GAP_S)
    npy_ips, png_ips = n / np.array(t["npy"]), n / np.array(t["png"])
    return [{"input": "one .npy (uint8)", "n": n, "images_per_s": spread(npy_ips)},
            {"input": "folder of PNGs", "n": n, "images_per_s": spread(png_ips), "vs_npy": spread(png_ips / npy_ips)}]


def _call(what: str, cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode:
        raise RuntimeError(f"{what} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-200:]}")


def cold_start_rows(run: Run) -> list[dict]:
    """Seconds from a new process to its exit (warm file cache), the ratio to the floor and the goals met or not."""
    script, d = Path(sys.executable).with_name("aeflow"), str(run.directory)
    aeflow = [str(script)] if script.is_file() else [sys.executable, "-m", "aeflow"]
    with tempfile.TemporaryDirectory(prefix="aeflow-coldstart-") as tmp:
        png, npy = Path(tmp) / "one.png", Path(tmp) / "one.npy"
        Image.fromarray(run.images[0]).save(png)
        np.save(npy, run.images[:1])
        commands = {FLOOR: [sys.executable, "-c", "import numpy, onnxruntime"], HELP: [*aeflow, "--help"],
                    SCORE_PNG: [*aeflow, "score", str(png), "--artifacts", d],
                    API: [sys.executable, "-c", API_SCRIPT, d, str(npy)]}
        times = interleaved({w: lambda w=w, c=c: _call(w, c) for w, c in commands.items()}, 1 if run.quick else 5)
    if sys.dont_write_bytecode:
        run.notes.append("PYTHONDONTWRITEBYTECODE is set: every cold start compiles aeflow from source")
    m = {what: float(np.median(t)) for what, t in times.items()}
    vs = {what: m[what] / m[FLOOR] for what in m}
    met = {what: f"<= {goal}{unit}: {'met' if (m if unit == ' s' else vs)[what] <= goal else 'NOT met'}"
           for what, (goal, unit) in GOALS.items()}
    return [{"what": what, "seconds": spread(t), "vs_floor": vs[what], "goal": met.get(what)}
            for what, t in times.items()]


# each section's JSON key, title and columns (header, row key, format: "s" aligns left, a trailing "x" a ratio)
TABLES = (
    ("limit", "the machine's limit: one large matrix product, measured in this run (GFLOP/s, or GOP/s for int8; "
     "the limit is the best repeat)",
     (("engine", "name", "s"), ("", "precision", "s"), ("n^3", "size", "d"), ("GFLOP/s", "gflops", ",.1f"))),
    ("scoring", "scoring the autoencoder (images/s; latency per call; {mflop:.2f} MFLOP an image; "
     "limit: share of the GEMM limit of its precision; max diff: score difference to ort-fp32)",
     (("batch", "batch", "d"), ("engine", "engine", "s"), ("images/s", "images_per_s", ",.0f"),
      ("p50 ms", "p50_ms", ".3f"), ("p99 ms", "p99_ms", ".3f"), ("GFLOP/s", "gflops", ".1f"),
      ("limit", "share_of_limit", ".0%"), ("vs torch", "vs_torch", ".2fx"), ("vs fp32", "vs_fp32", ".2fx"),
      ("max diff", "max_abs_diff_vs_ort_fp32", ".1e"))),
    ("sampling", "sampling the flow (seconds for n samples; the last two rows: what one pass costs)",
     (("method", "method", "s"), ("n", "n", ",d"), ("seconds", "seconds", ".3f"), ("samples/s", "samples_per_s", ",.0f"),
      ("vs homework", "vs_homework", ".2fx"), ("x forward", "x_forward", ".2f"))),
    ("files", "scoring from files, opened and scored end to end (the two inputs alternate)",
     (("input", "input", "s"), ("n", "n", ",d"), ("images/s", "images_per_s", ",.0f"), ("vs .npy", "vs_npy", ".2f"))),
    ("cold_start", "cold start: a new process from start to exit",
     (("command", "what", "s"), ("seconds", "seconds", ".3f"), ("x floor", "vs_floor", ".2fx"), ("goal", "goal", "s"))),
)


def run_bench(artifacts=None, device: str = "auto", repeats: int | None = None, threads: int | None = None,
              verify: bool = True, quick: bool = False, progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Every section in order (options: ``Run``): the JSON-ready ``machine``, ``providers``,
    ``settings``, each section's rows under its key, ``versions`` and ``notes``."""
    run = Run(artifacts, device, repeats, threads, verify, quick, progress)
    load = os.getloadavg()
    progress("limit")
    run.results["limit"] = gemm_limits(QUICK_LIMIT_SIZE if quick else LIMIT_SIZE, run.threads, min(run.repeats, 5))
    for key, rows in (("scoring", scoring_rows), ("sampling", sampling_rows), ("files", files_rows),
                      ("cold_start", cold_start_rows)):
        progress(key.replace("_", " "))
        run.results[key] = rows(run)
    machine = {"cpu": cpu_name(), "isa": cpu_isa(), "logical_cpus": os.cpu_count(), "threads": run.threads,
               "load_average_before_after": [load[0], os.getloadavg()[0]]}
    settings = {k: getattr(run, k) for k in ("device", "repeats", "threads", "verify", "quick", "n_samples",
                                             "seconds_per_repeat")} | {"image_shape": list(run.meta.image_shape)}
    return {"machine": machine, "providers": run.providers, "settings": settings, **run.results,
            "versions": package_versions(), "notes": run.notes}


def _cell(value, fmt: str) -> str:
    if isinstance(value, dict):
        return f"{_cell(value['median'], fmt)} [{_cell(value['min'], fmt)} - {_cell(value['max'], fmt)}]"
    return "" if value is None else f"{value:{fmt.rstrip('x')}}" + "x" * fmt.endswith("x")


def format_table(result: dict) -> str:
    """The result as plain-text tables, one per section, then the notes."""
    m = result["machine"]
    providers = ", ".join(f"{k} {short_provider(v)}" for k, v in result["providers"].items())
    lines = [f"aeflow bench: {m['cpu']} ({m['isa']}), {m['logical_cpus']} logical CPUs, {m['threads']} threads; "
             f"providers: {providers}", "load average before/after: {:.2f} / {:.2f} (other processes share the CPU "
             "when these exceed 0); figures: median [min - max]".format(*m["load_average_before_after"])]
    mflop = flops_per_image(result["settings"]["image_shape"]) / 1e6
    for key, title, columns in TABLES:
        cells = [[c[0] for c in columns]] + [[_cell(r.get(k), f) for _, k, f in columns] for r in result[key]]
        lines += ["", title.format(mflop=mflop), *text_table(cells, [i for i, c in enumerate(columns) if c[2] != "s"])]
    return "\n".join(lines + [f"note: {note}" for note in result["notes"]])


if __name__ == "__main__":  # the torch.compile child (``torch_compile_rows``): its rows as JSON, beside eager and fp32
    import torch

    from aeflow.export import reference

    directory, threads = Path(sys.argv[1]), int(sys.argv[2])
    reference.set_threads(threads)
    engines = {TORCH: reference.autoencoder_scorer(directory / "ae.pt"),
               TORCH_COMPILE: reference.autoencoder_scorer(directory / "ae.pt", compiled=True),
               FP32: _ort(create_session(directory / "ae.onnx", "cpu", threads, spinning=False))}
    rows = timed_rows(engines, demo_images(directory, read_threshold(directory, False).image_shape),
                      [int(b) for b in sys.argv[5:]], int(sys.argv[3]), float(sys.argv[4]), (TORCH_COMPILE,))
    print(json.dumps({"rows": [r for r in rows if r["engine"] == TORCH_COMPILE], "torch": torch.__version__}))
