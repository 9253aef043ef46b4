"""Conditional VAE over actions (BCQ, Fujimoto et al. 2019), used by BCQ-Lag and CPQ."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saferl.nn import draws
from saferl.nn.actors import ActionScale
from saferl.nn.mlp import MLP


class ActionVAE(nn.Module):
    """Encoder q(z|s,a) = N(μ, σ), decoder a = scale(tanh(D(s, z))); latent dim 2·act_dim as in BCQ."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: np.ndarray | Sequence[float],
        action_high: np.ndarray | Sequence[float],
        hidden: Sequence[int] = (400, 400),
        latent_dim: int | None = None,
    ):
        super().__init__()
        self.latent_dim = latent_dim or 2 * act_dim
        self.encoder = MLP(obs_dim + act_dim, 2 * self.latent_dim, hidden)
        self.decoder = MLP(obs_dim + self.latent_dim, act_dim, hidden)
        self.scale = ActionScale(action_low, action_high)

    def encode(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.encoder(torch.cat([obs, action], -1)).chunk(2, dim=-1)
        return mean, log_std.clamp(-4.0, 15.0).exp()  # clamp for numerical stability (BCQ)

    def decode(self, obs: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:  # BCQ samples the prior clipped to [-0.5, 0.5] to stay near the data
            z = draws.randn(*obs.shape[:-1], self.latent_dim, like=obs).clamp(-0.5, 0.5)
        return self.scale(torch.tanh(self.decoder(torch.cat([obs, z], -1))))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, std = self.encode(obs, action)
        z = mean + std * draws.randn_like(std)
        return self.decode(obs, z), mean, std

    @staticmethod
    def kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """KL(N(μ, σ) ‖ N(0, 1)) per latent dim."""
        return -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2))

    def loss(self, obs: torch.Tensor, action: torch.Tensor, kl_weight: float) -> torch.Tensor:
        recon, mean, std = self(obs, action)
        return F.mse_loss(recon, action) + kl_weight * self.kl(mean, std).mean()
