"""``aeflow info``: what the artifacts are, whether they pass every check the runtime makes, what can run them."""

import json
import os

import click
import onnxruntime as ort

from aeflow.cli.options import shared
from aeflow.errors import AeflowError, ArtifactError
from aeflow.files import locked, sha256_file
from aeflow.provenance import cpu_name, package_versions
from aeflow.runtime import contract
from aeflow.runtime.artifacts import artifacts_dir, graphs_without_metadata, read_metadata, reference_scores
from aeflow.runtime.calibration import threshold_origin
from aeflow.runtime.golden import load_graph
from aeflow.runtime.providers import onnxruntime_conflict, onnxruntime_installs, provider_of

METADATA = (("threshold.json", ("ae", "int8")), ("flow.json", ("flow", "sampler")))


def _graph(directory, meta, name: str, which: str, device: str) -> dict:
    """One graph's facts and the verdict of loading it as the runtime does (hash, signature, golden)."""
    entry = meta.entry(which).graph
    path = directory / contract.GRAPHS[which].file
    g = {"metadata": name, "graph": path.name, "opset": entry.opset, "sha256_recorded": entry.sha256}
    if path.is_file():
        digest = sha256_file(path)
        g |= {"bytes": path.stat().st_size, "sha256_actual": digest, "sha256_ok": digest == entry.sha256}
    try:
        g |= {"provider": provider_of(load_graph(directory, meta, which, device)), "check": "ok"}
    except AeflowError as e:
        g["check"] = e.message
    return g


def gather_info(artifacts=None, device: str = "auto") -> dict:
    """Artifact metadata, every graph loaded as the runtime loads it (sha256, signature, golden
    outputs) with its verdict, providers available versus running, versions (a dict). ``problems``
    lists every failed check, one line each."""
    directory = artifacts_dir(artifacts)
    with locked(directory, shared=True):  # one state of the folder, not half of an export or a calibration
        info = _folder_info(directory, device)
    installs = onnxruntime_installs()
    return info | {"providers_available": ort.get_available_providers(),
                   "onnxruntime_installs": [f"{n} {v}" for n, v in installs],
                   "onnxruntime_conflict": onnxruntime_conflict(installs), "device_requested": device,
                   "cpu": cpu_name(), "versions": package_versions()}


def _folder_info(directory, device: str) -> dict:
    """``gather_info``'s part read from the folder: metadata, graphs, problems."""
    card = directory / "MODEL_CARD.md"
    info = {"artifacts": str(directory), "model_card": str(card) if card.is_file() else None, "metadata": {},
            "graphs": [], "problems": []}
    held = [(name, graphs) for name, graphs in METADATA if os.path.lexists(directory / name)]
    for name, graphs in held or METADATA:  # a run folder of one model (export of ae.pt or flow.pt alone)
        try:
            meta = read_metadata(directory, name)
        except AeflowError as e:
            info["problems"].append(e.message)
            try:  # show what can be shown of an edited file
                meta = read_metadata(directory, name, verify=False)
            except AeflowError:
                info["metadata"][name] = {"error": e.message}
                continue
        info["metadata"][name] = meta
        if name == contract.THRESHOLD_JSON:
            try:  # the p-values' reference scores (calibration_scores.npy, golden.npz), as scoring reads them
                reference_scores(directory, meta)
            except AeflowError as e:
                info["problems"].append(e.message)
        for which in graphs:
            if meta.entry(which) is not None:
                info["graphs"].append(_graph(directory, meta, name, which, device))
    info["problems"] += [g["check"] for g in info["graphs"] if g["check"] != "ok"]
    info["problems"] += graphs_without_metadata(directory)
    return info


def _print_text(info: dict) -> None:
    click.echo(f"artifacts: {info['artifacts']}")
    click.echo(f"model card: {info['model_card'] or 'none (re-export to write MODEL_CARD.md)'}")
    th, fl = info["metadata"].get("threshold.json"), info["metadata"].get("flow.json")
    for g in info["graphs"]:
        size = f"{g['bytes']:,} bytes, " if "bytes" in g else ""
        click.echo(f"  {g['graph']} ({size}opset {g['opset']}) via {g['metadata']}")
        if "sha256_actual" in g:
            ok = "ok" if g["sha256_ok"] else f"MISMATCH (recorded {g['sha256_recorded']})"
            click.echo(f"    sha256 {g['sha256_actual']} {ok}")
        click.echo(f"    check: {g['check']}" + (f", runs on {g['provider']}" if "provider" in g else ""))
    if th is not None and not isinstance(th, dict):
        v, d, t, ev = th.validation, th.data, th.training, th.evaluation
        click.echo(f"threshold {th.threshold:.6f} ({threshold_origin(th)}), images "
                   f"{th.image_shape[0]}x{th.image_shape[1]}")
        if th.calibration is not None:
            click.echo(f"  export's threshold {v.mean + th.k * v.std:.6f} (mean {v.mean:.6f} + {th.k} x "
                       f"std {v.std:.6f}, n = {v.n}); the rates below are at export's threshold")
        click.echo(f"  trained on {d['train_images']} images from {d['source']}, {t['epochs']} epochs, "
                   f"final loss {t['final_loss']:.5f}")
        if "type_i" in ev:
            parts = [f"type I {ev['type_i']['rate']:.2%} ({ev['type_i']['set']})"]
            parts += [f"type II {v['rate']:.2%} ({k})" for k, v in ev["type_ii"].items()]
            click.echo("  " + ", ".join(parts))
        if th.int8 is not None:
            click.echo(f"  int8 threshold {th.int8.threshold:.6f} ({threshold_origin(th.int8)})")
    if fl is not None and not isinstance(fl, dict):
        click.echo(f"flow: K = {len(fl.components.mu)}, W = {fl.W:.4f}, range ({fl.z_range[0]:.4f}, "
                   f"{fl.z_range[1]:.4f}), test NLL {fl.nll['test']:.4f}")
    for name, meta in info["metadata"].items():
        if isinstance(meta, dict):
            click.echo(f"{name}: {meta['error']}")
    click.echo(f"providers available: {', '.join(info['providers_available'])}")
    click.echo(f"onnxruntime installed as: {', '.join(info['onnxruntime_installs']) or 'unknown'}")
    if info["onnxruntime_conflict"]:
        click.echo(f"WARNING: {info['onnxruntime_conflict']}")
    click.echo(f"cpu: {info['cpu']}")
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))


@click.command("info")
@shared("artifacts", "device", "json")
def command(artifacts, device, as_json):
    """Show artifact metadata and check every file as the runtime would (contract, sha256, graph signatures,
    golden outputs); exits 1 when a check fails. onnxruntime-gpu lists CUDAExecutionProvider even without a
    GPU; "runs on" is what really runs."""
    info = gather_info(artifacts, device)
    if as_json:
        docs = {n: m if isinstance(m, dict) else m.to_json() for n, m in info["metadata"].items()}
        click.echo(json.dumps(info | {"metadata": docs}, indent=2, default=str))
    else:
        _print_text(info)
    if problems := info["problems"]:
        raise ArtifactError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
