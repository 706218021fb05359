"""``aeflow bench``: the GEMM limit, scoring per engine and batch size, sampling, files, cold start."""

from __future__ import annotations

import json
import sys

import click

from aeflow.cli.options import artifacts_option, device_option, json_option, no_verify_option


@click.command("bench")
@artifacts_option
@device_option
@click.option("--repeats", type=click.IntRange(1, 1000), default=None,
              help="Repeats per measurement (medians are reported; sampling uses at most 3). Default: 5, with --quick 2.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Threads for onnxruntime and PyTorch alike; default: the CPUs this process may use.")
@click.option("--quick", is_flag=True, help="2 repeats, short repeats, 20,000 samples: a smoke test, not a benchmark.")
@no_verify_option
@json_option
def command(artifacts, device, repeats, threads, quick, no_verify, as_json):
    """Benchmark, in one process on the same inputs: the machine's own GEMM limit; scoring at
    batch 1, 64, 1024 and 8192 (PyTorch eager, onnxruntime float32 and int8, OpenVINO on the same
    ae.onnx where installed, torch.compile in a child process) with images/s, latency, GFLOP/s and
    share of the limit; sampling 1,000,000 points per method against the homework's bisection and
    one flow.onnx pass; scoring from a .npy and from a PNG folder; the cold start of the CLI.

    PyTorch rows need the train extra, OpenVINO's the bench extra; without them they are skipped
    with a note. --quick skips torch.compile. Run it on a quiet machine: other processes skew
    every number. With --device cuda: the CUDA rows instead (device-resident and host-fed images/s,
    latency, the sampler graph, against the GPU's own copy and MatMul limits; see
    aeflow.analysis.cuda_bench).

    \b
    Example:
      aeflow bench
      aeflow bench --quick --json > bench.json
    """
    if device == "cuda":  # the GPU path against the device's own limits (aeflow.analysis.cuda_bench)
        from aeflow.analysis.cuda_bench import format_rows, run_cuda_bench

        result = run_cuda_bench(artifacts, quick, repeats, not no_verify)
        click.echo(json.dumps(result, indent=2) if as_json else format_rows(result))
        return
    from aeflow.analysis.bench import BenchSettings, format_table, run_bench

    def say(msg: str) -> None:
        if sys.stderr.isatty():
            click.echo(f"bench: {msg}", err=True)

    kw = {"artifacts": artifacts, "device": device, "threads": threads, "verify": not no_verify, "progress": say}
    kw |= {"repeats": repeats} if repeats is not None else {}
    result = run_bench(BenchSettings.quick_settings(**kw) if quick else BenchSettings(**kw))
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))
