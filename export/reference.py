"""The PyTorch side of every comparison (export, golden.npz, verify, bench) and the homework's sampler."""

import os
from typing import Callable

import numpy as np
import torch

from aeflow.parity import compare
from aeflow.runtime.providers import run_batched
from aeflow.train.autoencoder import AEConfig
from aeflow.train.checkpoint import load_model
from aeflow.train.flow import FlowConfig
from aeflow.train.models import Autoencoder, Flow1d, ScoringAutoencoder

HOMEWORK_STEPS, HOMEWORK_BRACKET, BATCH = 30, (-3.0, 3.0), 1000


def load_autoencoder(path: str | os.PathLike) -> tuple[Autoencoder, dict]:
    """The trained autoencoder (eval mode, sized to the config's ``image_shape``) and its checkpoint dict."""
    return load_model(path, "autoencoder", AEConfig, lambda cfg: Autoencoder(cfg.image_shape))


def load_flow(path: str | os.PathLike) -> tuple[Flow1d, dict]:
    """The trained flow (eval mode) and its checkpoint dict."""
    return load_model(path, "flow", FlowConfig, lambda cfg: Flow1d(cfg.n_components))


def torch_ae(model: Autoencoder, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's ae.onnx: float32 images [N, 1, H, W] -> (reconstruction float32 [N, 1, H, W], score float32 [N])."""
    wrapper = ScoringAutoencoder(model).eval()
    return tuple(run_batched(lambda x: _run(wrapper, x), images, BATCH))


def torch_flow(flow: Flow1d, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's flow.onnx: float32 x [N] -> (z, dz_dx, log_prob), float32 [N] each."""
    return tuple(_run(flow, x))


def _run(module: torch.nn.Module, x: np.ndarray) -> list[np.ndarray]:
    """``module``'s outputs for the float32 array ``x``, in inference mode, as numpy arrays."""
    with torch.inference_mode():
        return [t.numpy() for t in module(torch.from_numpy(x))]


def flow_checks(session, flow: Flow1d, x: np.ndarray) -> list:
    """flow.onnx's ``session`` against PyTorch's ``flow`` on float32 x [N]: z, dz_dx, log_prob ``Comparison``s."""
    pairs = zip(session.run(None, {"x": x}), torch_flow(flow, x))
    return [compare(name, a, b) for name, (a, b) in zip(("z", "dz_dx", "log_prob"), pairs)]


def set_threads(threads: int) -> None:
    """PyTorch's intra-op thread count."""
    torch.set_num_threads(int(threads))


def autoencoder_scorer(checkpoint: str | os.PathLike, compiled: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """Scoring with ae.pt, eager or ``torch.compile``d (inductor): float32 [N, 1, H, W] -> float32 [N]."""
    model = ScoringAutoencoder(load_autoencoder(checkpoint)[0]).eval()
    if compiled:
        model = torch.compile(model, backend="inductor", dynamic=False)
    return lambda x: _run(model, x)[1]


def homework_sampler(checkpoint: str | os.PathLike) -> Callable[[int, int], np.ndarray]:
    """The homework's sampler with flow.pt: ``sample(n, seed)`` -> float32 [n], z ~ N(0, 1) inverted by 30
    bisection steps on [-3, 3] (out-of-range z end at the edges)."""
    flow = load_flow(checkpoint)[0]
    def sample(n: int, seed: int) -> np.ndarray:
        with torch.no_grad():
            z = torch.normal(torch.zeros(n), torch.ones(n), generator=torch.Generator().manual_seed(seed))
            x_low, x_high = torch.full((n,), HOMEWORK_BRACKET[0]), torch.full((n,), HOMEWORK_BRACKET[1])
            for _ in range(HOMEWORK_STEPS):
                m = (x_low + x_high) / 2
                above = flow(m)[0] >= z
                x_low, x_high = torch.where(above, x_low, m), torch.where(above, m, x_high)
            return ((x_low + x_high) / 2).numpy()
    return sample
