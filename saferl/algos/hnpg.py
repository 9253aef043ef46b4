"""HNPG, Hybrid Natural Policy Gradient (Zhou, Sekhari, Song & Sun, "Offline Data Enhanced On-Policy Policy
Gradient with Provable Guarantees", ICLR 2024). Defaults and every step below follow the authors' `trpo.py`,
`models.py`, `utils.py` and `main.py` (`YifeiZhou02/HNPG`, flags ``FINITE = HYBRID = True``).

Finite horizon H with one policy π_h and one critic Q_h per step h, γ = 1 (the code sets ``self.gamma = 1``).
One iteration, given an on-policy rollout of ≥ ``rollout_steps`` env steps (whole episodes):

1. G_t = Σ_{t' ≥ t} r_t' (Monte-Carlo return-to-go); for every h, n_off = N_on / H offline transitions at
   step h, drawn with replacement.
2. Hybrid fitted policy evaluation (HPE), backwards h = H−1 … 0, ``critic_steps`` = 30 Adam steps (lr 3e-4,
   a fresh optimiser every time, as ``update_q``) on

       L_h = mean_on (Q_h(s, a) − G)²  +  mean_off (Q_h(s, a) − y)²,
       y   = r + Q_{h+1}(s', a'),  a' ~ π_{h+1}(s')        (y = r at h = H − 1; one sample, no target net)

3. V_h(s) = mean of Q_h(s, a) over 10 draws a ~ π_h(s). On-policy advantages: GAE(γ = 1, λ = 0.97) with V.
   Offline advantages: A = Q_h(s, a) − V_h(s) with a fresh a ~ π_h(s) (the dataset action is not used).
4. One TRPO step per h on the on-policy and offline (s, a, A) together:

       max_θ  mean A·π_θ(a|s)/π_old(a|s)   s.t.   mean KL(π_old(·|s) ‖ π_θ(·|s)) ≤ δ = 0.01

   natural-gradient direction x from 10 conjugate-gradient steps on (F + 0.1·I)x = −∇L, scaled so that
   ½ xᵀFx = δ, then up to 10 halvings until the surrogate improves by more than 10 % of its linear prediction.

``hybrid=False`` drops the offline data from 1–4 (``HYBRID = False``): on-policy NPG/TRPO with a Monte-Carlo
fitted critic, the baseline whose sample complexity HNPG improves on.

Networks (``models.py``): π_h = N(μ_h(s), diag σ_h²), μ_h an obs→16→16 tanh MLP whose output layer starts
×0.1 (bias 0), state-independent log σ_h starting at 0; Q_h an (obs+act)→64→64 tanh MLP, output layer ×0.1.
The H per-step networks are one `EnsembleMLP` each (member h = step h, `saferl.nn.per_step`): every batched
computation runs all steps at once on a ``[H, n, ·]`` layout (samples grouped by step, `saferl.data.steps`),
the TRPO step included (`saferl.nn.trpo`: the Fisher matrix is block-diagonal over h, so conjugate gradient
and the line search run per row of a ``[H, n_params]`` matrix). Only the critic fit loops over h, because
Q_h's offline targets need the freshly fitted Q_{h+1}.

Differences from the authors' code (none changes an iteration on the lock except the first, which saferl's
online loop forces, and the KL guard, which rarely binds):

* The online loop clips actions to the env's box before stepping and storing them (the authors' env takes the
  raw Gaussian sample). Log-likelihoods are therefore those of the *clipped* Gaussian (Fujita & Maeda, ICML
  2018, "Clipped Action Policy Gradient"): the density inside the box, the tail mass Φ at a bound. This is the
  exact likelihood of what was executed; inside the box it is the authors' Gaussian density. Critics are
  evaluated at clipped policy actions for the same reason.
* The line search also rejects steps whose KL exceeds 1.5·δ (OpenAI baselines' TRPO check); the authors'
  accepts on surrogate improvement alone.
* Offline TD targets are multiplied by (1 − terminal), so tasks whose episodes can end before H are handled;
  on the lock only the last step is terminal, where the authors use y = r anyway.
* The policy needs the step index: `explore` gets it from the loop, `episodic_policy()` counts steps for
  evaluation, and `policy(obs)` reads it from the observation when the task says how (``TaskSpec.timestep``,
  the lock), falling back to π_0 otherwise.

HNPG has no offline pre-training (``steps = 0``). `update` (the generic offline step, for ``steps > 0`` and
the smoke test) is one HPE TD step (a persistent Adam) on an offline batch stratified over steps, then one TRPO
step on the offline advantages: what an iteration does with the offline half of its data. Per-step networks
only make sense for short episodes: `check_online` refuses tasks longer than ``max_horizon`` = 100 steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from saferl.algos.base import AlgoContext, Algorithm, O2OConfig, OnlineMode, adam, optimize
from saferl.algos.registry import register
from saferl.data import OfflineDataset
from saferl.data.steps import StepGroups, StepIndex, concat_groups, episode_timesteps, group_by_step, offline_groups
from saferl.nn import draws
from saferl.nn.per_step import StepCritics, StepPolicies
from saferl.nn.trpo import gaussian_kl, trpo_step

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class HNPGConfig(O2OConfig):
    batch_size: int = 64  # `update` only: offline transitions per batch, spread evenly over the H steps
    steps: int = 0  # HNPG has no offline pre-training
    rollout_steps: int = 1000  # on-policy env steps per iteration (authors' --batch-size)
    # Share of offline samples in each step's critic and actor batches: the authors draw N_on / H offline
    # transitions per step, as many as on-policy ones (0.5); the replay-buffer fields are unused (on-policy).
    online_offline_ratio: float = 0.5
    hybrid: bool = True  # False: no offline data at all (the NPG baseline)
    policy_hidden: tuple[int, ...] = (16, 16)
    critic_hidden: tuple[int, ...] = (64, 64)
    critic_lr: float = 3e-4
    critic_steps: int = 30  # Adam steps per h and iteration, fresh optimiser each time
    gae_lambda: float = 0.97  # authors' --tau
    value_samples: int = 10  # policy draws averaged in V_h(s) (QValue.get_value)
    max_kl: float = 0.01
    damping: float = 0.1
    cg_iters: int = 10
    backtracks: int = 10
    accept_ratio: float = 0.1
    kl_tolerance: float = 1.5  # line-search steps with KL > kl_tolerance·max_kl are rejected (baselines)
    max_horizon: int = 100  # per-step networks: HNPG refuses tasks with longer episodes


# -- distributions -----------------------------------------------------------------------------------------
def clipped_gaussian_log_prob(
    mean: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """log-likelihood of ``action`` = clip(u, low, high), u ~ N(mean, σ²), summed over action dims: the
    Gaussian density inside the box and log Φ of the tail at a bound (clipped action policy gradient)."""
    std = log_std.exp()
    density = -0.5 * ((action - mean) / std).pow(2) - log_std - LOG_SQRT_2PI
    below = torch.special.log_ndtr((low - mean) / std)
    above = torch.special.log_ndtr((mean - high) / std)
    logp = torch.where(action <= low, below, torch.where(action >= high, above, density))
    return logp.sum(-1)


# -- returns and advantages --------------------------------------------------------------------------------
def returns_and_gae(
    rewards: torch.Tensor, values: torch.Tensor, episode: torch.Tensor, timesteps: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return-to-go and GAE(γ = 1, λ) of whole episodes, flat [N] in and out (the authors' ``get_advantage``;
    the value after an episode's last step is 0). Vectorised over episodes, a loop over time."""
    num_episodes = int(episode.max()) + 1
    length = int(timesteps.max()) + 1
    r = rewards.new_zeros(num_episodes, length + 1)
    v = rewards.new_zeros(num_episodes, length + 1)
    r[episode, timesteps] = rewards
    v[episode, timesteps] = values
    ret = torch.zeros_like(r)
    adv = torch.zeros_like(r)
    for t in range(length - 1, -1, -1):  # padded slots hold r = V = 0, so they add nothing
        ret[:, t] = r[:, t] + ret[:, t + 1]
        delta = r[:, t] + v[:, t + 1] - v[:, t]
        adv[:, t] = delta + lam * adv[:, t + 1]
    return ret[episode, timesteps], adv[episode, timesteps]


