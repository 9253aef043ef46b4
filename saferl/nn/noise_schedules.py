"""More DDPM noise schedules for `saferl.nn.diffusion` (which defines the VP schedule of IDQL/FISOR).

`cosine_beta_schedule` is Nichol & Dhariwal's (2021) cosine schedule as the PA-RL authors write it
(`MaxSobolMark/PolicyAgnosticRL`, `jaxrl_m/networks/diffusion_nets.py::cosine_beta_schedule`, s = 0.008, β clipped
to [0, 0.999]); `BetaSchedule` is a `DiffusionSchedule` built from any β sequence, so that the loss and sampler of
`saferl.nn.diffusion` (`noise_prediction_loss`, `ddpm_sample`) run on it unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from saferl.nn.diffusion import DiffusionSchedule


def cosine_beta_schedule(steps: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2)/ᾱ(0) on t = 0..T; β_t = 1 − ᾱ(t)/ᾱ(t − 1), clipped to [0, 0.999]."""
    if steps < 1:
        raise ValueError(f"diffusion steps must be >= 1, got {steps}")
    t = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
    alpha_bar = torch.cos((t + s) / (1 + s) * math.pi * 0.5) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(0.0, 0.999).float()


class BetaSchedule(DiffusionSchedule):
    """A `DiffusionSchedule` (β, α, ᾱ buffers and the sampler's per-step coefficients) from given betas."""

    def __init__(self, betas: torch.Tensor):
        nn.Module.__init__(self)  # DiffusionSchedule.__init__ would build the VP betas
        betas = torch.as_tensor(betas, dtype=torch.float64)
        self.steps = int(betas.shape[0])
        alphas = 1.0 - betas
        alpha_hats = torch.cumprod(alphas, 0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas", alphas.float(), persistent=False)
        self.register_buffer("alpha_hats", alpha_hats.float(), persistent=False)
        self.step_coefs = [
            (1.0 / math.sqrt(a), (1.0 - a) / math.sqrt(1.0 - ah) / math.sqrt(a), math.sqrt(b))
            for a, ah, b in zip(alphas.tolist(), alpha_hats.tolist(), betas.tolist(), strict=True)
        ]


def make_schedule(kind: str, steps: int) -> DiffusionSchedule:
    """``cosine`` (the PA-RL authors' DDPM policy) or ``vp`` (IDQL/FISOR)."""
    if kind == "cosine":
        return BetaSchedule(cosine_beta_schedule(steps))
    if kind == "vp":
        return DiffusionSchedule(steps)
    raise ValueError(f"unknown beta schedule {kind!r}; use cosine or vp")


__all__ = ["BetaSchedule", "cosine_beta_schedule", "make_schedule"]
