"""``aeflow score``: anomaly scores for image files, one report (a table or JSON) and optional
per-image output. ``--scheduler`` hands the work to ``aeflow.distributed`` (Dask), which the
plain path never imports."""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

from aeflow.checks import check_batch, check_threshold, expand_inputs
from aeflow.cli.options import (artifacts_option, device_option, force_option, json_option, no_verify_option,
                                output_option, quiet_option)
from aeflow.errors import Interrupted
from aeflow.files import check_space, check_target, printable_name
from aeflow.progress import progress_bar
from aeflow.runtime.artifacts import bundled_dir
from aeflow.runtime.inputs import ImageSource, open_source
from aeflow.runtime.outputs import (COLUMNS, FORMATS, ScoredInput, check_output_path, iter_rows, p_values,
                                     write_results, write_stdout)
from aeflow.runtime.providers import short_provider
from aeflow.runtime.scorer import BYTES_PER_IMAGE, PRECISIONS, AnomalyScorer

DEMO = "demo.npz"
BAR_AFTER_BATCHES = 4  # a progress bar only when scoring takes more batches than this
FEW_IMAGES = 20  # up to this many images (and no -o), the report lists each one


@dataclass
class InputSummary:
    """What one input (or the total) came to: images, flagged, seconds, and where labelled the
    normal images and those flagged (false alarms), the anomalies and those missed."""

    name: str
    images: int
    flagged: int
    seconds: float
    normal: int = 0
    alarms: int = 0
    anomalous: int = 0
    misses: int = 0

    def as_dict(self) -> dict:
        share = self.flagged / self.images if self.images else float("nan")
        ips = self.images / self.seconds if self.seconds > 0 else None
        t1 = {"rate": self.alarms / self.normal, "n": self.normal, "flagged": self.alarms} if self.normal else None
        t2 = {"rate": self.misses / self.anomalous, "n": self.anomalous, "missed": self.misses} \
            if self.anomalous else None
        return {"name": self.name, "images": self.images, "flagged": self.flagged, "share": share,
                "seconds": self.seconds, "images_per_s": ips, "type_i": t1, "type_ii": t2}


def _summary(name: str, scores: np.ndarray, labels: np.ndarray | None, threshold: float,
             seconds: float) -> InputSummary:
    """The summary of one input's float32 scores [n] against ``threshold``, labels bool [n] or None."""
    flags = scores > threshold
    s = InputSummary(name, len(scores), int(flags.sum()), seconds)
    if labels is not None:
        s.normal, s.alarms = int((~labels).sum()), int((flags & ~labels).sum())
        s.anomalous, s.misses = int(labels.sum()), int((~flags & labels).sum())
    return s


def _total(summaries: list[InputSummary], seconds: float | None = None) -> InputSummary:
    """The sum of ``summaries``; ``seconds``: the wall time (default: the inputs' seconds added)."""
    fields = ("images", "flagged", "seconds", "normal", "alarms", "anomalous", "misses")
    total = {f: sum(getattr(s, f) for s in summaries) for f in fields}
    return InputSummary("total", **dict(total, seconds=total["seconds"] if seconds is None else seconds))


def _score_all(scorer: AnomalyScorer, sources: list[ImageSource], quiet: bool, maps=None):
    """Score every source; returns per-input results and summaries. ``maps``: a ``MapWriter``
    that gets each batch's reconstructions. Ctrl-C -> ``Interrupted``."""
    total, done = sum(s.n for s in sources), 0
    results, summaries = [], []
    places = maps.naming if maps is not None else [(None, None)] * len(sources)
    try:
        with progress_bar(total, "scoring", quiet=quiet or total <= BAR_AFTER_BATCHES * scorer.batch_size) as bar:
            def advance(b: int) -> None:
                nonlocal done
                done += b
                bar.update(b)

            for position, src in zip(places, sources):
                on_rec = maps.callback(src.name, position, src.labels) if maps else None
                start = time.perf_counter()
                scores = scorer.score_source(src, advance, on_rec)
                name = printable_name(src.name)  # stray bytes of a non-UTF-8 file name escaped as \xNN
                files = getattr(src, "files", None)  # a PNG folder: each row names its own file
                results.append(ScoredInput(name, scores, scorer.threshold, src.labels,
                                           [str(f) for f in files] if files is not None else None,
                                           p_values(scorer, scores)))
                summaries.append(_summary(name, scores, src.labels, scorer.threshold, time.perf_counter() - start))
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {done:,} of {total:,} images; no output written") from None
    return results, summaries


