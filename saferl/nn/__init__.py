"""The shared torch base: MLPs, vectorised ensembles, actors, critics and small loss functions."""

from saferl.nn.actors import ActionScale, DeterministicActor, GaussianActor, TanhGaussianActor
from saferl.nn.critics import QEnsemble, ValueNet, aggregate, random_subset_min
from saferl.nn.ensemble import EnsembleLinear, EnsembleMLP
from saferl.nn.functional import expectile_loss, quantile_huber_loss, sinusoidal_embedding, soft_update
from saferl.nn.lagrange import PIDLagrangian, per_step_cost_threshold
from saferl.nn.mlp import MLP, activation, orthogonal_init_
from saferl.nn.normalizer import Normalizer
from saferl.nn.vae import ActionVAE

__all__ = [
    "ActionScale",
    "ActionVAE",
    "GaussianActor",
    "Normalizer",
    "PIDLagrangian",
    "TanhGaussianActor",
    "per_step_cost_threshold",
    "DeterministicActor",
    "EnsembleLinear",
    "EnsembleMLP",
    "MLP",
    "QEnsemble",
    "ValueNet",
    "activation",
    "orthogonal_init_",
    "aggregate",
    "expectile_loss",
    "quantile_huber_loss",
    "random_subset_min",
    "sinusoidal_embedding",
    "soft_update",
]
