"""PyOD's convention (train extra): ``fit`` your normal data, ``export`` a folder the runtime loads."""

import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from aeflow.checks import as_floats
from aeflow.errors import UsageError
from aeflow.export.exporter import export_artifacts
from aeflow.export.reference import torch_ae, torch_flow
from aeflow.metrics import above_threshold, threshold_from_scores
from aeflow.runtime import contract
from aeflow.targets import check_target
from aeflow.train.autoencoder import AEConfig, check_ae_config, train_autoencoder_on, training_images
from aeflow.train.checkpoint import save_checkpoint
from aeflow.train.data import as_images, checked_values
from aeflow.train.flow import FlowConfig, check_flow_config, split_values, train_flow_on


def _export(directory, name: str, kind: str, model, config, history: dict, validation=None, force: bool = False):
    """Export the checkpoint ``name`` with the folder's other one into ``directory`` (over one only with ``force``)."""
    directory = check_target(Path(directory) / name, what="export", force=force, parents=True).parent
    with tempfile.TemporaryDirectory(prefix="aeflow-export-") as tmp:
        save_checkpoint(Path(tmp) / name, kind, model, asdict(config), history, force=True)
        for other in {contract.AE_CHECKPOINT, contract.FLOW_CHECKPOINT} - {name}:
            if (directory / other).is_file():
                shutil.copy2(directory / other, Path(tmp) / other)
        return export_artifacts(Path(tmp), directory, validation=validation, force=force, what="export")


def _fitted(estimator):
    """``estimator``'s fitted model; one-line ``UsageError`` before ``fit``."""
    if "model_" not in vars(estimator):
        raise UsageError(f"this {type(estimator).__name__} is not fitted yet; call fit(...) first")
    return estimator.model_


class AutoencoderDetector:
    """The homework's autoencoder sized to your images, threshold mean + 3 std of a seeded validation split's
    scores (per-image MSE); labels: 1 = anomaly."""

    def __init__(self, epochs: int = 10, lr: float = 1e-3, batch_size: int = 100, seed: int = 0,
                 val_fraction: float = 1 / 6, quiet: bool = True):
        self.config = AEConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, val_fraction=val_fraction)
        check_ae_config(self.config)
        self.quiet = quiet

    def fit(self, X, y=None) -> "AutoencoderDetector":
        """Train on normal images X ([N, H, W], [N, 1, H, W] or [N, H, W, 1], uint8 or float in [0, 1])."""
        images, train_idx, val_idx = training_images(self.config, as_images(X, training=True))
        self.model_, self.history_ = train_autoencoder_on(images[train_idx], self.config, self.quiet)
        self._validation = images[val_idx]
        self.threshold_ = threshold_from_scores(self.decision_function(self._validation)).value
        self.decision_scores_ = self.decision_function(images)
        self.labels_ = above_threshold(self.decision_scores_, self.threshold_).astype(np.int64)
        return self

    def decision_function(self, X) -> np.ndarray:
        """PyTorch's anomaly scores float32 [N] of images of the fitted size (``AnomalyScorer``'s layouts)."""
        return torch_ae(_fitted(self), as_images(X, image_shape=self.config.image_shape))[1]

    def predict(self, X) -> np.ndarray:
        """int64 [N]: 1 where the score is above ``threshold_``, else 0."""
        return above_threshold(self.decision_function(X), self.threshold_).astype(np.int64)

    def export(self, directory: str | os.PathLike, force: bool = False):
        """Write ae.pt (over one only with ``force``), export it (and flow.pt there) for ``AnomalyScorer``."""
        return _export(directory, contract.AE_CHECKPOINT, "autoencoder", _fitted(self), self.config, self.history_,
                       self._validation, force)


class FlowModel:
    """The homework's 1-D flow fitted to your values by maximum likelihood (1/6 held out, seeded)."""

    def __init__(self, n_components: int = 5, epochs: int = 100, lr: float = 5e-2, batch_size: int = 128,
                 seed: int = 0, quiet: bool = True):
        self.config = FlowConfig(n_components=n_components, epochs=epochs, lr=lr, batch_size=batch_size,
                                 seed=seed, data="array")
        check_flow_config(self.config)
        self.quiet = quiet

    def fit(self, values, y=None) -> "FlowModel":
        """Fit finite real values float [N] (N >= 20); returns self, ``nll_`` the final train and held-out NLL."""
        train_x, test_x = split_values(checked_values(values, "values"), self.config)
        self.model_, self.history_ = train_flow_on(train_x, test_x, self.config, self.quiet)
        self.nll_ = {"train": self.history_["train_nll"][-1], "test": self.history_["test_nll"][-1]}
        return self

    def score_samples(self, values) -> np.ndarray:
        """log p(x), float32 [N], of real values [N] (PyTorch); ``InputError`` as ``FlowSampler.forward``."""
        return torch_flow(_fitted(self), as_floats(values, np.float32, "values"))[2]

    def export(self, directory: str | os.PathLike, force: bool = False):
        """Write flow.pt (over one only with ``force``), export it (and ae.pt there) for ``FlowSampler``."""
        return _export(directory, contract.FLOW_CHECKPOINT, "flow", _fitted(self), self.config, self.history_,
                       force=force)
