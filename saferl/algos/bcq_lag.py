"""BCQ-Lagrangian (OSRL's BCQ-L: BCQ, Fujimoto et al. 2019, with a PID Lagrangian on a cost critic).

    VAE     G(a|s) fitted to dataset actions; candidate actions a = ξ(s, G(s)) with a perturbation
            |ξ − a| ≤ φ·a_max
    critics reward and cost double-Q targets from n candidates at s':
            q = λ·min(Q̄_1, Q̄_2) + (1 − λ)·max(Q̄_1, Q̄_2), max over the candidates (BCQ's soft clipped double Q)
    actor   maximise min Q(s, ξ(s, G(s))) − λ_PID·(min Q_c(s, ξ) − q_thres)
            with q_thres = κ·(1 − γ^T)/((1 − γ)·T), λ_PID from the PID controller on mean Q_c − q_thres

Defaults from OSRL's `bcql_configs.py`. Deviations: the cost target is masked at terminal transitions like the
reward target (OSRL bootstraps the cost through terminals); both targets take their max over one shared set of
candidates (OSRL draws one set per target).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch
from saferl.nn import MLP, ActionVAE, PIDLagrangian, QEnsemble, per_step_cost_threshold, soft_update


@dataclass
class BCQLagConfig(AlgoConfig):
    batch_size: int = 512
    steps: int = 100_000
    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    vae_hidden: tuple[int, ...] = (400, 400)
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    vae_lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    phi: float = 0.05  # maximum perturbation, as a fraction of the action half-range
    lmbda: float = 0.75  # weight of the min in the soft clipped double-Q target
    beta: float = 0.5  # KL weight of the VAE
    num_samples: int = 10  # candidate actions per next state
    pid: tuple[float, float, float] = (0.1, 0.003, 0.001)
    reward_scale: float = 0.1
    cost_scale: float = 1.0


class PerturbationActor(nn.Module):
    """ξ(s, a) = clip(a + φ·a_max·tanh(MLP(s, a))) (BCQ), tanh hidden activations as in OSRL."""

    def __init__(self, obs_dim: int, act_dim: int, scale, hidden, phi: float):
        super().__init__()
        self.net = MLP(obs_dim + act_dim, act_dim, hidden, act="tanh")
        self.scale, self.phi = scale, phi

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        half = self.scale.half_range
        low = self.scale.center - half
        perturbed = action + self.phi * half * torch.tanh(self.net(torch.cat([obs, action], -1)))
        return torch.maximum(torch.minimum(perturbed, low + 2 * half), low)


def soft_clipped_double_q(q: torch.Tensor, lmbda: float) -> torch.Tensor:
    """BCQ's target mix of the two critics: λ·min + (1 − λ)·max; q is [2, ...]."""
    return lmbda * q.amin(0) + (1.0 - lmbda) * q.amax(0)


@register("bcq_lag")
class BCQLag(Algorithm):
    Config = BCQLagConfig

    def __init__(self, config: BCQLagConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        o, a = ctx.obs_dim, ctx.act_dim
        self.vae = ActionVAE(o, a, ctx.action_low, ctx.action_high, config.vae_hidden).to(ctx.device)
        self.actor = PerturbationActor(o, a, self.vae.scale, config.actor_hidden, config.phi).to(ctx.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = QEnsemble(o, a, 2, config.critic_hidden).to(ctx.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.cost_critic = QEnsemble(o, a, 2, config.critic_hidden).to(ctx.device)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.qc_threshold = per_step_cost_threshold(ctx.cost_limit, config.gamma, ctx.max_episode_steps)
        self.lagrangian = PIDLagrangian(*config.pid, threshold=self.qc_threshold).to(ctx.device)
        self.optimizers["vae"] = adam(self.vae.parameters(), lr=config.vae_lr)
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.actor_lr)
        self.optimizers["critic"] = adam(self.critic.parameters(), lr=config.critic_lr)
        self.optimizers["cost_critic"] = adam(self.cost_critic.parameters(), lr=config.critic_lr)

    def _candidates(self, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """n perturbed VAE actions per next state, with the states repeated to match ([B·n, ·] each). The reward
        and the cost target share them (OSRL draws a set for each: the same distribution, and sharing saves one
        decoder and actor pass over B·n states, a fifth of the update's FLOPs at the default sizes)."""
        rep = next_obs.repeat_interleave(self.config.num_samples, dim=0)
        return rep, self.actor_target(rep, self.vae.decode(rep))

    def _target(
        self, critic: QEnsemble, signal: torch.Tensor, candidates: tuple[torch.Tensor, torch.Tensor], done: torch.Tensor
    ) -> torch.Tensor:
        """signal + γ·(1 − done)·max over the candidates of the soft clipped double Q at s'."""
        cfg = self.config
        q = soft_clipped_double_q(critic(*candidates), cfg.lmbda)
        return signal + cfg.gamma * (1.0 - done) * q.view(signal.shape[0], cfg.num_samples).amax(1)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        obs, act, next_obs, done = batch.observations, batch.actions, batch.next_observations, batch.terminals

        loss_vae = self.vae.loss(obs, act, cfg.beta)
        optimize(self.optimizers["vae"], loss_vae)

        with torch.no_grad():
            candidates = self._candidates(next_obs)
            target_r = self._target(self.critic_target, batch.rewards * cfg.reward_scale, candidates, done)
            target_c = self._target(self.cost_critic_target, batch.costs * cfg.cost_scale, candidates, done)
        loss_q = (self.critic(obs, act) - target_r).pow(2).mean(1).sum()
        optimize(self.optimizers["critic"], loss_q)
        loss_qc = (self.cost_critic(obs, act) - target_c).pow(2).mean(1).sum()
        optimize(self.optimizers["cost_critic"], loss_qc)

        with torch.no_grad():
            candidates = self.vae.decode(obs)
        pi = self.actor(obs, candidates)
        q_pi = self.critic(obs, pi).amin(0)
        qc_pi = self.cost_critic(obs, pi).amin(0)
        multiplier = self.lagrangian(qc_pi.detach())
        loss_pi = -q_pi.mean() + (multiplier * (qc_pi - self.qc_threshold)).mean()
        optimize(self.optimizers["actor"], loss_pi)

        soft_update(self.critic_target.parameters(), self.critic.parameters(), cfg.tau)
        soft_update(self.cost_critic_target.parameters(), self.cost_critic.parameters(), cfg.tau)
        soft_update(self.actor_target.parameters(), self.actor.parameters(), cfg.tau)
        return {
            "vae_loss": loss_vae.detach(),
            "critic_loss": loss_q.detach(),
            "cost_critic_loss": loss_qc.detach(),
            "actor_loss": loss_pi.detach(),
            "lagrangian": multiplier,
            "qc_policy": qc_pi.mean().detach(),
        }

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        # OSRL acts with one perturbed VAE sample per state (not BCQ's arg-max over 10); deterministic
        # acting decodes the prior's mean z = 0 so that evaluation is reproducible
        z = torch.zeros(*obs.shape[:-1], self.vae.latent_dim, device=obs.device) if deterministic else None
        return self.actor(obs, self.vae.decode(obs, z))
