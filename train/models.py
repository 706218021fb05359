"""The homework's two models: the MLP autoencoder (Problem 1) and the 1-D flow (Problem 2)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class _Layers(nn.Module):
    """fc1 -> ReLU -> fc2 -> ReLU -> fc3 over the widths ``sizes`` (four of them)."""

    def __init__(self, *sizes: int):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Autoencoder(nn.Module):
    """H*W -> 256 -> 128 -> 32 (ReLU) and its mirror with a sigmoid output (the homework's 784-256-128-32 for
    28x28): float32 [N, 1, H, W] in [0, 1] -> reconstruction of the same shape."""

    def __init__(self, image_shape: tuple[int, int] = (28, 28)):
        super().__init__()
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.pixels = self.image_shape[0] * self.image_shape[1]
        self.encoder, self.decoder = _Layers(self.pixels, 256, 128, 32), _Layers(32, 128, 256, self.pixels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(F.relu(self.encoder(images.reshape(images.shape[0], self.pixels))))
        # reshape before the sigmoid: the same values, one copy fewer in the exported graph
        return torch.sigmoid(logits.reshape(logits.shape[0], 1, *self.image_shape))


class ScoringAutoencoder(nn.Module):
    """What ae.onnx holds: images [N, 1, H, W] -> (reconstruction [N, 1, H, W], score [N]: per-image MSE)."""

    def __init__(self, autoencoder: Autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = self.autoencoder(images)
        d = images - reconstruction
        return reconstruction, (d * d).reshape(images.shape[0], math.prod(images.shape[1:])).mean(dim=1)


class Flow1d(nn.Module):
    """z = sum_k w_k (Phi((x - mu_k) / sigma_k) - 1/2), a monotone map of R onto (-W/2, W/2), with the
    homework's parameters ``mus`` (randn), ``log_sigmas`` (0), ``weight_logits`` (1), w = exp(logit)."""

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
        log_dz_dx = torch.logsumexp(self.weight_logits - self.log_sigmas - 0.5 * t * t - LOG_SQRT_2PI, dim=1)
        return z, torch.exp(log_dz_dx), -0.5 * z * z - LOG_SQRT_2PI + log_dz_dx

    def components(self) -> dict[str, list[float]]:
        """The learned mus, sigmas and weights as plain floats."""
        with torch.no_grad():
            return {"mu": self.mus.tolist(), "sigma": self.log_sigmas.exp().tolist(),
                    "weight": self.weight_logits.exp().tolist()}

