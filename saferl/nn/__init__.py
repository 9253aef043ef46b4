"""The shared torch base: MLPs, vectorised ensembles, actors, critics and small loss functions."""

from saferl.nn.actors import ActionScale, DeterministicActor
from saferl.nn.critics import QEnsemble, ValueNet, aggregate, random_subset_min
from saferl.nn.ensemble import EnsembleLinear, EnsembleMLP
from saferl.nn.functional import expectile_loss, quantile_huber_loss, soft_update
from saferl.nn.mlp import MLP, activation

__all__ = [
    "ActionScale",
    "DeterministicActor",
    "EnsembleLinear",
    "EnsembleMLP",
    "MLP",
    "QEnsemble",
    "ValueNet",
    "activation",
    "aggregate",
    "expectile_loss",
    "quantile_huber_loss",
    "random_subset_min",
    "soft_update",
]
