"""COptiDICE (Lee et al., "COptiDICE: Offline Constrained RL via Stationary Distribution Correction
Estimation", ICLR 2022), with OSRL's `coptidice_configs.py` defaults.

Instead of a policy's values it learns the correction w(s, a) = d^π(s, a) / d^D(s, a):

    e_{λ,ν}(s, a, s') = r − λ·c + γ·(1 − done)·ν(s') − ν(s)
    w*(s, a)          = relu((f')⁻¹(e / α))                        (closed form for the f-divergence)
    ν   ← min (1 − γ)·E_{s₀}[ν(s₀)] + E_D[w*·e − α·f(w*)]
    λ   ← dual descent on λ·(ĉ − Ĉ(w)), ĉ = the cost threshold in d's units (below)
    χ, τ: a KL-ball (radius ε) upper bound Ĉ of the cost of w's distribution (the "cost upper bound" trick)
    π   ← argmax E_D[w*(s, a)·log π(a|s)]                          (weighted behaviour cloning)

`f` is the soft-χ² divergence (OSRL's default). Deviations from OSRL:

- The threshold. w·d^D estimates the *normalised* discounted occupancy d^π = (1 − γ)·Σ_t γ^t·Pr(s_t, a_t), so
  Ĉ(w) = E_D[w·c] is (1 − γ) times the discounted episode cost, and the paper's constraint E_{d^π}[c] ≤ ĉ and its
  authors' code (`deepmind/constrained_optidice`, `neural/learning.py`: ĉ = the `cost_thresholds` flag, 0.1,
  against the mean of w·c) compare quantities of that scale. An episode budget κ spent evenly, κ/T per step for
  T steps, gives ĉ = (1 − γ)·Σ_{t<T} γ^t·κ/T = κ·(1 − γ^T)/T. OSRL compares Ĉ with the discounted *sum*
  κ·(1 − γ^T)/((1 − γ)·T), 1/(1 − γ) = 100 times larger at γ = 0.99: the constraint then never binds on a
  dataset whose cost rate is below that, λ decays to 0 and the agent acts the same at every κ (measured on the
  reference PointRobot data at κ = 5, 10, 20 before this fix: λ 1.31 → 0.148 while Ĉ ≈ 0.076–0.089 sat far
  under OSRL's 2.2–8.7; benchmarks/reference.md).
- The policy's log-likelihood is the tanh-Gaussian one of the dataset action (OSRL evaluates the pre-tanh
  Gaussian at the action itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch, OfflineDataset
from saferl.nn import EnsembleMLP, TanhGaussianActor, draws, per_step_cost_threshold


@dataclass
class COptiDICEConfig(AlgoConfig):
    batch_size: int = 512
    steps: int = 100_000
    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 1e-4
    critic_lr: float = 1e-4
    scalar_lr: float = 1e-4
    gamma: float = 0.99
    alpha: float = 0.5  # strength of the f-divergence regulariser
    f_divergence: str = "softchi"  # softchi, chi2 or kl
    cost_ub_epsilon: float = 0.01  # KL radius of the cost upper bound (0 disables it)
    num_nu: int = 2
    num_chi: int = 2
    noise_scale: float = 0.1  # policy extraction: Gaussian noise on s and a, in units of their std (OSRL)
    reward_scale: float = 0.1
    cost_scale: float = 1.0


class DiceBatch(NamedTuple):
    batch: Batch
    is_initial: torch.Tensor  # 1.0 where the transition starts an episode


def f_divergence(kind: str):
    """(f, (f')⁻¹) for the supported divergences."""
    if kind == "chi2":
        return (lambda x: 0.5 * (x - 1) ** 2), (lambda y: y + 1)
    if kind == "softchi":
        return (
            lambda x: torch.where(x < 1, x * (torch.log(x + 1e-10) - 1) + 1, 0.5 * (x - 1) ** 2),
            lambda y: torch.where(y < 0, torch.exp(y.clamp(max=0.0)), y + 1),
        )
    if kind == "kl":
        return (lambda x: x * torch.log(x + 1e-10)), (lambda y: torch.exp(y - 1))
    raise ValueError(f"unknown f-divergence {kind!r}; use softchi, chi2 or kl")


def occupancy_cost_threshold(cost_limit: float, gamma: float, episode_len: int) -> float:
    """ĉ: the episode budget κ in the units of E_{d^π}[c], the cost under the normalised discounted occupancy:
    (1 − γ) times the discounted value of spending κ/T per step for T steps, κ·(1 − γ^T)/T."""
    return (1.0 - gamma) * per_step_cost_threshold(cost_limit, gamma, episode_len)


@register("coptidice")
class COptiDICE(Algorithm):
    Config = COptiDICEConfig

    def __init__(self, config: COptiDICEConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        o, a = ctx.obs_dim, ctx.act_dim
        self.actor = TanhGaussianActor(o, a, ctx.action_low, ctx.action_high, config.actor_hidden).to(ctx.device)
        self.nu = EnsembleMLP(config.num_nu, o, 1, config.critic_hidden).to(ctx.device)
        self.chi = EnsembleMLP(config.num_chi, o, 1, config.critic_hidden).to(ctx.device)
        # λ and τ are kept positive through softplus of free parameters initialised at 1 (OSRL)
        self.lmbda_raw = torch.nn.Parameter(torch.ones((), device=ctx.device))
        self.tau_raw = torch.nn.Parameter(torch.ones((), device=ctx.device))
        self.f, self.f_prime_inv = f_divergence(config.f_divergence)
        self.cost_threshold = occupancy_cost_threshold(ctx.cost_limit, config.gamma, ctx.max_episode_steps)
        self.register_buffer("obs_std", torch.ones(o, device=ctx.device))
        self.register_buffer("act_std", torch.ones(a, device=ctx.device))
        self.register_buffer("init_fraction", torch.ones((), device=ctx.device))
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.actor_lr)
        self.optimizers["nu"] = adam(self.nu.parameters(), lr=config.critic_lr)
        self.optimizers["chi"] = adam(self.chi.parameters(), lr=config.critic_lr)
        self.optimizers["lmbda"] = adam([self.lmbda_raw], lr=config.scalar_lr)
        self.optimizers["tau"] = adam([self.tau_raw], lr=config.scalar_lr)
        self._is_initial: torch.Tensor | None = None

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        self._is_initial = data.is_initial
        self.init_fraction.fill_(float(self._is_initial.mean()))
        self.obs_std.copy_(data.observations.std(0))
        self.act_std.copy_(data.actions.std(0))
        return data

    def sample(self, data: OfflineDataset, batch_size: int, generator: torch.Generator | None = None) -> DiceBatch:
        if self._is_initial is None:
            self.prepare(data)
        idx = data.sample_indices(batch_size, generator)
        return DiceBatch(data.batch(idx), self._is_initial[idx])

    def _value(self, net: EnsembleMLP, obs: torch.Tensor) -> torch.Tensor:
        return net(obs).squeeze(-1).amin(0)  # min over the ensemble, as OSRL's EnsembleQCritic.predict

    def _w(self, batch: Batch, lmbda: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ν(s), the advantage e_{λ,ν} and the closed-form correction w*."""
        cfg = self.config
        nu_s = self._value(self.nu, batch.observations)
        nu_next = self._value(self.nu, batch.next_observations)
        e = (
            batch.rewards * cfg.reward_scale
            - lmbda * batch.costs * cfg.cost_scale
            + cfg.gamma * (1.0 - batch.terminals) * nu_next
            - nu_s
        )
        return nu_s, e, F.relu(self.f_prime_inv(e / cfg.alpha))

    def update(self, dice: DiceBatch) -> dict[str, torch.Tensor]:
        cfg = self.config
        batch, is_init = dice
        cost = batch.costs * cfg.cost_scale
        lmbda = F.softplus(self.lmbda_raw)
        nu_s, e, w = self._w(batch, lmbda.detach())
        w_fixed = w.detach()

        # cost upper bound Ĉ: the worst cost of distributions within a KL ball around w·d^D (χ, τ)
        if cfg.cost_ub_epsilon > 0:
            tau = F.softplus(self.tau_raw)
            chi_s = self._value(self.chi, batch.observations)
            chi_next = self._value(self.chi, batch.next_observations)
            chi_init = chi_s * is_init / self.init_fraction
            ell = (1 - cfg.gamma) * chi_init + w_fixed * (cost + cfg.gamma * (1 - batch.terminals) * chi_next - chi_s)
            logits = ell / tau.detach()
            n = logits.shape[0]
            weights = torch.softmax(logits, 0) * n
            log_weights = torch.log_softmax(logits, 0) + math.log(n)
            kl = (weights * log_weights - weights + 1).mean()
            cost_estimate = (weights * w_fixed * cost).mean()
            optimize(self.optimizers["chi"], (weights * ell).mean())
            optimize(self.optimizers["tau"], tau * (cfg.cost_ub_epsilon - kl.detach()))
        else:
            kl = torch.zeros((), device=cost.device)
            cost_estimate = (w_fixed * cost).mean()

        nu_init = nu_s * is_init / self.init_fraction
        loss_nu = (1 - cfg.gamma) * nu_init.mean() + (w * e - cfg.alpha * self.f(w)).mean()
        optimize(self.optimizers["nu"], loss_nu)
        loss_lmbda = lmbda * (self.cost_threshold - cost_estimate.detach())
        optimize(self.optimizers["lmbda"], loss_lmbda)

        # policy extraction: w*-weighted maximum likelihood, with small input noise (OSRL)
        with torch.no_grad():
            _, _, w_new = self._w(batch, F.softplus(self.lmbda_raw))
            noisy_obs = batch.observations + draws.randn_like(batch.observations) * self.obs_std * cfg.noise_scale
            noisy_act = batch.actions + draws.randn_like(batch.actions) * self.act_std * cfg.noise_scale
        loss_pi = -(w_new * self.actor.log_prob(noisy_obs, noisy_act)).mean()
        optimize(self.optimizers["actor"], loss_pi)
        return {
            "nu_loss": loss_nu.detach(),
            "actor_loss": loss_pi.detach(),
            "lmbda": lmbda.detach(),
            "cost_estimate": cost_estimate.detach(),
            "kl": kl.detach(),
            "w_mean": w_fixed.mean(),
        }

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs, deterministic=deterministic, with_logprob=False)[0]