# -- the algorithm ---------------------------------------------------------------------------------------------
class _StepCountingPolicy:
    """`saferl.evaluation.EpisodicPolicy` that feeds HNPG's per-step policies the step index of each episode."""

    def __init__(self, algo: HNPG, deterministic: bool):
        self.algo, self.deterministic = algo, deterministic
        self.t = np.zeros(0, dtype=np.int64)

    def reset(self, num_episodes: int) -> None:
        self.t = np.zeros(num_episodes, dtype=np.int64)

    def act(self, obs: np.ndarray, episode_ids: np.ndarray) -> np.ndarray:
        algo = self.algo
        with torch.inference_mode():
            obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=algo.ctx.device)
            t = torch.as_tensor(self.t[episode_ids], device=algo.ctx.device)
            action = algo.policy_at(obs_t, t, self.deterministic)
        self.t[episode_ids] += 1
        return action.float().cpu().numpy()

    def observe(self, episode_ids: np.ndarray, rewards: np.ndarray, costs: np.ndarray) -> None:
        pass


@register("hnpg")
class HNPG(Algorithm):
    Config = HNPGConfig
    online_mode = OnlineMode.ON_POLICY
    batched_seeds = False  # no offline pre-training to batch, and its TRPO step calls autograd.grad (saferl.nn.trpo)

    def __init__(self, config: HNPGConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        if not 0.0 <= config.online_offline_ratio < 1.0:
            raise ValueError(
                f"HNPG's online_offline_ratio is the offline share of each step's batch, in [0, 1); got "
                f"{config.online_offline_ratio}"
            )
        self.horizon = int(ctx.max_episode_steps)
        o, a, h = ctx.obs_dim, ctx.act_dim, self.horizon
        self.pi = StepPolicies(h, o, a, config.policy_hidden).to(ctx.device)
        self.q = StepCritics(h, o, a, config.critic_hidden).to(ctx.device)
        # only `update` keeps an optimiser; online iterations use a fresh one per step h (the authors')
        self.optimizers["critic"] = adam(self.q.parameters(), lr=config.critic_lr)
        for name, bound in (("action_low", ctx.action_low), ("action_high", ctx.action_high)):
            self.register_buffer(name, torch.as_tensor(bound, dtype=torch.float32, device=ctx.device), persistent=False)
        task = ctx.task
        self._read_timestep = task.timestep if task is not None else None
        self.offline: OfflineDataset | None = None
        self._offline_index: StepIndex | None = None
        self._indexed: OfflineDataset | None = None  # the dataset `sample` draws from

    # -- small pieces -----------------------------------------------------------------------------------
    def clip(self, action: torch.Tensor) -> torch.Tensor:
        """What the env executes: the online loop clips every action to the box."""
        return torch.maximum(torch.minimum(action, self.action_high), self.action_low)

    def log_prob(self, mean: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return clipped_gaussian_log_prob(mean, log_std, action, self.action_low, self.action_high)

    def state_value(self, obs: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """V_h(s) = mean of Q_h(s, a) over ``value_samples`` draws a ~ π_h(s); ``[H, n, obs]`` → ``[H, n]``."""
        m, n = obs.shape[0], obs.shape[1]
        k = self.config.value_samples
        rep = obs.repeat(1, k, 1)
        q = self.q(rep, self.clip(self.pi.sample(rep, members)), members)
        return q.reshape(m, k, n).mean(1)

    def next_values(self, groups: StepGroups) -> torch.Tensor:
        """Q_{h+1}(s', a' ~ π_{h+1}(s')) for every row h (0 for h = H − 1 and at terminals), ``[H, n]``."""
        nxt = groups.next_observations[:-1]
        members = slice(1, self.horizon)
        q = self.q(nxt, self.clip(self.pi.sample(nxt, members)), members)
        return torch.cat([q, q.new_zeros(1, q.shape[1])]) * groups.not_done

    def policy_step(
        self, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One TRPO step of every π_h on its step's ``[H, n]`` samples (weights: per-step means)."""
        with torch.no_grad():
            mean_old, log_std_old = self.pi(obs)
            log_std_old = log_std_old.clone()  # a view of the parameter, which the step changes in place
            logp_old = self.log_prob(mean_old, log_std_old, actions)

        def loss_fn() -> torch.Tensor:
            mean, log_std = self.pi(obs)
            ratio = torch.exp(self.log_prob(mean, log_std, actions) - logp_old)
            return -(weights * advantages * ratio).sum(1)

        def kl_fn() -> torch.Tensor:
            mean, log_std = self.pi(obs)
            return (weights * gaussian_kl(mean_old, log_std_old, mean, log_std)).sum(1)

        cfg = self.config
        return trpo_step(
            list(self.pi.parameters()),
            loss_fn,
            kl_fn,
            max_kl=cfg.max_kl,
            damping=cfg.damping,
            cg_iters=cfg.cg_iters,
            backtracks=cfg.backtracks,
            accept_ratio=cfg.accept_ratio,
            kl_tolerance=cfg.kl_tolerance,
        )

    def offline_advantages(self, groups: StepGroups) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh actions a ~ π_h(s) on offline states and A = Q_h(s, a) − V_h(s) (the dataset action unused)."""
        with torch.no_grad():
            actions = self.clip(self.pi.sample(groups.observations))
            adv = self.q(groups.observations, actions) - self.state_value(groups.observations)
        return actions, adv * groups.mask

    # -- offline step (generic contract) ----------------------------------------------------------------
    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        self._index(data)
        return data

    def _index(self, data: OfflineDataset) -> StepIndex:
        if self._indexed is not data or self._offline_index is None:
            self._offline_index, self._indexed = StepIndex(data, self.horizon), data
        return self._offline_index

    def sample(self, data: OfflineDataset, batch_size: int, generator: torch.Generator | None = None) -> StepGroups:
        """``ceil(batch_size / H)`` offline transitions of every step, laid out ``[H, k]``."""
        k = -(-batch_size // self.horizon)
        index, mask = self._index(data).sample(k, generator)
        return offline_groups(data, index, mask)

    def update(self, batch: StepGroups) -> dict[str, torch.Tensor]:
        """One TD step of every Q_h on offline data (HPE's offline term), then one TRPO step of every π_h on
        the offline advantages (see the module docstring)."""
        with torch.no_grad():
            target = batch.targets + self.next_values(batch)
        w = batch.weights
        loss_q = (w * (self.q(batch.observations, batch.actions) - target).pow(2)).sum(1).sum()
        optimize(self.optimizers["critic"], loss_q)
        actions, adv = self.offline_advantages(batch)
        metrics = self.policy_step(batch.observations, actions, adv, w)
        return {"critic_loss": loss_q.detach(), "offline_advantage": (w * adv).sum(1).mean(), **metrics}

    # -- online phase -------------------------------------------------------------------------------------
    def check_online(self) -> None:
        if self.horizon > self.config.max_horizon:
            name = self.ctx.task.name if self.ctx.task is not None else "this task"
            raise ValueError(
                f"HNPG learns one policy and one critic per step (finite-horizon mode), for short-horizon tasks "
                f"such as combination-lock; {name} has {self.horizon}-step episodes, more than max_horizon="
                f"{self.config.max_horizon}"
            )

    def start_online(self, offline: OfflineDataset | None) -> None:
        if self.config.hybrid and self.config.online_offline_ratio > 0.0:
            if offline is None:
                raise ValueError("hybrid HNPG needs the offline dataset; set hybrid=false for plain NPG")
            self.offline = offline.to(self.ctx.device)
            self._offline_index = StepIndex(self.offline, self.horizon)
            self._indexed = self.offline

    def explore(self, obs: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """A draw from π_t(·|s); the loop clips it to the box."""
        t = timesteps.clamp(max=self.horizon - 1)
        mean, log_std = self.pi.at(obs, t)
        return mean + log_std.exp() * draws.randn_like(mean)

    def online_update(self, rollout: OfflineDataset) -> dict[str, torch.Tensor]:
        """One HNPG iteration on an on-policy rollout of whole episodes (see the module docstring)."""
        cfg, horizon = self.config, self.horizon
        timesteps, episode = episode_timesteps(rollout), rollout.episode_index
        if int(timesteps.max()) >= horizon:
            raise ValueError(f"rollout episodes are longer than HNPG's horizon {horizon}")
        returns, _ = returns_and_gae(rollout.rewards, torch.zeros_like(rollout.rewards), episode, timesteps, 0.0)
        on = group_by_step(
            timesteps,
            horizon,
            rollout.observations,
            rollout.actions,
            returns,
            rollout.next_observations,
            1.0 - rollout.terminals,
        )
        off = None
        if self.offline is not None and cfg.hybrid:  # N_on / H per step at the authors' ratio 0.5
            ratio = cfg.online_offline_ratio
            k = max(int(rollout.num_transitions * ratio / (1.0 - ratio)) // horizon, 1)
            off = offline_groups(self.offline, *self._offline_index.sample(k))

        losses_on, losses_off = self.fit_critics(on, off)

        with torch.no_grad():
            values = self.state_value(on.observations)[on.slots]
        _, adv_flat = returns_and_gae(rollout.rewards, values, episode, timesteps, cfg.gae_lambda)
        adv = on.mask.new_zeros(on.mask.shape)
        adv[on.slots] = adv_flat
        obs, actions, mask = on.observations, on.actions, on.mask
        if off is not None:
            off_actions, off_adv = self.offline_advantages(off)
            obs, actions, mask = concat_groups(on, off._replace(actions=off_actions))
            adv = torch.cat([adv, off_adv], 1)
        weights = mask / mask.sum(1, keepdim=True).clamp(min=1.0)
        metrics = self.policy_step(obs, actions, adv, weights)
        return {
            "critic_loss_online": losses_on.mean(),
            "critic_loss_offline": losses_off.mean(),
            "advantage_online": (on.weights * adv[:, : on.mask.shape[1]]).sum(1).mean(),
            "rollout_return": rollout.episode_rewards.float().mean(),
            **metrics,
        }

    def fit_critics(self, on: StepGroups, off: StepGroups | None) -> tuple[torch.Tensor, torch.Tensor]:
        """HPE: Q_{H−1}, …, Q_0 in turn, each by ``critic_steps`` Adam steps with a fresh optimiser on the MC
        regression to on-policy returns plus (hybrid) the TD regression to r + Q_{h+1}(s', π_{h+1}(s'))."""
        cfg = self.config
        w_on = on.weights
        w_off = off.weights if off is not None else None
        losses_on = torch.zeros(self.horizon, device=self.ctx.device)
        losses_off = torch.zeros(self.horizon, device=self.ctx.device)
        for h in range(self.horizon - 1, -1, -1):  # sequential: Q_h's targets use the new Q_{h+1}
            m = slice(h, h + 1)
            target_off = None
            if off is not None:
                with torch.no_grad():
                    target_off = off.targets[m]
                    if h + 1 < self.horizon:
                        nxt = off.next_observations[m]
                        m1 = slice(h + 1, h + 2)
                        q_next = self.q(nxt, self.clip(self.pi.sample(nxt, m1)), m1)
                        target_off = target_off + q_next * off.not_done[m]
            opt = adam(self.q.parameters(), lr=cfg.critic_lr)  # fresh every time, as the authors' update_q
            for _ in range(cfg.critic_steps):
                loss_on = (w_on[m] * (self.q(on.observations[m], on.actions[m], m) - on.targets[m]).pow(2)).sum()
                loss = loss_on
                if off is not None:
                    loss_off = (w_off[m] * (self.q(off.observations[m], off.actions[m], m) - target_off).pow(2)).sum()
                    loss = loss + loss_off
                    losses_off[h] = loss_off.detach()
                optimize(opt, loss)
                losses_on[h] = loss_on.detach()
        return losses_on, losses_off

    # -- acting -------------------------------------------------------------------------------------------
    def policy_at(self, obs: torch.Tensor, timesteps: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """π_t(·|s) (mean or draw) for a flat batch with known steps, clipped to the action box."""
        mean, log_std = self.pi.at(obs, timesteps.clamp(min=0, max=self.horizon - 1))
        action = mean if deterministic else mean + log_std.exp() * draws.randn_like(mean)
        return self.clip(action)

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Without a step index: read it from the observation when the task encodes it (the lock), else π_0."""
        if self._read_timestep is not None:
            t = torch.as_tensor(self._read_timestep(obs), device=obs.device).long()
        else:
            t = torch.zeros(obs.shape[0], dtype=torch.long, device=obs.device)
        return self.policy_at(obs, t, deterministic)

    def episodic_policy(self, cost_target: float | None = None, deterministic: bool = True) -> _StepCountingPolicy:
        """For `saferl.evaluation.rollout`: counts each episode's steps to pick π_t."""
        return _StepCountingPolicy(self, deterministic)
