"""What ``aeflow evaluate`` computes: error rates and AUROC of the anomaly scorer on whole data
sets, and how well the flow's density matches the true mixture (numpy + onnxruntime only)."""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aeflow import metrics
from aeflow.datasets import DATASETS, idx_file, load_images, mixture_log_density, mixture_of_gaussians
from aeflow.errors import DataError, UsageError
from aeflow.files import same_file
from aeflow.progress import progress_bar, text_table
from aeflow.runtime.arrays import ArraySource
from aeflow.runtime.artifacts import artifacts_dir, read_flow
from aeflow.runtime.contract import FLOW_JSON
from aeflow.runtime.inputs import read_images

# the seed notebook's own figures (homework.md, Problem 1)
HOMEWORK_REFERENCE = {"in_dist": "mnist-test", "in_dist_n": 10_000, "anomaly_set": "kmnist-test", "threshold": 0.0329,
                      "type_i": 0.0104, "type_ii": 0.0295, "final_loss": 0.011, "train_images": 50_000,
                      "validation_images": 10_000, "epochs": 10}
DEFAULT_IN_DIST, DEFAULT_ANOMALIES, OFFLINE_ANOMALIES = "mnist-test", ("kmnist-test",), "fashion-mnist-test"
DATA_SET_NAMES = tuple(f"{name}-{split}" for name in DATASETS for split in ("test", "train"))
TARGET_TYPE_I, EXTREMES, N_KL, N_SAMPLES = 0.01, 8, 200_000, 100_000


@dataclass
class ImageSet:
    """One evaluated set: ``images`` [N, H, W] (uint8, or float in [0, 1]), ``scores`` float32 [N] once scored."""

    name: str
    origin: str
    images: np.ndarray
    scores: np.ndarray | None = None


def load_sets(in_dist: str, anomalies=None, data_dir=None, image_shape=(28, 28)) -> list[ImageSet]:
    """The in-distribution set, then the anomaly sets (default: the homework's). DATA: a data set name
    (``DATA_SET_NAMES``) or a path (IDX, .npy, .npz, PNG folder) of ``image_shape`` images, else ``UsageError``;
    a default set that cannot be had fails with one line saying how to run offline."""
    sets = []
    for spec in (in_dist, *(anomalies or DEFAULT_ANOMALIES)):
        if spec not in DATA_SET_NAMES:
            if not (path := Path(spec)).exists():
                raise UsageError(f"DATA {spec!r} is neither a data set name ({', '.join(DATA_SET_NAMES[::2])}) "
                                 f"nor an existing file or folder")
            images, labels, _ = read_images([path], image_shape=image_shape)
            if labels is not None and (wrong := int(np.sum(labels != bool(sets)))):
                said, role = ("normal", "--anomalies takes anomalies") if sets else \
                    ("anomalous", "--in-dist takes normal images")
                raise DataError(f"{spec}: {wrong:,} of its {len(labels):,} images are labelled {said} (is_anomaly); "
                                f"{role} only")
            sets.append(ImageSet(str(path), str(path), images))
            continue
        origin = f"IDX files in {data_dir}" if data_dir is not None else "torchvision download"
        try:
            sets.append(ImageSet(spec, origin, load_images(*spec.rsplit("-", 1), data_dir)))
        except DataError as e:
            if anomalies or spec not in (DEFAULT_IN_DIST, *DEFAULT_ANOMALIES) or (not sets and data_dir is not None):
                raise
            where = f"is not in {data_dir}" if data_dir is not None else f"cannot be loaded ({e.message.split(';')[0]})"
            raise DataError(f"the default set {spec} {where}; offline, pass --anomalies {OFFLINE_ANOMALIES} with a "
                            f"--data-dir DIR holding DIR/{idx_file('mnist', 'test')}[.gz] and "
                            f"DIR/{idx_file(*OFFLINE_ANOMALIES.rpartition('-')[::2])}[.gz] (or --anomalies PATH)") from None
    names, files = [s.name for s in sets], [s.name for s in sets if s.origin == s.name]
    if len(set(names)) != len(names) or any(same_file(a, b) for i, a in enumerate(files) for b in files[:i]):
        raise UsageError(f"the same set is given twice ({', '.join(names)}); pass each DATA once")
    return sets


