"""Multi-layer perceptrons."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from saferl.nn import draws

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "mish": nn.Mish,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """Linear → [LayerNorm] → activation → [Dropout] per hidden layer, then a linear output layer."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256),
        act: str = "relu",
        layer_norm: bool = False,
        dropout: float = 0.0,
    ):
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers.append(nn.Linear(prev, width))
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(activation(act))
            if dropout > 0.0:
                layers.append(draws.Dropout(dropout))  # per member inside a member stack
            prev = width
        layers.append(nn.Linear(prev, out_dim))
        super().__init__(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 (typed for readers)
        return super().forward(x)


@torch.no_grad()
def orthogonal_init_(module: nn.Module, hidden_gain: float = 2**0.5, last_gain: float = 1e-2) -> None:
    """Orthogonal weights, zero biases (CORL's CQL/SAC init); the last linear layer gets a small gain.
    Works for MLP and EnsembleMLP (each ensemble member's [in, out] matrix separately)."""
    linears = [m for m in module.modules() if hasattr(m, "weight") and m.weight.dim() >= 2]
    for i, layer in enumerate(linears):
        gain = last_gain if i == len(linears) - 1 else hidden_gain
        weight = layer.weight
        for matrix in weight if weight.dim() == 3 else [weight]:
            nn.init.orthogonal_(matrix, gain=gain)
        if getattr(layer, "bias", None) is not None:
            layer.bias.zero_()
