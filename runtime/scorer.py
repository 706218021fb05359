"""``AnomalyScorer``: score = mean over H*W pixels in [0, 1] of (image - reconstruction)^2; anomaly
when strictly above the threshold."""

import copy
import os
import warnings
from typing import Callable

import numpy as np

from aeflow.checks import check_batch, check_rule, check_threads, check_threshold
from aeflow.errors import ArtifactError, InputError, ScaleWarning, UsageError
from aeflow.files import locked
from aeflow.metrics import above_threshold, conformal_p_values, normalized_scores
from aeflow.runtime import contract
from aeflow.runtime.arrays import size
from aeflow.runtime.artifacts import artifacts_dir, read_threshold, reference_scores
from aeflow.runtime.golden import load_graph
from aeflow.runtime.inputs import ArraySource, ImageSource, scale_problem, to_float32
from aeflow.runtime.pickling import Rebuildable
from aeflow.runtime.providers import CUDA, create_session, provider_of

PRECISIONS = ("fp32", "int8")
BYTES_PER_IMAGE = 16 * 1024  # working memory of one image in a batch: bounds batch_size


class AnomalyScorer(Rebuildable):
    """Score, flag and reconstruct greyscale H x W images with the exported autoencoder (``artifacts`` None: the
    bundled folder; ``device`` "auto", "cpu" or "cuda", strict; ``precision`` "fp32" or "int8"). Inputs: uint8
    0..255 or float in [0, 1], [N, 1, H, W], [N, H, W], [N, H, W, 1] or [N, H*W]. ``provider`` really runs the
    graph; ``metadata``: threshold.json. Picklable by ``settings()``; thread-safe (each call its own buffers)."""

    METADATA = "threshold.json"

    def __init__(self, artifacts: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 1024,
                 precision: str = "fp32", verify: bool = True, threads: int | None = None, golden: bool = True):
        batch_size = check_batch(batch_size, "batch_size", BYTES_PER_IMAGE)
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        threads = check_threads(threads)
        self.directory = artifacts_dir(artifacts)
        self._which = which = "int8" if precision == "int8" else "ae"
        self.graph = self.directory / contract.GRAPHS[which].file
        self.batch_size, self.precision, self._calibration, self._bound = int(batch_size), precision, None, None
        self._device, self._verify, self._threads, self._golden = device, verify, threads, golden
        with locked(self.directory, shared=True):  # one state of the folder, not half of a calibration or an export
            self.metadata = meta = read_threshold(self.directory, verify)
            self._session = load_graph(self.directory, meta, which, device, threads, verify=verify, golden=golden)
            self.provider = provider_of(self._session)
            if self.provider == CUDA:  # IOBinding, the uint8 path and a CUDA graph where onnxruntime captures one
                self._bound = self._bind(threads)
            self._pin_origin()
            if which == "ae":  # the p-values' reference of this threshold.json, not a later calibration's
                self._reference = meta, self._reference_scores(meta)
        self.image_shape = meta.image_shape
        self.default_threshold = self._threshold = float(meta.entry(which).threshold)

    def _bind(self, threads: int | None):
        """The CUDA session's IOBinding runner, with a CUDA-graph replay session where onnxruntime captures one."""
        from aeflow.runtime.device import Bound

        try:
            replay = create_session(self.graph, "cuda", threads, cuda_graph=True)
        except ArtifactError:  # a node outside CUDA: the plain bound session runs
            replay = None
        return Bound(self._session, True, replay, self.batch_size, threads)

    def settings(self) -> dict:
        """What a pickle holds: the constructor's arguments, ``threshold`` (None unless changed), ``digest``
        and an unsaved ``calibration``."""
        return {"artifacts": self._portable, "device": self._device, "batch_size": self.batch_size,
                "precision": self.precision, "verify": self._verify, "threads": self._threads,
                "golden": self._golden, "digest": self._digest, "calibration": self._calibration,
                "threshold": None if self._threshold == self.default_threshold else self._threshold}

    def replace(self, **changes):
        """A copy with some settings changed; after ``calibrate`` not for another graph or folder (other scores)."""
        state = self.__getstate__()
        if state["calibration"] is not None and ("artifacts" in changes or
                                                 changes.get("precision", state["precision"]) != state["precision"]):
            change = ", ".join(f"{k}={changes[k]!r}" for k in ("artifacts", "precision") if k in changes)
            raise UsageError(f"replace({change}): this scorer's threshold was calibrated on the scores of "
                             f"{self.graph}; replace first, then calibrate the copy")
        return super().replace(**changes)

    @property
    def threshold(self) -> float:
        """Scores strictly above it are anomalies; defaults to the recorded one, settable."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_threshold(value)

    def __repr__(self) -> str:
        return (f"AnomalyScorer({str(self.directory)!r}, precision={self.precision!r}, provider={self.provider!r}, "
                f"threshold={self._threshold:.6g})")

    def _run(self, outputs: list[str], images: np.ndarray) -> list[np.ndarray]:
        """One call: float32 (or, bound, uint8) [b, 1, H, W] -> the named outputs (new arrays)."""
        return self._bound.run(images, outputs) if self._bound else self._session.run(outputs, {"images": images})

    def score_source(self, source: ImageSource, on_batch: Callable[[int], None] | None = None,
                     on_reconstruction: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None] | None = None
                     ) -> np.ndarray:
        """float32 [n] scores of ``source``; ``on_batch(b)`` after each batch, ``on_reconstruction(offset,
        images, reconstructions, scores)`` with float32 [b, H, W], [b, H, W], [b] (reused: copy them)."""
        (h, w), name = self.image_shape, source.name
        if tuple(source.image_shape) != (h, w):
            raise InputError(f"{name}: images of {size(source.image_shape)} pixels, this run's are {size((h, w))}")
        scores, offset, warned = np.empty(source.n, dtype=np.float32), 0, False
        buffer = None  # this call's own: threads share a scorer
        outputs = ["score"] if on_reconstruction is None else ["reconstruction", "score"]
        as_uint8 = on_reconstruction is None and self._bound is not None and self._bound.prep is not None
        for batch in source.batches(self.batch_size):
            if as_uint8 and batch.dtype == np.uint8:  # converted on the device by the PREP graph
                *out, brightest = self._run(outputs + ["brightest"], batch.reshape(len(batch), 1, h, w))
                images, seen = None, np.full((len(batch), 1), brightest, dtype=np.float32)
            else:
                if buffer is None and batch.dtype != np.float32:
                    buffer = np.empty((min(self.batch_size, source.n), 1, h, w), dtype=np.float32)
                fits = buffer if buffer is not None and len(batch) <= len(buffer) else None
                images = seen = to_float32(batch, name, offset, fits, image_shape=(h, w))
                out = self._run(outputs, images)
            if not warned and (problem := scale_problem(seen, batch.dtype, name, offset)):
                warnings.warn(problem, ScaleWarning, stacklevel=3)
                warned = True
            s = scores[offset:offset + len(batch)] = out[-1]
            if on_reconstruction is not None:
                on_reconstruction(offset, images.reshape(-1, h, w), out[0].reshape(-1, h, w), s)
            offset += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
        return scores

    def score(self, x) -> np.ndarray:
        """Anomaly scores (mean squared reconstruction error), float32 [N]; higher = more anomalous."""
        return self.score_source(self._source(x))

    decision_function = score  # PyOD's name and sign (higher = more anomalous)

    def p_values_of(self, scores: np.ndarray, missing_ok: bool = False) -> np.ndarray | None:
        """Conformal p-values of ``scores`` (float [N]), float64 [N], against the last ``calibrate``'s scores, else
        threshold.json's; where none (int8, an old export): None if ``missing_ok``, else an error."""
        if self.precision != "fp32":
            if missing_ok:
                return None
            raise UsageError("p-values compare with ae.onnx's reference scores; use precision='fp32'")
        if self._calibration is not None and self._calibration.scores is not None:
            return conformal_p_values(scores, self._calibration.scores)
        if self.__dict__.get("_reference", (None,))[0] is not self.metadata:  # read once per threshold.json
            self._reference = self.metadata, self._reference_scores(self.metadata)
        if isinstance(reference := self._reference[1], ArtifactError):
            raise ArtifactError(reference.message)
        if reference is None and not missing_ok:
            raise ArtifactError(f"{self.directory / contract.THRESHOLD_JSON}: no validation scores (exported before "
                                f"p-values); re-export with 'aeflow export' for p-values")
        return None if reference is None else conformal_p_values(scores, reference)

    def _reference_scores(self, meta) -> np.ndarray | ArtifactError | None:
        """``meta``'s reference scores for p-values, or the error reading them (raised when p-values are asked)."""
        try:
            return reference_scores(self.directory, meta, self._verify)
        except ArtifactError as e:
            return e

    def p_value(self, x) -> np.ndarray:
        """Conformal p-values, float64 [N] in (0, 1]: (1 + #{reference scores >= score}) / (n + 1)."""
        return self.p_values_of(self.score(x))

    def normalized_score(self, x) -> np.ndarray:
        """``min(score / (2 * threshold), 1)``, float32 [N]: the threshold at 0.5."""
        return normalized_scores(self.score(x), self._threshold)

    def predict(self, x) -> np.ndarray:
        """bool [N]: True where the score is strictly above ``threshold``."""
        return above_threshold(self.score(x), self._threshold)

    def reconstruct(self, x) -> np.ndarray:
        """The autoencoder's reconstructions, float32 [N, 1, H, W] in [0, 1]."""
        source = self._source(x)
        out = np.empty((source.n, *self.image_shape), dtype=np.float32)
        self.score_source(source, None, lambda i, _, r, __: np.copyto(out[i:i + len(r)], r))
        return out[:, None]

    def anomaly_map(self, x) -> np.ndarray:
        """``(image - reconstruction) ** 2``, float32 [N, H, W]; its mean is the score (to rounding)."""
        source = self._source(x)
        out = np.empty((source.n, *self.image_shape), dtype=np.float32)
        self.score_source(source, None, lambda i, images, r, _: np.square(images - r, out=out[i:i + len(r)]))
        return out

    def calibrate(self, x, k: float | None = None, false_alarm_rate: float | None = None,
                  confidence: float = 0.95, name: str = "array") -> float:
        """Set ``threshold`` from normal images ``x`` and return it: mean + ``k`` std (default 3) or the quantile
        for ``false_alarm_rate`` (``aeflow.runtime.calibration``); ``save_calibration`` writes it."""
        from aeflow.runtime.calibration import array_entry, calibrate_scores

        check_rule(k, false_alarm_rate, confidence)
        source = self._source(x)
        cal = calibrate_scores(self.score_source(source), [array_entry(source, name)], self._threshold, k,
                               false_alarm_rate, confidence, self.metadata.entry(self._which).graph.sha256)
        self._threshold, self._calibration = cal.threshold, cal
        return cal.threshold

    @property
    def calibration(self) -> dict | None:
        """The last ``calibrate`` record, else the loaded threshold.json's for this graph, or None."""
        if self._calibration is not None:
            return copy.deepcopy(self._calibration.record)
        return copy.deepcopy(self.metadata.entry(self._which).calibration)

    def save_calibration(self, out: str | os.PathLike | None = None, force: bool = False):
        """Write the last ``calibrate`` into threshold.json here (None) or into ``out``, a new copy of the
        artifacts (an existing folder with files only with ``force``; never the bundled folder); returns the path."""
        from aeflow.runtime.calibration import calibration_target, write_calibration

        if self._calibration is None:
            raise UsageError("nothing to save: call calibrate(x) first")
        if self._threshold != self._calibration.threshold:
            raise UsageError(f"threshold was set to {self._threshold!r} after calibrate(); calibrate again to save")
        out = calibration_target(self.directory, out, force)
        written, doc = write_calibration(self.directory, {self._which: self._calibration}, out, force)
        if out is None:  # this scorer now stands for the threshold.json it wrote (a pickle carries its digest)
            self.metadata, self.default_threshold = doc, self._threshold
            self._pin_origin()
        return written

    def _source(self, x) -> ImageSource:
        return x if isinstance(x, ImageSource) else ArraySource(x, "images", image_shape=self.image_shape)
