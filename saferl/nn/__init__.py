"""The shared torch base: MLPs, vectorised ensembles, actors, critics, per-step networks, the TRPO step and
small loss functions."""

from saferl.nn.actors import ActionScale, DeterministicActor, GaussianActor, TanhGaussianActor
from saferl.nn.critics import QEnsemble, ValueNet, aggregate, random_subset_min
from saferl.nn.ensemble import EnsembleLinear, EnsembleMLP
from saferl.nn.functional import expectile_loss, quantile_huber_loss, sinusoidal_embedding, soft_update
from saferl.nn.lagrange import PIDLagrangian, per_step_cost_threshold
from saferl.nn.mlp import MLP, activation, orthogonal_init_
from saferl.nn.normalizer import Normalizer
from saferl.nn.per_step import StepCritics, StepPolicies
from saferl.nn.trpo import conjugate_gradient, gaussian_kl, trpo_step
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
    "StepCritics",
    "StepPolicies",
    "ValueNet",
    "activation",
    "orthogonal_init_",
    "aggregate",
    "conjugate_gradient",
    "expectile_loss",
    "gaussian_kl",
    "quantile_huber_loss",
    "random_subset_min",
    "sinusoidal_embedding",
    "soft_update",
    "trpo_step",
]
