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
from typing import ClassVar

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
    """SAC-N; its steps are methods so that algorithms built on it (EDAC, RO2O) reuse them."""

    Config = SACNConfig
    log_std_min: ClassVar[float] = -20.0  # lower clip of the policy's log σ (SAC's)

    def __init__(self, config: SACNConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        o, a, h = ctx.obs_dim, ctx.act_dim, config.hidden
        low, high = ctx.action_low, ctx.action_high
        self.actor = TanhGaussianActor(o, a, low, high, h, log_std_min=self.log_std_min).to(ctx.device)
        self.critic = QEnsemble(o, a, config.num_critics, h).to(ctx.device)
        self.init_networks()
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.nn.Parameter(torch.zeros((), device=ctx.device))
        self.target_entropy = -float(a)
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.actor_lr)
        self.optimizers["critic"] = adam(self.critic.parameters(), lr=config.critic_lr)
        self.optimizers["alpha"] = adam([self.log_alpha], lr=config.alpha_lr)

    def init_networks(self) -> None:
        """Re-initialise actor and critic before the target copy is taken (RO2O: EDAC's init); SAC-N keeps
        PyTorch's defaults."""

    def diversity_loss(self, batch: Batch) -> torch.Tensor | None:
        """Extra critic regulariser (EDAC overrides this); SAC-N has none."""
        return None

    # -- the steps of one update ---------------------------------------------------------------------
    def temperature_step(self, logp: torch.Tensor) -> torch.Tensor:
        """α towards entropy −|A|: one step on −log α·(log π + target); returns the new α (detached)."""
        loss_alpha = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        optimize(self.optimizers["alpha"], loss_alpha)
        return self.log_alpha.exp().detach()

    def actor_loss(
        self, obs: torch.Tensor, new_act: torch.Tensor, logp: torch.Tensor, alpha: torch.Tensor
    ) -> torch.Tensor:
        """E[α·log π(a|s) − min_i Q_i(s, a)], a ~ π(s)."""
        return (alpha * logp - self.critic(obs, new_act).amin(0)).mean()

    @torch.no_grad()
    def min_target(
        self, next_obs: torch.Tensor, reward: torch.Tensor, terminals: torch.Tensor, alpha: torch.Tensor
    ) -> torch.Tensor:
        """r + γ·(1 − done)·(min_i Q̄_i(s', a') − α·log π(a'|s')),  a' ~ π(s')."""
        next_act, next_logp = self.actor(next_obs)
        q_next = self.critic_target(next_obs, next_act).amin(0) - alpha * next_logp
        return reward + self.config.gamma * (1.0 - terminals) * q_next

    def critic_step(self, loss_q: torch.Tensor) -> None:
        """One critic step, then Polyak averaging of the target ensemble."""
        optimize(self.optimizers["critic"], loss_q)
        soft_update(self.critic_target.parameters(), self.critic.parameters(), self.config.tau)

    @torch.no_grad()
    def q_policy_std(self, obs: torch.Tensor, new_act: torch.Tensor) -> torch.Tensor:
        """Ensemble disagreement at policy actions (a diagnostic)."""
        return self.critic(obs, new_act).std(0).mean()

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        obs, act = batch.observations, batch.actions

        # temperature, then actor (CORL's order)
        new_act, logp = self.actor(obs)
        alpha = self.temperature_step(logp)
        loss_pi = self.actor_loss(obs, new_act, logp, alpha)
        optimize(self.optimizers["actor"], loss_pi)

        # critic ensemble
        target = self.min_target(
            batch.next_observations, batch.rewards * self.config.reward_scale, batch.terminals, alpha
        )
        loss_td = ensemble_td_loss(self.critic(obs, act), target)
        extra = self.diversity_loss(batch)
        loss_q = loss_td if extra is None else loss_td + extra
        self.critic_step(loss_q)
        metrics = {
            "critic_loss": loss_td.detach(),
            "actor_loss": loss_pi.detach(),
            "alpha": alpha,
            "q_policy_std": self.q_policy_std(obs, new_act),
        }
        if extra is not None:
            metrics["diversity_loss"] = extra.detach()
        return metrics

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs, deterministic=deterministic, with_logprob=False)[0]
