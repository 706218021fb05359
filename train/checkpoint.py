"""Checkpoints: a dict of the state_dict, the config and the history, loadable with
``torch.load(weights_only=True)`` so a crafted file cannot run code."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from aeflow.errors import ArtifactError
from aeflow.files import atomic_path


def save_checkpoint(path: str | os.PathLike, kind: str, model: torch.nn.Module, config: dict,
                    history: dict) -> None:
    """Write ``{"kind", "state_dict", "config", "history"}`` to ``path`` atomically."""
    payload = {"kind": kind, "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               "config": config, "history": history}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, kind: str) -> dict:
    """Load a checkpoint written by ``save_checkpoint`` with ``weights_only=True``.

    Raises ``ArtifactError`` when the file is missing, corrupted, not loadable safely, or of
    another kind ("autoencoder" or "flow")."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found; run 'aeflow train' first or pass the right --artifacts")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise ArtifactError(f"{path}: refused to load, it holds more than weights ({first[:120]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise ArtifactError(f"{path}: not a readable checkpoint ({type(e).__name__}); re-run training") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind or "state_dict" not in ckpt:
        raise ArtifactError(f"{path}: not an aeflow {kind} checkpoint")
    return ckpt
