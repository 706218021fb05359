"""``aeflow score``: anomaly scores for image files, one report (a table or JSON), optional per-image output;
``--scheduler`` hands the work to ``aeflow.distributed`` (Dask), never imported otherwise."""

import contextlib
import functools
import json
import time
from pathlib import Path
from types import SimpleNamespace

import click

from aeflow.checks import check_batch, check_threshold, expand_inputs
from aeflow.cli.options import output_option, shared
from aeflow.errors import Interrupted
from aeflow.files import check_space
from aeflow.progress import progress_bar, text_table
from aeflow.runtime.artifacts import bundled_dir, demo_file
from aeflow.runtime.contract import DEMO_FILE, IMAGE_SHAPE
from aeflow.runtime.inputs import ImageSource, file_kind, open_source
from aeflow.runtime.outputs import (COLUMNS, FORMATS, InputResult, ScoredInput, check_output_path, iter_rows,
                                     output_context, total, write_results, write_stdout)
from aeflow.runtime.providers import short_provider
from aeflow.runtime.scorer import BYTES_PER_IMAGE, PRECISIONS, AnomalyScorer
from aeflow.targets import check_target

BAR_AFTER_BATCHES = 4  # a progress bar only when scoring takes more batches than this
FEW_IMAGES = 20  # up to this many images (and no -o), the report lists each one
WORD = {None: "-", True: "anomaly", False: "normal"}  # a predicted or known label in the report


def _score_all(scorer: AnomalyScorer, sources: list[ImageSource], quiet: bool, maps=None):
    """The ``ScoredInput`` and ``InputResult`` of every source; ``maps``, a ``MapWriter``, gets each batch's
    reconstructions. Ctrl-C -> ``Interrupted``."""
    images, done, results, counts = sum(s.n for s in sources), 0, [], []
    places = maps.naming if maps is not None else [(None, None)] * len(sources)
    try:
        with progress_bar(images, "scoring", quiet=quiet or images <= BAR_AFTER_BATCHES * scorer.batch_size) as bar:
            def advance(b: int) -> None:
                nonlocal done
                done += b
                bar.update(b)

            for position, src in zip(places, sources):
                start = time.perf_counter()
                on_rec = maps.callback(src.name, position, src.labels) if maps else None
                scores = scorer.score_source(src, advance, on_rec)
                files = getattr(src, "files", None)  # a PNG folder: each row names its own file
                results.append(ScoredInput(src.name, scores, scorer.threshold, src.labels,
                                           [str(f) for f in files] if files is not None else None,
                                           scorer.p_values_of(scores, missing_ok=True)))
                counts.append(InputResult(src.name, src.n, labels=src.labels))
                counts[-1].add(0, scores, scorer.threshold, time.perf_counter() - start)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {done:,} of {images:,} images; no output written") from None
    return results, counts


def _scorer(o: SimpleNamespace) -> tuple[AnomalyScorer, dict]:
    """The scorer the options ask for, and what every report and output file records of the run."""
    scorer = AnomalyScorer(o.artifacts, o.device, o.batch_size, o.precision, not o.no_verify, golden=not o.no_verify)
    if o.threshold is not None:
        scorer.threshold, source = o.threshold, "--threshold"
    else:  # threshold.json or its int8 entry, and how 'aeflow calibrate' set it
        fp32 = o.precision == "fp32"
        entry, source = scorer.metadata.entry("ae" if fp32 else "int8"), "threshold.json" + ("" if fp32 else ", int8")
        if entry.calibration is not None:
            from aeflow.runtime.calibration import threshold_origin  # only for a calibrated folder: cold start

            source = f"{source}: {threshold_origin(entry)}"
    return scorer, dict(output_context(scorer), device_requested=o.device, threshold_source=source)


def _report(doc: dict, o: SimpleNamespace, notes: list[str], err: bool = False) -> None:
    """The one report of a run, ``doc`` (head, a row per input, the total, and with few images a
    row per image): printed as JSON with ``--json``, else as tables and ``notes`` unless ``quiet``."""
    if o.as_json or o.quiet:
        if o.as_json and not err:
            click.echo(json.dumps(doc, indent=2))
        return
    echo = functools.partial(click.echo, err=err)

    def rate(e: dict | None, key: str) -> str:
        return "-" if e is None else f"{e['rate']:.2%} ({e[key]}/{e['n']})"

    echo(f"threshold {doc['threshold']:.6f} ({doc['threshold_source']}), provider {short_provider(doc['provider'])} "
         f"({doc['provider']}), precision {doc['precision']}, batch {doc['batch_size']}")
    echo("\n".join(text_table([["input", "images", "flagged", "share", "type I", "type II", "images/s"]] + [
        [d["name"], f"{d['images']:,}", f"{d['flagged']:,}", f"{d['share']:.2%}", rate(d["type_i"], "flagged"),
         rate(d["type_ii"], "missed"), f"{d['images_per_s']:,.0f}" if d["images_per_s"] else "-"]
        for d in [*doc["inputs"], doc["total"]]], range(1, 7), rule_before_last=True)))
    if doc["total"]["type_i"] or doc["total"]["type_ii"]:
        echo("type I: normal images flagged (false alarms); type II: anomalies not flagged (misses)")
    if doc.get("images"):
        echo("\n".join(text_table([["input", "index", "score", "normalised", "p-value", "predicted", "label"]] + [
            [r["source"], str(r["index"]), f"{r['score']:.6f}", f"{r['normalized_score']:.3f}",
             "-" if r["p_value"] is None else f"{r['p_value']:.4f}", WORD[r["predicted_anomaly"]],
             WORD[r["label_anomaly"]]] for r in doc["images"]], range(1, 7))))
        echo("normalised: min(score / (2 x threshold), 1), so the threshold reads 0.5; predicted: score > threshold")
    for line in notes:
        echo(line)