def _output_bytes(path: Path, sources: list[ImageSource]) -> int:
    """About how many bytes the per-image output takes (generously), for the free-space check."""
    width = max(len(s.name.encode("utf-8", "surrogateescape")) for s in sources)
    per_row = {".csv": 48 + width, ".json": 96 + width}.get(path.suffix.lower(), 16 + 4 * width)
    return 4096 + per_row * sum(s.n for s in sources)


def _recorded(scorer: AnomalyScorer, precision: str) -> str:
    """Where the threshold in force came from, in words: threshold.json or its int8 entry, and
    when 'aeflow calibrate' set it, how (``aeflow.runtime.calibration.threshold_origin``)."""
    entry = scorer.metadata.entry("ae" if precision == "fp32" else "int8")
    where = "threshold.json" if precision == "fp32" else "threshold.json, int8"
    if entry.calibration is None:
        return where
    from aeflow.runtime.calibration import threshold_origin  # only for a calibrated folder: cold start

    return f"{where}: {threshold_origin(entry)}"


def _scorer(o: SimpleNamespace) -> AnomalyScorer:
    scorer = AnomalyScorer(o.artifacts, o.device, o.batch_size, o.precision, verify=not o.no_verify,
                           golden=not o.no_verify)
    if o.threshold is not None:
        scorer.threshold = o.threshold
    return scorer


def _head(scorer: AnomalyScorer, o: SimpleNamespace) -> dict:
    """What every report and output file records of the run (the artifacts folder absolute)."""
    return {"artifacts": str(scorer.directory.absolute()), "graph": scorer.graph.name, "precision": o.precision,
            "device_requested": o.device, "provider": scorer.provider, "batch_size": o.batch_size,
            "threshold": scorer.threshold,
            "threshold_source": "--threshold" if o.threshold is not None else _recorded(scorer, o.precision)}


# ---------------------------------------------------------------- the report, built once


def _report(head: dict, summaries: list[InputSummary], total: InputSummary, images: list[dict] | None = None,
            **extra) -> dict:
    """The one report of a run: ``head``, a row per input, the total, and (few images) a row per
    image (``aeflow.runtime.outputs.iter_rows``). ``--json`` prints it; the table shows it."""
    doc = dict(head, inputs=[s.as_dict() for s in summaries], total=total.as_dict(), **extra)
    if images is not None:
        doc["images"] = images
    return doc


def _columns(rows: list[list[str]], echo, rule_before_last: bool = False) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        if rule_before_last and k == len(rows) - 1:
            echo("  ".join("-" * w for w in widths))
        echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def _rate(e: dict | None, key: str) -> str:
    return "-" if e is None else f"{e['rate']:.2%} ({e[key]}/{e['n']})"


def _print_report(doc: dict, notes: tuple[str, ...] = (), err: bool = False) -> None:
    """``doc`` (``_report``) as tables, then the ``notes``."""
    echo = functools.partial(click.echo, err=err)
    echo(f"threshold {doc['threshold']:.6f} ({doc['threshold_source']}), provider {short_provider(doc['provider'])} "
         f"({doc['provider']}), precision {doc['precision']}, batch {doc['batch_size']}")
    _columns([["input", "images", "flagged", "share", "type I", "type II", "images/s"]] + [
        [d["name"], f"{d['images']:,}", f"{d['flagged']:,}", f"{d['share']:.2%}", _rate(d["type_i"], "flagged"),
         _rate(d["type_ii"], "missed"), f"{d['images_per_s']:,.0f}" if d["images_per_s"] else "-"]
        for d in [*doc["inputs"], doc["total"]]], echo, rule_before_last=True)
    if doc["total"]["type_i"] or doc["total"]["type_ii"]:
        echo("type I: normal images flagged (false alarms); type II: anomalies not flagged (misses)")
    if doc.get("images"):
        def word(v):
            return "-" if v is None else ("anomaly" if v else "normal")

        _columns([["input", "index", "score", "normalised", "p-value", "predicted", "label"]] + [
            [r["source"], str(r["index"]), f"{r['score']:.6f}", f"{r['normalized_score']:.3f}",
             "-" if r["p_value"] is None else f"{r['p_value']:.4f}", word(r["predicted_anomaly"]),
             word(r["label_anomaly"])] for r in doc["images"]], echo)
        echo("normalised: min(score / (2 x threshold), 1), so the threshold reads 0.5; predicted: score > threshold")
    for line in notes:
        echo(line)


def _show(doc: dict, o: SimpleNamespace, notes: tuple[str, ...]) -> None:
    if o.as_json:
        click.echo(json.dumps(doc, indent=2))
    elif not o.quiet:
        _print_report(doc, notes)


