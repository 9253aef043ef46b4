"""TD3+BC (Fujimoto & Gu, NeurIPS 2021); defaults from the paper and CORL's `td3_bc.py`.

    critic: twin Q towards r + γ·(1 − done)·min_i Q̄_i(s', clip(π̄(s') + clip(ε, −c, c)))   (TD3 target)
    actor (every `policy_freq` steps): maximise λ·Q_1(s, π(s)) − (π(s) − a)²,  λ = α / mean|Q_1(s, π(s))|

States are normalised with the dataset's mean and std, as in the paper.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch, OfflineDataset
from saferl.nn import DeterministicActor, Normalizer, QEnsemble, draws, soft_update


@dataclass
class TD3BCConfig(AlgoConfig):
    batch_size: int = 256
    steps: int = 100_000
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    alpha: float = 2.5  # trades the Q term against behaviour cloning
    policy_noise: float = 0.2  # target policy smoothing, in units of the action half-range
    noise_clip: float = 0.5
    policy_freq: int = 2
    normalize_obs: bool = True
    reward_scale: float = 1.0


def critic_loss(qs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the twin critics of their MSE to the shared target (TD3)."""
    return (qs - target.unsqueeze(0)).pow(2).mean(dim=1).sum()


def actor_loss(q_pi: torch.Tensor, pi: torch.Tensor, data_action: torch.Tensor, alpha: float) -> torch.Tensor:
    lmbda = alpha / q_pi.abs().mean().detach()
    return -lmbda * q_pi.mean() + F.mse_loss(pi, data_action)


Q1 = slice(0, 1)  # the first critic of the pair


@register("td3bc")
class TD3BC(Algorithm):
    Config = TD3BCConfig

    def __init__(self, config: TD3BCConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        o, a, h = ctx.obs_dim, ctx.act_dim, config.hidden
        self.obs_norm = Normalizer(o).to(ctx.device)
        self.actor = DeterministicActor(o, a, ctx.action_low, ctx.action_high, h).to(ctx.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = QEnsemble(o, a, 2, h).to(ctx.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.actor_lr)
        self.optimizers["critic"] = adam(self.critic.parameters(), lr=config.critic_lr)
        self.last_actor_loss = torch.zeros((), device=ctx.device)  # reported on steps without an actor update

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        if self.config.normalize_obs:
            self.obs_norm.fit(data.observations)
        return data

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.num_updates += 1
        obs, next_obs = self.obs_norm(batch.observations), self.obs_norm(batch.next_observations)
        act, reward = batch.actions, batch.rewards * cfg.reward_scale
        half = self.actor.scale.half_range

        with torch.no_grad():
            noise = (draws.randn_like(act) * cfg.policy_noise * half).clamp(
                -cfg.noise_clip * half, cfg.noise_clip * half
            )
            low = self.actor.scale.center - half
            next_act = torch.maximum(torch.minimum(self.actor_target(next_obs) + noise, low + 2 * half), low)
            target = reward + cfg.gamma * (1.0 - batch.terminals) * self.critic_target(next_obs, next_act).amin(0)
        loss_q = critic_loss(self.critic(obs, act), target)
        optimize(self.optimizers["critic"], loss_q)

        if self.num_updates % cfg.policy_freq == 0:  # delayed policy updates (TD3)
            pi = self.actor(obs)
            loss_pi = actor_loss(self.critic(obs, pi, members=Q1)[0], pi, act, cfg.alpha)  # Q₁ only, as TD3
            optimize(self.optimizers["actor"], loss_pi)
            soft_update(self.critic_target.parameters(), self.critic.parameters(), cfg.tau)
            soft_update(self.actor_target.parameters(), self.actor.parameters(), cfg.tau)
            self.last_actor_loss = loss_pi.detach()
        return {"critic_loss": loss_q.detach(), "actor_loss": self.last_actor_loss}

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(self.obs_norm(obs))
