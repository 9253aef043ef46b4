"""Helpers for task functions (barriers, dynamics) that take a batch of observations as numpy or torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def minimum(a: Any, b: Any) -> Any:
    """Element-wise min of two numpy arrays or two torch tensors."""
    if is_torch(a):
        import torch

        return torch.minimum(a, b)
    return np.minimum(a, b)


def planar_speed(vx: Any, vy: Any) -> Any:
    """sqrt(vx² + vy²), with an epsilon that keeps autograd finite at rest."""
    return (vx * vx + vy * vy + 1e-12) ** 0.5