def score_sets(scorer, sets: list[ImageSet], quiet: bool = False) -> None:
    """Fill each set's ``scores`` (float32 [N]) with ``scorer.score_source``, showing progress."""
    with progress_bar(sum(len(s.images) for s in sets), "scoring", quiet) as bar:
        for s in sets:
            source = ArraySource(s.images, s.name, image_shape=scorer.image_shape)
            s.scores = scorer.score_source(source, on_batch=lambda b: bar.update(b, s.name))


def extremes(scorer, image_set: ImageSet) -> dict:
    """The k = ``EXTREMES`` lowest- and highest-scoring images of a scored set: ``{"best"|"worst": {"index": int [k],
    "scores": float32 [k], "originals", "reconstructions", "maps": float32 [k, H, W]}}``."""
    order = np.argsort(image_set.scores, kind="stable")
    k, out = min(EXTREMES, len(order)), {}
    for label, idx in (("best", order[:k]), ("worst", order[::-1][:k])):
        chunk = image_set.images[idx]
        originals = chunk.astype(np.float32) / 255.0 if chunk.dtype == np.uint8 else chunk.astype(np.float32)
        maps = scorer.anomaly_map(chunk)  # [k, H, W]: the shape the others take
        out[label] = {"index": idx, "scores": image_set.scores[idx], "originals": originals.reshape(maps.shape),
                      "reconstructions": np.asarray(scorer.reconstruct(chunk), np.float32).reshape(maps.shape),
                      "maps": maps}
    return out


def kl_estimate(log_p_data: np.ndarray, log_p_model: np.ndarray) -> tuple[float, float]:
    """Monte Carlo KL(data || model) from n >= 2 data points' log densities (float [n]): ``(mean, std / sqrt(n))``."""
    d = np.asarray(log_p_data, dtype=np.float64) - np.asarray(log_p_model, dtype=np.float64)
    if d.size < 2 or not np.all(np.isfinite(d)):
        raise ValueError("need at least two finite log-density differences")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x, dtype=np.float64))


def _mean_std(x: np.ndarray) -> dict:
    return {"mean": _mean(x), "std": float(np.std(x, dtype=np.float64, ddof=1))}


def evaluate_flow(sampler, quiet: bool = False) -> tuple[dict, dict]:
    """The flow (a ``FlowSampler`` of the mixture) as homework Problems 2 and 4 ask: NLL of its training and test
    data (regenerated from flow.json) under the model and the true mixture, z on the training data, KL(data ||
    model) over ``N_KL`` fresh points, ``N_SAMPLES`` samples (seed 0). Returns (JSON summary, the report's curves)."""
    meta = sampler.metadata  # a flow of the mixture (``_flow_sampler``); the contract checked every field below
    n_train, n_test, train_seed = (meta.training[k] for k in ("n_train", "n_test", "seed"))
    with progress_bar(4, "evaluating flow", quiet) as bar:
        data = {"train": mixture_of_gaussians(n_train, train_seed), "test": mixture_of_gaussians(n_test, train_seed + 1)}
        (z_train, _, lp_train), (_, _, lp_test) = (map(np.asarray, sampler.forward(data[k])) for k in data)
        bar.update(1, "train/test NLL")
        kl_x = mixture_of_gaussians(N_KL, train_seed + 2)
        kl, kl_se = kl_estimate(mixture_log_density(kl_x), sampler.forward(kl_x)[2])
        bar.update(1, "KL")
        samples = np.asarray(sampler.sample(N_SAMPLES, 0))
        bar.update(1, "samples")
        grid = np.linspace(-3.0, 3.0, 1000, dtype=np.float32)
        z_grid, _, lp_grid = (np.asarray(v) for v in sampler.forward(grid))
        bar.update(1, "curves")
    mass = sampler.truncation_mass
    summary = {"provider": sampler.provider, "training": {"n_train": n_train, "n_test": n_test, "seed": train_seed},
               "nll": {"train": -_mean(lp_train), "test": -_mean(lp_test)}
               | {f"true_mixture_{k}": float(-np.mean(mixture_log_density(x))) for k, x in reversed(data.items())},
               "nll_recorded": {k: meta.nll[k] for k in ("train", "test", "true_mixture_test")},
               "z_train": _mean_std(z_train),
               "kl": {"estimate": kl, "stderr": kl_se, "n": N_KL, "seed": train_seed + 2},
               "true_mixture_sample": _mean_std(kl_x), "samples": {"n": N_SAMPLES, "seed": 0} | _mean_std(samples),
               "z_range": list(meta.z_range), "model_mass": mass}
    # samples follow the model density normalised over the flow's range (its mass is just below 1)
    return summary, {"grid": grid, "z_grid": z_grid, "log_prob_grid": lp_grid,
                     "sample_density_grid": np.exp(lp_grid.astype(np.float64)) / mass,
                     "true_log_prob_grid": mixture_log_density(grid), "z_train": z_train, "samples": samples}


