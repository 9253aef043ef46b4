"""Constraint machinery shared by the Lagrangian safe-RL methods."""

from __future__ import annotations

import torch
from torch import nn


def per_step_cost_threshold(cost_limit: float, gamma: float, episode_len: int) -> float:
    """The discounted per-step cost budget OSRL derives from an episode cost limit:
    κ·(1 − γ^T) / ((1 − γ)·T), i.e. the value of spending κ/T per step for T steps."""
    return cost_limit * (1.0 - gamma**episode_len) / (1.0 - gamma) / episode_len


class PIDLagrangian(nn.Module):
    """PID-controlled Lagrange multiplier (Stooke et al. 2020, as OSRL's `LagrangianPIDController`).

    error = mean(Q_c − threshold); the integral is kept non-negative, the derivative only counts increases,
    and λ = relu(Kp·relu(e) + Ki·I + Kd·relu(Δe)). Its state lives in buffers, so checkpoints restore it.
    """

    def __init__(self, kp: float, ki: float, kd: float, threshold: float):
        super().__init__()
        self.kp, self.ki, self.kd, self.threshold = kp, ki, kd, threshold
        self.register_buffer("error_old", torch.zeros(()))
        self.register_buffer("error_integral", torch.zeros(()))

    @torch.no_grad()
    def forward(self, qc: torch.Tensor) -> torch.Tensor:
        error = (qc - self.threshold).mean()
        error_diff = torch.relu(error - self.error_old)
        self.error_integral.copy_(torch.relu(self.error_integral + error))
        self.error_old.copy_(error)
        return torch.relu(self.kp * torch.relu(error) + self.ki * self.error_integral + self.kd * error_diff)
