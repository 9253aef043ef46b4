"""Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022); defaults from CORL's `iql.py`.

    V  ← argmin E[ L₂^τ( min_i Q̄_i(s, a) − V(s) ) ]            expectile τ = 0.7, dataset actions only
    Q  ← argmin E[ (r + γ·(1 − done)·V(s') − Q_i(s, a))² ]
    π  ← argmax E[ exp(β·(Q̄(s, a) − V(s))) · log π(a|s) ]      weights clipped at 100 (CORL)

Never queries Q outside the dataset's actions. Gaussian policy with a state-independent σ (CORL), cosine
learning-rate decay for the actor over the offline run (CORL), Polyak target critics.

Online fine-tuning (``online_steps=``, CORL's `finetune/iql.py` protocol): the same update on one buffer that
holds the offline data followed by the online data, one update per env step; the actor's learning rate is
back at ``actor_lr`` and constant online (the offline cosine schedule ends at zero).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from saferl.algos.base import AlgoContext, Algorithm, O2OConfig, OnlineMode, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch, OfflineDataset
from saferl.nn import GaussianActor, QEnsemble, ValueNet, expectile_loss, soft_update


@dataclass
class IQLConfig(O2OConfig):
    batch_size: int = 256
    steps: int = 100_000
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    expectile: float = 0.7
    beta: float = 3.0  # inverse temperature of the advantage weights
    max_weight: float = 100.0
    actor_dropout: float = 0.0
    deterministic_actor: bool = False  # CORL's `iql_deterministic`: MSE to dataset actions instead of log-lik
    reward_scale: float = 1.0


def value_loss(v: torch.Tensor, target_q: torch.Tensor, expectile: float) -> torch.Tensor:
    return expectile_loss(target_q - v, expectile).mean()


def q_loss(qs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over ensemble members of each member's MSE to the shared target."""
    return (qs - target.unsqueeze(0)).pow(2).mean(dim=1).mean()


def awr_weights(advantage: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    return torch.exp(beta * advantage).clamp(max=max_weight)


def critic_step(algo: Algorithm, batch: Batch, reward: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """IQL's value and Q steps on ``algo.v``, ``algo.q``, ``algo.q_target`` (optimizers "v" and "q"); shared
    with FamO2O, whose critics are IQL's. Returns the advantage min Q̄(s, a) − V(s) (V before its step,
    detached) and the two losses."""
    cfg = algo.config
    obs, act = batch.observations, batch.actions
    # 1. V towards an upper expectile of the target Q over dataset actions
    with torch.no_grad():
        target_q = algo.q_target(obs, act).amin(0)
    v = algo.v(obs)
    advantage = (target_q - v).detach()
    loss_v = value_loss(v, target_q, cfg.expectile)
    optimize(algo.optimizers["v"], loss_v)

    # 2. Q towards r + γ·V(s'), V(s') from the value net (no max over actions)
    with torch.no_grad():
        target = reward + cfg.gamma * (1.0 - batch.terminals) * algo.v(batch.next_observations)
    loss_q = q_loss(algo.q(obs, act), target)
    optimize(algo.optimizers["q"], loss_q)
    soft_update(algo.q_target.parameters(), algo.q.parameters(), cfg.tau)
    return advantage, loss_v, loss_q


@register("iql")
class IQL(Algorithm):
    Config = IQLConfig
    online_mode = OnlineMode.OFF_POLICY

    def __init__(self, config: IQLConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        o, a, h = ctx.obs_dim, ctx.act_dim, config.hidden
        self.q = QEnsemble(o, a, 2, h).to(ctx.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = ValueNet(o, h).to(ctx.device)
        self.actor = GaussianActor(o, a, ctx.action_low, ctx.action_high, h, dropout=config.actor_dropout)
        self.actor.to(ctx.device)
        self.optimizers["q"] = adam(self.q.parameters(), lr=config.critic_lr)
        self.optimizers["v"] = adam(self.v.parameters(), lr=config.value_lr)
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.actor_lr)
        self.schedulers["actor"] = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizers["actor"], config.steps)
        self.online = False

    def start_online(self, offline: OfflineDataset) -> None:
        self.online = True
        for group in self.optimizers["actor"].param_groups:
            group["lr"] = self.config.actor_lr

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        obs, act = batch.observations, batch.actions
        # 1–2. V by expectile regression on min Q̄, Q towards r + γ·V(s')
        advantage, loss_v, loss_q = critic_step(self, batch, batch.rewards * cfg.reward_scale)

        # 3. advantage-weighted regression for the policy
        weights = awr_weights(advantage, cfg.beta, cfg.max_weight)
        if cfg.deterministic_actor:
            bc = F.mse_loss(self.actor(obs, deterministic=True), act, reduction="none").sum(-1)
        else:
            bc = -self.actor.log_prob(obs, act)
        loss_pi = (weights * bc).mean()
        optimize(self.optimizers["actor"], loss_pi)
        if not self.online:
            self.schedulers["actor"].step()
        return {
            "value_loss": loss_v.detach(),
            "q_loss": loss_q.detach(),
            "actor_loss": loss_pi.detach(),
            "advantage": advantage.mean(),
        }

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs, deterministic)