def _wrote(what, n: int, noun: str) -> str:
    return f"wrote {n:,} {noun}{'s' if n != 1 else ''} to {what}"


# ---------------------------------------------------------------- the command

HELP = """Score images with the autoencoder and flag those above the threshold.

INPUT: .npy, .npz (array 'images'; labels 'is_anomaly' optional), IDX (raw or .gz), a
28x28 greyscale .png, a folder of them, or .parquet (an image column of PNG bytes, 784 raw
bytes or list<uint8>; see --column); quoted glob patterns are expanded. Arrays: uint8 0..255
or float in [0, 1], shaped
[N, 1, 28, 28], [N, 28, 28] or [N, 784]. Without INPUT: the bundled demo set (1,000 MNIST
and 1,000 Fashion-MNIST test images, labelled). Where labels are known the table shows type
I (false alarms) and type II (misses) errors; with up to 20 images and no -o it also lists
each image's score (--json: under "images"). Rows hold the raw score, the normalised score (min(score / (2 x
threshold), 1): the threshold reads 0.5), the conformal p_value against the validation
scores export kept, or the calibration scores after 'aeflow calibrate' (empty where the
artifacts have none, and for int8), the prediction (predicted_anomaly) and the input's
own label (label_anomaly, empty where unknown). The output file and the --maps folder are
written completely or not at all (also on Ctrl-C).

\b
Example:
  aeflow score                                  # the bundled demo set
  aeflow score t10k-images-idx3-ubyte.gz -o scores.csv
  aeflow score digits/ --threshold 0.05 --json
  aeflow score digits/ -o - | sort -t, -k2 -g   # CSV rows to stdout
  aeflow score digits/ --maps maps/            # a picture per flagged image
  aeflow score 'shards/*.npy' --scheduler local:2 -o scores.parquet
"""


