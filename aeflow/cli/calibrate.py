"""``aeflow calibrate``: set the threshold from your own normal images and write threshold.json."""

import contextlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

from aeflow.cli import _stdout_gone
from aeflow.cli.options import output_option, shared
from aeflow.checks import check_batch, check_rule, expand_inputs
from aeflow.errors import InputError, Interrupted, UsageError
from aeflow.files import describe_os_error
from aeflow.metrics import min_n_for_rate
from aeflow.progress import progress_bar, text_table
from aeflow.runtime.artifacts import artifacts_dir, read_threshold
from aeflow.runtime.calibration import calibrate_scores, calibration_target, path_entry, write_calibration
from aeflow.runtime.contract import GRAPHS
from aeflow.runtime.inputs import open_source
from aeflow.runtime.scorer import BYTES_PER_IMAGE, AnomalyScorer


def _text(run, directory: Path, out: Path | None) -> str:
    first = next(iter(run.calibrations.values())).record
    conf, n = first["interval"]["confidence"], first["n"]
    rows = [["graph", "previous", "threshold", "false alarms here", f"long-run rate ({conf:.0%})",
             f"on {n:,} new images ({conf:.0%})"]]
    for which, cal in run.calibrations.items():
        r, iv, pr = cal.record, cal.record["interval"], cal.record["prediction"]
        rows.append([GRAPHS[which].file, f"{r['previous_threshold']:.6f}", f"{cal.threshold:.6f}",
                     f"{r['achieved_false_alarm_rate']:.2%} ({r['flagged']:,}/{n:,})",
                     f"{iv['lower']:.2%} - {iv['upper']:.2%}",
                     f"{pr['lower']:,} - {pr['upper']:,} ({pr['lower'] / n:.1%} - {pr['upper'] / n:.1%})"])
    rule = (f"false-alarm rate {first['false_alarm_rate']:g}: the threshold is the score of rank {first['rank']:,} "
            f"of {n:,}, ascending" if first["rule"] == "false-alarm rate" else f"mean + {first['k']:g} std (ddof 1) "
            f"of the {n:,} scores")
    names = ", ".join(f"{d['name']} ({d['n']:,})" for d in run.data)
    where = f"{run.written} (with the artifact files of {directory}, which is unchanged)" if out else run.written
    return "\n".join([f"calibrated on {n:,} normal images: {names}; provider {run.provider}", f"rule: {rule}",
                      *text_table(rows, right=range(1, 6)), f"wrote {where}"])


def _show(run, directory: Path, out: Path | None, as_json: bool, quiet: bool) -> None:
    """The summary on stdout; threshold.json is written, so a stdout that fails (a reader that quit) only
    costs a warning on stderr, and exit 0."""
    try:
        if as_json:
            click.echo(json.dumps({"artifacts": str(directory), "output": str(run.written), "provider": run.provider,
                                   "calibration": {GRAPHS[w].file: dict(c.record, threshold=c.threshold)
                                                   for w, c in run.calibrations.items()}}, indent=2))
        elif not quiet:
            click.echo(_text(run, directory, out))
        sys.stdout.flush()
    except OSError as e:
        _stdout_gone()  # what is still buffered goes nowhere
        click.echo(f"aeflow: warning: wrote {run.written}; cannot write the summary to standard output "
                   f"({describe_os_error(e)})", err=True)


@click.command("calibrate")
@click.argument("normal", nargs=-1, required=True, metavar="NORMAL...", type=click.Path(path_type=Path))
@shared("artifacts")
@output_option("Write a calibrated copy of the artifacts into this new folder (every file copied) "
               "instead of changing --artifacts.", file_okay=False)
@click.option("--k", "k", type=click.FloatRange(0, 100, min_open=True), default=None,
              help="Threshold = mean + K std (ddof 1) of the scores, as export sets it  [default: 3]")
@click.option("--false-alarm-rate", "rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              metavar="P", help="Threshold = the empirical quantile whose false-alarm rate on new normal images "
                                "is at most P (needs n >= 1/P - 1 images).")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Confidence of the reported interval for the false-alarm rate.")
