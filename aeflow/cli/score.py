"""``aeflow score``: anomaly scores for image files, a summary table and optional per-image output."""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from aeflow.checks import check_batch
from aeflow.errors import Interrupted
from aeflow.files import check_space, check_target, printable_name
from aeflow.metrics import type_i_error, type_ii_error
from aeflow.progress import progress_bar
from aeflow.runtime.contract import bundled_dir
from aeflow.cli.options import (artifacts_option, device_option, force_option, json_option, no_verify_option,
                                output_option, quiet_option)
from aeflow.runtime.inputs import ImageSource, open_source
from aeflow.anomaly_maps import MapWriter, positions
from aeflow.runtime.outputs import COLUMNS, FORMATS, ScoredInput, check_output_path, write_results, write_stdout
from aeflow.runtime.providers import short_provider
from aeflow.runtime.scorer import BYTES_PER_IMAGE, PRECISIONS, AnomalyScorer, check_threshold

DEMO = "demo.npz"
BAR_AFTER_BATCHES = 4  # a progress bar only when scoring takes more batches than this
FEW_IMAGES = 20  # up to this many images (and no -o), the table lists each one


@dataclass
class InputSummary:
    """What one input (or the total) came to."""

    name: str
    images: int
    flagged: int
    seconds: float
    type_i: dict | None = None   # {"rate", "n", "flagged"} over the images labelled normal
    type_ii: dict | None = None  # {"rate", "n", "missed"} over the images labelled anomalous

    def as_dict(self) -> dict:
        share = self.flagged / self.images if self.images else float("nan")
        ips = self.images / self.seconds if self.seconds > 0 else None
        return {"name": self.name, "images": self.images, "flagged": self.flagged, "share": share,
                "seconds": self.seconds, "images_per_s": ips, "type_i": self.type_i, "type_ii": self.type_ii}


def _errors(scores: np.ndarray, labels: np.ndarray | None, threshold: float) -> tuple[dict | None, dict | None]:
    if labels is None:
        return None, None
    normal, anomalous = scores[~labels], scores[labels]
    t1 = t2 = None
    if normal.size:
        rate = type_i_error(normal, threshold)
        t1 = {"rate": rate, "n": int(normal.size), "flagged": int(np.sum(normal > threshold))}
    if anomalous.size:
        rate = type_ii_error(anomalous, threshold)
        t2 = {"rate": rate, "n": int(anomalous.size), "missed": int(np.sum(anomalous <= threshold))}
    return t1, t2


def _score_all(scorer: AnomalyScorer, sources: list[ImageSource], quiet: bool, maps=None):
    """Score every source; returns per-input results and summaries. ``maps``: a ``MapWriter``
    that gets each batch's reconstructions. Ctrl-C -> ``Interrupted``."""
    total = sum(s.n for s in sources)
    done = 0
    results, summaries = [], []
    show = total > BAR_AFTER_BATCHES * scorer.batch_size

    try:
        with progress_bar(total, "scoring", quiet=quiet or not show) as bar:
            def advance(b: int) -> None:
                nonlocal done
                done += b
                bar.update(b)

            for position, src in zip(positions([s.name for s in sources]), sources):
                on_rec = maps.callback(src.name, position, src.labels) if maps else None
                start = time.perf_counter()
                scores = scorer.score_source(src, advance, on_rec)
                seconds = time.perf_counter() - start
                name = printable_name(src.name)  # stray bytes of a non-UTF-8 file name escaped as \xNN
                files = getattr(src, "files", None)  # a PNG folder: each row names its own file
                result = ScoredInput(name, scores, scorer.threshold, src.labels,
                                     [str(f) for f in files] if files is not None else None)
                results.append(result)
                t1, t2 = _errors(scores, src.labels, scorer.threshold)
                summaries.append(InputSummary(name, src.n, int(result.flags.sum()), seconds, t1, t2))
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {done:,} of {total:,} images; no output written") from None
    return results, summaries


def _output_bytes(path: Path, sources: list[ImageSource]) -> int:
    """About how many bytes the per-image output takes (generously), for the free-space check."""
    width = max(len(s.name.encode("utf-8", "surrogateescape")) for s in sources)
    per_row = {".csv": 48 + width, ".json": 96 + width}.get(path.suffix.lower(), 16 + 4 * width)
    return 4096 + per_row * sum(s.n for s in sources)


def _total(summaries: list[InputSummary], results: list[ScoredInput], sources: list[ImageSource],
           threshold: float) -> InputSummary:
    labelled = [(r.scores, s.labels) for r, s in zip(results, sources) if s.labels is not None]
    t1 = t2 = None
    if labelled:
        t1, t2 = _errors(np.concatenate([sc for sc, _ in labelled]), np.concatenate([lb for _, lb in labelled]),
                         threshold)
    return InputSummary("total", sum(s.images for s in summaries), sum(s.flagged for s in summaries),
                        sum(s.seconds for s in summaries), t1, t2)


