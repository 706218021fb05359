"""``aeflow verify``: the graphs here against export's golden outputs (no torch needed) and, with torch, checkpoints."""

import json

import click

from aeflow.cli.options import shared
from aeflow.progress import text_table


def comparison_table(rows, title: str) -> str:
    """``title`` over a plain-text table of ``aeflow.parity.Comparison`` rows, one line per output."""
    return "\n".join([title, *text_table([["output", "n", "max abs diff", "max rel diff", "tolerance", "result"]] + [
        [r.name, str(r.n), f"{r.max_abs:.3e}", f"{r.max_rel:.3e}", r.tolerance, "pass" if r.passed else "FAIL"]
        for r in rows], right=(1, 2, 3))])


@click.command("verify")
@shared("artifacts", "device", "no_verify")
@click.option("--golden-only", is_flag=True, help="Skip the checkpoints even where torch is installed.")
@shared("json")
def command(artifacts, device, no_verify, golden_only, as_json):
    """Check every graph on this machine against the outputs recorded at export.

    Runs without PyTorch: each graph's outputs on a fixed input set against golden.npz (the tolerances of
    aeflow.parity); with PyTorch and ae.pt, flow.pt in the folder, also against the checkpoints. Exits 1 when
    anything is beyond tolerance, saying which side differs. On a GPU: aeflow verify --device cuda."""
    from aeflow.analysis.verify import verify_artifacts

    result = verify_artifacts(artifacts, device, not no_verify, checkpoints=not golden_only)
    if as_json:
        doc = {"artifacts": str(result.directory), "provider": result.provider, "passed": result.passed}
        doc |= {k: None if rows is None else [r._asdict() | {"tolerance": r.tolerance} for r in rows]
                for k, rows in (("golden", result.golden), ("checkpoints", result.checkpoints))}
        click.echo(json.dumps(doc | {"notes": result.notes}, indent=2))
    else:
        ort = f"ONNX Runtime ({result.provider})"
        click.echo(comparison_table(result.golden, f"{ort} vs the golden outputs recorded at export"))
        if result.checkpoints is not None:
            click.echo(comparison_table(result.checkpoints, f"\n{ort} vs PyTorch checkpoints (CPU)"))
        for note in result.notes:
            click.echo(f"note: {note}")
    result.raise_for_failure()
    if not as_json:
        n = len(result.golden) + len(result.checkpoints or [])
        click.echo(f"all {n} outputs within tolerance on {result.provider}")
