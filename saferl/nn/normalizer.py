"""Observation normalisation with statistics fitted once on the dataset and kept in the state dict."""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """(x − mean) / std with std floored at ``eps`` (CORL uses 1e-3)."""

    def __init__(self, dim: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
