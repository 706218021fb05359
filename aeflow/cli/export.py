"""``aeflow export``: checkpoints -> ONNX graphs and JSON metadata, checked against PyTorch."""

from pathlib import Path

import click

from aeflow.cli.options import data_dir_option, output_option
from aeflow.optional import require


@click.command("export")
@output_option("Run folder: ae.onnx, flow.onnx, threshold.json, flow.json ... are written here, and the "
               "checkpoints are read from here unless --checkpoints names another folder.",
               default=Path("runs/latest"), file_okay=False)
@click.option("--checkpoints", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding ae.pt and/or flow.pt; default: the -o folder (never the bundled one).")
@data_dir_option("IDX folder for validation and evaluation images; default: the one ae.pt was trained from.")
@click.option("--opset", type=click.IntRange(18, 23), default=None,  # torch's exporter starts at 18
              help="ONNX opset; default: the exporter's.")
@click.option("--no-eval", is_flag=True, help="Skip type I/II evaluation on the test sets.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also write ae.int8.onnx (static int8: scores independent of the batch) with its own threshold; "
                   "fails unless its decisions agree with float32 on >= 99.5% of each test set.")
@click.option("--force", is_flag=True, help="Remove an earlier export of a model with no checkpoint now (e.g. the "
              "detector's, exporting flow.pt alone into its folder).")
def command(output, checkpoints, data_dir, opset, no_eval, quantize, force):
    """Export the models the run holds (ae.pt, flow.pt) to ONNX, with the threshold, checked against PyTorch:
    nothing is written unless every check passes (max abs difference <= 1e-5).

    \b
    Example:
      aeflow export --data-dir ../shared/data -o runs/a
      aeflow export --data-dir ../shared/data -o runs/a --quantize int8
    """
    for module in ("torch", "onnx"):
        require(module, "train", "export")
    from aeflow.export.exporter import export_artifacts
    from aeflow.cli.verify import comparison_table

    report = export_artifacts(checkpoints or output, output, data_dir, opset, not no_eval, quantize, force=force,
                               what="--output")
    click.echo(comparison_table(report.checks, "ONNX Runtime (CPU) vs PyTorch"))
    th = report.threshold or {"evaluation": {}}
    ev, val = th["evaluation"], th.get("validation")
    if val is not None:
        click.echo(f"threshold {th['threshold']:.6f} = mean {val['mean']:.6f} + 3 x std {val['std']:.6f} over "
                   f"{val['n']} validation images")
    if ev:
        click.echo(f"type I (mnist-test): {ev['type_i']['rate']:.2%}")
    for name, v in ev.get("type_ii", {}).items():
        click.echo(f"type II ({name}): {v['rate']:.2%}   AUROC {ev['auroc'][name]:.4f}")
    if "int8" in th:
        q = th["int8"]["evaluation"]
        click.echo(f"int8: threshold {th['int8']['threshold']:.6f}, type I {q['type_i']['rate']:.2%}, "
                   + ", ".join(f"type II ({k}) {v['rate']:.2%}" for k, v in q["type_ii"].items())
                   + f", decisions agree with float32 on {q['decision_agreement_with_fp32']:.2%}")
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.flow_meta is not None:
        nll = report.flow_meta["nll"]
        truth = f" (true mixture {nll['true_mixture_test']:.4f})" if "true_mixture_test" in nll else ""
        click.echo(f"flow: W = {report.flow_meta['W']:.4f}, test NLL {nll['test']:.4f}{truth}")
    click.echo(f"wrote {', '.join(report.files)} to {output}")

