"""The homework's two models: the MLP autoencoder (Problem 1) and the 1-D flow (Problem 2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Encoder(nn.Module):
    """H*W -> 256 -> 128 -> 32, ReLU after every layer (784-256-128-32 for the homework's 28x28)."""

    def __init__(self, pixels: int = 784):
        super().__init__()
        self.pixels = pixels
        self.fc1 = nn.Linear(pixels, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.pixels)
        return F.relu(self.fc3(F.relu(self.fc2(F.relu(self.fc1(x))))))


class Decoder(nn.Module):
    """32 -> 128 -> 256 -> H*W, ReLU, then a sigmoid so pixels lie in [0, 1]."""

    def __init__(self, image_shape: tuple[int, int] = (28, 28)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.fc1 = nn.Linear(32, 128)
        self.fc2 = nn.Linear(128, 256)
        self.fc3 = nn.Linear(256, self.image_shape[0] * self.image_shape[1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # reshape before the sigmoid: the same values, one copy fewer in the exported graph
        logits = self.fc3(F.relu(self.fc2(F.relu(self.fc1(z)))))
        return torch.sigmoid(logits.reshape(logits.shape[0], 1, *self.image_shape))


class Autoencoder(nn.Module):
    """Encoder + decoder: float32 [N, 1, H, W] in [0, 1] -> reconstruction of the same shape
    (``image_shape`` (H, W), the homework's (28, 28) by default)."""

    def __init__(self, image_shape: tuple[int, int] = (28, 28)):
        super().__init__()
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.encoder = Encoder(self.image_shape[0] * self.image_shape[1])
        self.decoder = Decoder(self.image_shape)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def reconstruction_score(images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error over the H*W pixels: [N, 1, H, W] x2 -> [N]."""
    d = images - reconstruction
    return (d * d).reshape(images.shape[0], math.prod(images.shape[1:])).mean(dim=1)


class ScoringAutoencoder(nn.Module):
    """What ae.onnx holds: images [N, 1, H, W] -> (reconstruction [N, 1, H, W], score [N])."""

    def __init__(self, autoencoder: Autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = self.autoencoder(images)
        return reconstruction, reconstruction_score(images, reconstruction)


class Flow1d(nn.Module):
    """z = sum_k w_k (Phi((x - mu_k) / sigma_k) - 1/2), a monotone map of R onto (-W/2, W/2).

    Parameters as in the homework: ``mus`` (randn init), ``log_sigmas`` (0), ``weight_logits``
    (1); w_k = exp(weight_logit_k). Phi is written with ``erf`` so the graph exports to ONNX.
    """

    def __init__(self, n_components: int = 5):
        super().__init__()
        self.mus = nn.Parameter(torch.randn(n_components))
        self.log_sigmas = nn.Parameter(torch.zeros(n_components))
        self.weight_logits = nn.Parameter(torch.ones(n_components))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x float32 [N] -> (z [N], dz/dx [N], log p(x) [N]) with p_Z = N(0, 1)."""
        x = x.reshape(-1, 1)
        t = (x - self.mus) * torch.exp(-self.log_sigmas)
        z = ((0.5 * torch.erf(t * (1 / math.sqrt(2)))) * torch.exp(self.weight_logits)).sum(dim=1)
        # log dz/dx as a log-sum-exp, so the tails stay finite where dz/dx underflows float32
        log_terms = self.weight_logits - self.log_sigmas - 0.5 * t * t - LOG_SQRT_2PI
        log_dz_dx = torch.logsumexp(log_terms, dim=1)
        log_prob = -0.5 * z * z - LOG_SQRT_2PI + log_dz_dx
        return z, torch.exp(log_dz_dx), log_prob

    def components(self) -> dict[str, list[float]]:
        """The learned mus, sigmas and weights as plain floats."""
        with torch.no_grad():
            return {
                "mu": [float(v) for v in self.mus],
                "sigma": [float(v) for v in self.log_sigmas.exp()],
                "weight": [float(v) for v in self.weight_logits.exp()],
            }


def nll(log_prob: torch.Tensor) -> torch.Tensor:
    """The homework's loss: mean negative log-likelihood."""
    return -log_prob.mean()
