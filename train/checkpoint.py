"""Checkpoints: a dict of the state_dict, the config and the history, loadable with
``torch.load(weights_only=True)`` so a crafted file cannot run code.

``load_checkpoint`` checks every field before anything uses it (``CONFIG_FIELDS``,
``HISTORY_FIELDS``, a non-empty state_dict of finite tensors), and ``load_weights`` puts the
state_dict into a model: every problem is one ``ArtifactError`` line naming the file and the field.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path

import torch

from aeflow.errors import ArtifactError, TrainingError
from aeflow.files import atomic_path

KINDS = ("autoencoder", "flow")
MAX_COMPONENTS = 10_000
# field -> (types accepted, check of the value or None); bool is never an int here
_POS_INT = ((int,), lambda v: v >= 1)
_SEED = ((int,), lambda v: 0 <= v < 2**63)
_POS_FLOAT = ((int, float), lambda v: math.isfinite(v) and v > 0)
_SHAPE = ((list,), lambda v: len(v) == 2 and all(type(d) is int and 1 <= d <= 4096 for d in v))
_PATHS = ((list, type(None)), lambda v: v is None or all(isinstance(p, str) for p in v))
CONFIG_FIELDS = {
    "autoencoder": {"epochs": _POS_INT, "lr": _POS_FLOAT, "batch_size": _POS_INT, "seed": _SEED,
                    "val_fraction": ((int, float), lambda v: 0 < v < 1), "data_dir": ((str, type(None)), None),
                    "n_train": _POS_INT, "n_val": _POS_INT, "data_source": ((str,), None),
                    "data": _PATHS, "data_sha256": ((str,), None), "image_shape": _SHAPE},
    "flow": {"n_components": ((int,), lambda v: 1 <= v <= MAX_COMPONENTS), "epochs": _POS_INT, "lr": _POS_FLOAT, "batch_size": _POS_INT,
             "n_train": _POS_INT, "n_test": _POS_INT, "seed": _SEED,
             "data": ((str, type(None)), None), "column": ((str, type(None)), None), "data_sha256": ((str,), None),
             "loc": ((int, float), math.isfinite), "scale": _POS_FLOAT},
}
# fields that checkpoints written before training on one's own data lack (defaults in the configs)
OPTIONAL_FIELDS = frozenset({"data", "data_sha256", "image_shape", "column", "loc", "scale"})
HISTORY_FIELDS = {"autoencoder": ("loss", "epoch_loss"), "flow": ("train_nll", "test_nll")}


def diverged(what: str, epoch: int, loss: float, lr: float) -> TrainingError:
    """The one-line error for training whose loss stopped being finite."""
    return TrainingError(f"training the {what} diverged: the loss became {loss} in epoch {epoch + 1} "
                         f"(lr {lr:g}); nothing was written - try a smaller learning rate")


def check_finite(model: torch.nn.Module, what: str, lr: float) -> None:
    """``TrainingError`` unless every parameter of ``model`` is finite."""
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise TrainingError(f"training the {what} diverged: parameter '{name}' holds NaN or Inf (lr {lr:g}); "
                                f"nothing was written - try a smaller learning rate")


def save_checkpoint(path: str | os.PathLike, kind: str, model: torch.nn.Module, config: dict,
                    history: dict, force: bool = False) -> None:
    """Write ``{"kind", "state_dict", "config", "history"}`` to ``path`` atomically; without
    ``force`` a checkpoint that appeared at ``path`` meanwhile is kept (``OutputError``)."""
    payload = {"kind": kind, "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               "config": config, "history": history}
    with atomic_path(path, replace=force) as tmp:
        torch.save(payload, tmp)


def _check_config(path: Path, kind: str, config) -> None:
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: 'config' must be a dict, found {type(config).__name__}; re-run training")
    fields = CONFIG_FIELDS[kind]
    for name, (types, ok) in fields.items():
        if name not in config and name in OPTIONAL_FIELDS:
            continue
        if name not in config:
            raise ArtifactError(f"{path}: config field '{name}' is missing; re-run training")
        v = config[name]
        if isinstance(v, bool) or not isinstance(v, types) or (ok is not None and not ok(v)):
            raise ArtifactError(f"{path}: config field '{name}' has an invalid value {str(v)[:40]!r}; "
                                f"re-run training")
    unknown = sorted(str(k) for k in config if k not in fields)
    if unknown:
        raise ArtifactError(f"{path}: unknown config field '{unknown[0][:40]}'; not a checkpoint of this aeflow")


def _check_history(path: Path, kind: str, history) -> None:
    if not isinstance(history, dict):
        raise ArtifactError(f"{path}: 'history' must be a dict, found {type(history).__name__}; re-run training")
    for name in HISTORY_FIELDS[kind]:
        v = history.get(name)
        if not isinstance(v, list) or not v or not all(type(x) in (int, float) and math.isfinite(x) for x in v):
            raise ArtifactError(f"{path}: history field '{name}' must be a non-empty list of finite numbers; "
                                f"re-run training")


def _check_state_dict(path: Path, state) -> None:
    if not isinstance(state, dict) or not state:
        what = "empty" if isinstance(state, dict) else f"a {type(state).__name__}, not a dict"
        raise ArtifactError(f"{path}: 'state_dict' is {what}; re-run training")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ArtifactError(f"{path}: state_dict entry {str(k)[:40]!r} is not a named tensor; re-run training")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ArtifactError(f"{path}: state_dict entry '{k}' holds NaN or Inf (training diverged); re-run training")


def load_checkpoint(path: str | os.PathLike, kind: str) -> dict:
    """Load a checkpoint written by ``save_checkpoint`` with ``weights_only=True`` and check every
    field (see the module docstring).

    Raises ``ArtifactError`` when the file is missing, corrupted, not loadable safely, of another
    kind ("autoencoder" or "flow"), or has a missing or invalid field."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found; run 'aeflow train' first, or pass the folder holding it (export: --checkpoints)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise ArtifactError(f"{path}: refused to load, it holds more than weights ({first[:120]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, TypeError, AttributeError,
            KeyError, IndexError, MemoryError, OverflowError) as e:
        raise ArtifactError(f"{path}: not a readable checkpoint ({type(e).__name__}); re-run training") from None
    if not isinstance(ckpt, dict):
        raise ArtifactError(f"{path}: not an aeflow {kind} checkpoint (a {type(ckpt).__name__}, not a dict)")
    if ckpt.get("kind") != kind:
        found = ckpt.get("kind")
        raise ArtifactError(f"{path}: not an aeflow {kind} checkpoint (kind {str(found)[:40]!r})")
    for field in ("state_dict", "config", "history"):
        if field not in ckpt:
            raise ArtifactError(f"{path}: field '{field}' is missing; re-run training")
    _check_state_dict(path, ckpt["state_dict"])
    _check_config(path, kind, ckpt["config"])
    _check_history(path, kind, ckpt["history"])
    return ckpt


def load_weights(path: str | os.PathLike, model: torch.nn.Module, state_dict: dict) -> torch.nn.Module:
    """``model`` with ``state_dict`` loaded (strict), in eval mode; ``ArtifactError`` naming the
    first missing, unexpected or wrongly shaped entry."""
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        detail = " ".join(str(e).split())
        raise ArtifactError(f"{path}: state_dict does not fit the model ({detail[:160]}); re-run training") from None
    return model.eval()
