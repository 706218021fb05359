"""``aeflow sample``: draw samples from the 1-D flow by inverting it (flow_sampler.onnx or flow.onnx)."""

import contextlib
import json
import time
from pathlib import Path

import click
import numpy as np

from aeflow.checks import check_count, check_seed
from aeflow.errors import Interrupted, UsageError
from aeflow.files import atomic_path, check_space
from aeflow.plotting import pyplot
from aeflow.progress import progress_bar
from aeflow.cli.options import output_option, shared
from aeflow.runtime.providers import short_provider
from aeflow.runtime.sampler import GRAPHS, METHODS, FlowSampler
from aeflow.targets import check_target

BYTES_PER_SAMPLE = {".npy": 4, ".csv": 16}  # .csv: "%.9g" plus newline, generously
HIST_BINS = 200


@contextlib.contextmanager
def _sink(path: Path | None, n: int, force: bool):
    """A function storing consecutive float32 chunks into ``path`` (.npy for n float32, or .csv), atomically,
    by plain writes (a full disk: a one-line OutputError, not a memory map's SIGBUS); None stores nothing."""
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


def _histogram(path: Path, sampler: FlowSampler, edges: np.ndarray, counts: np.ndarray, n: int, method: str,
               force: bool) -> None:
    """Plot the histogram ``counts`` int64 [B] over ``edges`` float64 [B+1] with the model density into ``path``."""
    plt, outside = pyplot("--histogram"), n - int(counts.sum())
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.stairs(counts / (n * np.diff(edges)), edges, fill=True, alpha=0.5, label=f"{n:,} samples (histogram)")
    grid = np.linspace(edges[0], edges[-1], 1000)
    ax.plot(grid, sampler.density(grid), color="C3", lw=1.5, label="model density exp(log_prob) / P(|Z| < W/2)")
    ax.set(xlabel="x", ylabel="density", title=f"aeflow sample: {n:,} samples, method {method}, "
           f"{short_provider(sampler.provider)}" + (f" ({outside:,} outside the plotted range)" if outside else ""))
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, replace=force, what="--histogram") as tmp:
        fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=120)
    plt.close(fig)


def _check_request(n: int, seed, output: str | None, histogram: str | None, force: bool,
                   artifacts) -> tuple[Path | None, Path | None]:
    """Before any work: ``UsageError`` for a bad count, seed or file name, ``OutputError`` for an unwritable output.
    Returns ``output`` and ``histogram`` (as given: a trailing separator is refused) as Paths, or None."""
    check_count(n, "-n")
    check_seed(seed, "--seed")
    if output is not None and Path(output).suffix.lower() not in BYTES_PER_SAMPLE:
        raise UsageError(f"--output {output}: use a .npy or .csv file name")
    if histogram is not None and Path(histogram).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"--histogram {histogram}: use a .png, .pdf or .svg file name")
    used = [artifacts] if artifacts else []
    if output is not None:
        output = check_target(output, what="--output", force=force, artifacts=used)
        check_space(output, n * BYTES_PER_SAMPLE[output.suffix.lower()] + 4096)
    if histogram is not None:
        histogram = check_target(histogram, what="--histogram", force=force, artifacts=used,
                                 outputs=[("--output", output)] if output else [])
        pyplot("--histogram")  # one line when matplotlib is missing
    return output, histogram


