"""The shared torch base: MLPs, actors (critics, ensembles and diffusion models join as algorithms need them)."""

from saferl.nn.actors import ActionScale, DeterministicActor
from saferl.nn.mlp import MLP, activation

__all__ = ["ActionScale", "DeterministicActor", "MLP", "activation"]
