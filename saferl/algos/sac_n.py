"""SAC-N (An et al., "Uncertainty-Based Offline RL with Diversified Q-Ensemble", NeurIPS 2021); CORL defaults.

SAC whose critic is an N-member ensemble (one vectorised module) and whose target and actor both use the
minimum over all N members, which penalises actions the ensemble disagrees about:

    target = r + γ·(1 − done)·(min_i Q̄_i(s', a') − α·log π(a'|s')),   a' ~ π(s')
    actor  = E[α·log π(a|s) − min_i Q_i(s, a)],  a ~ π(s)
    α      tuned towards entropy −|A|
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch
from saferl.nn import QEnsemble, TanhGaussianActor, soft_update


@dataclass
class SACNConfig(AlgoConfig):
    batch_size: int = 256
    steps: int = 100_000
    hidden: tuple[int, ...] = (256, 256, 256)
    num_critics: int = 10
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 5e-3
    reward_scale: float = 1.0


def ensemble_td_loss(qs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over members of each member's MSE (CORL: ``((q - target) ** 2).mean(dim=1).sum(dim=0)``)."""
    return (qs - target.unsqueeze(0)).pow(2).mean(dim=1).sum()


@register("sac_n")
class SACN(Algorithm):
    Config = SACNConfig

    def __init__(self, config: SACNConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        o, a, h = ctx.obs_dim, ctx.act_dim, config.hidden
        self.actor = TanhGaussianActor(o, a, ctx.action_low, ctx.action_high, h).to(ctx.device)
        self.critic = QEnsemble(o, a, config.num_critics, h).to(ctx.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.nn.Parameter(torch.zeros((), device=ctx.device))
        self.target_entropy = -float(a)
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.actor_lr)
        self.optimizers["critic"] = adam(self.critic.parameters(), lr=config.critic_lr)
        self.optimizers["alpha"] = adam([self.log_alpha], lr=config.alpha_lr)

    def diversity_loss(self, batch: Batch) -> torch.Tensor | None:
        """Extra critic regulariser (EDAC overrides this); SAC-N has none."""
        return None

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        obs, act, next_obs = batch.observations, batch.actions, batch.next_observations

        # temperature, then actor (CORL's order)
        new_act, logp = self.actor(obs)
        loss_alpha = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        optimize(self.optimizers["alpha"], loss_alpha)
        alpha = self.log_alpha.exp().detach()
        q_new = self.critic(obs, new_act).amin(0)
        loss_pi = (alpha * logp - q_new).mean()
        optimize(self.optimizers["actor"], loss_pi)

        # critic ensemble
        with torch.no_grad():
            next_act, next_logp = self.actor(next_obs)
            q_next = self.critic_target(next_obs, next_act).amin(0) - alpha * next_logp
            target = batch.rewards * cfg.reward_scale + cfg.gamma * (1.0 - batch.terminals) * q_next
        loss_td = ensemble_td_loss(self.critic(obs, act), target)
        extra = self.diversity_loss(batch)
        loss_q = loss_td if extra is None else loss_td + extra
        optimize(self.optimizers["critic"], loss_q)
        soft_update(self.critic_target.parameters(), self.critic.parameters(), cfg.tau)
        metrics = {
            "critic_loss": loss_td.detach(),
            "actor_loss": loss_pi.detach(),
            "alpha": alpha,
            "q_policy_std": self.critic(obs, new_act.detach()).std(0).mean().detach(),
        }
        if extra is not None:
            metrics["diversity_loss"] = extra.detach()
        return metrics

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs, deterministic=deterministic, with_logprob=False)[0]
