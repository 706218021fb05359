"""``aeflow sample``: draw samples from the 1-D flow by inverting it (flow_sampler.onnx or flow.onnx)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import click
import numpy as np

from aeflow.checks import check_seed
from aeflow.errors import Interrupted, UsageError
from aeflow.files import atomic_path, check_space, check_writable, same_file
from aeflow.progress import progress_bar
from aeflow.cli.options import (artifacts_option, device_option, force_option, json_option, no_verify_option,
                                output_option, quiet_option)
from aeflow.runtime.providers import short_provider
from aeflow.runtime.sampler import GRAPHS, MAX_COUNT, METHODS, FlowSampler

OUTPUT_SUFFIXES = (".npy", ".csv")
PLOT_SUFFIXES = (".png", ".pdf", ".svg")
CSV_BYTES_PER_SAMPLE = 16  # "%.9g" plus newline, generously
HIST_BINS = 200
PROGRESS_ABOVE = 1 << 20


def _load_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--histogram needs matplotlib, which the runtime does not install: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class _Running:
    """Chunk-wise n, mean, variance (Chan's parallel update, float64), min and max of a stream."""

    def __init__(self):
        self.n, self.mean, self.m2, self.min, self.max = 0, 0.0, 0.0, math.inf, -math.inf

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        n_b, mean_b = x.size, float(x.mean())
        n, delta = self.n + n_b, mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += float(((x - mean_b) ** 2).sum()) + delta * delta * self.n * n_b / n
        self.n = n
        self.min, self.max = min(self.min, float(x.min())), max(self.max, float(x.max()))

    def stats(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": math.sqrt(self.m2 / self.n), "min": self.min, "max": self.max}


@contextlib.contextmanager
def _sink(path: Path | None, n: int, force: bool):
    """A function that stores consecutive float32 chunks into ``path`` (.npy: a header for n
    float32 then the chunks' bytes; .csv as text), written atomically with plain writes (never
    through a memory map: a disk that fills up is an OSError, then a one-line OutputError, not a
    SIGBUS); None stores nothing."""
    if path is None:
        yield lambda chunk: None
        return
    with atomic_path(path, replace=force, what="--output") as tmp, open(tmp, "wb") as f:
        if path.suffix.lower() == ".npy":
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
            yield lambda chunk: f.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
        else:
            f.write(b"x\n")
            yield lambda chunk: np.savetxt(f, chunk, fmt="%.9g")


def _histogram(plt, path: Path, sampler: FlowSampler, edges: np.ndarray, counts: np.ndarray, n: int,
               method: str, force: bool) -> None:
    """Plot the samples' histogram (``counts`` over ``edges``) with the model density into ``path``."""
    outside = n - int(counts.sum())
    grid = np.linspace(edges[0], edges[-1], 1000)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.stairs(counts / (n * np.diff(edges)), edges, fill=True, alpha=0.5, label=f"{n:,} samples (histogram)")
    ax.plot(grid, sampler.density(grid), color="C3", lw=1.5, label="model density exp(log_prob) / P(|Z| < W/2)")
    ax.set_title(f"aeflow sample: {n:,} samples, method {method}, {short_provider(sampler.provider)}"
                 + (f" ({outside:,} outside the plotted range)" if outside else ""))
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, replace=force, what="--histogram") as tmp:
        fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=120)
    plt.close(fig)


def _check_request(n: int, seed, output: Path | None, histogram: Path | None, force: bool) -> None:
    """Before any work: ``UsageError`` for a count, seed or file name that cannot work,
    ``OutputError`` for an output that cannot be written."""
    if n < 1:
        raise UsageError(f"-n must be a positive number of samples, got {n}")
    if n > MAX_COUNT:
        raise UsageError(f"-n {n} is more than {MAX_COUNT:.0e} samples; ask for fewer")
    check_seed(seed, "--seed")
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--output {output}: use a .npy or .csv file name")
    if histogram is not None and histogram.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--histogram {histogram}: use a .png, .pdf or .svg file name")
    if output is not None and histogram is not None and same_file(output, histogram):
        raise UsageError("--output and --histogram name the same file")
    if output is not None:
        check_writable(output, force, "--output")
        per_sample = 4 if output.suffix.lower() == ".npy" else CSV_BYTES_PER_SAMPLE
        check_space(output, n * per_sample + 4096)
    if histogram is not None:
        check_writable(histogram, force, "--histogram")


