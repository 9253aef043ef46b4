"""Small loss and update functions shared by the algorithms."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Asymmetric L2 (IQL): ``|tau − 1(diff < 0)| · diff²`` with ``diff = target − prediction``.

    tau > 0.5 pushes the prediction towards an upper expectile of the target. Returns per-element losses.
    """
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return weight * diff.pow(2)


def quantile_huber_loss(diff: torch.Tensor, tau: torch.Tensor | float, kappa: float = 1.0) -> torch.Tensor:
    """Quantile Huber loss (QR-DQN) with ``diff = target − prediction``; per-element losses."""
    abs_diff = diff.abs()
    huber = torch.where(abs_diff <= kappa, 0.5 * diff.pow(2), kappa * (abs_diff - 0.5 * kappa))
    return (tau - (diff.detach() < 0).float()).abs() * huber / kappa


@torch.no_grad()
def soft_update(target: Iterable[torch.Tensor], source: Iterable[torch.Tensor], tau: float) -> None:
    """Polyak averaging ``target ← (1 − tau)·target + tau·source`` over parameter lists, in one fused op."""
    target, source = list(target), list(source)
    torch._foreach_lerp_(target, source, tau)
