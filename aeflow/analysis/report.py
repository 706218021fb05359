"""The ``aeflow evaluate --report`` page: one self-contained HTML file (figures as base64 PNG data
URIs, so it can be mailed alone), the same PNGs and the numbers as JSON beside it (matplotlib: lazily)."""

import base64
import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from aeflow import metrics
from aeflow.analysis.evaluation import table_rows
from aeflow.anomaly_maps import VMAX, describe, panel_png
from aeflow.files import staged_folder, write_atomic
from aeflow.plotting import line_png, png_bytes, pyplot

REPORT_HTML = "report.html"
REPORT_JSON = "evaluation.json"
MAPS_PER_SET = 3  # anomaly-map pictures of the highest-scoring images of each set
TRAINING_PNGS = (("ae_loss.png", "Autoencoder training loss (from the artifacts)"),
                 ("flow_loss.png", "Flow training and test NLL (from the artifacts)"))


def _log_x(ax, subs=(1.0, 2.0, 5.0)) -> None:
    """A log x axis labelled in plain numbers at ``subs`` times the powers of ten, minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def score_histograms_png(sets: list[tuple[str, np.ndarray]], threshold: float, at: dict) -> bytes:
    """Each set's scores (``(name, float [N])``, in-distribution first) on log-spaced bins, the artifacts' threshold
    and the one for ``at["type_i_target"]`` (``at["threshold"]``) as lines."""
    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    ax.set(title="Anomaly scores (reconstruction MSE) per set", xlabel="score (log scale)", ylabel="density")
    positive = np.concatenate([s[s > 0] for _, s in sets] + [np.array([threshold])])
    bins = np.geomspace(positive.min(), positive.max(), 80)
    for name, s in sets:
        ax.hist(np.clip(s, bins[0], None), bins=bins, density=True, histtype="stepfilled", alpha=0.45,
                label=f"{name} (n = {len(s):,})")
    ax.axvline(threshold, color="black", lw=1.5, label=f"threshold {threshold:.4f}")
    ax.axvline(at["threshold"], color="black", lw=1.2, ls="--",
               label=f"threshold for {at['type_i_target']:.0%} type I: {at['threshold']:.4f}")
    _log_x(ax)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def roc_png(sets: list[tuple[str, np.ndarray]], aurocs: dict[str, float], threshold: float) -> bytes:
    """ROC curves of each anomaly set against the first (linear and log x), AUROC in the legend, threshold marked."""
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4.5))
    in_scores = sets[0][1]
    for name, s in sets[1:]:
        fpr, tpr, _ = metrics.roc_curve(in_scores, s)
        for ax in axes:
            line, = ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUROC {aurocs[name]:.4f})")
            ax.plot(metrics.type_i_error(in_scores, threshold), 1 - metrics.type_ii_error(s, threshold), "o",
                    color=line.get_color(), label=f"threshold on {name}")
    axes[0].plot([0, 1], [0, 1], ":", color="gray", label="chance")
    _log_x(axes[1], subs=(1.0,))  # four decades on half the width: powers of ten only
    axes[1].set_xlim(max(1.0 / max(len(in_scores), 1), 1e-4), 1)
    for ax, title in zip(axes, ("ROC curve", "ROC curve, log false-positive axis")):
        ax.set(title=title, xlabel="false-positive rate (type I error)", ylabel="true-positive rate (1 - type II error)")
        ax.legend(fontsize=8, loc="lower right")
    return png_bytes(fig)


def reconstructions_png(name: str, ext: dict) -> bytes:
    """One set's lowest-scoring images (rows 1-2: originals above reconstructions) and highest (rows 3-4), each
    titled with its score (``evaluation.extremes``)."""
    k = len(ext["best"]["scores"])
    fig, axes = pyplot().subplots(4, k, figsize=(1.3 * k, 6.2), squeeze=False)
    for block, label in ((0, "best"), (2, "worst")):
        part = ext[label]
        for j in range(k):
            for row, key in ((block, "originals"), (block + 1, "reconstructions")):
                axes[row, j].imshow(part[key][j], cmap="gray", vmin=0, vmax=1)
                axes[row, j].set(xticks=[], yticks=[])
            axes[block, j].set_title(f"{part['scores'][j]:.4f}", fontsize=8)
        axes[block, 0].set_ylabel(f"{label}\noriginal", fontsize=8)
        axes[block + 1, 0].set_ylabel(f"{label}\nreconstruction", fontsize=8)
    fig.suptitle(f"{name}: {k} lowest (best) and {k} highest (worst) scores, score above each original")
    fig.supxlabel("image (ordered by score)", fontsize=9)
    return png_bytes(fig)


def worst_map_pngs(name: str, ext: dict, threshold: float) -> list[tuple[str, bytes]]:
    """``(caption, PNG bytes)`` of the anomaly-map pictures (``aeflow.anomaly_maps.panel_png``) of the
    ``MAPS_PER_SET`` highest-scoring images of one set (``evaluation.extremes``), worst first."""
    worst = ext["worst"]
    normalized = metrics.normalized_scores(worst["scores"][:MAPS_PER_SET], threshold)
    return [(f"{name}, highest score no. {j + 1}: image {index}, its reconstruction and anomaly map (squared error "
             f"per pixel, colour scale 0 to {VMAX:g} on every map)", panel_png(
                 worst["originals"][j], worst["reconstructions"][j], worst["maps"][j],
                 describe(name, index, float(worst["scores"][j]), float(normalized[j]), threshold, None)))
            for j, index in enumerate(worst["index"][:MAPS_PER_SET].tolist())]


def flow_pngs(curves: dict, summary: dict) -> dict[str, tuple[str, bytes]]:
    """The flow's four figures from ``evaluate_flow``'s (summary, curves): file name -> (caption, PNG bytes)."""
    grid, kl, zs, (lo, hi) = curves["grid"], summary["kl"], summary["z_train"], summary["z_range"]
    z, s, zz, ends = curves["z_train"], curves["samples"], np.linspace(-4, 4, 400), [grid[0], grid[-1]]
    out = {"flow_density.png": (
        f"Learned vs true density; KL(data || model) = {kl['estimate']:.4f} ± {kl['stderr']:.4f} nats",
        line_png("Learned density against the true mixture", "x", "p(x)", [
            (grid, np.exp(curves["log_prob_grid"]), dict(label="learned density (flow.onnx)")),
            (grid, np.exp(curves["true_log_prob_grid"]), dict(ls="--", label="true mixture density"))]))}
    out["flow_map.png"] = ("The map x -> z (monotone, bounded)", line_png("Flow map x -> z", "x", "z", [
        (grid, curves["z_grid"], dict(label="z = f(x)")),
        (ends, [lo, lo], dict(color="gray", ls=":", label=f"range of f: ({lo:.3f}, {hi:.3f})")),
        (ends, [hi, hi], dict(color="gray", ls=":"))]))
    out["flow_z.png"] = (f"z on the training data: mean {zs['mean']:.4f}, std {zs['std']:.4f}", line_png(
        "z on the training data against the target N(0, 1)", "z", "density",
        [(zz, np.exp(-0.5 * zz * zz) / np.sqrt(2 * np.pi), dict(color="black", label="N(0, 1)"))],
        hist=(z, dict(bins=60, density=True, alpha=0.6, label=f"z = f(x) on the {len(z):,} training points"))))
    # normalised by all samples, so the few outside the plotted range do not inflate the bars
    span = (float(grid[0]), float(grid[-1]))
    out["flow_samples.png"] = (f"{len(s):,} samples, seed {summary['samples']['seed']}", line_png(
        "Samples from the flow against its density", "x", "density",
        [(grid, curves["sample_density_grid"], dict(color="black", label="model density (normalised over its range)"))],
        hist=(s, dict(bins=120, range=span, weights=np.full(len(s), 120.0 / (len(s) * (span[1] - span[0]))),
                      alpha=0.6, label=f"{len(s):,} samples (FlowSampler.sample)"))))
    return out


_CSS = ("body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        "th{background:#f0f0f0}figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-size:90%}"
        ".note{background:#fff7e0;padding:6px 10px;border-left:4px solid #e0a000}")
FIGURE = '<figure><img src="data:image/png;base64,{}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _figures(result) -> list[tuple[str, str, bytes]]:
    """``(file name, caption, PNG bytes)`` of every figure of an ``evaluation.Evaluation``, in page order."""
    summary, sets = result.summary, [(s.name, s.scores) for s in result.sets]
    threshold = summary["threshold"]["value"]
    figures = [("scores.png", "Score histograms; solid line: the artifacts' threshold",
                score_histograms_png(sets, threshold, summary["at_target"])),
               ("roc.png", "ROC curves; dots: the artifacts' threshold",
                roc_png(sets, {a["name"]: a["auroc"] for a in summary["anomalies"]}, threshold))]
    for i, (name, ext) in enumerate(result.extremes.items()):
        figures.append((f"reconstructions_{i}.png", f"{name}: best and worst reconstructions",
                        reconstructions_png(name, ext)))
        figures += [(f"map_{i}_{j}.png", caption, data)
                    for j, (caption, data) in enumerate(worst_map_pngs(name, ext, threshold))]
    for file_name, caption in TRAINING_PNGS[: 2 if result.flow_curves is not None else 1]:
        if (path := Path(summary["artifacts"]) / file_name).is_file():
            figures.append((file_name, caption, path.read_bytes()))
    if result.flow_curves is not None:
        figures += [(k, cap, data) for k, (cap, data) in flow_pngs(result.flow_curves, summary["flow"]).items()]
    return figures


def write_report(directory: str | os.PathLike, result, force: bool = False) -> Path:
    """Write ``report.html``, every figure as a PNG and ``evaluation.json`` of an ``evaluation.Evaluation`` into
    ``directory`` (created if missing; files of those names replaced only with ``force``) through a staging
    folder: after an error or Ctrl-C no file of the report is there. Returns the HTML path."""
    directory, summary, figures = Path(directory), result.summary, _figures(result)
    rows = [("metric", "this run", "homework"), *table_rows(summary)]
    body = "<table>" + "".join("<tr>" + "".join(f"<{t}>{html.escape(c)}</{t}>" for c in row) + "</tr>"
                               for t, row in zip(["th"] + ["td"] * len(rows), rows)) + "</table>"
    body += "".join(f'<p class="note">{html.escape(n)}</p>' for n in summary["notes"])
    body += "".join(FIGURE.format(base64.b64encode(data).decode("ascii"), caption=html.escape(caption))
                    for _, caption, data in figures)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>aeflow evaluation</title><style>{_CSS}</style>"
            f"</head><body><h1>aeflow evaluation</h1><p>Artifacts {html.escape(str(summary['artifacts']))}, run on "
            f"{html.escape(str(summary['provider']))}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.</p>{body}"
            "</body></html>\n")
    with staged_folder(directory, last=(REPORT_JSON, REPORT_HTML), what="--report", force=force) as staging:
        for file_name, _, data in figures:
            write_atomic(staging / file_name, data, replace=True)
        write_atomic(staging / REPORT_JSON, json.dumps(summary, indent=2, default=str) + "\n", replace=True)
        write_atomic(staging / REPORT_HTML, page, replace=True)
    return directory / REPORT_HTML