@shared("device", "batch_size", "force", "json", "no_verify", "quiet_summary")
def command(normal, artifacts, output, k, rate, confidence, device, batch_size, force, as_json, no_verify, quiet):
    """Set the anomaly threshold from your own normal images and write it into threshold.json.

    NORMAL: normal images only, in any format 'aeflow score' reads. Each graph (ae.onnx, and ae.int8.onnx where
    it exists) is calibrated on its own scores. The table gives the share of these images above the new threshold,
    an exact (Clopper-Pearson) interval for the long-run false-alarm rate, and how many of the next n normal images
    it will flag (distribution-free). threshold.json is replaced in one step in --artifacts DIR, or written into
    OUTDIR (-o) with a copy of the artifacts, recording the rule, n, the data's names and sha256, the date and the
    previous threshold; ae.onnx's scores (calibration_scores.npy) become the p-values' reference. The bundled
    artifacts never change.

    \b
    Example:
      aeflow calibrate line3/normal/ --artifacts runs/a                  # mean + 3 std, in place
      aeflow calibrate normal.npy --false-alarm-rate 0.01 -o runs/line3  # a calibrated copy of the bundled ones
    """
    if k is not None and rate is not None:
        raise click.UsageError("--k and --false-alarm-rate exclude each other; pass one")
    if artifacts is None and output is None:
        raise click.UsageError("pass --artifacts DIR to calibrate that folder, or -o OUTDIR for a calibrated copy "
                               "of the bundled artifacts (which are never changed)")
    check_batch(batch_size, "--batch-size", BYTES_PER_IMAGE)
    normal, directory = expand_inputs(normal), artifacts_dir(artifacts)
    out = calibration_target(directory, output, force, normal, cli=True)
    try:
        run = calibrate_files(normal, directory, out, k, rate, confidence, device, batch_size, not no_verify,
                              quiet or as_json, force)
    except UsageError as e:  # --false-alarm-rate nan passes click's range
        raise UsageError(e.message.replace("false_alarm_rate", "--false-alarm-rate")) from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted; threshold.json was not changed") from None
    _show(run, directory, out, as_json, quiet)


def calibrate_files(paths: list[Path], directory: Path, out: Path | None, k, rate, confidence: float, device: str,
                    batch_size: int, verify: bool, quiet: bool, force: bool = False) -> SimpleNamespace:
    """Score the normal images in ``paths`` with every graph of ``directory`` (each calibrated on its own
    scores) and write threshold.json (``write_calibration``: into ``directory``, or a copy in ``out``, its
    files replaced only with ``force``).
    Returns ``calibrations`` per graph, the inputs' ``data`` entries, the file ``written``, the ``provider``."""
    check_rule(k, rate, confidence)
    meta = read_threshold(directory, verify)
    graphs = ["ae"] + (["int8"] if meta.int8 is not None else [])
    calibrations, provider = {}, ""
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_source(p, image_shape=meta.image_shape)) for p in paths]
        for s in sources:  # anomalies in the set would drag the threshold up (silently)
            if s.labels is not None and np.any(s.labels):
                raise InputError(f"{s.name}: {int(np.sum(s.labels)):,} of its {s.n:,} images are labelled "
                                 f"anomalous (is_anomaly); calibrate on normal images only")
        data = [path_entry(p, s.n, s.name, getattr(s, "files", None)) for p, s in zip(paths, sources)]
        total = sum(s.n for s in sources)
        if rate is not None and total < min_n_for_rate(rate):
            calibrate_scores(np.zeros(total), data, 0.0, k, rate, confidence)  # refused before any scoring
        quiet = quiet or total * len(graphs) <= 4 * batch_size
        with progress_bar(total * len(graphs), "scoring", quiet=quiet) as bar:
            for which in graphs:
                scorer = AnomalyScorer(directory, device, batch_size, "int8" if which == "int8" else "fp32", verify)
                provider = scorer.provider
                scores = np.concatenate([scorer.score_source(s, bar.update) for s in sources])
                calibrations[which] = calibrate_scores(scores, data, scorer.threshold, k, rate, confidence,
                                                       scorer.metadata.entry(which).graph.sha256)
    written, _ = write_calibration(directory, calibrations, out, force, what="--output")
    return SimpleNamespace(calibrations=calibrations, data=data, written=written, provider=provider)

