"""Algorithms: one file each, registered under their CLI name in `REGISTRY`."""

from saferl.algos import bc  # noqa: F401  (registers bc_all, bc_safe)
from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm
from saferl.algos.registry import REGISTRY, UnknownAlgorithmError, get_algorithm, register

__all__ = [
    "AlgoConfig",
    "AlgoContext",
    "Algorithm",
    "REGISTRY",
    "UnknownAlgorithmError",
    "get_algorithm",
    "register",
]
