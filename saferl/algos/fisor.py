"""FISOR: Feasibility-guided Safe Offline RL (Zheng et al., ICLR 2024, arXiv 2401.10700).

Three decoupled parts, trained together on one offline dataset:

1. **Feasibility value** (Hamilton–Jacobi reachability). The constraint signal is h = +cost_scale where the
   step has a cost and −1 elsewhere; Q_h is trained towards the discounted safety Bellman target
   (1 − γ)·h + γ·max(h, V_h(s')) and V_h(s) by a *reversed* expectile of Q_h, i.e. a soft minimum over the
   dataset's actions. The feasible region is {s : V_h(s) ≤ 0}.
2. **Reward value** (IQL): V by an upper expectile of min(Q₁, Q₂), Q towards r + γ·V(s').
3. **Policy**: a DDPM diffusion actor trained by weighted behaviour cloning. Infeasible states imitate the
   actions that reduce infeasibility most (w = exp(κ_c·(V_h − Q_h))); feasible states imitate feasible
   actions by reward advantage (w = exp(κ_r·(Q − V))); feasible states' infeasible actions get w = 0.
   Acting draws N candidate actions and executes the one with the lowest Q_h.

Pseudo-code of one update (``update``), in the order of the authors' JAX code
(`ZhengYinan-AIR/FISOR:jaxrl5/agents/fisor/fisor.py`, master @2097e8b, cited below as "fisor.py")::

    for chunk in split(batch, actor_splits):           # 2 × 1024 of the 2048 sampled, fisor.py::update
        w = weights(Q̄(s,a), V(s), Q̄_h(s,a), V_h(s))   # target critics, current values
        θ ← θ − ∇ mean(w · ‖ε_θ(s, a_t, t) − ε‖²);  θ̄ ← EMA(θ)
    mini = batch[:critic_batch_size]                    # critics see the first 256 rows only
    V   ← expectile_τ(min Q̄ − V)                       # update_v
    Q   ← (Q − (r + γ·mask·V(s')))², Q̄ ← polyak(Q)     # update_q
    V_h ← reversed expectile_τ(max Q̄_h − V_h)          # update_vc
    Q_h ← (Q_h − HJ target)², Q̄_h ← polyak(Q_h)        # update_qc

Data preprocessing (``prepare``) as `jaxrl5/data/dsrl_datasets.py` + `launcher/examples/train_offline.py`:
rewards r ← r·T_max/(R_max − R_min), actions clipped to ±(1 − 1e-5), mask = 1 − (terminal or timeout).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch, OfflineDataset
from saferl.nn import ActionScale, QEnsemble, ValueNet, aggregate, expectile_loss, soft_update
from saferl.nn.diffusion import DiffusionSchedule, NoisePredictor, ddpm_sample, noise_prediction_loss
from saferl.nn.ensemble import EnsembleLinear
from saferl.nn.functional import repeat_rows, warmup_cosine_lr


@dataclass
class FISORConfig(AlgoConfig):
    """Defaults are the authors' DSRL configuration (`configs/train_config.py::fisor`, `fisor.py::create`)."""

    # -- training length and batches (train_config.py: max_steps 1e6+1, batch_size 2048) -----------------
    steps: int = 1_000_000
    batch_size: int = 2048  # sampled per update; the actor sees all of it, in `actor_splits` chunks
    actor_splits: int = 2  # fisor.py::update: two actor steps on the two 1024-halves
    critic_batch_size: int = 256  # fisor.py::update: all critics and values use batch[:256]
    # -- optimisation -----------------------------------------------------------------------------------
    actor_lr: float = 3e-4
    actor_lr_decay_steps: int = 3_000_000  # cosine decay to 0 over this many *actor* steps (0 = constant)
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005  # polyak rate of both target critics
    actor_tau: float = 0.001  # EMA rate of the sampling ("target score") model
    # -- reward critic (IQL) ----------------------------------------------------------------------------
    expectile: float = 0.9  # critic_hyperparam
    critic_hidden: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    # -- feasibility critic (HJ reachability) ---------------------------------------------------------
    feasibility_expectile: float = 0.9  # cost_critic_hyperparam, used reversed (weight on Q_h − V_h < 0)
    cost_scale: float = 25.0  # h = +cost_scale if cost > 0 else −1 (dsrl_datasets.py, train_config.py)
    # -- actor weights --------------------------------------------------------------------------------
    cost_temperature: float = 5.0
    reward_temperature: float = 3.0
    cost_weight_max: float = 150.0  # cost_ub
    reward_weight_max: float = 100.0
    # -- diffusion actor (LN-ResNet ε-network, VP schedule) -------------------------------------------
    diffusion_steps: int = 5  # T
    beta_min: float = 0.1
    beta_max: float = 10.0
    actor_hidden: int = 256
    actor_blocks: int = 3
    actor_dropout: float = 0.1
    actor_layer_norm: bool = True
    time_dim: int = 64
    time_hidden: tuple[int, ...] = (128, 128)
    # -- acting ---------------------------------------------------------------------------------------
    num_samples: int = 16  # N candidates per state; the one with the lowest Q_h is executed
    sample_temperature: float = 1.0
    clip_sampler: bool = True
    repeat_last_steps: int = 0  # M
    # Noise of act(obs) (deterministic=True, what evaluation calls): "fresh" draws new noise on every call from
    # the algorithm's own checkpointed stream, as the authors' evaluation does; "fixed" re-seeds it with
    # sample_seed on every call, so that the same batch of observations always gets the same actions.
    sample_noise: str = "fresh"
    sample_seed: int = 0
    # -- data preprocessing ---------------------------------------------------------------------------
    normalize_rewards: bool = True  # r ← r·T_max/(R_max − R_min)
    action_clip_eps: float = 1e-5
    timeouts_as_terminal: bool = True  # the authors' masks = 1 − (terminals | timeouts)


