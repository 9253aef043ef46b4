"""Policies mapping observations to actions inside the env's action box."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from saferl.nn import draws
from saferl.nn.mlp import MLP


class ActionScale(nn.Module):
    """Affine map between [-1, 1] (what tanh heads produce) and the env's action box [low, high]."""

    def __init__(self, low: np.ndarray | Sequence[float], high: np.ndarray | Sequence[float]):
        super().__init__()
        low_t = torch.as_tensor(np.asarray(low, dtype=np.float32))
        high_t = torch.as_tensor(np.asarray(high, dtype=np.float32))
        self.register_buffer("center", (high_t + low_t) / 2)
        self.register_buffer("half_range", (high_t - low_t) / 2)

    def forward(self, unit_action: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_range * unit_action

    def inverse(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.center) / self.half_range


class DeterministicActor(nn.Module):
    """a = scale(tanh(MLP(s))), as in TD3/BC-style deterministic policies."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: np.ndarray | Sequence[float],
        action_high: np.ndarray | Sequence[float],
        hidden: Sequence[int] = (256, 256),
        act: str = "relu",
        layer_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.net = MLP(obs_dim, act_dim, hidden, act, layer_norm, dropout)
        self.scale = ActionScale(action_low, action_high)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.scale(torch.tanh(self.net(obs)))


LOG_2 = math.log(2.0)


def tanh_log_det(pre_tanh: torch.Tensor) -> torch.Tensor:
    """log|d tanh(u)/du| summed over action dims, in the numerically stable softplus form."""
    return (2.0 * (LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)


class TanhGaussianActor(nn.Module):
    """SAC-style policy: u ~ N(μ(s), σ(s)), a = scale(tanh(u)); log-probabilities include the tanh Jacobian."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: np.ndarray | Sequence[float],
        action_high: np.ndarray | Sequence[float],
        hidden: Sequence[int] = (256, 256),
        act: str = "relu",
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ):
        super().__init__()
        self.net = MLP(obs_dim, 2 * act_dim, hidden, act)
        self.scale = ActionScale(action_low, action_high)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def distribution(self, obs: torch.Tensor) -> Normal:
        """The pre-tanh Gaussian N(μ(s), σ(s))."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        return Normal(mean, log_std.exp())

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False, with_logprob: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A reparameterised action sample (or tanh(μ) when deterministic) and its log-probability."""
        dist = self.distribution(obs)
        pre_tanh = dist.mean if deterministic else draws.rsample_normal(dist.loc, dist.scale)
        logp = dist.log_prob(pre_tanh).sum(-1) - tanh_log_det(pre_tanh) if with_logprob else None
        return self.scale(torch.tanh(pre_tanh)), logp

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """log π(a|s) of given (dataset) actions; actions on the box edge are pulled in by ``eps``."""
        unit = self.scale.inverse(action).clamp(-1.0 + eps, 1.0 - eps)
        pre_tanh = torch.atanh(unit)
        return self.distribution(obs).log_prob(pre_tanh).sum(-1) - tanh_log_det(pre_tanh)


class GaussianActor(nn.Module):
    """IQL's policy (CORL): a ~ N(scale(tanh(MLP(s))), σ) with a state-independent σ, log-std in [-5, 2]."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: np.ndarray | Sequence[float],
        action_high: np.ndarray | Sequence[float],
        hidden: Sequence[int] = (256, 256),
        act: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.net = MLP(obs_dim, act_dim, hidden, act, dropout=dropout)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.scale = ActionScale(action_low, action_high)

    def distribution(self, obs: torch.Tensor) -> Normal:
        mean = self.scale(torch.tanh(self.net(obs)))
        return Normal(mean, self.log_std.clamp(-5.0, 2.0).exp())

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs).log_prob(action).sum(-1)

    def forward(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        dist = self.distribution(obs)
        action = dist.mean if deterministic else dist.sample()
        low = self.scale.center - self.scale.half_range
        return torch.maximum(torch.minimum(action, low + 2 * self.scale.half_range), low)