@click.command("score", help=HELP)
@click.argument("inputs", nargs=-1, metavar="[INPUT]...", type=click.Path(path_type=Path))
@artifacts_option
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Images per onnxruntime call.")
@click.option("--threshold", type=float, default=None,
              help="Flag scores above this instead of the threshold recorded in threshold.json.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="fp32 (ae.onnx) or int8 (the quantised graph from 'aeflow export --quantize int8').")
@output_option(f"Write one row per image ({', '.join(COLUMNS)}) as {', '.join(FORMATS)} by extension; "
               f"'-' writes CSV rows (JSON lines with --json) to stdout.")
@click.option("--maps", "maps_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Write a PNG per flagged image into DIR: the image, its reconstruction and the anomaly map "
                   "(needs Pillow).")
@click.option("--maps-all", is_flag=True, help="With --maps: a PNG for every image, not only the flagged ones.")
@click.option("--column", default=None, metavar="NAME",
              help="Parquet inputs: the image column (default: 'image', else the only binary/list<uint8> column).")
@click.option("--scheduler", default=None, metavar="local:N|tcp://HOST:PORT",
              help="Score on Dask: local:N starts N worker processes here, tcp://HOST:PORT (or tls://) uses a "
                   "running scheduler; -o then names a .parquet file or a folder DIR/ (needs the distributed extra).")
@force_option
@json_option
@no_verify_option
@quiet_option
def command(**options):
    """``aeflow score`` (its help: ``HELP``)."""
    o = SimpleNamespace(**options)
    o.inputs = expand_inputs(o.inputs)
    if o.threshold is not None:
        o.threshold = check_threshold(o.threshold, "--threshold")
    check_batch(o.batch_size, "--batch-size", BYTES_PER_IMAGE)
    if o.scheduler is not None:
        return _on_dask(o)
    to_stdout = o.output is not None and str(o.output) == "-"
    paths, used = list(o.inputs) or [bundled_dir() / DEMO], [o.artifacts] if o.artifacts is not None else []
    out = check_output_path(o.output, o.force, paths, used) if o.output is not None and not to_stdout else None
    if o.maps_all and o.maps_dir is None:
        raise click.UsageError("--maps-all needs --maps DIR")
    if o.maps_dir is not None:
        check_target(o.maps_dir, "folder", what="--maps", force=o.force, inputs=paths, artifacts=used)
    scorer, results, summaries, maps = _score(o, paths, out, quiet=o.quiet or o.as_json or to_stdout)
    head = _head(scorer, o)
    _publish(out, maps, results, head, o.force)
    total = _total(summaries)
    if to_stdout:
        write_stdout(results, o.as_json)
        if not (o.quiet or o.as_json):
            _print_report(_report(head, summaries, total), err=True)
        return
    few = list(iter_rows(results)) if out is None and total.images <= FEW_IMAGES else None
    doc = _report(head, summaries, total, few, output=str(out) if out else None,
                  maps=str(o.maps_dir) if maps else None, maps_written=len(maps.names) if maps else 0)
    notes = [f"wrote {out} ({total.images:,} rows)"] if out is not None else []
    notes += [_wrote(o.maps_dir, len(maps.names), "anomaly map")] if maps is not None else []
    _show(doc, o, tuple(notes))


def _score(o: SimpleNamespace, paths: list[Path], out: Path | None, quiet: bool):
    """Open the inputs, load the scorer, check the free space for ``out``, score (and draw the
    maps, staged). Returns the scorer, results, summaries and the ``MapWriter`` or None."""
    with contextlib.ExitStack() as stack:
        scorer = _scorer(o)
        sources = [stack.enter_context(open_source(p, None if o.inputs else DEMO, o.column, scorer.image_shape))
                   for p in paths]
        if out is not None:
            check_space(out, _output_bytes(out, sources))
        maps = None
        if o.maps_dir is not None:
            from aeflow.anomaly_maps import MapWriter

            maps = MapWriter(o.maps_dir, scorer.threshold, o.maps_all, sources)
        try:
            results, summaries = _score_all(scorer, sources, quiet, maps)
        except BaseException:
            if maps is not None:
                maps.discard()
            raise
    return scorer, results, summaries, maps


def _publish(out: Path | None, maps, results: list[ScoredInput], head: dict, force: bool) -> None:
    """Write the per-image output and publish the maps; on any failure neither is left."""
    try:
        if out is not None:
            write_results(out, results, head, force)
        if maps is not None:
            maps.publish()
    except KeyboardInterrupt:
        if maps is not None:
            maps.discard()
        raise Interrupted(f"interrupted while writing {out or maps.directory}; no output written") from None
    except BaseException:
        if maps is not None:
            maps.discard()
        raise


def _on_dask(o: SimpleNamespace) -> None:
    """``--scheduler``: score on Dask (``aeflow.distributed``), the same report."""
    if o.maps_dir is not None or (o.output is not None and str(o.output) == "-"):
        raise click.UsageError("--scheduler writes Parquet (-o FILE.parquet or -o DIR/); --maps and -o - "
                               "need a single process")
    if not o.inputs:
        raise click.UsageError("--scheduler needs INPUT files (shards)")
    from aeflow.distributed import check_address, connect, output_kind

    check_address(o.scheduler, "--scheduler")
    if o.output is not None:
        output_kind(o.output, o.force, "--output", o.inputs, [o.artifacts] if o.artifacts is not None else [])
    scorer = _scorer(o)
    head = dict(_head(scorer, o), scheduler=o.scheduler)  # what the user passed, not an ephemeral address
    with connect(o.scheduler, "--scheduler") as client:
        run = _run_on_dask(client, o, scorer, head)
    summaries = [InputSummary(r.name, r.images, r.flagged, r.seconds, r.normal, r.false_alarms, r.anomalous, r.misses)
                 for r in run.shards]
    head.update(workers=run.workers, tasks=run.tasks)
    doc = _report(head, summaries, _total(summaries, run.seconds), output=str(o.output) if o.output else None)
    notes = [f"{run.tasks} task{'s' if run.tasks != 1 else ''} on {run.workers} Dask worker"
             f"{'s' if run.workers != 1 else ''} ({o.scheduler}); images/s per input: per worker, total: wall clock"]
    notes += [f"wrote {o.output} ({doc['total']['images']:,} rows)"] if o.output is not None else []
    _show(doc, o, tuple(notes))


def _run_on_dask(client, o: SimpleNamespace, scorer: AnomalyScorer, head: dict):
    """``score_on_cluster`` with a progress bar; Ctrl-C -> ``Interrupted``."""
    from aeflow.distributed import score_on_cluster

    seen = 0
    with progress_bar(1, "scoring on Dask", quiet=o.quiet or o.as_json) as bar:
        def progress(done: int, total: int) -> None:
            nonlocal seen
            if hasattr(bar, "length"):
                bar.length = total  # known once the shards are opened
            bar.update(done - seen)
            seen = done

        try:
            return score_on_cluster(client, o.inputs, o.output, scorer, column=o.column, force=o.force,
                                    on_progress=progress, context=head)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted after {seen:,} images; no output written") from None