# ---------------------------------------------------------------------------------------------------
# the paper's equations as small functions (unit-tested in tests/test_fisor.py)


def constraint_signal(costs: torch.Tensor, cost_scale: float) -> torch.Tensor:
    """h(s, a) = +cost_scale where the step is unsafe (cost > 0), −1 where it is safe (dsrl_datasets.py)."""
    return torch.where(costs > 0, torch.full_like(costs, cost_scale), torch.full_like(costs, -1.0))


def hj_target(h: torch.Tensor, next_vh: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted HJ safety Bellman target (paper Eq. 5; fisor.py::update_qc, critic_type "hj"):
    (1 − γ)·h + γ·max(h, V_h(s')) for non-terminal transitions, h itself at terminals (mask = 0)."""
    nonterminal = (1.0 - gamma) * h + gamma * torch.maximum(h, next_vh)
    return mask * nonterminal + (1.0 - mask) * h


def reversed_expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """fisor.py::safe_expectile_loss with diff = Q_h − V_h: weight τ where diff < 0, 1 − τ elsewhere, so V_h
    tracks a *low* expectile of Q_h (≈ the best in-data action) without querying unseen actions."""
    return expectile_loss(diff, 1.0 - tau)  # expectile_loss puts 1 − tau on diff < 0


def actor_weights(
    q: torch.Tensor,
    v: torch.Tensor,
    qh: torch.Tensor,
    vh: torch.Tensor,
    cost_temperature: float,
    reward_temperature: float,
    cost_weight_max: float,
    reward_weight_max: float,
) -> torch.Tensor:
    """Feasibility-guided weights of the diffusion BC loss (paper Eq. 13; fisor.py::update_actor):

    * infeasible state (V_h > 0):                       clip(exp(κ_c·(V_h − Q_h)), 0, cost_weight_max)
    * feasible state, feasible action (V_h ≤ 0, Q_h ≤ 0): clip(exp(κ_r·(Q − V)), 0, reward_weight_max)
    * feasible state, infeasible action:                0
    """
    unsafe_state = vh > 0
    safe_pair = (vh <= 0) & (qh <= 0)
    # clamp before masking: exp may overflow to inf, and inf·0 would be NaN
    w_unsafe = torch.exp(cost_temperature * (vh - qh)).clamp(0.0, cost_weight_max)
    w_safe = torch.exp(reward_temperature * (q - v)).clamp(0.0, reward_weight_max)
    zero = torch.zeros_like(q)
    return torch.where(unsafe_state, w_unsafe, torch.where(safe_pair, w_safe, zero))


def cosine_lr_factor(step: int, decay_steps: int) -> float:
    """optax.cosine_decay_schedule(lr, decay_steps) / lr at optimizer step ``step`` (0-based)."""
    return warmup_cosine_lr(step, 1.0, 0, decay_steps)


def _xavier_init_(module: nn.Module) -> None:
    """jaxrl5's critics use xavier-uniform kernels and zero biases (`networks/mlp.py::default_init`)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, EnsembleLinear):
            bound = math.sqrt(6.0 / (m.in_features + m.out_features))
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def _rows(batch: Batch, sl: slice) -> Batch:
    return Batch(*(None if x is None else x[sl] for x in batch))


# ---------------------------------------------------------------------------------------------------


@register("fisor")
class FISOR(Algorithm):
    Config = FISORConfig

    def __init__(self, config: FISORConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        c, dev = config, ctx.device
        if c.actor_splits < 1 or c.batch_size < c.actor_splits:
            raise ValueError(f"batch_size ({c.batch_size}) must be at least actor_splits ({c.actor_splits}) >= 1")
        if c.sample_noise not in ("fresh", "fixed"):
            raise ValueError(f"sample_noise must be 'fresh' or 'fixed', got {c.sample_noise!r}")
        # diffusion actor ε_θ and its EMA copy θ̄, which is the one that samples actions (fisor.py::eval_actions)
        self.actor = NoisePredictor(
            ctx.obs_dim,
            ctx.act_dim,
            c.actor_hidden,
            c.actor_blocks,
            c.actor_dropout,
            c.actor_layer_norm,
            c.time_dim,
            c.time_hidden,
        ).to(dev)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False).eval()
        self.schedule = DiffusionSchedule(c.diffusion_steps, c.beta_min, c.beta_max).to(dev)
        self.scale = ActionScale(ctx.action_low, ctx.action_high).to(dev)
        # reward critics (IQL) and feasibility critics (HJ), each a 2-network ensemble with a polyak target
        self.critic = QEnsemble(ctx.obs_dim, ctx.act_dim, c.num_critics, c.critic_hidden).to(dev)
        self.value = ValueNet(ctx.obs_dim, c.critic_hidden).to(dev)
        self.safe_critic = QEnsemble(ctx.obs_dim, ctx.act_dim, c.num_critics, c.critic_hidden).to(dev)
        self.safe_value = ValueNet(ctx.obs_dim, c.critic_hidden).to(dev)
        for net in (self.critic, self.value, self.safe_critic, self.safe_value):
            _xavier_init_(net)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.safe_critic_target = copy.deepcopy(self.safe_critic).requires_grad_(False)

        # AdamW without weight decay in the authors' code (actor_weight_decay=None) is Adam
        self.optimizers["actor"] = adam(self.actor.parameters(), c.actor_lr)
        self.optimizers["critic"] = adam(self.critic.parameters(), c.critic_lr)
        self.optimizers["value"] = adam(self.value.parameters(), c.value_lr)
        self.optimizers["safe_critic"] = adam(self.safe_critic.parameters(), c.critic_lr)
        self.optimizers["safe_value"] = adam(self.safe_value.parameters(), c.value_lr)
        # optax.cosine_decay_schedule(actor_lr, decay_steps), counted in actor optimizer steps (2 per update)
        self.schedulers["actor"] = torch.optim.lr_scheduler.LambdaLR(
            self.optimizers["actor"], partial(cosine_lr_factor, decay_steps=c.actor_lr_decay_steps)
        )

        # Randomness owned by the algorithm (diffusion times, noise, dropout; stochastic acting) so that a
        # checkpoint restores it exactly. Seeded from the global RNG, which the training loop seeds.
        self._gen = torch.Generator(device=dev)
        self._gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self._act_gen = torch.Generator(device=dev)
        self._act_gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self._fixed_gen = torch.Generator(device=dev)

    def train(self, mode: bool = True) -> FISOR:
        super().train(mode)
        self.actor_target.eval()  # the sampling model never uses dropout (ddpm_sampler training=False)
        return self

    # -- data -------------------------------------------------------------------------------------------
    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        c = self.config
        rewards = data.rewards
        if c.normalize_rewards:
            # ds.normalize_returns(R_max, R_min, T_max): r / (R_max − R_min) · T_max, with the task's DSRL
            # constants; a dataset without task metadata uses its own episode-return range (same definition).
            task = self.ctx.task
            if task is not None:
                span = task.reward_max - task.reward_min
            else:
                returns = data.episode_rewards
                span = float(returns.max() - returns.min())
            if not span > 0:
                raise ValueError(f"cannot normalise rewards: R_max − R_min = {span:g}; set normalize_rewards=false")
            rewards = rewards * (self.ctx.max_episode_steps / span)
        # the diffusion model lives in [−1, 1]: map the env's box there, then keep off the boundary
        lim = 1.0 - c.action_clip_eps
        actions = self.scale.inverse(data.actions.to(self.scale.center.device)).to(data.actions.device)
        actions = actions.clamp(-lim, lim)
        return dataclasses.replace(data, actions=actions, rewards=rewards, _packed=None)

    def _mask(self, batch: Batch) -> torch.Tensor:
        done = batch.terminals > 0
        if self.config.timeouts_as_terminal:
            done = done | (batch.timeouts > 0)
        return 1.0 - done.float()

    # -- losses -----------------------------------------------------------------------------------------
    def _actor_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        obs, act = batch.observations, batch.actions
        with torch.no_grad():
            q = aggregate(self.critic_target(obs, act), "min")
            v = self.value(obs)
            qh = aggregate(self.safe_critic_target(obs, act), "max")  # pessimistic: max over the ensemble
            vh = self.safe_value(obs)
            w = actor_weights(
                q, v, qh, vh, c.cost_temperature, c.reward_temperature, c.cost_weight_max, c.reward_weight_max
            )
        loss = (w * noise_prediction_loss(self.actor, self.schedule, obs, act, self._gen)).mean()
        optimize(self.optimizers["actor"], loss)
        self.schedulers["actor"].step()
        soft_update(self.actor_target.parameters(), self.actor.parameters(), c.actor_tau)
        return {"actor_loss": loss.detach(), "actor_weight": w.mean(), "unsafe_state_frac": (vh > 0).float().mean()}

    def _value_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """IQL: V(s) ← upper expectile of min_i Q̄_i(s, a)."""
        with torch.no_grad():
            q = aggregate(self.critic_target(batch.observations, batch.actions), "min")
        v = self.value(batch.observations)
        loss = expectile_loss(q - v, self.config.expectile).mean()
        optimize(self.optimizers["value"], loss)
        return {"value_loss": loss.detach(), "v": v.detach().mean()}

    def _critic_step(self, batch: Batch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """IQL: Q(s, a) ← r + γ·mask·V(s') with the V just updated, then polyak."""
        c = self.config
        with torch.no_grad():
            target = batch.rewards + c.gamma * mask * self.value(batch.next_observations)
        qs = self.critic(batch.observations, batch.actions)
        loss = (qs - target).pow(2).mean()
        optimize(self.optimizers["critic"], loss)
        soft_update(self.critic_target.parameters(), self.critic.parameters(), c.tau)
        return {"critic_loss": loss.detach(), "q": qs.detach().mean()}

    def _safe_value_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """V_h(s) ← reversed expectile of max_i Q̄_h,i(s, a)."""
        with torch.no_grad():
            qh = aggregate(self.safe_critic_target(batch.observations, batch.actions), "max")
        vh = self.safe_value(batch.observations)
        loss = reversed_expectile_loss(qh - vh, self.config.feasibility_expectile).mean()
        optimize(self.optimizers["safe_value"], loss)
        return {"safe_value_loss": loss.detach(), "vh": vh.detach().mean()}

    def _safe_critic_step(self, batch: Batch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Q_h(s, a) ← HJ target with the V_h just updated, then polyak."""
        c = self.config
        h = constraint_signal(batch.costs, c.cost_scale)
        with torch.no_grad():
            target = hj_target(h, self.safe_value(batch.next_observations), mask, c.gamma)
        qhs = self.safe_critic(batch.observations, batch.actions)
        loss = (qhs - target).pow(2).mean()
        optimize(self.optimizers["safe_critic"], loss)
        soft_update(self.safe_critic_target.parameters(), self.safe_critic.parameters(), c.tau)
        return {"safe_critic_loss": loss.detach(), "qh": qhs.detach().mean()}

    # -- the update -------------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        metrics: dict[str, torch.Tensor] = {}
        # 1. actor: one step per chunk, weights from the critics as they are before this update
        size = batch.observations.shape[0] // c.actor_splits
        for i in range(c.actor_splits):
            metrics = self._actor_step(_rows(batch, slice(i * size, (i + 1) * size)))
        # 2. critics on the first critic_batch_size rows, in the authors' order V, Q, V_h, Q_h
        mini = _rows(batch, slice(0, c.critic_batch_size))
        mask = self._mask(mini)
        metrics.update(self._value_step(mini))
        metrics.update(self._critic_step(mini, mask))
        metrics.update(self._safe_value_step(mini))
        metrics.update(self._safe_critic_step(mini, mask))
        self.num_updates += 1
        return metrics

    # -- acting -----------------------------------------------------------------------------------------
    def _sample(self, rep_obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One action in [−1, 1] per row of ``rep_obs`` (each state repeated N times) → [B·N, act_dim]."""
        c = self.config
        return ddpm_sample(
            self.actor_target,
            self.schedule,
            rep_obs,
            generator,
            c.sample_temperature,
            c.clip_sampler,
            c.repeat_last_steps,
        )

    @torch.no_grad()
    def sample_candidates(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """N actions in [−1, 1] per state from the EMA diffusion model: [B, N, act_dim]."""
        n = self.config.num_samples
        return self._sample(repeat_rows(obs, n), generator).view(obs.shape[0], n, -1)

    @torch.no_grad()
    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """fisor.py::eval_actions with extract_method "minqc", batched over states: of N sampled candidates,
        execute the one with the lowest Q̄_h (max over the ensemble).

        The sampler is stochastic by nature. Its noise comes from the algorithm's own generator, which is
        seeded from the run's seed and saved in checkpoints, so evaluations are reproducible and a restored
        model acts exactly like the saved one. ``sample_noise="fixed"`` makes ``deterministic=True`` re-seed
        that noise on every call (same observations → same actions); ``deterministic=False`` always draws
        fresh noise.
        """
        obs = obs.float()
        if deterministic and self.config.sample_noise == "fixed":
            gen = self._fixed_gen
            gen.manual_seed(self.config.sample_seed)
        else:
            gen = self._act_gen
        b, n = obs.shape[0], self.config.num_samples
        rep = repeat_rows(obs, n)  # the sampler and the ranking both see each state N times
        flat = self._sample(rep, gen)  # [B·N, a], the N candidates of a state in consecutive rows
        qh = aggregate(self.safe_critic_target(rep, flat), "max").view(b, n)
        best = qh.argmin(dim=1)
        unit = flat.view(b, n, -1)[torch.arange(b, device=obs.device), best]
        return self.scale(unit)

    # -- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        state = super().state_dict(*args, **kwargs)
        state["rng"] = {
            "generator": self._gen.get_state(),
            "act_generator": self._act_gen.get_state(),
        }
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True):  # type: ignore[override]
        result = super().load_state_dict(state, strict=strict)
        extra = state["rng"]
        self._gen.set_state(extra["generator"].cpu())
        self._act_gen.set_state(extra["act_generator"].cpu())
        return result


@dataclass
class FISORCPUConfig(FISORConfig):
    """CPU-budget preset: the same algorithm and hyperparameters with smaller networks, batch and step count
    (a 10k-step run takes minutes on 2 cores; timings in benchmarks/fisor.md)."""

    steps: int = 10_000
    batch_size: int = 512  # actor: 2 × 256; critics: the first 256 rows, as in the full configuration
    actor_hidden: int = 64  # LN-ResNet width (inner 256)
    actor_blocks: int = 2
    critic_hidden: tuple[int, ...] = (128, 128)


@register("fisor_cpu")
class FISORCPU(FISOR):
    """FISOR with the CPU-budget defaults of `FISORCPUConfig` (`algo=fisor_cpu`)."""

    Config = FISORCPUConfig
