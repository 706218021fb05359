"""``AnomalyScorer``: the exported autoencoder as a batch anomaly scorer (numpy + onnxruntime).

The score of an image is the mean over its 784 pixels of (image - reconstruction)^2 with pixels
in [0, 1]; an image is an anomaly when its score is strictly above the threshold.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
import warnings
from typing import Callable

import numpy as np

from aeflow.checks import check_batch, check_rule, check_threads, check_threshold
from aeflow.errors import ArtifactError, ScaleWarning, UsageError
from aeflow.metrics import normalized_scores
from aeflow.runtime import contract
from aeflow.runtime.contract import artifacts_dir, read_threshold
from aeflow.runtime.golden import load_graph
from aeflow.runtime.inputs import SIDE, ArraySource, ImageSource, scale_problem, to_float32
from aeflow.runtime.device import Bound
from aeflow.runtime.pickling import Rebuildable, metadata_digest, portable_artifacts
from aeflow.runtime.providers import CUDA, create_session, provider_of

PRECISIONS = ("fp32", "int8")
# working memory of one image in a batch: float32 input and reconstruction, the graph's
# intermediate activations, onnxruntime's scratch; bounds batch_size by the memory it needs
BYTES_PER_IMAGE = 16 * 1024


class AnomalyScorer(Rebuildable):
    """Score, flag and reconstruct 28x28 greyscale images with the exported autoencoder.

    ``artifacts``: folder holding threshold.json and the graphs (None: the bundled one).
    ``device``: "auto" (CUDA where it really runs, else CPU), "cpu" or "cuda" (strict).
    ``batch_size``: images per onnxruntime call; N itself is unbounded.
    ``precision``: "fp32" (ae.onnx) or "int8" (the quantised graph threshold.json names under
    "int8", with its own threshold). ``verify``: check the sha256 of the graph and of
    threshold.json's contents before loading. ``golden``: compare the graph's outputs on this
    machine with the golden outputs recorded at export (a few ms; a ``ParityError`` means this
    provider's numerics differ). ``threads``: intra-op threads (None: onnxruntime's choice).

    Inputs: uint8 0..255 or float in [0, 1], shaped [N, 1, 28, 28], [N, 28, 28], [N, 28, 28, 1]
    or [N, 784] (see ``aeflow.runtime.inputs``); a lone [28, 28] image needs ``x[None]``.
    Bad inputs raise one-line ``InputError``s.

    Picklable: a pickle holds the settings (see ``settings()``), not the session; the receiver
    (a Dask worker, a process pool) rebuilds the session on first use, from its own copy of the
    bundled artifacts when these are the bundled ones, and refuses artifacts whose threshold.json
    differs from the sender's. ``replace(threads=1)`` gives a copy with settings changed.

    On CUDA the batches run through onnxruntime's I/O binding (``aeflow.runtime.device``): device
    buffers reused between batches, uint8 images sent as uint8 and divided by 255 on the GPU (bit
    for bit the float path's input), a CUDA graph replayed for full batches where onnxruntime
    captures one. On the CPU, ``InferenceSession.run`` (measured as fast).

    Thread safety: one scorer may be shared by any number of threads. Every call keeps its own
    buffers (on CUDA: each thread its own device buffers; the CUDA graph serves one thread at a
    time) and onnxruntime's runs are thread-safe, so concurrent calls give bit for bit the
    results of the same calls made one after another. Setting ``threshold``
    while other threads call ``predict`` is the one thing to avoid (they see either value).
    """

    METADATA = "threshold.json"

    def __init__(self, artifacts: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 1024,
                 precision: str = "fp32", verify: bool = True, threads: int | None = None,
                 golden: bool = True):
        batch_size = check_batch(batch_size, "batch_size", BYTES_PER_IMAGE)
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        check_threads(threads)
        self.directory = artifacts_dir(artifacts)
        meta = read_threshold(self.directory, verify)
        which = "int8" if precision == "int8" else "ae"
        self._session = load_graph(self.directory, meta, which, device, threads, verify=verify, golden=golden)
        graph = self.directory / contract.GRAPHS[which].file
        threshold = float(contract.entry_of(meta, which)["threshold"])
        self.batch_size = int(batch_size)
        self.precision = precision
        self.graph = graph
        self.default_threshold = threshold
        self._threshold = threshold
        self._calibration = None
        self._provider = provider_of(self._session)
        self._bound = self._bind(True, True) if self._provider == CUDA else None
        self._meta = meta
        self._device, self._verify, self._threads, self._golden = device, verify, threads, golden
        # where a pickle points: fixed now, as a relative path depends on the current folder
        self._portable = portable_artifacts(self.directory)
        self._digest = metadata_digest(self.directory, self.METADATA)

    # ------------------------------------------------------------ pickling

    def settings(self) -> dict:
        """What a pickle of this scorer holds: the constructor's arguments (``artifacts`` an
        absolute path, or None for the bundled folder), ``threshold`` (None unless set to
        another value than the recorded one) and ``digest`` (threshold.json's sha256)."""
        return {"artifacts": self._portable, "device": self._device,
                "batch_size": self.batch_size, "precision": self.precision, "verify": self._verify,
                "threads": self._threads, "golden": self._golden,
                "threshold": None if self._threshold == self.default_threshold else self._threshold,
                "digest": self._digest}

    @classmethod
    def _rebuild(cls, settings: dict) -> "AnomalyScorer":
        scorer = super()._rebuild(settings)
        if settings["threshold"] is not None:
            scorer.threshold = settings["threshold"]
        return scorer

    # ------------------------------------------------------------ properties

    @property
    def threshold(self) -> float:
        """Scores strictly above it are anomalies; defaults to the recorded one, settable."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_threshold(value)

    @property
    def provider(self) -> str:
        """The execution provider that really runs the graph, e.g. ``CPUExecutionProvider``."""
        return self._provider

    @property
    def metadata(self) -> dict:
        """threshold.json as recorded (a copy), plus ``graph``, ``precision`` and ``provider``."""
        return dict(self._meta, graph=str(self.graph), precision=self.precision, provider=self._provider)

    def __repr__(self) -> str:
        return (f"AnomalyScorer({str(self.directory)!r}, precision={self.precision!r}, provider={self._provider!r}, "
                f"threshold={self._threshold:.6g})")

    # ------------------------------------------------------------ running

    def _bind(self, uint8: bool, cuda_graph: bool) -> Bound:
        """IOBinding with per-thread device buffers (``aeflow.runtime.device``), with the uint8 path
        and, on CUDA, a CUDA-graph session for full batches where onnxruntime can capture one."""
        graph = None
        if cuda_graph and self._provider == CUDA:
            try:
                graph = create_session(self.graph, "cuda", self._threads, cuda_graph=True)
            except ArtifactError:  # a node outside CUDA: no replay, the plain bound session runs
                pass
        return Bound(self._session, uint8, graph, self.batch_size, self._threads)

    def _run(self, outputs: tuple[str, ...], images: np.ndarray) -> list[np.ndarray]:
        """One onnxruntime call: float32 (or, bound with the uint8 path, uint8) [b, 1, 28, 28] ->
        the named outputs (new arrays)."""
        if self._bound is not None:
            return self._bound.run(images, list(outputs))
        return self._session.run(list(outputs), {"images": images})

    def _each_batch(self, source: ImageSource, outputs: tuple[str, ...], on_batch: Callable[[int], None] | None):
        """Yield ``(offset, images float32 [b, 1, 28, 28], [one array per output])`` per batch;
        ``images`` is None where uint8 scores went to the graph as uint8 (``_bound.prep``)."""
        # the conversion buffer belongs to this call, never to the scorer: threads share a scorer
        buffer = None
        offset = 0
        warned = False
        as_uint8 = outputs == ("score",) and self._bound is not None and self._bound.prep is not None
        for batch in source.batches(self.batch_size):
            if as_uint8 and batch.dtype == np.uint8:
                *result, brightest = self._run(outputs + ("brightest",), batch.reshape(len(batch), 1, SIDE, SIDE))
                # what scale_problem reads: the brightest pixel (max over the graph's float32 images), the length
                images, seen = None, np.full((len(batch), 1), brightest, dtype=np.float32)
            else:
                if buffer is None and batch.dtype != np.float32:
                    buffer = np.empty((min(self.batch_size, source.n), 1, SIDE, SIDE), dtype=np.float32)
                out = buffer if buffer is not None and len(batch) <= len(buffer) else None
                images = seen = to_float32(batch, source.name, offset, out)
                result = self._run(outputs, images)
            if not warned and (problem := scale_problem(seen, batch.dtype, source.name, offset)):
                warnings.warn(problem, ScaleWarning, stacklevel=4)
                warned = True
            yield offset, images, result
            offset += len(batch)
            if on_batch is not None:
                on_batch(len(batch))

    def score_source(self, source: ImageSource, on_batch: Callable[[int], None] | None = None,
                     on_reconstruction: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None] | None = None
                     ) -> np.ndarray:
        """Scores of every image of ``source`` (see ``aeflow.runtime.inputs``), float32 [n].

        ``on_batch(b)`` is called after each batch of b images (progress bars).
        ``on_reconstruction(offset, images, reconstructions, scores)``, when given, is called for
        each batch with the images the graph saw (float32 [b, 28, 28] in [0, 1]), its
        reconstructions (float32 [b, 28, 28]) and scores (float32 [b]) from the same graph call,
        so ``(images - reconstructions) ** 2`` averages to the scores (to float32 rounding). The
        arrays may be reused after the call: copy what you keep."""
        scores = np.empty(source.n, dtype=np.float32)
        outputs = ("score",) if on_reconstruction is None else ("reconstruction", "score")
        for offset, images, out in self._each_batch(source, outputs, on_batch):
            s = out[-1]
            scores[offset:offset + len(s)] = s
            if on_reconstruction is not None:
                on_reconstruction(offset, images.reshape(-1, SIDE, SIDE), out[0].reshape(-1, SIDE, SIDE), s)
        return scores

    def score(self, x) -> np.ndarray:
        """Anomaly scores (mean squared reconstruction error), float32 [N]; higher = more anomalous."""
        return self.score_source(_as_source(x))

    def decision_function(self, x) -> np.ndarray:
        """Same as ``score``, float32 [N], under PyOD's name and sign convention: higher = more
        anomalous. (scikit-learn's ``decision_function`` on outlier detectors has the opposite
        sign: there, lower = more anomalous.)"""
        return self.score(x)

    def p_value(self, x) -> np.ndarray:
        """Conformal p-values, float64 [N] in (0, 1]: (1 + #{validation scores >= score}) / (n + 1)
        against ae.onnx's validation scores kept at export (``aeflow.runtime.conformal``). On normal
        images like the validation ones, p < alpha flags at most a fraction alpha of them."""
        from aeflow.runtime.conformal import conformal_p_values, validation_scores

        if self.precision != "fp32":
            raise UsageError("p-values compare with ae.onnx's validation scores; use precision='fp32'")
        return conformal_p_values(self.score(x), validation_scores(self.directory, self._meta, self._verify))

    def normalized_score(self, x) -> np.ndarray:
        """Scores mapped to [0, 1] with the threshold at 0.5, float32 [N]:
        ``min(score / (2 * threshold), 1)``, anomalib's min-max normalisation with min 0 and max
        twice the threshold (see ``aeflow.metrics.normalized_scores``). Follows ``threshold``."""
        return normalized_scores(self.score(x), self._threshold)

    def predict(self, x) -> np.ndarray:
        """bool [N]: True where the score is strictly above ``threshold``."""
        return self.score(x) > self._threshold

    def reconstruct(self, x) -> np.ndarray:
        """The autoencoder's reconstructions, float32 [N, 1, 28, 28] in pixel units [0, 1]."""
        source = _as_source(x)
        out = np.empty((source.n, 1, SIDE, SIDE), dtype=np.float32)
        for offset, _, (r,) in self._each_batch(source, ("reconstruction",), None):
            out[offset:offset + len(r)] = r
        return out

    # ------------------------------------------------------------ calibration

    def calibrate(self, x, k: float | None = None, false_alarm_rate: float | None = None,
                  confidence: float = 0.95, name: str = "array") -> float:
        """Set ``threshold`` from normal images ``x`` (an array as ``score`` takes, or an
        ``ImageSource``) and return it: ``k`` (default 3) gives mean + k std of their scores
        (ddof 1, as export), ``false_alarm_rate`` P the empirical quantile whose false-alarm rate
        on new normal images is at most P (see ``aeflow.runtime.calibration``). ``calibration``
        then holds the record (achieved rate, interval, data hash under ``name``, date ...) and
        ``save_calibration`` writes it. ``UsageError`` for too few images for P."""
        from aeflow.runtime.calibration import array_entry, calibrate_scores

        check_rule(k, false_alarm_rate, confidence)
        source = _as_source(x)
        cal = calibrate_scores(self.score_source(source), [array_entry(source, name)], self._threshold, k,
                               false_alarm_rate, confidence)
        self._threshold = cal.threshold
        self._calibration = cal
        return cal.threshold

    @property
    def calibration(self) -> dict | None:
        """The record of the last ``calibrate`` call (threshold.json's ``calibration``), or the one
        the loaded threshold.json holds for this graph, or None."""
        if self._calibration is not None:
            return copy.deepcopy(self._calibration.record)
        entry = self._meta.get("int8") if self.precision == "int8" else self._meta
        return copy.deepcopy(entry.get("calibration")) if entry else None

    def save_calibration(self, out: str | os.PathLike | None = None):
        """Write the last ``calibrate`` result into threshold.json: in this scorer's artifacts
        folder (None), or into a new folder ``out`` holding a copy of the artifacts (the folder
        loaded is then left as it was; never the bundled folder). Only this scorer's graph (fp32 or
        int8) changes. Returns the path written."""
        from aeflow.runtime.calibration import calibration_target, write_calibration

        if self._calibration is None:
            raise UsageError("nothing to save: call calibrate(x) first")
        if self._threshold != self._calibration.threshold:
            raise UsageError(f"threshold was set to {self._threshold!r} after calibrate(); calibrate again to save")
        out = calibration_target(self.directory, out)
        which = "int8" if self.precision == "int8" else "ae"
        written = write_calibration(self.directory, {which: self._calibration}, out)
        if out is None:  # this scorer now stands for the new threshold.json (a pickle carries its digest)
            self._meta, self.default_threshold = read_threshold(self.directory, verify=True), self._threshold
            self._digest = metadata_digest(self.directory, self.METADATA)
        return written

    def anomaly_map(self, x) -> np.ndarray:
        """Per-pixel squared reconstruction error, float32 [N, 28, 28]:
        ``(image - reconstruction) ** 2`` with the image in [0, 1] as the graph saw it, so its
        mean over the 784 pixels is the image's score (to float32 rounding). Higher = the
        autoencoder could not reproduce that pixel."""
        source = _as_source(x)
        out = np.empty((source.n, SIDE, SIDE), dtype=np.float32)
        for offset, images, (r,) in self._each_batch(source, ("reconstruction",), None):
            diff = images.reshape(-1, SIDE, SIDE) - r.reshape(-1, SIDE, SIDE)
            np.square(diff, out=out[offset:offset + len(diff)])
        return out


def _as_source(x) -> ImageSource:
    return x if isinstance(x, ImageSource) else ArraySource(x, "images")

