"""Small loss and update functions shared by the algorithms."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from saferl.nn import members


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


class _MaskedMean(torch.autograd.Function):
    """``x[mask].mean()`` and its gradient (``1/n`` on the n selected entries, 0 elsewhere). Under ``vmap`` (K
    seeds as one model, `saferl.nn.members`) it runs once per member: selecting by a boolean mask has a
    data-dependent shape, which vmap cannot batch, and a masked sum would add in another order (other bits)."""

    @staticmethod
    def forward(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x[mask].mean()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, torch.Tensor], output: torch.Tensor) -> None:
        mask = inputs[1]
        ctx.save_for_backward(mask)
        ctx.count = int(mask.sum())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return torch.where(mask, grad / ctx.count, 0.0), None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, int | None], x: torch.Tensor, mask: torch.Tensor):
        x, mask = (
            t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape)
            for t, d in zip((x, mask), in_dims, strict=True)
        )
        return torch.stack([xk[mk].mean() for xk, mk in zip(x, mask, strict=True)]), 0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the entries where the boolean ``mask`` is set: ``x[mask].mean()``, batchable by vmap."""
    return _MaskedMean.apply(x, mask)


@torch.no_grad()
def soft_update(target: Iterable[torch.Tensor], source: Iterable[torch.Tensor], tau: float) -> None:
    """Polyak averaging ``target ← (1 − tau)·target + tau·source`` over parameter lists, in one fused op."""
    target, source = list(target), list(source)
    stack = members.active()
    if stack is not None:  # the stacked tensors of every member, in one lerp
        stack.lerp(target, source, tau)
        return
    torch._foreach_lerp_(target, source, tau)


def sinusoidal_embedding(x: torch.Tensor, dim: int = 6, base: float = 10_000.0) -> torch.Tensor:
    """Transformer-style sin/cos code of a scalar per row (FamO2O's β embedding, ``sin_cos_skill_func``).

    ``x`` is ``[B]`` or ``[B, 1]``; returns ``[B, dim]`` with ``emb[:, 2i] = sin(x / base^(2i/dim))`` and
    ``emb[:, 2i+1] = cos(x / base^(2i/dim))`` for i = 0 … dim/2 − 1. ``dim`` must be even.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding needs an even dim, got {dim}")
    x = x.reshape(-1, 1)
    exponents = torch.arange(0, dim // 2, device=x.device, dtype=x.dtype) * (2.0 / dim)
    angles = x * torch.exp(-math.log(base) * exponents)  # x / base^(2i/dim), [B, dim/2]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # interleave sin, cos


def repeat_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x.repeat_interleave(n, dim=0)`` (each row n times in a row) as one broadcast copy, which is cheaper."""
    return x.unsqueeze(1).expand(x.shape[0], n, *x.shape[1:]).reshape(x.shape[0] * n, *x.shape[1:])


def warmup_cosine_lr(step: int, peak: float, warmup: int, decay_steps: int, end: float = 0.0) -> float:
    """optax.warmup_cosine_decay_schedule(0, peak, warmup, decay_steps, end) at ``step``; ``decay_steps`` ≤ warmup
    means no decay (constant ``peak`` after the warm-up). With ``warmup=0`` it is optax.cosine_decay_schedule."""
    if step < warmup:
        return peak * step / warmup
    if decay_steps <= warmup:
        return peak
    frac = min(step - warmup, decay_steps - warmup) / (decay_steps - warmup)
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * frac))
