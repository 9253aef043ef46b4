"""Critics: a vectorised Q ensemble Q_i(s, a) and a state-value network V(s)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from saferl.nn import draws
from saferl.nn.ensemble import EnsembleMLP
from saferl.nn.mlp import MLP


class QEnsemble(nn.Module):
    """E Q-functions; ``forward(obs [B, o], act [B, a]) -> [E, B]`` (or ``[E, B, in]`` inputs per member)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        ensemble_size: int = 2,
        hidden: Sequence[int] = (256, 256),
        act: str = "relu",
        layer_norm: bool = False,
    ):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.net = EnsembleMLP(ensemble_size, obs_dim + act_dim, 1, hidden, act, layer_norm)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1), members).squeeze(-1)


class ValueNet(nn.Module):
    """V(s) -> [B]."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (256, 256), act: str = "relu", layer_norm: bool = False):
        super().__init__()
        self.net = MLP(obs_dim, 1, hidden, act, layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


def aggregate(q: torch.Tensor, how: str = "min") -> torch.Tensor:
    """Reduce an ensemble's ``[E, B]`` values over members: min, max, mean or std."""
    if how == "min":
        return q.amin(dim=0)
    if how == "max":
        return q.amax(dim=0)
    if how == "mean":
        return q.mean(dim=0)
    if how == "std":
        return q.std(dim=0)
    raise ValueError(f"unknown ensemble aggregation {how!r}; use min, max, mean or std")


def random_subset_min(q: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Min over a random subset of k members (REDQ-style), the same subset for the whole batch."""
    n, device = q.shape[0], q.device
    idx = draws.draw(lambda g: torch.randperm(n, device=device, generator=g), generator)[..., :k]
    return q.index_select(0, idx).amin(dim=0)
