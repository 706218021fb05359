"""The training loop both models share, and checkpoints ``{"kind", "state_dict", "config", "history"}`` (loaded
with ``weights_only=True``, used only when finite and fitting the model)."""

import contextlib
import math
import os
import pickle
from dataclasses import fields
from pathlib import Path

import torch

from aeflow.checks import shorten
from aeflow.errors import ArtifactError, TrainingError
from aeflow.files import atomic_path
from aeflow.progress import progress_bar

NEWER_FIELDS = {"data", "data_sha256", "image_shape", "column", "loc", "scale"}  # older checkpoints lack them
HISTORY_FIELDS = {"autoencoder": ("loss", "epoch_loss"), "flow": ("train_nll", "test_nll")}


def run_epochs(model: torch.nn.Module, x: torch.Tensor, loss_of, config, what: str, quiet: bool,
               measure=None, decay: bool = False) -> tuple[list[list[float]], dict[str, list[float]]]:
    """``config.epochs`` seeded Adam passes (cosine decay to 0 with ``decay``) over ``x`` minimising ``loss_of(batch)``,
    ``measure()`` ({name: value}) taken without gradients after each epoch. Returns each epoch's per-batch losses and
    {name: one value per epoch}; ``TrainingError`` once a loss or parameter is not finite."""
    def diverged(detail: str) -> TrainingError:
        return TrainingError(f"training the {what} diverged: {detail} (lr {config.lr:g}); nothing was written - "
                             f"try a smaller learning rate")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs) if decay else None
    gen, epochs, measured = torch.Generator().manual_seed(config.seed), [], {}
    model.train()
    with progress_bar(config.epochs, f"training {what}", quiet) as bar:
        for epoch in range(config.epochs):
            perm, losses = torch.randperm(len(x), generator=gen), []
            for b in range(0, len(x), config.batch_size):
                loss = loss_of(x[perm[b:b + config.batch_size]])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                if not math.isfinite(losses[-1]):
                    raise diverged(f"the loss became {losses[-1]} in epoch {epoch + 1}")
            epochs.append(losses)
            if measure is not None:
                with torch.no_grad():
                    for name, value in measure().items():
                        measured.setdefault(name, []).append(float(value))
            text = ", ".join(f"{k} {v[-1]:.4f}" for k, v in measured.items()) or f"loss {losses[-1]:.6f}"
            bar.update(1, f"epoch {epoch + 1}/{config.epochs} {text}")
            if schedule is not None:
                schedule.step()
    bad = next((name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise diverged(f"parameter '{bad}' holds NaN or Inf")
    return epochs, measured


def save_checkpoint(path: str | os.PathLike, kind: str, model: torch.nn.Module, config: dict,
                    history: dict, force: bool = False, figures: dict[str, bytes] | None = None) -> None:
    """Write the checkpoint and the PNG ``figures`` {file name: bytes} beside it, all synced before any is published
    (without ``force`` one that appeared meanwhile is kept); a failure leaves nothing, a folder made here included."""
    folder = Path(path).parent
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:
            for name, data in (figures or {}).items():
                stack.enter_context(atomic_path(folder / name, replace=True)).write_bytes(data)
            with atomic_path(path, replace=force) as tmp:
                state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                torch.save({"kind": kind, "state_dict": state, "config": config, "history": history}, tmp)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def load_checkpoint(path: str | os.PathLike, kind: str) -> dict:
    """The checkpoint dict of ``kind`` ("autoencoder" or "flow") at ``path``, else ``ArtifactError``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found; run 'aeflow train' first, or pass the folder "
                            f"holding it (export: --checkpoints)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or ["unsafe content"])[0]
        raise ArtifactError(f"{path}: refused to load, it holds more than weights ({shorten(first, 120)})") from None
    except Exception as e:  # noqa: BLE001 - any other failure of a damaged file is one line
        raise ArtifactError(f"{path}: not a readable checkpoint ({type(e).__name__}); re-run training") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        found = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ArtifactError(f"{path}: not an aeflow {kind} checkpoint (kind {str(found)[:40]!r})")
    state, history = ckpt.get("state_dict"), ckpt.get("history")
    finite = lambda v: isinstance(v, torch.Tensor) and v.is_floating_point() and bool(torch.isfinite(v).all())  # noqa
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and finite(v) for k, v in state.items()):
        raise ArtifactError(f"{path}: 'state_dict' must hold named, finite float tensors (NaN or Inf: training "
                            f"diverged); re-run training")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(history, dict) or not all(
            isinstance(h, list) and h and all(type(v) in (int, float) and math.isfinite(v) for v in h)
            for h in map(history.get, HISTORY_FIELDS[kind])):
        raise ArtifactError(f"{path}: 'config' or 'history' is missing or invalid; re-run training")
    return ckpt


def load_model(path: str | os.PathLike, kind: str, cls, build) -> tuple[torch.nn.Module, dict]:
    """``build(cls(**config))`` (eval mode) with the checkpoint's weights, and its dict; else ``ArtifactError``."""
    ckpt = load_checkpoint(path, kind)
    try:
        cfg = cls(**ckpt["config"])
        if missing := [f.name for f in fields(cls) if f.name not in ckpt["config"] and f.name not in NEWER_FIELDS]:
            raise TypeError(f"field '{missing[0]}' is missing")  # a default would change the split silently
        with torch.device("meta"):  # shapes only: a config asking for a huge model allocates nothing
            want = {k: tuple(v.shape) for k, v in build(cfg).state_dict().items()}
    except (TypeError, ValueError, IndexError, RuntimeError, OverflowError) as e:
        detail = " ".join(f"{type(e).__name__}: {e}".split())[:120]
        raise ArtifactError(f"{path}: its config describes no model of this aeflow ({detail}); re-run training") from None
    found = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    if found != want:
        k = min(set(found) ^ set(want) or {k for k in want if found[k] != want[k]})
        raise ArtifactError(f"{path}: state_dict does not fit the model (entry '{k[:40]}': {found.get(k, 'missing')}"
                            f" where the model has {want.get(k, 'none')}); re-run training")
    model = build(cfg)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
