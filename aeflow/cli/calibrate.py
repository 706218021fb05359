"""``aeflow calibrate``: set the threshold from your own normal images and write threshold.json."""

from __future__ import annotations

import json
from pathlib import Path

import click

from aeflow.cli.options import (artifacts_option, device_option, force_option, json_option, no_verify_option,
                                output_option, quiet_option)
from aeflow.errors import Interrupted, UsageError
from aeflow.progress import progress_bar

GRAPH_FILES = {"ae": "ae.onnx", "int8": "ae.int8.onnx"}


def _rule_text(record: dict) -> str:
    if record["rule"] == "false-alarm rate":
        return (f"false-alarm rate {record['false_alarm_rate']:g}: the threshold is the score of rank "
                f"{record['rank']:,} of {record['n']:,}, ascending")
    return f"mean + {record['k']:g} std (ddof 1) of the {record['n']:,} scores"


def _print(run, directory: Path, out: Path | None) -> None:
    first = next(iter(run.calibrations.values())).record
    names = ", ".join(f"{d['name']} ({d['n']:,})" for d in run.data)
    click.echo(f"calibrated on {first['n']:,} normal images: {names}; provider {run.provider}")
    click.echo(f"rule: {_rule_text(first)}")
    conf, n = first["interval"]["confidence"], first["n"]
    rows = [["graph", "previous", "threshold", "false alarms here", f"long-run rate ({conf:.0%})",
             f"on {n:,} new images ({conf:.0%})"]]
    for which, cal in run.calibrations.items():
        r = cal.record
        (lo, hi), (c_lo, c_hi) = cal.interval, cal.prediction
        rows.append([GRAPH_FILES[which], f"{r['previous_threshold']:.6f}", f"{cal.threshold:.6f}",
                     f"{cal.rate:.2%} ({r['flagged']:,}/{n:,})", f"{lo:.2%} - {hi:.2%}",
                     f"{c_lo:,} - {c_hi:,} ({c_lo / n:.1%} - {c_hi / n:.1%})"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    where = f"{run.written} (with the artifact files of {directory}, which is unchanged)" if out else str(run.written)
    click.echo(f"wrote {where}")


@click.command("calibrate")
@click.argument("normal", nargs=-1, required=True, metavar="NORMAL...", type=click.Path(path_type=Path))
@artifacts_option
@output_option("Write a calibrated copy of the artifacts into this new folder (graphs hard-linked or copied) "
               "instead of changing --artifacts.", file_okay=False)
@click.option("--k", "k", type=click.FloatRange(0, 100, min_open=True), default=None,
              help="Threshold = mean + K std (ddof 1) of the scores, as export sets it  [default: 3]")
@click.option("--false-alarm-rate", "rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              metavar="P", help="Threshold = the empirical quantile whose false-alarm rate on new normal images "
                                "is at most P (needs n >= 1/P - 1 images).")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Confidence of the reported interval for the false-alarm rate.")
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Images per onnxruntime call.")
@force_option
@json_option
@no_verify_option
@quiet_option
def command(normal, artifacts, output, k, rate, confidence, device, batch_size, force, as_json, no_verify, quiet):
    """Set the anomaly threshold from your own normal images and write it into threshold.json.

    NORMAL: images of normal things only, in any format 'aeflow score' reads (.npy, .npz,
    IDX, PNG, folders). Each graph (ae.onnx, and ae.int8.onnx where it exists) is calibrated
    on its own scores. --k K (default 3) sets mean + K std, as export does; --false-alarm-rate P
    sets the empirical quantile whose false-alarm rate on new normal images is at most P. The
    table gives the share of the calibration images above the new threshold, an exact
    (Clopper-Pearson) interval for the long-run false-alarm rate on new normal images like them,
    and how many of the next n normal images it will flag (a distribution-free prediction
    interval, which also covers the chance of a finite set).

    threshold.json is replaced in one step in --artifacts DIR, or, with -o OUTDIR, written
    with a copy of the artifacts into OUTDIR (DIR unchanged). It keeps the graph's sha256 and
    export's validation figures and records the rule, n, the data's names and sha256, the date
    and the previous threshold under "calibration". The bundled artifacts are never changed.

    \b
    Example:
      aeflow calibrate line3/normal/ --artifacts runs/a                  # mean + 3 std, in place
      aeflow calibrate normal.npy --false-alarm-rate 0.01 -o runs/line3  # a calibrated copy of the bundled ones
    """
    from aeflow.runtime.calibration import calibrate_files, check_out_dir
    from aeflow.runtime.artifacts import artifacts_dir, bundled_dir

    if k is not None and rate is not None:
        raise click.UsageError("--k and --false-alarm-rate exclude each other; pass one")
    if artifacts is None and output is None:
        raise click.UsageError("pass --artifacts DIR to calibrate that folder, or -o OUTDIR for a calibrated copy "
                               "of the bundled artifacts (which are never changed)")
    directory = artifacts_dir(artifacts)
    if output is None and directory.resolve() == bundled_dir().resolve():
        raise click.UsageError("the bundled artifacts are never changed; pass -o OUTDIR for a calibrated copy")
    out = None
    if output is not None and not (output.exists() and output.resolve() == directory.resolve()):
        out = check_out_dir(output, force, "--output")
    try:
        from aeflow.runtime.inputs import open_source

        total = 0  # the images are counted first, so that the bar knows its end
        for p in normal:
            with open_source(p) as s:
                total += s.n
        graphs = 2 if _has_int8(directory, not no_verify) else 1
        with progress_bar(total * graphs, "scoring", quiet=quiet or as_json or total * graphs <= 4 * batch_size) as bar:
            run = calibrate_files(list(normal), directory, out, k, rate, confidence, device, batch_size,
                                  verify=not no_verify, on_batch=bar.update)
    except UsageError as e:
        raise UsageError(e.message.replace("false_alarm_rate", "--false-alarm-rate")) from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted; threshold.json was not changed") from None
    if as_json:
        doc = {"artifacts": str(directory), "output": str(run.written), "provider": run.provider,
               "calibration": {GRAPH_FILES[w]: dict(c.record, threshold=c.threshold) for w, c in run.calibrations.items()}}
        click.echo(json.dumps(doc, indent=2))
    elif not quiet:
        _print(run, directory, out)


def _has_int8(directory: Path, verify: bool) -> bool:
    from aeflow.runtime.artifacts import read_threshold

    return read_threshold(directory, verify).int8 is not None