HELP = """Score images with the autoencoder and flag those above the threshold.

INPUT: .npy, .npz (array 'images', labels 'is_anomaly' optional), IDX (raw or .gz), 28x28 greyscale .png
files or folders, .parquet (see --column); quoted globs are expanded. Arrays: uint8 or float in [0, 1],
[N, 1, 28, 28], [N, 28, 28] or [N, 784]. Without INPUT: the artifacts folder's demo.npz, by default the
bundled demo set (1,000 MNIST and 1,000 Fashion-MNIST test images, labelled). Labels give type I (false
alarms) and type II (misses) errors; up to 20 images and no -o also list each image (--json: "images").
Rows: the score, min(score / (2 x threshold), 1) (the threshold reads 0.5), the conformal p_value (against
export's validation or calibrate's scores; empty for int8), predicted_anomaly and label_anomaly. Outputs are
written completely or not at all (also on Ctrl-C).

\b
Example:
  aeflow score                                  # the bundled demo set
  aeflow score t10k-images-idx3-ubyte.gz -o scores.csv
  aeflow score digits/ -o - | sort -t, -k2 -g   # CSV rows to stdout
  aeflow score digits/ --maps maps/             # a picture per flagged image
  aeflow score 'shards/*.npy' --scheduler local:2 -o scores.parquet
"""


