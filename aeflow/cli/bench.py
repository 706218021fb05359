"""``aeflow bench``: the GEMM limit, scoring per engine and batch size, sampling, files, cold start."""

import json
import sys

import click

from aeflow.cli.options import shared


@click.command("bench")
@shared("artifacts", "device")
@click.option("--repeats", type=click.IntRange(1, 1000), default=None,
              help="Repeats per measurement (medians reported; sampling uses at most 3). Default: 5, --quick 2.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Threads for onnxruntime and PyTorch alike; default: the CPUs this process may use.")
@click.option("--quick", is_flag=True, help="2 repeats, short repeats, 20,000 samples: a smoke test, not a benchmark.")
@shared("no_verify", "json")
def command(artifacts, device, repeats, threads, quick, no_verify, as_json):
    """Benchmark on the same inputs: the machine's GEMM limit; scoring at batch 1 to 8192 per engine (PyTorch,
    onnxruntime float32 and int8, OpenVINO, torch.compile) against that limit; sampling; scoring from files; the
    cold start. Rows whose extra is missing are skipped with a note. --device cuda: the CUDA rows, against the
    GPU's own limits.

    \b
    Example:
      aeflow bench --quick --json > bench.json
    """
    if device == "cuda":
        from aeflow.analysis.cuda_bench import format_rows as text, run_cuda_bench

        result = run_cuda_bench(artifacts, quick, repeats, not no_verify)
    else:
        from aeflow.analysis.bench import format_table as text, run_bench

        result = run_bench(artifacts, device, repeats, threads, not no_verify, quick,
                           lambda msg: sys.stderr.isatty() and click.echo(f"bench: {msg}", err=True))
    click.echo(json.dumps(result, indent=2) if as_json else text(result))
