"""The PyTorch side of the runtime's comparisons (``aeflow verify``, ``aeflow bench``): the
checkpoints run eagerly, and the homework's own sampler. Needs the train extra; the runtime imports
this module only inside those commands, so scoring and sampling never load torch."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch

from aeflow.export.exporter import load_autoencoder, load_flow, torch_ae, torch_flow
from aeflow.train.models import ScoringAutoencoder

HOMEWORK_STEPS = 30
HOMEWORK_BRACKET = (-3.0, 3.0)

__all__ = ["load_autoencoder", "load_flow", "torch_ae", "torch_flow", "set_threads", "autoencoder_scorer",
           "homework_sampler", "HOMEWORK_STEPS", "HOMEWORK_BRACKET"]


def set_threads(threads: int) -> None:
    """PyTorch's intra-op thread count."""
    torch.set_num_threads(int(threads))


def autoencoder_scorer(checkpoint: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    """Eager scoring with ae.pt: float32 [N, 1, 28, 28] -> float32 [N] (``torch.inference_mode``)."""
    model = ScoringAutoencoder(load_autoencoder(checkpoint)[0]).eval()

    def score(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x))[1].numpy()

    return score


def homework_sampler(checkpoint: str | os.PathLike) -> Callable[[int, int], np.ndarray]:
    """The homework's sampler with flow.pt: ``sample(n, seed)`` -> float32 [n], z ~ N(0, 1) inverted
    by 30 bisection steps on [-3, 3] (out-of-range z end at the edges, as in the homework)."""
    flow = load_flow(checkpoint)[0]

    def sample(n: int, seed: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            z = torch.normal(torch.zeros(n), torch.ones(n), generator=gen)
            x_low = torch.full((n,), HOMEWORK_BRACKET[0])
            x_high = torch.full((n,), HOMEWORK_BRACKET[1])
            for _ in range(HOMEWORK_STEPS):
                m = (x_low + x_high) / 2
                f = flow(m)[0]
                x_high[f >= z] = m[f >= z]
                x_low[f < z] = m[f < z]
            return ((x_low + x_high) / 2).numpy()

    return sample