def _recorded(scorer: AnomalyScorer, precision: str) -> str:
    """Where the threshold in force came from, in words: threshold.json or its int8 entry, and
    when 'aeflow calibrate' set it, how (``aeflow.runtime.calibration.threshold_origin``)."""
    from aeflow.runtime.calibration import threshold_origin

    meta = scorer.metadata
    entry = meta if precision == "fp32" else meta["int8"]
    where = "threshold.json" if precision == "fp32" else "threshold.json, int8"
    return f"{where}: {threshold_origin(entry)}" if "calibration" in entry else where


def _fmt_error(e: dict | None, key: str) -> str:
    return "-" if e is None else f"{e['rate']:.2%} ({e[key]}/{e['n']})"


def _print_table(head: dict, summaries: list[InputSummary], total: InputSummary, err: bool = False) -> None:
    echo = functools.partial(click.echo, err=err)
    echo(f"threshold {head['threshold']:.6f} ({head['threshold_source']}), provider {short_provider(head['provider'])} "
               f"({head['provider']}), precision {head['precision']}, batch {head['batch_size']}")
    rows = [["input", "images", "flagged", "share", "type I", "type II", "images/s"]]
    for s in [*summaries, total]:
        d = s.as_dict()
        rows.append([s.name, f"{s.images:,}", f"{s.flagged:,}", f"{d['share']:.2%}",
                     _fmt_error(s.type_i, "flagged"), _fmt_error(s.type_ii, "missed"),
                     f"{d['images_per_s']:,.0f}" if d["images_per_s"] else "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        if k == len(rows) - 1:
            echo("  ".join("-" * w for w in widths))
        echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if total.type_i or total.type_ii:
        echo("type I: normal images flagged (false alarms); type II: anomalies not flagged (misses)")


def _print_images(results: list[ScoredInput], err: bool = False) -> None:
    """One line per image: the few-images view."""
    rows = [["input", "index", "score", "normalised", "predicted", "label"]]
    for r in results:
        labels = r.labels.tolist() if r.labels is not None else [None] * len(r.scores)
        for i, (sc, z, f, lab) in enumerate(zip(r.scores.tolist(), r.normalized.tolist(), r.flags.tolist(), labels)):
            rows.append([r.name, str(i), f"{sc:.6f}", f"{z:.3f}", "anomaly" if f else "normal",
                         "-" if lab is None else ("anomaly" if lab else "normal")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))), err=err)
    click.echo("normalised: min(score / (2 x threshold), 1), so the threshold reads 0.5; predicted: score > threshold",
               err=err)


@click.command("score")
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
              help="Score on Dask: local:N starts N worker processes here, tcp://HOST:PORT uses a running "
                   "scheduler; -o then names a .parquet file or a folder DIR/ (needs the distributed extra).")
