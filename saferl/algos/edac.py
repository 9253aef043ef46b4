"""EDAC (An et al., NeurIPS 2021): SAC-N plus a penalty that diversifies the critics' action gradients,
so far fewer critics are needed (CORL defaults: 10 critics, η = 1).

    L_div = η / (N − 1) · Σ_{i≠j} cos(∇_a Q_i(s, a), ∇_a Q_j(s, a)),   a = dataset action
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saferl.algos.registry import register
from saferl.algos.sac_n import SACN, SACNConfig
from saferl.data import Batch


@dataclass
class EDACConfig(SACNConfig):
    eta: float = 1.0  # weight of the gradient-diversity penalty


def gradient_diversity(critic, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the summed pairwise cosine similarity of the members' ∇_a Q, / (N − 1)."""
    n = critic.ensemble_size
    actions = act.unsqueeze(0).expand(n, *act.shape).detach()
    states = obs.unsqueeze(0).expand(n, *obs.shape)

    def q_sum(a: torch.Tensor) -> torch.Tensor:  # Σ Q_i(s, a_i) over members and batch, member i sees a[i]
        return critic.net(torch.cat([states, a], dim=-1)).sum()

    # ∇_a as a function transform rather than autograd.grad on a leaf that requires grad: the same numbers,
    # differentiable w.r.t. the critic (create_graph), and it also runs under vmap (K seeds as one model)
    grads = torch.func.grad(q_sum)(actions)  # [N, B, A]
    grads = grads / (grads.norm(dim=-1, keepdim=True) + 1e-10)
    grads = grads.transpose(0, 1)  # [B, N, A]
    cosine = grads @ grads.transpose(1, 2)  # [B, N, N]
    off_diagonal = 1.0 - torch.eye(n, device=obs.device)
    return (cosine * off_diagonal).sum(dim=(1, 2)).mean() / (n - 1)


@register("edac")
class EDAC(SACN):
    Config = EDACConfig

    def diversity_loss(self, batch: Batch) -> torch.Tensor:
        return self.config.eta * gradient_diversity(self.critic, batch.observations, batch.actions)
