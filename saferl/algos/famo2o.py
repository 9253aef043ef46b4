"""FamO2O on IQL (Wang et al., "Train Once, Get a Family: State-Adaptive Balances for Offline-to-Online RL",
NeurIPS 2023); follows the authors' ``jax_iql/`` code (LeapLabTHU/FamO2O).

IQL's AWR inverse temperature β balances policy improvement (large β) against staying close to the data
(small β). FamO2O learns a whole family of policies, one per β, and a second policy that picks β per state:

    V   ← argmin E[ L₂^τ( min_i Q̄_i(s, a) − V(s) ) ]                       IQL, unchanged
    Q   ← argmin E[ (r + γ·(1 − done)·V(s') − Q_i(s, a))² ]                  IQL, unchanged
    π_u ← argmax E[ min(exp(β·(Q̄(s, a) − V(s))), 100) · log π_u(a | s, emb(β)) ]
              β ~ U[β_lo, β_hi] offline,  β ~ π_b(·|s) (no gradient) online
    π_b ← argmin E[ α_b·log π_b(β|s) − min_i Q̄_i(s, a) ],  β ~ π_b(·|s), a ~ π_u(·|s, emb(β)) (both rsampled)
    α_b ← argmin α_b·(H(π_b) − H̄),  H̄ = −0.5

π_u (the "universal model") is IQL's Gaussian actor on [s, emb(β)] with emb the 6-d sin/cos code of β;
π_b (the "balance model") is a 1-d tanh-Gaussian mapped affinely onto [β_lo, β_hi]. The action taken is
π_u(·|s, emb(β̂(s))) with β̂(s) the balance model's mean (tanh(μ(s)) mapped), deterministic at evaluation and
sampled in ``explore``. The balance model is trained in both phases (the authors' update always runs it);
offline it just does not feed π_u's β. Online: one buffer with the offline data followed by the online data,
sampled uniformly, one update per env step, no warm-up (``family_train_finetune.py``).

Defaults: the authors' run 1M offline steps then 1M online env steps (AntMaze); saferl's default is 100k
offline steps like its other algorithms.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Normal

from saferl.algos.base import AlgoContext, Algorithm, O2OConfig, OnlineMode, adam, optimize
from saferl.algos.iql import awr_weights
from saferl.algos.iql import critic_step as iql_critic_step
from saferl.algos.registry import register
from saferl.data import Batch
from saferl.nn import MLP, ActionScale, GaussianActor, QEnsemble, ValueNet, draws, sinusoidal_embedding
from saferl.nn.actors import tanh_log_det


@dataclass
class FamO2OConfig(O2OConfig):
    batch_size: int = 256
    steps: int = 100_000  # the authors pre-train for 1M steps (family_train_finetune.py)
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    balance_lr: float = 3e-4  # the authors reuse actor_lr for the balance model
    alpha_lr: float = 3e-4  # hierarchical_temp_lr
    init_alpha: float = 1.0  # hierarchical_init_temperature
    target_entropy: float = -0.5  # of the 1-d balance policy
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    expectile: float = 0.7  # IQL's locomotion value (the authors' AntMaze config: 0.9)
    # Range of the AWR inverse temperature β. The authors' AntMaze config uses (8, 14) with r − 1 rewards;
    # for locomotion-scale rewards we centre it on IQL's locomotion β = 3, which is also the authors'
    # FamilyLearner default (1, 5).
    beta_range: tuple[float, float] = (1.0, 5.0)
    embed_dim: int = 6  # family_sin_cos_d
    embed_base: float = 10_000.0  # family_sin_cos_n
    max_weight: float = 100.0
    reward_scale: float = 1.0
    # online phase (family_train_finetune.py): a 2M buffer initialised with the 1M offline transitions,
    # sampled uniformly, one update per env step, no warm-up
    online_buffer_size: int = 1_000_000
    online_offline_ratio: float = -1.0
    online_warmup: int = 0
    updates_per_step: float = 1.0


class BalanceModel(nn.Module):
    """π_b(β|s): u ~ N(μ(s), σ), β = β_lo + (β_hi − β_lo)·(tanh(u) + 1)/2.

    As the authors' ``NormalTanhPolicy(action_dim=1, state_dependent_std=False, tanh_squash_distribution=True)``:
    a state-independent log σ (init 0, clipped to [−10, 2]); log-probabilities include the tanh Jacobian but
    not the constant of the affine map, as in their code.
    """

    def __init__(self, obs_dim: int, beta_range: Sequence[float], hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = MLP(obs_dim, 1, hidden)
        self.log_std = nn.Parameter(torch.zeros(1))
        self.scale = ActionScale([beta_range[0]], [beta_range[1]])

    def distribution(self, obs: torch.Tensor) -> Normal:
        """The pre-tanh Gaussian."""
        return Normal(self.net(obs), self.log_std.clamp(-10.0, 2.0).exp())

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """β ``[B]`` (reparameterised sample, or the mapped tanh(μ) when deterministic) and log π_b(β|s) ``[B]``."""
        dist = self.distribution(obs)
        pre_tanh = dist.mean if deterministic else draws.rsample_normal(dist.loc, dist.scale)
        logp = dist.log_prob(pre_tanh).sum(-1) - tanh_log_det(pre_tanh)
        return self.scale(torch.tanh(pre_tanh)).squeeze(-1), logp


def universal_awr_loss(
    log_prob: torch.Tensor, advantage: torch.Tensor, beta: torch.Tensor, max_weight: float
) -> torch.Tensor:
    """AWR with a per-sample inverse temperature β (family_actor.py ``family_update``); weights clipped at 100."""
    return -(awr_weights(advantage, beta, max_weight) * log_prob).mean()


def balance_loss(log_prob: torch.Tensor, q: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """SAC-style objective of the balance model (family_actor.py ``family_hierarchical_update``)."""
    return (alpha * log_prob - q).mean()


def temperature_loss(log_alpha: torch.Tensor, entropy: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """α·(H − H̄) with α = exp(log α), as family_temperature.py (not SAC's log α·(…))."""
    return log_alpha.exp() * (entropy - target_entropy)


@register("famo2o")
class FamO2O(Algorithm):
    Config = FamO2OConfig
    online_mode = OnlineMode.OFF_POLICY

    def __init__(self, config: FamO2OConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        o, a, h = ctx.obs_dim, ctx.act_dim, config.hidden
        lo, hi = config.beta_range
        if not lo < hi:
            raise ValueError(f"famo2o needs beta_range = (low, high) with low < high, got {config.beta_range}")
        self.q = QEnsemble(o, a, 2, h).to(ctx.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = ValueNet(o, h).to(ctx.device)
        # universal model π_u(a|s, β): IQL's Gaussian actor (tanh mean, state-independent σ) on [s, emb(β)]
        self.actor = GaussianActor(o + config.embed_dim, a, ctx.action_low, ctx.action_high, h).to(ctx.device)
        self.balance = BalanceModel(o, config.beta_range, h).to(ctx.device)
        self.log_alpha = nn.Parameter(torch.tensor(float(config.init_alpha), device=ctx.device).log())
        self.optimizers["q"] = adam(self.q.parameters(), lr=config.critic_lr)
        self.optimizers["v"] = adam(self.v.parameters(), lr=config.value_lr)
        # no learning-rate decay: the authors' fine-tuning config sets opt_decay_schedule = None
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.actor_lr)
        self.optimizers["balance"] = adam(self.balance.parameters(), lr=config.balance_lr)
        self.optimizers["alpha"] = adam([self.log_alpha], lr=config.alpha_lr)

    def universal_input(self, obs: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """[s, emb(β)], the universal model's input."""
        emb = sinusoidal_embedding(beta, self.config.embed_dim, self.config.embed_base)
        return torch.cat([obs, emb.to(obs.dtype)], dim=-1)

    def sample_beta(self, obs: torch.Tensor, online: bool) -> torch.Tensor:
        """β for the universal model's AWR step: uniform offline, a π_b sample (no gradient) online."""
        if online:
            with torch.no_grad():
                return self.balance(obs)[0]
        lo, hi = self.config.beta_range
        return draws.rand(obs.shape[0], like=obs) * (hi - lo) + lo

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._update(batch, online=False)

    def online_update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._update(batch, online=True)

    def _update(self, batch: Batch, online: bool) -> dict[str, torch.Tensor]:
        cfg = self.config
        obs, act = batch.observations, batch.actions
        # 1–2. IQL's V and Q steps, unchanged; π_u's advantage uses V before its step, as iql.py (CORL) — the
        # authors' code uses the stepped V
        advantage, loss_v, loss_q = iql_critic_step(self, batch, batch.rewards * cfg.reward_scale)

        # 3. balance model and its temperature: trained in both phases, before π_u moves, as the authors do
        #    (their order is V, π_b, α, π_u, Q; IQL's V-then-Q block is kept intact here)
        balance_metrics = self.update_balance(obs)

        # 4. universal model: AWR whose inverse temperature is β itself, one β per sample
        beta = self.sample_beta(obs, online)
        log_prob = self.actor.log_prob(self.universal_input(obs, beta), act)
        loss_pi = universal_awr_loss(log_prob, advantage, beta, cfg.max_weight)
        optimize(self.optimizers["actor"], loss_pi)
        return {
            "value_loss": loss_v.detach(),
            "q_loss": loss_q.detach(),
            "actor_loss": loss_pi.detach(),
            "advantage": advantage.mean(),
            "beta_train": beta.mean(),
            **balance_metrics,
        }

    def update_balance(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step of π_b (maximise the target Q of π_u's action, reparameterised through β) and of α_b."""
        alpha = self.log_alpha.exp().detach()
        beta, logp = self.balance(obs)
        # a = mean + σ·ε: the gradient reaches π_b through emb(β) → mean; π_u itself is not stepped here (its
        # stray gradients are cleared by its own optimizer step). No clip to the action box, as the authors.
        dist = self.actor.distribution(self.universal_input(obs, beta))
        action = draws.rsample_normal(dist.loc, dist.scale)
        q = self.q_target(obs, action).amin(0)
        loss_b = balance_loss(logp, q, alpha)
        optimize(self.optimizers["balance"], loss_b)

        entropy = -logp.detach().mean()
        loss_alpha = temperature_loss(self.log_alpha, entropy, self.config.target_entropy)
        optimize(self.optimizers["alpha"], loss_alpha)
        return {
            "balance_loss": loss_b.detach(),
            "balance_q": q.detach().mean(),
            "balance_entropy": entropy,
            "balance_alpha": alpha,
            "beta_balance": beta.detach().mean(),
        }

    def policy_beta(self, obs: torch.Tensor) -> torch.Tensor:
        """The balance model's deterministic β(s) used for acting."""
        return self.balance(obs, deterministic=True)[0]

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        # β is always the balance model's mean (family_learner.py sample_actions); only π_u's draw is random
        return self.actor(self.universal_input(obs, self.policy_beta(obs)), deterministic)