@force_option
@json_option
@no_verify_option
@quiet_option
def command(inputs, artifacts, device, batch_size, threshold, precision, output, maps_dir, maps_all, column, scheduler,
            force, as_json, no_verify, quiet):
    """Score images with the autoencoder and flag those above the threshold.

    INPUT: .npy, .npz (array 'images'; labels 'is_anomaly' optional), IDX (raw or .gz), a
    28x28 greyscale .png, a folder of them, or .parquet (an image column of PNG bytes, 784 raw
    bytes or list<uint8>; see --column); quoted glob patterns are expanded. Arrays: uint8 0..255
    or float in [0, 1], shaped
    [N, 1, 28, 28], [N, 28, 28] or [N, 784]. Without INPUT: the bundled demo set (1,000 MNIST
    and 1,000 Fashion-MNIST test images, labelled). Where labels are known the table shows type
    I (false alarms) and type II (misses) errors; with up to 20 images and no -o it also lists
    each image's score. Rows hold the raw score, the normalised score (min(score / (2 x
    threshold), 1): the threshold reads 0.5), the prediction (predicted_anomaly) and the input's
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
    from aeflow.distributed import expand_inputs

    inputs = expand_inputs(inputs)
    if scheduler is not None:
        if maps_dir is not None or (output is not None and str(output) == "-"):
            raise click.UsageError("--scheduler writes Parquet (-o FILE.parquet or -o DIR/); --maps and -o - "
                                   "need a single process")
        return _distributed(inputs, scheduler, artifacts, device, batch_size, threshold, precision, output, column,
                            force, as_json, no_verify, quiet)
    to_stdout = output is not None and str(output) == "-"
    paths = list(inputs) or [bundled_dir() / DEMO]
    used = [artifacts] if artifacts is not None else []
    out = check_output_path(output, force, paths, used) if output is not None and not to_stdout else None
    if maps_all and maps_dir is None:
        raise click.UsageError("--maps-all needs --maps DIR")
    if maps_dir is not None:
        check_target(maps_dir, "folder", what="--maps", force=force, inputs=paths, artifacts=used)
    thr = check_threshold(threshold, "--threshold") if threshold is not None else None
    check_batch(batch_size, "--batch-size", BYTES_PER_IMAGE)
    with contextlib.ExitStack() as stack:
        scorer = AnomalyScorer(artifacts, device, batch_size, precision, verify=not no_verify, golden=not no_verify)
        sources = [stack.enter_context(open_source(p, None if inputs else DEMO, column, scorer.image_shape))
                   for p in paths]
        if thr is not None:
            scorer.threshold = thr
        if out is not None:
            check_space(out, _output_bytes(out, sources))
        maps = MapWriter(maps_dir, scorer.threshold, maps_all, sources) if maps_dir is not None else None
        try:
            results, summaries = _score_all(scorer, sources, quiet or as_json or to_stdout, maps)
        except BaseException:
            if maps is not None:
                maps.discard()
            raise
        total = _total(summaries, results, sources, scorer.threshold)

    head = {"artifacts": str(scorer.directory), "graph": scorer.graph.name, "precision": precision,
            "device_requested": device, "provider": scorer.provider, "batch_size": batch_size,
            "threshold": scorer.threshold,
            "threshold_source": "--threshold" if thr is not None else _recorded(scorer, precision)}
    try:
        if out is not None:
            write_results(out, results, head, force)
        if maps is not None:
            maps.publish()
    except KeyboardInterrupt:
        if maps is not None:
            maps.discard()
        raise Interrupted(f"interrupted while writing {out or maps_dir}; no output written") from None
    except BaseException:
        if maps is not None:
            maps.discard()
        raise

    if to_stdout:
        write_stdout(results, as_json)
        if not (quiet or as_json):
            _print_table(head, summaries, total, err=True)
        return
    if as_json:
        doc = dict(head, inputs=[s.as_dict() for s in summaries], total=total.as_dict(),
                   output=str(out) if out else None, maps=str(maps_dir) if maps else None,
                   maps_written=len(maps.names) if maps else 0)
        click.echo(json.dumps(doc, indent=2))
    elif not quiet:
        _print_table(head, summaries, total)
        if out is None and total.images <= FEW_IMAGES:
            _print_images(results)
        if out is not None:
            click.echo(f"wrote {out} ({total.images:,} rows)")
        if maps is not None:
            click.echo(f"wrote {len(maps.names):,} anomaly map{'s' if len(maps.names) != 1 else ''} to {maps_dir}")


def _distributed(inputs, scheduler, artifacts, device, batch_size, threshold, precision, output, column, force,
                 as_json, no_verify, quiet):
    """``--scheduler``: score on Dask (``aeflow.distributed``), print the same table."""
    from aeflow.distributed import connect, output_kind, score_on_cluster

    if not inputs:
        raise click.UsageError("--scheduler needs INPUT files (shards)")
    if output is not None:
        output_kind(output, force, "--output", inputs, [artifacts] if artifacts is not None else [])
    thr = check_threshold(threshold, "--threshold") if threshold is not None else None
    scorer = AnomalyScorer(artifacts, device, batch_size, precision, verify=not no_verify)
    if thr is not None:
        scorer.threshold = thr
    with connect(scheduler, "--scheduler") as client, \
            progress_bar(1, "scoring on Dask", quiet=quiet or as_json) as bar:
        seen = 0

        def progress(done: int, total: int) -> None:
            nonlocal seen
            if hasattr(bar, "length"):
                bar.length = total  # known once the shards are opened
            bar.update(done - seen)
            seen = done

        try:
            run = score_on_cluster(client, inputs, output, scorer, column=column, force=force, on_progress=progress)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted after {seen:,} images; no output written") from None
    summaries = []
    for r in run.shards:
        t1 = {"rate": r.false_alarms / r.normal, "n": r.normal, "flagged": r.false_alarms} if r.normal else None
        t2 = {"rate": r.misses / r.anomalous, "n": r.anomalous, "missed": r.misses} if r.anomalous else None
        summaries.append(InputSummary(r.name, r.images, r.flagged, r.seconds, t1, t2))
    normal, alarms = sum(r.normal for r in run.shards), sum(r.false_alarms for r in run.shards)
    anomalous, misses = sum(r.anomalous for r in run.shards), sum(r.misses for r in run.shards)
    total = InputSummary("total", sum(s.images for s in summaries), sum(s.flagged for s in summaries), run.seconds,
                         {"rate": alarms / normal, "n": normal, "flagged": alarms} if normal else None,
                         {"rate": misses / anomalous, "n": anomalous, "missed": misses} if anomalous else None)
    head = {"artifacts": str(scorer.directory), "graph": scorer.graph.name, "precision": precision,
            "device_requested": device, "provider": scorer.provider, "batch_size": batch_size,
            "threshold": scorer.threshold,
            "threshold_source": "--threshold" if thr is not None else _recorded(scorer, precision),
            "scheduler": scheduler, "workers": run.workers, "tasks": run.tasks}
    if as_json:
        doc = dict(head, inputs=[s.as_dict() for s in summaries], total=total.as_dict(),
                   output=str(output) if output is not None else None)
        click.echo(json.dumps(doc, indent=2))
    elif not quiet:
        _print_table(head, summaries, total)
        click.echo(f"{run.tasks} task{'s' if run.tasks != 1 else ''} on {run.workers} Dask worker"
                   f"{'s' if run.workers != 1 else ''} ({scheduler}); images/s per input: per worker, "
                   f"total: wall clock")
        if output is not None:
            click.echo(f"wrote {output} ({total.images:,} rows)")
