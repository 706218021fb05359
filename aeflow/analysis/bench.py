"""``aeflow bench``: what the runtime costs, section by section, in one process on the same inputs.

Sections (``SECTIONS``, run in order): the machine's own GEMM limit; scoring the autoencoder per
engine and batch size, with each row's share of the limit and the peers a user would pick instead
(``aeflow.analysis.peers``); sampling the flow per method against the homework's 30-step clamped
bisection, one flow.onnx pass over the same n and drawing the z's; scoring from files (.npy
against a folder of PNGs); the cold start of a new process (``aeflow.analysis.coldstart``).

Method: every engine is warmed up first, engines are interleaved within each repeat so a burst of
load from elsewhere hits all alike, input buffers rotate; figures are medians with [min - max].
onnxruntime's threads do not spin while torch shares the process (``ort-fp32-spin`` is the graph
with spinning on, as ``aeflow score`` runs it).

To add rows: write ``rows(run: Run) -> list[dict]`` (values: numbers, strings, or ``spread``
dicts) and add a ``Section`` naming its columns to ``SECTIONS``; the JSON result holds the rows
under the section's key and ``format_table`` prints them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from aeflow.analysis.coldstart import measure_cold_start
from aeflow.analysis.peers import OPENVINO, openvino_engine, torch_compile_rows
from aeflow.analysis.timing import FLOPS_PER_IMAGE, PHASE_GAP_S, cpu_isa, gemm_limits, input_buffers, measure, spread
from aeflow.provenance import cpu_name, package_versions
from aeflow.runtime.contract import artifacts_dir, demo_images, graph_path, read_threshold
from aeflow.runtime.golden import load_graph
from aeflow.runtime.providers import provider_of, short_provider

BATCHES = (1, 64, 1024, 8192)
SAMPLES, QUICK_SAMPLES = 1_000_000, 20_000
FILE_IMAGES, QUICK_FILE_IMAGES = 20_000, 2_000
LIMIT_SIZE, QUICK_LIMIT_SIZE = 2048, 512  # 2 x 2048^3 = 17 GFLOP a call
TORCH, FP32, INT8, FP32_SPIN = "torch-eager", "ort-fp32", "ort-int8", "ort-fp32-spin"
HOMEWORK = "torch-bisection (homework)"
FORWARD, DRAW_Z = "flow.onnx forward (one call)", "drawing z (numpy)"


@dataclass
class BenchSettings:
    """What to measure: ``repeats`` per measurement, ``batches``, ``n_samples`` per sampling run,
    ``seconds_per_repeat`` (each repeat times enough calls to last about this long), ``threads``
    (None: the CPUs this process may use), ``quick`` (smaller sizes, no torch.compile)."""

    artifacts: str | os.PathLike | None = None
    device: str = "auto"
    repeats: int = 5
    batches: tuple[int, ...] = BATCHES
    n_samples: int = SAMPLES
    seconds_per_repeat: float = 0.2
    threads: int | None = None
    verify: bool = True
    quick: bool = False
    progress: Callable[[str], None] = lambda msg: None

    @classmethod
    def quick_settings(cls, **kw) -> "BenchSettings":
        """Few and short repeats, ``QUICK_SAMPLES`` samples: for tests and smoke runs."""
        return cls(**({"repeats": 2, "n_samples": QUICK_SAMPLES, "seconds_per_repeat": 0.02, "quick": True} | kw))


@dataclass
class Run:
    """What every section's ``rows`` function gets: the settings, the checked artifacts, the
    results of the sections before it, and the lists it adds notes and providers to."""

    settings: BenchSettings
    directory: Path
    meta: dict
    threads: int
    results: dict = field(default_factory=dict)
    providers: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @cached_property
    def torch(self) -> tuple[Callable | None, Callable | None]:
        """(PyTorch eager scoring, the homework's sampler) from the checkpoints, or (None, None)
        with a note when PyTorch or a checkpoint is missing."""
        try:
            from aeflow.export import reference
        except ImportError:
            self.notes.append("PyTorch (the train extra) is not installed: no torch-eager or homework rows")
            return None, None
        if not all((self.directory / n).is_file() for n in ("ae.pt", "flow.pt")):
            self.notes.append(f"ae.pt or flow.pt is not in {self.directory}: no PyTorch rows")
            return None, None
        reference.set_threads(self.threads)
        return (reference.autoencoder_scorer(self.directory / "ae.pt"),
                reference.homework_sampler(self.directory / "flow.pt"))

    def session(self, which: str, spinning: bool, golden: bool = True):
        """A checked onnxruntime session of graph ``which`` as the runtime loads it."""
        s = self.settings
        return load_graph(self.directory, self.meta, which, s.device, self.threads, spinning, s.verify,
                          golden and s.verify)


class Section(NamedTuple):
    """One table of the bench: its JSON ``key``, ``title``, ``columns`` (header, row key, format
    spec; ``s`` left-aligns, a trailing ``x`` prints a ratio) and its ``rows`` function."""

    key: str
    title: str
    columns: tuple[tuple[str, str, str], ...]
    rows: Callable[[Run], list[dict]]


def limit_rows(run: Run) -> list[dict]:
    """The machine's GEMM limit (``timing.gemm_limits``)."""
    n = QUICK_LIMIT_SIZE if run.settings.quick else LIMIT_SIZE
    return gemm_limits(n, run.threads, max(1, min(run.settings.repeats, 5)), run.notes)


def _engines(run: Run) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The scoring engines: score float32 [N, 1, H, W] -> float32 [N]."""
    torch_score = run.torch[0]
    engines = {TORCH: torch_score} if torch_score else {}
    if "int8" not in run.meta:
        run.notes.append("threshold.json names no int8 graph (export with --quantize int8): no ort-int8 rows")
    for name, which in ((FP32, "ae"), (INT8, "int8"))[:1 + ("int8" in run.meta)]:
        session = run.session(which, spinning=torch_score is None)
        run.providers[name] = provider_of(session)
        engines[name] = lambda x, s=session: s.run(["score"], {"images": x})[0]
    openvino = openvino_engine(graph_path(run.directory, run.meta, "ae", run.settings.verify), run.threads, run.notes)
    if openvino is not None:
        engines[OPENVINO] = openvino
    if torch_score:
        spin = run.session("ae", spinning=True, golden=False)
        engines[FP32_SPIN] = lambda x: spin.run(["score"], {"images": x})[0]
        run.notes.append(f"{FP32} and {INT8} run with onnxruntime's thread spinning off, as torch shares the "
                         f"process; {FP32_SPIN} is {FP32} with spinning on, as `aeflow score` runs it")
    return engines


def scoring_rows(run: Run) -> list[dict]:
    """images/s per engine and batch (``timing.measure``), GFLOP/s, share of the GEMM limit of its
    precision (the best repeat), ratios to torch and to ort-fp32, and the peers' largest score
    difference to ort-fp32."""
    s, engines, rows = run.settings, _engines(run), []
    for batch in s.batches:
        run.settings.progress(f"scoring, batch {batch}")
        buffers = input_buffers(demo_images(run.directory), batch)
        reference = engines[FP32](buffers[0])
        for name, t in measure(engines, buffers, s.repeats, s.seconds_per_repeat).items():
            diff = float(np.max(np.abs(engines[name](buffers[0]) - reference))) if name in (TORCH, OPENVINO) else None
            rows.append({"engine": name, "batch": batch, **t, "max_abs_diff_vs_ort_fp32": diff})
    if run.torch[0] and not s.quick:
        run.settings.progress("torch.compile, in a child process")
        rows += torch_compile_rows(run.directory, run.threads, s.batches, s.repeats, s.seconds_per_repeat, run.notes)
    elif run.torch[0]:
        run.notes.append("quick run: torch.compile not measured (compiling takes minutes)")
    ips = {(r["engine"], r["batch"]): r["images_per_s"]["median"] for r in rows}
    for r in rows:
        r["gflops"] = r["images_per_s"]["median"] * FLOPS_PER_IMAGE / 1e9
        precision = "int8" if r["engine"] == INT8 else "fp32"
        limits = [x["gflops"]["max"] for x in run.results.get("limit", ()) if x["precision"] == precision]
        r["share_of_limit"] = r["gflops"] / max(limits) if limits else None
        for key, base in (("vs_torch", TORCH), ("vs_fp32", FP32)):
            if r["engine"] not in (TORCH, base) and (base, r["batch"]) in ips:
                r.setdefault(key, ips[(r["engine"], r["batch"])] / ips[(base, r["batch"])])
    return sorted(rows, key=lambda r: r["batch"])


def sampling_rows(run: Run) -> list[dict]:
    """Seconds for ``n_samples`` samples per method (the homework's bisection where PyTorch is
    installed, then every runtime method), one flow.onnx pass over as many points and drawing the
    z's, with the ratios to the homework and to that pass."""
    from aeflow.runtime.sampler import FlowSampler

    s, n = run.settings, run.settings.n_samples
    sampler = FlowSampler(s.artifacts, s.device, threads=run.threads, verify=s.verify, golden=s.verify)
    run.providers["sampler"] = sampler.provider
    flow = load_graph(run.directory, sampler.metadata, "flow", s.device, run.threads, golden=False)
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    methods = {HOMEWORK: run.torch[1]} if run.torch[1] else {}
    methods |= {f"ort-{m}": (lambda k, seed, m=m: sampler.sample(k, seed=seed, method=m)) for m in sampler.methods}
    methods |= {FORWARD: lambda k, seed: flow.run(None, {"x": x[:k]}),
                DRAW_Z: lambda k, seed: sampler.draw_z(np.random.default_rng(seed), k)}
    rows = []
    for name, fn in methods.items():
        run.settings.progress(f"sampling, {name}")
        fn(min(n, 10_000), 12345)  # warm-up: sessions, lazily built tables
        times = []
        for seed in range(max(1, min(s.repeats, 3))):  # a new seed each repeat: new targets
            t0 = time.perf_counter()
            fn(n, seed)
            times.append(time.perf_counter() - t0)
        rows.append({"method": name, "n": n, "seconds": spread(times), "samples_per_s": n / spread(times)["median"]})
    medians = {r["method"]: r["seconds"]["median"] for r in rows}
    for r in rows:
        r["vs_homework"] = medians[HOMEWORK] / medians[r["method"]] if HOMEWORK in medians else None
        r["x_forward"] = medians[r["method"]] / medians[FORWARD]
    return rows


def files_rows(run: Run) -> list[dict]:
    """The same demo images (uint8) as one .npy and as a folder of PNGs, each opened and scored by
    ``AnomalyScorer`` as ``aeflow score`` does, alternating; the PNG row's ``vs_npy`` is the ratio
    per repeat."""
    from aeflow.runtime.inputs import open_source
    from PIL import Image
    from aeflow.runtime.scorer import AnomalyScorer

    n, base = QUICK_FILE_IMAGES if run.settings.quick else FILE_IMAGES, demo_images(run.directory)
    images = base[np.arange(n) % len(base)]
    scorer = AnomalyScorer(run.directory, run.settings.device, verify=run.settings.verify)
    rates: dict[str, list[float]] = {"one .npy (uint8)": [], "folder of PNGs": []}
    with tempfile.TemporaryDirectory(prefix="aeflow-bench-") as tmp:
        paths = [Path(tmp) / "images.npy", Path(tmp) / "pngs"]
        np.save(paths[0], images)
        paths[1].mkdir()
        for i, im in enumerate(images):
            Image.fromarray(im).save(paths[1] / f"{i:06d}.png")
        for r in range(max(3, run.settings.repeats) + 1):  # the first round warms up: sessions, page cache
            for rate, path in zip(rates.values(), paths):
                time.sleep(PHASE_GAP_S)
                t0 = time.perf_counter()
                with open_source(path) as src:
                    scorer.score_source(src)
                rate += [n / (time.perf_counter() - t0)] * (r > 0)
    npy, png = rates.values()
    return [{"input": "one .npy (uint8)", "n": n, "images_per_s": spread(npy)},
            {"input": "folder of PNGs", "n": n, "images_per_s": spread(png), "vs_npy": spread(np.divide(png, npy))}]


def cold_start_rows(run: Run) -> list[dict]:
    """New process to exit (``aeflow.analysis.coldstart``), with the goals met or not."""
    rows = measure_cold_start(run.directory, demo_images(run.directory)[0], 1 if run.settings.quick else 5)
    for r in rows:
        r["goal"] = r["goal_s"] and f"<= {r['goal_s']} s: {'met' if r['seconds']['median'] <= r['goal_s'] else 'NOT met'}"
    if sys.dont_write_bytecode:
        run.notes.append("PYTHONDONTWRITEBYTECODE is set: every cold start compiles aeflow from source")
    return rows


SECTIONS = [
    Section("limit", "the machine's limit: one large matrix product, measured in this run (GFLOP/s, or GOP/s for "
            "int8; the limit is the best repeat)",
            (("engine", "name", "s"), ("", "precision", "s"), ("n^3", "size", "d"), ("GFLOP/s", "gflops", ",.1f")),
            limit_rows),
    Section("scoring", f"scoring the autoencoder (images/s; latency per call; {FLOPS_PER_IMAGE / 1e6:.2f} MFLOP an "
            "image; limit: share of the GEMM limit of its precision; max diff: score difference to ort-fp32)",
            (("batch", "batch", "d"), ("engine", "engine", "s"), ("images/s", "images_per_s", ",.0f"),
             ("p50 ms", "p50_ms", ".3f"), ("p99 ms", "p99_ms", ".3f"), ("GFLOP/s", "gflops", ".1f"),
             ("limit", "share_of_limit", ".0%"), ("vs torch", "vs_torch", ".2fx"), ("vs fp32", "vs_fp32", ".2fx"),
             ("max diff", "max_abs_diff_vs_ort_fp32", ".1e")),
            scoring_rows),
    Section("sampling", "sampling the flow (seconds for n samples; the last two rows: what one pass costs)",
            (("method", "method", "s"), ("n", "n", ",d"), ("seconds", "seconds", ".3f"),
             ("samples/s", "samples_per_s", ",.0f"), ("vs homework", "vs_homework", ".2fx"),
             ("x forward", "x_forward", ".2f")),
            sampling_rows),
    Section("files", "scoring from files, opened and scored end to end (the two inputs alternate)",
            (("input", "input", "s"), ("n", "n", ",d"), ("images/s", "images_per_s", ",.0f"),
             ("vs .npy", "vs_npy", ".2f")),
            files_rows),
    Section("cold_start", "cold start: a new process from start to exit",
            (("command", "what", "s"), ("seconds", "seconds", ".3f"), ("x floor", "vs_floor", ".2fx"),
             ("goal", "goal", "s")),
            cold_start_rows),
]


def run_bench(settings: BenchSettings, sections: list[Section] = SECTIONS) -> dict:
    """Run every section in order; returns the JSON-ready result: ``machine``, ``providers``,
    ``settings``, each section's rows under its key, ``versions`` and ``notes``."""
    directory = artifacts_dir(settings.artifacts)
    threads = settings.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    run = Run(settings, directory, read_threshold(directory, settings.verify), threads)
    load = os.getloadavg()
    for section in sections:
        settings.progress(section.key.replace("_", " "))
        run.results[section.key] = section.rows(run)
    machine = {"cpu": cpu_name(), "isa": cpu_isa(), "logical_cpus": os.cpu_count(), "threads": threads,
               "load_average_before_after": [load[0], os.getloadavg()[0]]}
    config = {k: v for k, v in vars(settings).items() if k not in ("artifacts", "progress")}
    return {"machine": machine, "providers": run.providers, "settings": config, **run.results,
            "versions": package_versions(), "notes": run.notes}


def _cell(value, fmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return f"{_cell(value['median'], fmt)} [{_cell(value['min'], fmt)} - {_cell(value['max'], fmt)}]"
    return f"{value:{fmt.rstrip('x')}}" + "x" * fmt.endswith("x")


def format_table(result: dict, sections: list[Section] = SECTIONS) -> str:
    """The result as plain-text tables, one per section, then the notes."""
    m = result["machine"]
    providers = ", ".join(f"{k} {short_provider(v)}" for k, v in result["providers"].items())
    lines = [f"aeflow bench: {m['cpu']} ({m['isa']}), {m['logical_cpus']} logical CPUs, {m['threads']} threads; "
             f"providers: {providers}", "load average before/after: {:.2f} / {:.2f} (other processes share the CPU "
             "when these exceed 0); figures: median [min - max]".format(*m["load_average_before_after"])]
    for section in sections:
        cells = [[_cell(r.get(key), fmt) for _, key, fmt in section.columns] for r in result.get(section.key, ())]
        widths = [max([len(head)] + [len(c[i]) for c in cells]) for i, (head, _, _) in enumerate(section.columns)]
        left = [fmt == "s" for _, _, fmt in section.columns]

        def line(values: list[str]) -> str:
            return "  ".join(v.ljust(w) if lft else v.rjust(w) for v, w, lft in zip(values, widths, left)).rstrip()

        lines += ["", section.title, line([head for head, _, _ in section.columns])] + [line(c) for c in cells]
    return "\n".join(lines + [f"note: {note}" for note in result["notes"]])
