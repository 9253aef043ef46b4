"""saferl: safe and offline control RL on gymnasium 1.x / mujoco / numpy 2 / torch.

The Python API (`saferl.api`) is loaded on first use, so ``import saferl`` stays light (it registers the
``saferl/*`` gymnasium ids and nothing more)::

    agent = saferl.make("bc_safe", "saferl/PointRobot/mixed-v0")
    agent.fit(steps=5000, run_dir="runs/bc-safe")
    saferl.evaluate(agent, "point-robot", episodes=20)
    policy = saferl.load_policy("runs/bc-safe")
"""

from __future__ import annotations

import importlib
from typing import Any

from saferl import envs  # noqa: F401  (registers the saferl/* gymnasium ids)

__version__ = "0.1.0"

_API = ("Agent", "Policy", "evaluate", "load_policy", "make")
_SUBPACKAGES = ("algos", "data", "evaluation", "nn", "runs", "safety")


def __getattr__(name: str) -> Any:
    # Lazy: torch, Hydra and the algorithms load only when the API or a subpackage is first used.
    if name in _API:
        return getattr(importlib.import_module("saferl.api"), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"saferl.{name}")
    raise AttributeError(f"module 'saferl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API, *_SUBPACKAGES})


__all__ = [*_API, "envs"]