@dataclass
class Evaluation:
    """``summary`` (JSON-ready), the scored ``sets`` (in-distribution first), ``extremes`` and ``flow_curves``."""

    summary: dict
    sets: list[ImageSet]
    extremes: dict
    flow_curves: dict | None = None


def _flow_sampler(directory: Path, flow: bool | None, device: str, verify: bool):
    """The run's ``FlowSampler`` where ``flow`` (None: where the run holds a flow of the homework's mixture), else
    None; a one-line ``UsageError`` for a flow fitted to other values."""
    from aeflow.runtime.sampler import FlowSampler

    if flow is None:
        flow = (directory / FLOW_JSON).is_file() and "true_mixture_test" in read_flow(directory, verify).nll
    sampler = FlowSampler(directory, device=device, verify=verify, golden=verify) if flow else None
    if sampler is not None and "true_mixture_test" not in sampler.metadata.nll:  # export records it for one only
        raise UsageError(f"{sampler.directory / FLOW_JSON}: this flow was fitted to your own values; the flow's "
                         f"evaluation measures it against the homework's mixture, on which it was not trained")
    return sampler


def _notes(summary: dict) -> list[str]:
    ref, notes = HOMEWORK_REFERENCE, []
    names = [a["name"] for a in summary["anomalies"]]
    if ref["anomaly_set"] not in names:
        many = len(names) > 1
        notes.append(f"the anomaly set{'s' * many} ({', '.join(names)}) {'differ' if many else 'differs'} from the "
                     f"homework's {ref['anomaly_set']} (KMNIST): the type II errors are not directly comparable "
                     f"with its {ref['type_ii']:.2%}")
    if summary["in_dist"]["name"] != ref["in_dist"]:
        notes.append(f"the in-distribution set {summary['in_dist']['name']} is not the homework's {ref['in_dist']}")
    n_train = summary["artifacts_data"]["train_images"]
    if n_train != ref["train_images"]:
        notes.append(f"these artifacts were trained on {n_train:,} images for {summary['artifacts_training']['epochs']} "
                     f"epochs, the homework on {ref['train_images']:,} for {ref['epochs']}")
    return notes


def evaluate(artifacts=None, in_dist: str = DEFAULT_IN_DIST, anomalies: tuple[str, ...] | None = None,
             data_dir=None, device: str = "auto", flow: bool | None = False, with_extremes: bool = False,
             verify: bool = True, quiet: bool = False) -> Evaluation:
    """Score ``in_dist`` and the anomaly sets (DATA, see ``load_sets``): type I, type II and AUROC at the artifacts'
    threshold and at the one giving ``TARGET_TYPE_I``; with ``flow`` also ``evaluate_flow`` (None: where the run
    holds a flow of the homework's mixture), with ``with_extremes`` the best and worst reconstructions."""
    from aeflow.runtime.calibration import threshold_origin
    from aeflow.runtime.scorer import AnomalyScorer

    scorer = AnomalyScorer(artifacts=artifacts, device=device, verify=verify, golden=verify)
    sampler = _flow_sampler(scorer.directory, flow, device, verify)
    score_sets(scorer, sets := load_sets(in_dist, anomalies, data_dir, scorer.image_shape), quiet)
    normal, anomaly_sets, meta = sets[0], sets[1:], scorer.metadata
    t1 = metrics.threshold_for_type_i(normal.scores, TARGET_TYPE_I)
    rates, at_t1 = (metrics.error_rates(normal.scores, {a.name: a.scores for a in anomaly_sets}, t)
                    for t in (scorer.threshold, t1))
    summary = {"artifacts": str(artifacts_dir(artifacts)), "provider": scorer.provider, "device_requested": device,
               "threshold": {"value": float(scorer.threshold), "k": meta.k, "validation_n": meta.validation.n,
                             "source": "threshold.json", "origin": threshold_origin(meta),
                             "calibration": scorer.calibration},
               "artifacts_data": meta.data, "artifacts_training": meta.training,
               "in_dist": {"name": normal.name, "origin": normal.origin, "n": rates["type_i"]["n"],
                           "type_i": rates["type_i"]["rate"], "mean_score": _mean(normal.scores)},
               "anomalies": [{"name": a.name, "origin": a.origin, "n": rates["type_ii"][a.name]["n"],
                              "type_ii": rates["type_ii"][a.name]["rate"], "auroc": rates["auroc"][a.name],
                              "type_ii_at_target": at_t1["type_ii"][a.name]["rate"],
                              "mean_score": _mean(a.scores)} for a in anomaly_sets],
               "at_target": {"type_i_target": TARGET_TYPE_I, "threshold": t1, "type_i": at_t1["type_i"]["rate"]},
               "homework": HOMEWORK_REFERENCE, "flow": None}
    summary["notes"] = _notes(summary)
    result = Evaluation(summary, sets, {s.name: extremes(scorer, s) for s in sets} if with_extremes else {})
    if sampler is not None:
        summary["flow"], result.flow_curves = evaluate_flow(sampler, quiet=quiet)
    return result