def _draw(sampler: FlowSampler, n: int, seed, method: str, output: Path | None, histogram: Path | None,
          force: bool, quiet: bool) -> dict:
    """Sample in chunks into ``output`` and the ``histogram``; returns the samples' n, mean, std, min,
    max (float64, over every chunk) and the seconds sampling took."""
    edges, counts = None, np.zeros(HIST_BINS, dtype=np.int64)
    if histogram is not None:
        lo, hi = (float(v) for v in sampler.invert([-3.0, 3.0]))
        edges = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), HIST_BINS + 1)
    done, total, squares, low, high, shift, start = 0, 0.0, 0.0, np.inf, -np.inf, None, time.perf_counter()
    try:
        with _sink(output, n, force) as store, progress_bar(n, "sampling", quiet=quiet or n < 1 << 20) as bar:
            for chunk in sampler.sample_chunks(n, seed, method):
                store(chunk)
                x = chunk.astype(np.float64)
                shift = x[0] if shift is None else shift  # sums around a shift: no cancellation
                done, total, squares = done + x.size, total + (x - shift).sum(), squares + ((x - shift) ** 2).sum()
                low, high = min(low, x.min()), max(high, x.max())
                if edges is not None:
                    counts += np.histogram(chunk, bins=edges)[0]
                bar.update(chunk.size)
            seconds = time.perf_counter() - start
            if histogram is not None:
                _histogram(histogram, sampler, edges, counts, n, method, force)
    except KeyboardInterrupt:
        written = "no output written" if output is not None or histogram is not None else "nothing was written"
        raise Interrupted(f"interrupted after {done:,} of {n:,} samples; {written}") from None
    mean = total / done
    return {"n": done, "mean": float(shift + mean), "std": float(np.sqrt(max(squares / done - mean * mean, 0.0))),
            "min": float(low), "max": float(high), "seconds": seconds}


def _number(v: float) -> str:
    """``v`` with 6 decimals where they show 5 to 10 digits (0.01 <= |v| < 1e4, or 0), else 7 significant digits."""
    return f"{v:.6f}" if v == 0 or 0.01 <= abs(v) < 1e4 else f"{v:.6e}"


@click.command("sample")
@click.option("-n", "n", type=int, required=True, help="Number of samples (a positive integer).")
@click.option("--seed", type=int, default=None, help="Random seed (numpy Generator) for reproducible samples.")
@output_option("Write the samples (float32) to FILE.npy or FILE.csv.", spelled=True)
@click.option("--histogram", type=click.Path(readable=False), default=None,
              help="Plot a histogram with the model density to FILE.png/.pdf/.svg (needs matplotlib).")
@click.option("--method", type=click.Choice(METHODS), default=METHODS[0], show_default=True,
              help="Inversion: graph runs flow_sampler.onnx (fast); bisection bisects through flow.onnx.")
@shared("device", "artifacts", "no_verify", "force", "json", "quiet")
def command(n, seed, output, histogram, method, device, artifacts, no_verify, force, as_json, quiet):
    """Draw N samples x = f^-1(z) from the 1-D flow, z ~ N(0, 1) truncated to the flow's range.

    f maps R onto (-W/2, W/2), so the samples follow the model's density normalised over that range. Both
    methods put every sample within 1e-5 of the float64 inverse (in the data's scale, or a float32 step at
    the data's size where that is coarser); the same seed gives the same samples.

    \b
    Example:
      aeflow sample -n 1000000 --seed 0 -o samples.npy --histogram samples.png
      aeflow sample -n 10000 --seed 1 --method bisection --json
    """
    output, histogram = _check_request(n, seed, output, histogram, force, artifacts)
    sampler = FlowSampler(artifacts, device=device, method=method, verify=not no_verify, golden=not no_verify)
    s = _draw(sampler, n, seed, method, output, histogram, force, quiet)
    s |= {"seed": seed, "method": method, "graph": GRAPHS[method], "provider": sampler.provider,
          "samples_per_second": s["n"] / s["seconds"] if s["seconds"] > 0 else None,
          "z_range": list(sampler.z_range), "truncation_mass": sampler.truncation_mass,
          "output": output and str(output), "histogram": histogram and str(histogram)}
    click.echo(json.dumps(s, indent=2) if as_json else
               f"sampled {s['n']:,} x from {s['graph']} in {s['seconds']:.3f} s (method {method}, provider "
               f"{short_provider(s['provider'])})\n"
               f"  mean {_number(s['mean'])}  std {_number(s['std'])}  min {_number(s['min'])}  "
               f"max {_number(s['max'])}\n"
               f"  z ~ N(0, 1) truncated to ({s['z_range'][0]:.6f}, {s['z_range'][1]:.6f}), which holds "
               f"{s['truncation_mass']:.6f} of it\n"
               + (f"  samples written to {output}" if output else "  samples not written (pass --output FILE.npy)")
               + (f"\n  histogram written to {histogram}" if histogram is not None else ""))
