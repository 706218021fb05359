"""``aeflow sample``: draw samples from the 1-D flow by inverting flow.onnx."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import click
import numpy as np

from aeflow.checks import check_count, check_seed
from aeflow.errors import Interrupted, UsageError
from aeflow.files import atomic_path, check_space, check_writable, same_file
from aeflow.progress import progress_bar
from aeflow.cli.options import (artifacts_option, device_option, force_option, json_option, no_verify_option,
                                output_option, quiet_option)
from aeflow.runtime.providers import short_provider
from aeflow.runtime.sampler import MAX_COUNT, MAX_ITERATIONS, METHODS, FlowSampler, running_stats

MAX_SAMPLES = MAX_COUNT
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
    outside = n - int(counts.sum())
    width = np.diff(edges)
    grid = np.linspace(edges[0], edges[-1], 1000)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.stairs(counts / (n * width), edges, fill=True, alpha=0.5, label=f"{n:,} samples (histogram)")
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


@click.command("sample")
@click.option("-n", "n", type=int, required=True, help="Number of samples (a positive integer).")
@click.option("--seed", type=int, default=None, help="Random seed (numpy Generator) for reproducible samples.")
@output_option("Write the samples (float32) to FILE.npy or FILE.csv.")
@click.option("--histogram", type=click.Path(path_type=Path), default=None,
              help="Plot a histogram with the model density to FILE.png/.pdf/.svg (needs matplotlib).")
@click.option("--method", type=click.Choice(METHODS), default=None,
              help=f"Inversion method (default: {METHODS[0]}, the fastest exact one, where the artifacts hold "
                   f"flow_sampler.onnx; else table).")
@click.option("--iterations", type=int, default=None,
              help=f"bisection: steps (default from the bracket width); newton/table: most graph calls "
                   f"(graph: fixed in flow_sampler.onnx, not settable) "
                   f"before the float64 polish (1 to {MAX_ITERATIONS}).")
@device_option
@artifacts_option
@no_verify_option
@force_option
@json_option
@quiet_option
def command(n, seed, output, histogram, method, iterations, device, artifacts, no_verify, force, as_json, quiet):
    """Draw N samples x = f^-1(z) from the 1-D flow, z ~ N(0, 1) truncated to the flow's range.

    f maps R onto (-W/2, W/2), so z is drawn from the standard normal restricted to that range
    (exactly, by rejection): the samples follow the model's density normalised over the range.
    Every sample is within 1e-5 of the exact float64 inverse (except with --method bisection,
    the homework's float32 algorithm, kept for comparison).

    \b
    Example:
      aeflow sample -n 1000000 --seed 0 -o samples.npy --histogram samples.png
      aeflow sample -n 10000 --seed 1 --method bisection --json
    """
    check_count(n, "-n")
    if iterations is not None and not 1 <= iterations <= MAX_ITERATIONS:
        raise UsageError(f"--iterations must be from 1 to {MAX_ITERATIONS}, got {iterations}")
    check_seed(seed, "--seed")
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--output {output}: use a .npy or .csv file name")
    if histogram is not None and histogram.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--histogram {histogram}: use a .png, .pdf or .svg file name")
    if output is not None and histogram is not None and same_file(output, histogram):
        raise UsageError("--output and --histogram name the same file")
    plt = _load_pyplot() if histogram is not None else None
    if output is not None:
        check_writable(output, force, "--output")
        per_sample = 4 if output.suffix.lower() == ".npy" else CSV_BYTES_PER_SAMPLE
        check_space(output, n * per_sample + 4096)
    if histogram is not None:
        check_writable(histogram, force, "--histogram")

    sampler = FlowSampler(artifacts, device=device, method=method, verify=not no_verify, golden=not no_verify)
    method, iterations = sampler.resolve(method, iterations)
    edges = None
    if histogram is not None:
        lo, hi = (float(v) for v in sampler.invert([-3.0, 3.0]))
        edges = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), HIST_BINS + 1)
    counts = np.zeros(HIST_BINS, dtype=np.int64)
    stats = running_stats()
    start = time.perf_counter()
    try:
        with _sink(output, n, force) as store, progress_bar(n, "sampling", quiet=quiet or n < PROGRESS_ABOVE) as bar:
            for chunk in sampler.sample_chunks(n, seed, method, iterations):
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
    s = stats.stats()
    z_lo, z_hi = sampler.z_range
    summary = {
        "n": s.n, "seed": seed, "method": method,
        "iterations": iterations,
        "provider": sampler.provider, "seconds": seconds, "samples_per_second": s.n / seconds if seconds > 0 else None,
        "mean": s.mean, "std": s.std, "min": s.min, "max": s.max,
        "z_range": [z_lo, z_hi], "truncation_mass": sampler.truncation_mass,
        "output": str(output) if output is not None else None,
        "histogram": str(histogram) if histogram is not None else None,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"sampled {s.n:,} x from flow.onnx in {seconds:.3f} s (method {method}, provider "
               f"{short_provider(sampler.provider)})")
    click.echo(f"  mean {s.mean:.6f}  std {s.std:.6f}  min {s.min:.6f}  max {s.max:.6f}")
    click.echo(f"  z ~ N(0, 1) truncated to ({z_lo:.6f}, {z_hi:.6f}), which holds {sampler.truncation_mass:.6f} of it")
    click.echo(f"  samples written to {output}" if output is not None else "  samples not written (pass --output FILE.npy)")
    if histogram is not None:
        click.echo(f"  histogram written to {histogram}")