@click.command("score", help=HELP)
@click.argument("inputs", nargs=-1, metavar="[INPUT]...", type=click.Path(path_type=Path))
@shared("artifacts", "device", "batch_size")
@click.option("--threshold", type=float, default=None, help="Flag scores above this, not threshold.json's.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="fp32 (ae.onnx) or int8 (the quantised graph from 'aeflow export --quantize int8').")
@output_option(f"Write one row per image ({', '.join(COLUMNS)}) as {', '.join(FORMATS)} by extension; "
               f"'-' writes CSV rows (JSON lines with --json) to stdout.", spelled=True)
@click.option("--maps", "maps_dir", type=click.Path(path_type=Path, readable=False), default=None, metavar="DIR",
              help="Write a PNG per flagged image into DIR: image, reconstruction, anomaly map.")
@click.option("--maps-all", is_flag=True, help="With --maps: a PNG for every image, not only the flagged ones.")
@click.option("--column", default=None, metavar="NAME",
              help="Parquet inputs: the image column (default: 'image', else the only binary/list<uint8> column).")
@click.option("--scheduler", default=None, metavar="local:N|tcp://HOST:PORT",
              help="Score on Dask: local:N starts N worker processes here, tcp://HOST:PORT (or tls://) uses a "
                   "running scheduler; -o then names a .parquet file or a folder DIR/ (needs the distributed extra).")
@shared("force", "json", "no_verify", "quiet_summary")
def command(**options):
    """``aeflow score`` (its help: ``HELP``)."""
    o = SimpleNamespace(**options)
    o.inputs = expand_inputs(o.inputs)
    if o.threshold is not None:
        o.threshold = check_threshold(o.threshold, "--threshold")
    check_batch(o.batch_size, "--batch-size", BYTES_PER_IMAGE)
    if o.column is not None and not any(p.is_file() and file_kind(p) == ".parquet" for p in map(Path, o.inputs)):
        raise click.UsageError("--column picks the image column of Parquet inputs, and no INPUT is a Parquet file; "
                               "drop --column")
    o.used = [o.artifacts] if o.artifacts is not None else []
    if o.scheduler is not None:
        return _on_dask(o)
    to_stdout = o.output == "-"
    paths = list(o.inputs) or [demo_file(o.artifacts)]
    out = None if to_stdout or o.output is None else Path(o.output)
    if out is not None:
        check_output_path(o.output, o.force, paths, o.used)
    if o.maps_all and o.maps_dir is None:
        raise click.UsageError("--maps-all needs --maps DIR")
    if o.maps_dir is not None:
        check_target(o.maps_dir, "folder", what="--maps", force=o.force, inputs=paths, artifacts=o.used,
                     outputs=[("-o", out)] if out else [])
    head, results, counts, maps = _score(o, paths, out, o.quiet or o.as_json or to_stdout)
    doc = dict(head, inputs=[c.row() for c in counts], total=total(counts).row())
    if to_stdout:
        return _report(doc, o, [], err=True)
    n_maps = len(maps.names) if maps else 0
    doc |= {"output": str(out) if out else None, "maps": str(o.maps_dir) if maps else None, "maps_written": n_maps}
    if out is None and doc["total"]["images"] <= FEW_IMAGES:
        doc["images"] = list(iter_rows(results))
    notes = [f"wrote {out} ({doc['total']['images']:,} rows)"] if out is not None else []
    notes += [f"wrote {n_maps:,} anomaly map{'s' if n_maps != 1 else ''} to {o.maps_dir}"] if maps else []
    _report(doc, o, notes)


def _score(o: SimpleNamespace, paths: list[Path], out: Path | None, quiet: bool):
    """Open the inputs, load the scorer, check the free space for ``out``, score (the maps drawn into a staged
    folder), write ``out`` (or the rows to stdout), then publish the maps (removed on any failure before).
    Returns the run's head, the results, their ``InputResult``s and the ``MapWriter`` or None."""
    with contextlib.ExitStack() as maps_stack:
        with contextlib.ExitStack() as stack:
            scorer, head = _scorer(o)
            if not o.inputs and paths[0] == bundled_dir() / DEMO_FILE and tuple(scorer.image_shape) != IMAGE_SHAPE:
                raise click.UsageError("no INPUT given, and the bundled demo set is of 28x28 images while this run's "
                                       "are {}x{}; pass the images to score (or save some as the run's demo.npz, "
                                       "uint8 'images' [N, H, W])".format(*scorer.image_shape))
            shown = None if o.inputs else DEMO_FILE
            sources = [stack.enter_context(open_source(p, shown, o.column, scorer.image_shape)) for p in paths]
            if out is not None:  # the per-image output's size, generously: every row as wide as the widest name
                width = max(len(s.name.encode("utf-8", "surrogateescape")) for s in sources)
                per_row = {".csv": 48 + width, ".json": 96 + width}.get(out.suffix.lower(), 16 + 4 * width)
                check_space(out, 4096 + per_row * sum(s.n for s in sources))
            maps = None
            if o.maps_dir is not None:
                from aeflow.anomaly_maps import MapWriter

                maps = MapWriter(o.maps_dir, scorer.threshold, o.maps_all, sources, maps_stack, o.force)
            results, counts = _score_all(scorer, sources, quiet, maps)
        if str(o.output) == "-":  # the rows are part of the result: the maps only after they were written
            write_stdout(results, o.as_json)
        try:
            if out is not None:
                write_results(out, results, head, o.force)
            maps_stack.close()
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted while writing {out or maps.directory}; no output written") from None
    return head, results, counts, maps


def _on_dask(o: SimpleNamespace) -> None:
    """``--scheduler``: score on Dask (``aeflow.distributed``), the same report."""
    if o.maps_dir is not None or o.output == "-":
        raise click.UsageError("--scheduler writes Parquet (-o FILE.parquet or -o DIR/); --maps and -o - "
                               "need a single process")
    if not o.inputs:
        raise click.UsageError("--scheduler needs INPUT files (shards)")
    from aeflow.distributed import check_address, connect, score_on_cluster

    check_address(o.scheduler, "--scheduler")
    if o.output is not None:
        check_output_path(o.output, o.force, o.inputs, o.used, dask=True)
    scorer, head = _scorer(o)
    head["scheduler"] = o.scheduler  # what the user passed, not an ephemeral address
    seen = 0
    with connect(o.scheduler, "--scheduler") as client, \
            progress_bar(1, "scoring on Dask", quiet=o.quiet or o.as_json) as bar:
        def progress(done: int, total: int) -> None:
            nonlocal seen
            bar.length = total  # known once the shards are opened
            bar.update(done - seen)
            seen = done

        try:
            run = score_on_cluster(client, o.inputs, o.output, scorer, column=o.column, force=o.force,
                                   on_progress=progress, context=head, what="--output")
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted after {seen:,} images; no output written") from None
    doc = dict(head, workers=run.workers, tasks=run.tasks, inputs=[r.row() for r in run.shards],
               total=total(run.shards, run.seconds).row(), output=str(o.output) if o.output else None)
    notes = [f"{run.tasks} task{'s' if run.tasks != 1 else ''} on {run.workers} Dask worker"
             f"{'s' if run.workers != 1 else ''} ({o.scheduler}); images/s per input: per worker, total: wall clock"]
    notes += [f"wrote {o.output} ({doc['total']['images']:,} rows)"] if o.output is not None else []
    _report(doc, o, notes)
