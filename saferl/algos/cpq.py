"""Constraints Penalized Q-learning (Xu, Zhan & Zhu, AAAI 2022), with OSRL's `cpq_configs.py` defaults.

    cost critic  Q_c ← c + γ·(1 − done)·Q̄_c(s', a'), a' ~ π(s'), plus an out-of-distribution penalty
                 −α·(E[Q_c(s, a_ood)] − q̂), a_ood the policy samples whose VAE KL is in the top quarter
                 (they look unlike the data); α ∈ [0, α_max] by dual ascent on q̂ − E[Q_c(s, a_ood)]
    reward critic Q ← r + γ·(1 − done)·1[Q̄_c(s', a') ≤ q_thres]·Q̄(s', a')   (unsafe successors are worth 0)
    actor         maximise E[1[Q_c(s, π(s)) ≤ q_thres]·Q(s, π(s))]

q_thres = κ·(1 − γ^T)/((1 − γ)·T) and q̂ = 1.5·q_thres (`qc_scalar`). Deviations from OSRL, both to match
the paper: the OOD term is computed with the live cost critic, so it has a gradient (OSRL computes it under
no_grad, where it cannot act), and the OOD candidates are squashed policy actions (OSRL feeds pre-tanh
samples); the cost target is masked at terminals like the reward target.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch
from saferl.nn import ActionVAE, QEnsemble, TanhGaussianActor, draws, per_step_cost_threshold, soft_update


@dataclass
class CPQConfig(AlgoConfig):
    batch_size: int = 512
    steps: int = 100_000
    actor_hidden: tuple[int, ...] = (300, 300)
    critic_hidden: tuple[int, ...] = (400, 400)
    vae_hidden: tuple[int, ...] = (400, 400)
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-3
    vae_lr: float = 1e-3
    alpha_max: float = 1.0
    gamma: float = 0.99
    tau: float = 0.005
    beta: float = 0.5  # KL weight of the VAE
    num_samples: int = 10  # policy samples per state for the OOD penalty
    ood_quantile: float = 0.75
    qc_scalar: float = 1.5
    reward_scale: float = 0.1
    cost_scale: float = 1.0


@register("cpq")
class CPQ(Algorithm):
    Config = CPQConfig

    def __init__(self, config: CPQConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        o, a = ctx.obs_dim, ctx.act_dim
        self.actor = TanhGaussianActor(o, a, ctx.action_low, ctx.action_high, config.actor_hidden).to(ctx.device)
        self.critic = QEnsemble(o, a, 2, config.critic_hidden).to(ctx.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.cost_critic = QEnsemble(o, a, 2, config.critic_hidden).to(ctx.device)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.vae = ActionVAE(o, a, ctx.action_low, ctx.action_high, config.vae_hidden).to(ctx.device)
        self.q_threshold = per_step_cost_threshold(ctx.cost_limit, config.gamma, ctx.max_episode_steps)
        self.qc_hat = config.qc_scalar * self.q_threshold
        self.register_buffer("alpha", torch.zeros((), device=ctx.device))
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.actor_lr)
        self.optimizers["critic"] = adam(self.critic.parameters(), lr=config.critic_lr)
        self.optimizers["cost_critic"] = adam(self.cost_critic.parameters(), lr=config.critic_lr)
        self.optimizers["vae"] = adam(self.vae.parameters(), lr=config.vae_lr)

    def _ood_cost(self, obs: torch.Tensor) -> torch.Tensor:
        """E over n policy samples per state of 1[KL ≥ its 0.75-quantile]·Q_c (mean over states and samples):
        the cost the critic gives the actions the VAE finds least data-like.

        Only the selected quarter enters the critic (a fixed count, ``ood_count``: the entries at or above the
        linearly interpolated quantile, which `torch.quantile` and a mask would pick), since the others add
        0·Q_c; the critic's forward and backward then run on B·n/4 pairs instead of B·n.
        """
        cfg = self.config
        n, b = cfg.num_samples, obs.shape[0]
        rep = obs.repeat(n, 1)
        with torch.no_grad():  # n samples per state from one evaluation of the actor's distribution
            dist = self.actor.distribution(obs)
            pre_tanh = draws.rsample_normal(dist.loc.repeat(n, 1), dist.scale.repeat(n, 1))
            samples = self.actor.scale(torch.tanh(pre_tanh))
            mean, std = self.vae.encode(rep, samples)
            kl = ActionVAE.kl(mean, std).mean(-1)
            chosen = kl.topk(ood_count(n * b, cfg.ood_quantile)).indices
        qc = self.cost_critic(rep[chosen], samples[chosen]).amin(0)
        return qc.sum() / (n * b)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        obs, act, next_obs, done = batch.observations, batch.actions, batch.next_observations, batch.terminals

        loss_vae = self.vae.loss(obs, act, cfg.beta)
        optimize(self.optimizers["vae"], loss_vae)

        with torch.no_grad():
            next_act, _ = self.actor(next_obs, with_logprob=False)
            qc_next = self.cost_critic_target(next_obs, next_act).amin(0)
            q_next = self.critic_target(next_obs, next_act).amin(0)
            safe_next = (qc_next <= self.q_threshold).float()
            target_r = batch.rewards * cfg.reward_scale + cfg.gamma * (1.0 - done) * safe_next * q_next
            target_c = batch.costs * cfg.cost_scale + cfg.gamma * (1.0 - done) * qc_next
        loss_q = (self.critic(obs, act) - target_r).pow(2).mean(1).sum()
        optimize(self.optimizers["critic"], loss_q)

        qc_ood = self._ood_cost(obs)
        loss_qc = (self.cost_critic(obs, act) - target_c).pow(2).mean(1).sum() - self.alpha * (qc_ood - self.qc_hat)
        optimize(self.optimizers["cost_critic"], loss_qc)
        with torch.no_grad():  # dual ascent: α grows while OOD cost values sit below q̂
            self.alpha.add_(cfg.alpha_lr * (self.qc_hat - qc_ood.detach())).clamp_(0.0, cfg.alpha_max)

        pi, _ = self.actor(obs, with_logprob=False)
        q_pi = self.critic(obs, pi).amin(0)
        safe_pi = (self.cost_critic(obs, pi).amin(0) <= self.q_threshold).float().detach()
        loss_pi = -(safe_pi * q_pi).mean()
        optimize(self.optimizers["actor"], loss_pi)

        soft_update(self.critic_target.parameters(), self.critic.parameters(), cfg.tau)
        soft_update(self.cost_critic_target.parameters(), self.cost_critic.parameters(), cfg.tau)
        return {
            "vae_loss": loss_vae.detach(),
            "critic_loss": loss_q.detach(),
            "cost_critic_loss": loss_qc.detach(),
            "actor_loss": loss_pi.detach(),
            "alpha": self.alpha.clone(),
            "qc_ood": qc_ood.detach(),
            "safe_fraction": safe_pi.mean(),
        }

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs, deterministic=deterministic, with_logprob=False)[0]


def ood_count(n: int, quantile: float) -> int:
    """How many of n distinct values lie at or above their ``quantile`` as `torch.quantile` interpolates it
    (linearly, at position quantile·(n − 1) of the sorted values)."""
    return n - math.ceil(quantile * (n - 1))
