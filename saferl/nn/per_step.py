"""Finite-horizon networks: one Gaussian policy π_h and one critic Q_h per time step h = 0 … H−1.

Each family is one `EnsembleMLP` (member h = step h), so a batch laid out ``[H, n, ·]`` (samples grouped by
step) runs every step in one call; ``members`` (a slice) runs a few steps only. Initialisation follows HNPG's
``models.py`` (Zhou et al., ICLR 2024): output layer default weights ×0.1, bias 0; policy log σ starts at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from saferl.nn import draws
from saferl.nn.ensemble import EnsembleMLP


def _shrink_output_layer(mlp: EnsembleMLP) -> None:
    """Small initial outputs: default weights ×0.1, bias 0 (HNPG's policy mean and Q heads)."""
    last = mlp.net[-1]
    with torch.no_grad():
        last.weight.mul_(0.1)
        last.bias.zero_()


class StepPolicies(nn.Module):
    """π_h(a|s) = N(μ_h(s), diag σ_h²) for h = 0 … H−1, μ_h a tanh MLP, σ_h state-independent."""

    def __init__(self, horizon: int, obs_dim: int, act_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.mean = EnsembleMLP(horizon, obs_dim, act_dim, hidden, act="tanh")
        _shrink_output_layer(self.mean)
        self.log_std = nn.Parameter(torch.zeros(horizon, 1, act_dim))

    def forward(self, obs: torch.Tensor, members: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log σ for observations grouped by step, ``[H, n, obs]`` → ``[H, n, act]`` each."""
        mean = self.mean(obs, members)
        log_std = self.log_std if members is None else self.log_std[members]
        return mean, log_std.expand_as(mean)

    def at(self, obs: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log σ of π_{t_i}(·|s_i) for a flat batch (every member runs; the batch picks its own)."""
        rows = torch.arange(obs.shape[0], device=obs.device)
        mean = self.mean(obs)[timesteps, rows]
        return mean, self.log_std[timesteps, 0]

    def sample(self, obs: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        mean, log_std = self(obs, members)
        return mean + log_std.exp() * draws.randn_like(mean)


class StepCritics(nn.Module):
    """Q_h(s, a) for h = 0 … H−1, each a tanh MLP on (s, a)."""

    def __init__(self, horizon: int, obs_dim: int, act_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.net = EnsembleMLP(horizon, obs_dim + act_dim, 1, hidden, act="tanh")
        _shrink_output_layer(self.net)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """``[H, n, obs]``, ``[H, n, act]`` → ``[H, n]``."""
        return self.net(torch.cat([obs, act], dim=-1), members).squeeze(-1)
