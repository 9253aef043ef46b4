"""Vectorised ensembles: E networks evaluated as one batched matmul (weights ``[E, in, out]``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from saferl.nn.mlp import activation


class EnsembleLinear(nn.Module):
    """E independent linear layers; input ``[E, B, in]`` → output ``[E, B, out]`` via one ``baddbmm``."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same distribution as nn.Linear's default, drawn independently for every member.
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias[members], x, self.weight[members])

    def extra_repr(self) -> str:
        return f"ensemble_size={self.ensemble_size}, in={self.in_features}, out={self.out_features}"


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine transform per ensemble member."""

    def __init__(self, ensemble_size: int, width: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, width))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, width))

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        weight, bias = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * weight + bias


class EnsembleMLP(nn.Module):
    """E MLPs in lock-step. Input ``[B, in]`` (shared by all members) or ``[E, B, in]``."""

    def __init__(
        self,
        ensemble_size: int,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256),
        act: str = "relu",
        layer_norm: bool = False,
    ):
        super().__init__()
        self.ensemble_size = ensemble_size
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers.append(EnsembleLinear(ensemble_size, prev, width))
            if layer_norm:
                layers.append(EnsembleLayerNorm(ensemble_size, width))
            layers.append(activation(act))
            prev = width
        layers.append(EnsembleLinear(ensemble_size, prev, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """All members, or only ``members`` (a slice: its outputs equal those rows of the full forward, at a
        fraction of the cost, e.g. TD3's actor loss on Q₁ alone)."""
        if members is None:
            if x.dim() == 2:
                x = x.unsqueeze(0).expand(self.ensemble_size, *x.shape)
            return self.net(x)
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(len(range(self.ensemble_size)[members]), *x.shape)
        for layer in self.net:
            x = layer(x, members) if isinstance(layer, EnsembleLinear | EnsembleLayerNorm) else layer(x)
        return x