def _pct(v) -> str:
    return f"{v:.2%}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def table_rows(summary: dict) -> list[tuple[str, str, str]]:
    """The summary side by side with the homework: ``(metric, this run, homework)`` strings."""
    ref, ind, at, th = summary["homework"], summary["in_dist"], summary["at_target"], summary["threshold"]
    data, train = summary["artifacts_data"], summary["artifacts_training"]
    rows = [("in-distribution set", f"{ind['name']} ({ind['n']:,})", f"{ref['in_dist']} ({ref['in_dist_n']:,})"),
            ("threshold", f"{th['value']:.6f} ({th['origin']})",
             f"{ref['threshold']} (mean + 3 std of {ref['validation_images']:,})"),
            ("type I error", _pct(ind["type_i"]), _pct(ref["type_i"]))]
    for a in summary["anomalies"]:
        rows.append((f"type II error ({a['name']})", _pct(a["type_ii"]),
                     _pct(ref["type_ii"]) + ("" if a["name"] == ref["anomaly_set"] else f" ({ref['anomaly_set']})")))
        rows.append((f"AUROC ({a['name']})", f"{a['auroc']:.4f}", "-"))
    rows.append((f"threshold for {at['type_i_target']:.0%} type I", f"{at['threshold']:.6f} (type I {_pct(at['type_i'])})",
                 "-"))
    rows += [(f"  type II there ({a['name']})", _pct(a["type_ii_at_target"]), "-") for a in summary["anomalies"]]
    rows += [("training images", f"{data['train_images']:,} ({data['source']})",
              f"{ref['train_images']:,} (MNIST train)"), ("epochs", str(train["epochs"]), str(ref["epochs"])),
             ("final training loss", f"{train['final_loss']:.4f}", f"about {ref['final_loss']}")]
    if fl := summary["flow"]:
        nll, rec, kl, z, s, t = fl["nll"], fl["nll_recorded"], fl["kl"], fl["z_train"], fl["samples"], fl["true_mixture_sample"]
        rows += [
            ("flow train NLL (nats)", f"{nll['train']:.4f} (flow.json {rec['train']:.4f})", "-"),
            ("flow test NLL (nats)", f"{nll['test']:.4f} (flow.json {rec['test']:.4f})", "-"),
            ("true mixture test NLL", f"{nll['true_mixture_test']:.4f}", "-"),
            (f"KL(data || model), n = {kl['n']:,}", f"{kl['estimate']:.4f} ± {kl['stderr']:.4f} nats", ">= 0 (Problem 4)"),
            ("z on training data", f"mean {z['mean']:+.4f}, std {z['std']:.4f}", "N(0, 1)"),
            (f"samples (n = {s['n']:,})", f"mean {s['mean']:+.4f}, std {s['std']:.4f}",
             f"true mixture: mean {t['mean']:+.4f}, std {t['std']:.4f}")]
    return rows


def format_table(summary: dict) -> str:
    """The side-by-side table and the notes as plain text for the terminal."""
    ind = summary["in_dist"]
    lines = [f"aeflow evaluate: ae.onnx on {summary['provider']}, artifacts {summary['artifacts']}",
             f"data: in-distribution {ind['name']} from {ind['origin']}; anomalies "
             + ", ".join(f"{a['name']} from {a['origin']}" for a in summary["anomalies"])]
    lines += [f"flow: flow.onnx on {summary['flow']['provider']}", ""] if summary["flow"] else [""]
    lines += text_table([["", "this run", "homework"]] + [list(r) for r in table_rows(summary)])
    return "\n".join(lines + [f"note: {n}" for n in summary["notes"]])
