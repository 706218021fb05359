"""``aeflow info``: what the artifacts are, whether their hashes hold, and what can run them."""

from __future__ import annotations

import json

import click
import onnxruntime as ort

from aeflow.errors import AeflowError
from aeflow.files import sha256_file
from aeflow.provenance import cpu_name, package_versions
from aeflow.runtime.contract import artifacts_dir, read_metadata
from aeflow.cli.options import artifacts_option, device_option, json_option
from aeflow.runtime.providers import create_session, onnxruntime_conflict, onnxruntime_installs, provider_of


def _graph_entry(directory, meta_name: str, device: str) -> dict:
    try:
        meta = read_metadata(directory, meta_name, verify=False)
    except AeflowError as e:
        return {"metadata": meta_name, "error": e.message}
    path = meta.pop("onnx_path")
    actual = sha256_file(path)
    entry = {"metadata": meta_name, "graph": path.name, "bytes": path.stat().st_size, "opset": meta.get("opset"),
             "sha256_recorded": meta.get("sha256"), "sha256_actual": actual, "sha256_ok": actual == meta.get("sha256")}
    try:
        entry["provider"] = provider_of(create_session(path, device))
    except AeflowError as e:
        entry["provider_error"] = e.message
    return entry | {"meta": meta}


def gather_info(artifacts=None, device: str = "auto") -> dict:
    """Artifact metadata and hashes, providers available versus running, versions (a dict)."""
    directory = artifacts_dir(artifacts)
    return {
        "artifacts": str(directory),
        "graphs": [_graph_entry(directory, name, device) for name in ("threshold.json", "flow.json")],
        "providers_available": ort.get_available_providers(),
        "onnxruntime_installs": [f"{n} {v}" for n, v in onnxruntime_installs()],
        "onnxruntime_conflict": onnxruntime_conflict(onnxruntime_installs()),
        "device_requested": device,
        "cpu": cpu_name(),
        "versions": package_versions(),
    }


def _print_text(info: dict) -> None:
    click.echo(f"artifacts: {info['artifacts']}")
    for g in info["graphs"]:
        if "error" in g:
            click.echo(f"  {g['metadata']}: {g['error']}")
            continue
        meta = g["meta"]
        click.echo(f"  {g['graph']} ({g['bytes']:,} bytes, opset {g['opset']}) via {g['metadata']}")
        click.echo(f"    sha256 {g['sha256_actual']} {'ok' if g['sha256_ok'] else 'MISMATCH (recorded ' + str(g['sha256_recorded']) + ')'}")
        if "threshold" in meta:
            v = meta.get("validation", {})
            click.echo(f"    threshold {meta['threshold']:.6f} (mean {v.get('mean', float('nan')):.6f} + {meta.get('k')} x std "
                       f"{v.get('std', float('nan')):.6f}, n = {v.get('n')})")
            d, t = meta.get("data", {}), meta.get("training", {})
            click.echo(f"    trained on {d.get('train_images')} images from {d.get('source')}, {t.get('epochs')} epochs, "
                       f"final loss {t.get('final_loss', float('nan')):.5f}")
            ev = meta.get("evaluation") or {}
            if ev:
                parts = [f"type I {ev['type_i']['rate']:.2%} ({ev['type_i']['set']})"]
                parts += [f"type II {v['rate']:.2%} ({k})" for k, v in ev.get("type_ii", {}).items()]
                click.echo("    " + ", ".join(parts))
            if "int8" in meta:
                click.echo(f"    int8 graph {meta['int8'].get('onnx_file')} threshold {meta['int8'].get('threshold', float('nan')):.6f}")
        if "W" in meta:
            click.echo(f"    K = {meta.get('n_components')}, W = {meta['W']:.4f}, range ({-meta['W'] / 2:.4f}, {meta['W'] / 2:.4f}), "
                       f"test NLL {meta.get('nll', {}).get('test', float('nan')):.4f}")
        click.echo(f"    runs on: {g.get('provider') or g.get('provider_error')}")
    click.echo(f"providers available: {', '.join(info['providers_available'])}")
    click.echo(f"onnxruntime installed as: {', '.join(info['onnxruntime_installs']) or 'unknown'}")
    if info["onnxruntime_conflict"]:
        click.echo(f"WARNING: {info['onnxruntime_conflict']}")
    click.echo(f"cpu: {info['cpu']}")
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))


@click.command("info")
@artifacts_option
@device_option
@json_option
def command(artifacts, device, as_json):
    """Show artifact metadata and hashes, providers available versus the one that runs, versions.

    onnxruntime-gpu lists CUDAExecutionProvider even without a GPU; "runs on" is what really runs.

    \b
    Example:
      aeflow info --device auto
    """
    info = gather_info(artifacts, device)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        _print_text(info)
