"""Policies mapping observations to actions inside the env's action box."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

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