def _draw(sampler: FlowSampler, n: int, seed, method: str, output: Path | None, histogram: Path | None,
          plt, force: bool, quiet: bool) -> tuple[dict, float]:
    """Sample in chunks into ``output`` (and the histogram with pyplot ``plt``); returns
    (statistics, seconds)."""
    edges = None
    if histogram is not None:
        lo, hi = (float(v) for v in sampler.invert([-3.0, 3.0]))
        edges = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), HIST_BINS + 1)
    counts, stats = np.zeros(HIST_BINS, dtype=np.int64), _Running()
    start = time.perf_counter()
    try:
        with _sink(output, n, force) as store, progress_bar(n, "sampling", quiet=quiet or n < PROGRESS_ABOVE) as bar:
            for chunk in sampler.sample_chunks(n, seed, method):
                store(chunk)
                stats.add(chunk)
                if edges is not None:
                    counts += np.histogram(chunk, bins=edges)[0]
                bar.update(chunk.size)
            seconds = time.perf_counter() - start
            if histogram is not None:
                _histogram(plt, histogram, sampler, edges, counts, n, method, force)
    except KeyboardInterrupt:
        written = "no output written" if output is not None or histogram is not None else "nothing was written"
        raise Interrupted(f"interrupted after {stats.n:,} of {n:,} samples; {written}") from None
    return stats.stats(), seconds


def _print_summary(s: dict) -> None:
    click.echo(f"sampled {s['n']:,} x from {s['graph']} in {s['seconds']:.3f} s (method {s['method']}, provider "
               f"{short_provider(s['provider'])})")
    click.echo(f"  mean {s['mean']:.6f}  std {s['std']:.6f}  min {s['min']:.6f}  max {s['max']:.6f}")
    z_lo, z_hi = s["z_range"]
    click.echo(f"  z ~ N(0, 1) truncated to ({z_lo:.6f}, {z_hi:.6f}), which holds {s['truncation_mass']:.6f} of it")
    click.echo(f"  samples written to {s['output']}" if s["output"] is not None
               else "  samples not written (pass --output FILE.npy)")
    if s["histogram"] is not None:
        click.echo(f"  histogram written to {s['histogram']}")


@click.command("sample")
@click.option("-n", "n", type=int, required=True, help="Number of samples (a positive integer).")
@click.option("--seed", type=int, default=None, help="Random seed (numpy Generator) for reproducible samples.")
@output_option("Write the samples (float32) to FILE.npy or FILE.csv.")
@click.option("--histogram", type=click.Path(path_type=Path), default=None,
              help="Plot a histogram with the model density to FILE.png/.pdf/.svg (needs matplotlib).")
@click.option("--method", type=click.Choice(METHODS), default=METHODS[0], show_default=True,
              help="Inversion: graph runs flow_sampler.onnx (fast); bisection bisects through flow.onnx. "
                   "Both are within 1e-5 of the float64 inverse.")
@device_option
@artifacts_option
@no_verify_option
@force_option
@json_option
@quiet_option
def command(n, seed, output, histogram, method, device, artifacts, no_verify, force, as_json, quiet):
    """Draw N samples x = f^-1(z) from the 1-D flow, z ~ N(0, 1) truncated to the flow's range.

    f maps R onto (-W/2, W/2), so z is drawn from the standard normal restricted to that range
    (exactly, by rejection): the samples follow the model's density normalised over the range.
    Every sample is within 1e-5 of the exact float64 inverse, whichever the method; the same
    seed gives the same samples.

    \b
    Example:
      aeflow sample -n 1000000 --seed 0 -o samples.npy --histogram samples.png
      aeflow sample -n 10000 --seed 1 --method bisection --json
    """
    _check_request(n, seed, output, histogram, force)
    plt = _load_pyplot() if histogram is not None else None
    sampler = FlowSampler(artifacts, device=device, method=method, verify=not no_verify, golden=not no_verify)
    stats, seconds = _draw(sampler, n, seed, method, output, histogram, plt, force, quiet)
    summary = {**stats, "seed": seed, "method": method, "graph": GRAPHS[method], "provider": sampler.provider,
               "seconds": seconds, "samples_per_second": stats["n"] / seconds if seconds > 0 else None,
               "z_range": list(sampler.z_range), "truncation_mass": sampler.truncation_mass,
               "output": str(output) if output is not None else None,
               "histogram": str(histogram) if histogram is not None else None}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
