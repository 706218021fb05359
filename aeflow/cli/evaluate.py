"""``aeflow evaluate``: the homework's figures (type I/II, AUROC, the flow's fit) on whole data sets, beside its own."""

import json
from pathlib import Path

import click

from aeflow.errors import Interrupted
from aeflow.plotting import pyplot
from aeflow.analysis.evaluation import DEFAULT_IN_DIST, evaluate, format_table
from aeflow.cli.options import data_dir_option, shared
from aeflow.targets import check_target


@click.command("evaluate")
@shared("artifacts")
@click.option("--in-dist", "in_dist", metavar="DATA", default=DEFAULT_IN_DIST, show_default=True,
              help="In-distribution set: a name (mnist-test, kmnist-test, fashion-mnist-test) or a path "
                   "(IDX, .npy, .npz, PNG folder).")
@click.option("--anomalies", "anomalies", metavar="DATA", multiple=True,
              help="Anomaly set, repeatable (default: kmnist-test, as the homework; offline use "
                   "--data-dir ../shared/data --anomalies fashion-mnist-test).")
@data_dir_option("Folder of IDX files for the named sets (default: download with torchvision).")
@click.option("-o", "--output", "--report", "report_dir", type=click.Path(path_type=Path, readable=False),
              default=None, metavar="DIR",
              help="Write report.html (self-contained), its PNGs and evaluation.json into DIR (needs matplotlib).")
@click.option("--flow", is_flag=True, help="Also evaluate the flow: NLL, KL(data || model), z and samples "
                                            "(part of --report where the run holds the homework's flow).")
@shared("force", "device", "no_verify", "json", "quiet")
def command(artifacts, in_dist, anomalies, data_dir, report_dir, flow, force, device, no_verify, as_json, quiet):
    """Score whole data sets through ONNX Runtime: type I, type II and AUROC per anomaly set and the threshold
    for 1% type I, beside the homework's (type I 1.04%, type II 2.95% against KMNIST). --report DIR adds figures.

    \b
    Example:
      aeflow evaluate                                  # MNIST vs KMNIST, downloaded
      aeflow evaluate --data-dir ../shared/data --anomalies fashion-mnist-test --report report
      aeflow evaluate --in-dist digits.npy --anomalies odd.npy --json
    """
    if report_dir is not None:
        pyplot("--report")  # one line when matplotlib is missing
        read = [p for p in (in_dist, *anomalies, data_dir) if p is not None and Path(p).exists()]
        check_target(report_dir, "folder", what="--report", force=force, inputs=read,
                     artifacts=[artifacts] if artifacts is not None else [])
        flow = flow or None  # the report shows a flow of the homework's mixture where the run holds one
    try:
        result = evaluate(artifacts, in_dist, anomalies or None, data_dir, device, flow=flow,
                          with_extremes=report_dir is not None, verify=not no_verify, quiet=quiet or as_json)
        summary = result.summary
        summary["report"] = report_dir and str(report_dir / "report.html")
        if report_dir is not None:
            from aeflow.analysis.report import write_report

            write_report(report_dir, result, force)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {'no report' if report_dir is not None else 'nothing was'} written") from None
    click.echo(json.dumps(summary, indent=2, default=str) if as_json else
               format_table(summary) + (f"\nreport: {summary['report']}" if summary["report"] else ""))
