"""PA-RL: Policy-Agnostic RL (Sobol Mark, Gao, Sampaio, Srirama, Sharma, Finn, Kumar; arXiv 2412.06685).

The policy is never trained by a policy gradient. A critic ranks and refines actions the policy proposes, and the
policy imitates the refined actions with its own supervised loss, so one algorithm serves any policy class
(here a DDPM diffusion policy, a tanh-Gaussian MLP and a deterministic MLP; `POLICY_CLASSES`).

Action optimisation, for a state s (`optimize_actions`; the authors' `jaxrl_m/agents/continuous/
action_optimization.py::action_optimization_sample_actions`, cited below as "action_optimization.py"):

    1. global:  a_1..a_N ~ π_base(s);  keep the k with the largest Q̄(s, a) (Q̄ = ensemble mean), sorted so the
                best is last; while distilling, the dataset action replaces the worst kept one   (`global_rerank`)
    2. local:   T steps a ← clip(a + η·∇_a Q̄(s, a)) per candidate, keeping the best-valued iterate
                (iterates 0..T are compared, ties go to the later one)                            (`local_ascent`)
    3. select:  argmax_i Q̄(s, a_i) for acting, collecting data and the critic's own backups; a sample of
                Categorical(logits = Q̄(s, a_·)) for distillation (distill_argmax = False)          (`select`)

One update (`PARL.update`), pseudo-code::

    if update ≤ pretrain_steps:  π_base ← π_base − ∇ L_sup(π_base; s, a_data)           # BC pretraining
    elif online (or offline_distill):                                                # distillation
        ã = select_softmax(optimize_actions(s, {a_i ~ π_base(s)}, a_data))
        π_base ← π_base − ∇ L_sup(π_base; s, ã)
    a' = select_argmax(optimize_actions(s', ·)),  a_π = select_argmax(optimize_actions(s, ·))
    y  = r + γ·(1 − d)·min_{j ∈ 2 random members} Q̄_targ,j(s', a')                     # TD target
    L_Q = CE_HL-Gauss(Q_θ(s, a_data), y) + α·mean_{2 random members}[ logsumexp(
              Q(s, a_unif)×10, max(Q(s, a'), G)×10, max(Q(s, a_π), G)×10, Q(s, a_data)) − log 31 − Q(s, a_data) ]

The critic is the authors' `parl_calql` configuration (`configs/base_config.py::BASE_PARL_CALQL_CONFIG`;
`jaxrl_m/agents/continuous/cql.py::_get_cql_q_diff`, `sac.py::critic_loss_fn`): Cal-QL with α_cql 0.005, no
importance sampling (the data action joins the log-sum-exp, which subtracts log(3·n + 1)), the MC-return floor G
on the policy actions only (``use_calql_on_random_actions=False``), uniform random actions over the action box,
max-target backup, no entropy terms; a distributional critic (`saferl.nn.distributional`, HL-Gauss, 128 bins) in
an ensemble of 10 LayerNorm-swish MLPs whose TD target takes the min over 2 members drawn with replacement and
whose CQL term uses another 2 such members; Polyak 5e-3, Adam 3e-4. The critic's own "policy" (CQL's policy
actions and the backup action a') is the argmax of the action optimisation of base-policy samples, evaluated with
the online critic (``use_target_critic=False``); the 10 "samples" of that deterministic policy that the authors
feed to CQL are 10 copies of one action (`forward_policy_and_sample` on a `distrax.Deterministic`), kept here as
copies because they weigh the log-sum-exp.

Schedule (the authors' `train.py`): the base policy is pretrained by BC (a separate 3000-epoch DDPM-BC run), the
critic is trained offline with the base policy frozen ("Distillation only happens during online training"), and
every online epoch distils the base policy (``base_policy_utd`` = 1 step per env step, lr 5e-5 with a fresh Adam
and a 2000-step warm-up) before the critic's steps (one per env step); data collection and evaluation take the
argmax candidate. Here one run does all of it: the first ``pretrain_steps`` updates are pure BC for the policy,
and the critic trains in every update, also during pretraining (``pretrain_critic=false`` waits, as the authors);
``offline_distill=true`` also distils offline. At the switch to online the critic's Adam state restarts
(`train.py::restart_agent_optimizer_state`).

`parl_safe` (this project's safe variant, same file): a second distributional ensemble Q_c learns the discounted
cost of the same policy, y_c = c + γ·(1 − d)·max_{2 random members} Q̄_c,targ(s', a') (the pessimistic mirror of
the reward backup; no CQL term). A candidate is *feasible* when its ensemble-mean Q_c ≤ d, with d the per-step
discounted budget of the run's episode cost limit κ, d = κ·(1 − γ^H)/((1 − γ)·H) (OSRL's threshold, as BCQ-L and
CPQ, `saferl.nn.per_step_cost_threshold`). Every comparison of the action optimisation becomes lexicographic
(`SafeObjective`): a feasible candidate beats an infeasible one; feasible ones compare by Q_r; infeasible ones by
lower Q_c. So global re-ranking keeps feasible candidates first, the local step ascends Q_r from a feasible
candidate and descends Q_c from an infeasible one (keeping the best iterate under the same order), and selection
takes the best feasible candidate, or the one with the lowest Q_c when none is feasible (softmax over Q_r among the
feasible, or over −Q_c when none is, for distillation). A freshly initialised histogram critic predicts the middle
of its support (Q_c ≈ 50 on [0, 100] at γ = 0.99), so early in a run no candidate is feasible and the rule falls
back to the lowest-cost candidate; it becomes a threshold test once Q_c has been learnt.

Choices where the authors' code and the paper are silent or do not apply here:

* policy classes: the DDPM policy is the authors'; the tanh-Gaussian (NLL, targets clipped to ±0.99 as their SAC
  ``actions_nll``) and deterministic (MSE; candidates a(s) plus Gaussian noise) MLPs are this project's, standing in
  for their autoregressive-transformer and OpenVLA classes. The DDPM ε-network is `saferl.nn.diffusion`'s
  LN-ResNet at the authors' sizes with swish; its initialisation is that module's (flax-style xavier/lecun), not
  jaxrl_m's orthogonal one, and its input order [a_t, s, emb] a permutation of theirs. The EMA copy is kept as
  buffers (a running average, not a trained parameter).
* the value support (q_min, q_max) is derived from the data unless given: the authors' fixed [−100, 0] assumes
  their rewards in {−1, 0}. Rewards are only scaled (``reward_scale``; no ``reward_bias``: the MC floor of online
  rows is computed by the replay buffer on raw rewards and scales linearly). Masks are 1 − terminal (the authors'
  are task-specific: 0 only at success). Observations are not normalised (nor are they in the authors' state runs).
* online: one distillation step and one critic step per env step, alternating (the authors run an epoch's
  distillation steps, then its critic steps, one trajectory per epoch); the distillation batch is the loop's batch
  (half offline, half online, the critic's ``mixing_ratio``), where the authors draw it uniformly from offline ∪
  online data.
* the max-target backup over the 10 identical copies of a' is Q̄(s', a') itself: computed once.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from saferl.algos.base import AlgoContext, Algorithm, O2OConfig, OnlineMode, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch, OfflineDataset
from saferl.nn import ActionScale, DeterministicActor, TanhGaussianActor, per_step_cost_threshold, soft_update
from saferl.nn.diffusion import NoisePredictor, ddpm_sample, noise_prediction_loss
from saferl.nn.distributional import DistributionalQEnsemble, value_range
from saferl.nn.functional import repeat_rows, warmup_cosine_lr
from saferl.nn.noise_schedules import make_schedule

POLICY_CLASSES = ("diffusion", "gaussian", "deterministic")


@dataclass
class PARLConfig(O2OConfig):
    """The authors' defaults (`configs/base_config.py`: DEFAULT_PARL_CONFIG, BASE_DDPM_CONFIG,
    BASE_PARL_CALQL_CONFIG; `README.md`'s AntMaze command for the schedule)."""

    batch_size: int = 256
    # 3000 epochs × 1000 steps of DDPM-BC, then 1000 × 1000 critic steps (README.md); online: 1000 epochs
    steps: int = 4_000_000
    # -- base policy ------------------------------------------------------------------------------------
    policy_class: str = "diffusion"  # diffusion | gaussian | deterministic
    pretrain_steps: int = 3_000_000  # the first updates train the base policy by BC alone
    pretrain_critic: bool = True  # the critic also trains during pretraining (False: it waits, as the authors)
    offline_distill: bool = False  # distil offline too (the authors distil online only)
    pretrain_lr: float = 3e-4  # BASE_DDPM_CONFIG learning_rate
    pretrain_lr_decay_steps: int = 3_000_000  # actor_decay_steps: cosine decay to 0 (0 = constant)
    policy_lr: float = 5e-5  # ddpm_base_policy_agent_kwargs_for_parl: distillation, no decay
    policy_warmup_steps: int = 2000  # linear warm-up from 0, in both phases (optax.warmup_cosine_decay_schedule)
    # DDPM policy (BASE_DDPM_CONFIG.score_network_kwargs; ddpm_bc.py)
    diffusion_steps: int = 5
    beta_schedule: str = "cosine"
    diffusion_hidden: int = 256
    diffusion_blocks: int = 3
    diffusion_dropout: float = 0.1
    time_dim: int = 128
    policy_ema: float = 0.002  # target_update_rate; actions are sampled from the EMA model
    # MLP policies (gaussian, deterministic; the authors' Gaussian Cal-QL policy is 256-256)
    policy_hidden: tuple[int, ...] = (256, 256)
    deterministic_sample_std: float = 0.1  # candidates of a deterministic policy: a(s) + N(0, σ²) (× half-range)
    # -- action optimisation (DEFAULT_PARL_CONFIG, distill_argmax) --------------------------------------
    num_base_policy_actions: int = 32
    num_actions_to_keep: int = 10
    num_steps: int = 10
    step_size: float = 3e-4
    optimize_critic_ensemble_min: bool = False  # the local step ascends the ensemble mean
    distill_argmax: bool = False  # False: distil a softmax(Q) sample of the candidates
    # -- critic (Cal-QL, distributional) -----------------------------------------------------------------
    critic_hidden: tuple[int, ...] = (256, 256)
    critic_lr: float = 3e-4
    num_critics: int = 10
    critic_subsample_size: int = 2
    gamma: float = 0.99
    tau: float = 5e-3
    cql_alpha: float = 0.005
    cql_n_actions: int = 10
    cql_temp: float = 1.0
    calql: bool = True  # the MC-return floor on policy-action values
    num_bins: int = 128
    # value support; None: [min(0, r_min), max(0, r_max)]/(1 − γ) of the data's scaled rewards, which is the
    # authors' [−100, 0] on their AntMaze rewards (r − 1 ∈ {−1, 0})
    q_min: float | None = None
    q_max: float | None = None
    reward_scale: float = 1.0
    online_offline_ratio: float = 0.5  # mixing_ratio


# ---------------------------------------------------------------------------------------------------
# base-policy adapters: all PA-RL needs of a policy class is `sample` and `supervised_loss`


def _parameters_to_buffers(module: nn.Module) -> None:
    """Turn every parameter of ``module`` into a (checkpointed) buffer of the same name."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                del sub._parameters[name]
                sub.register_buffer(name, param.detach().clone())


class DiffusionPolicy(nn.Module):
    """The authors' DDPM-BC policy (`ddpm_bc.py`): ε-network on [time MLP(Fourier(t)), s, a_t] (an LN-ResNet,
    swish), cosine β schedule, ε-prediction loss; actions are sampled from the EMA copy (rate 0.002)."""

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray, cfg: PARLConfig):
        super().__init__()
        self.scale = ActionScale(low, high)
        self.model = NoisePredictor(
            obs_dim,
            act_dim,
            cfg.diffusion_hidden,
            cfg.diffusion_blocks,
            cfg.diffusion_dropout,
            True,
            cfg.time_dim,
            (2 * cfg.time_dim, cfg.time_dim),
            act="silu",
        )
        self.ema = copy.deepcopy(self.model)  # target_params = params at creation
        _parameters_to_buffers(self.ema)  # a running average is state, not a trained parameter
        self.ema.eval()
        self.schedule = make_schedule(cfg.beta_schedule, cfg.diffusion_steps)
        self.ema_rate = cfg.policy_ema

    def train(self, mode: bool = True) -> DiffusionPolicy:
        super().train(mode)
        self.ema.eval()  # sampling never uses dropout
        return self

    def trainable(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
        unit = ddpm_sample(self.ema, self.schedule, repeat_rows(obs, n), generator)
        return self.scale(unit).view(obs.shape[0], n, -1)

    def supervised_loss(self, obs: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None):
        unit = self.scale.inverse(actions).clamp(-1.0, 1.0)
        return noise_prediction_loss(self.model, self.schedule, obs, unit, generator).mean()

    def after_step(self) -> None:
        ema = dict(self.ema.named_buffers())
        names, params = zip(*self.model.named_parameters(), strict=True)
        soft_update([ema[n] for n in names], params, self.ema_rate)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.sample(obs, 1, generator)[:, 0]


class GaussianPolicy(nn.Module):
    """A tanh-Gaussian MLP; supervised loss: −log π(a|s) with targets clipped to ±0.99 of the box (as the authors'
    SAC ``actions_nll``)."""

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray, cfg: PARLConfig):
        super().__init__()
        self.net = TanhGaussianActor(obs_dim, act_dim, low, high, cfg.policy_hidden)

    def trainable(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
        dist = self.net.distribution(obs)
        b, a = dist.loc.shape
        eps = torch.randn(b, n, a, dtype=obs.dtype, device=obs.device, generator=generator)
        return self.net.scale(torch.tanh(dist.loc[:, None] + dist.scale[:, None] * eps))

    def supervised_loss(self, obs: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None):
        return -self.net.log_prob(obs, actions, eps=1e-2).mean()

    def after_step(self) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.net(obs, deterministic=True, with_logprob=False)[0]


class DeterministicPolicy(nn.Module):
    """A deterministic MLP a(s); supervised loss: ‖a(s) − a‖² summed over action dims. Its candidates are a(s) plus
    Gaussian noise of ``deterministic_sample_std`` half-ranges (0: N copies of a(s); re-ranking then has nothing to
    choose from and only the local step improves the action)."""

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray, cfg: PARLConfig):
        super().__init__()
        self.net = DeterministicActor(obs_dim, act_dim, low, high, cfg.policy_hidden)
        self.scale = self.net.scale
        self.std = cfg.deterministic_sample_std

    def trainable(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
        a = self.net(obs)[:, None].expand(obs.shape[0], n, -1)
        if self.std > 0:
            noise = torch.randn(a.shape, dtype=a.dtype, device=a.device, generator=generator)
            low, high = self.scale.center - self.scale.half_range, self.scale.center + self.scale.half_range
            a = torch.maximum(torch.minimum(a + self.std * self.scale.half_range * noise, high), low)
        return a

    def supervised_loss(self, obs: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None):
        return (self.net(obs) - actions).pow(2).sum(-1).mean()

    def after_step(self) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.net(obs)


def make_policy(cfg: PARLConfig, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray) -> nn.Module:
    classes = {"diffusion": DiffusionPolicy, "gaussian": GaussianPolicy, "deterministic": DeterministicPolicy}
    if cfg.policy_class not in classes:
        raise ValueError(f"policy_class={cfg.policy_class!r}; use one of {', '.join(POLICY_CLASSES)}")
    return classes[cfg.policy_class](obs_dim, act_dim, low, high, cfg)


# ---------------------------------------------------------------------------------------------------
# what the action optimisation maximises: candidate values, their order, the ascent direction


def _value_and_grad(fn, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(obs, a) -> (values, objective)`` and ∇_a Σ objective, also when called under no_grad or
    inference_mode (acting): the critic is differentiated w.r.t. the actions only."""
    with torch.inference_mode(False), torch.enable_grad():
        obs = obs.clone() if obs.is_inference() else obs
        leaf = actions.detach().clone().requires_grad_(True)
        # the critic sees a view, not the leaf itself: module backward hooks (FlopCounterMode's tracker) cannot
        # handle a leaf module input under autograd.grad
        values, objective = fn(obs, leaf.view_as(leaf))
        (grad,) = torch.autograd.grad(objective.sum(), leaf)
    return values.detach(), grad


class RewardObjective:
    """PA-RL's: values are Q̄ (ensemble mean; the local step may use the min, ``optimize_critic_ensemble_min``);
    larger is better. Values carry a trailing dim of 1 so that `SafeObjective` can carry two."""

    def __init__(self, critic: DistributionalQEnsemble, ensemble_min: bool = False):
        self.critic, self.ensemble_min = critic, ensemble_min

    @torch.no_grad()
    def values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.critic.q(obs, actions).mean(0)[:, None]

    def ascent(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def fn(o, a):
            q = self.critic.q(o, a)
            v = q.amin(0) if self.ensemble_min else q.mean(0)
            return v[:, None], v

        return _value_and_grad(fn, obs, actions)

    def worst(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((n, 1), -math.inf, dtype=like.dtype, device=like.device)

    def better(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """Whether ``new`` replaces ``old`` as the best iterate (ties go to ``new``, as the authors' ``==`` max)."""
        return new[..., 0] >= old[..., 0]

    def rank_key(self, values: torch.Tensor) -> torch.Tensor:
        return values[..., 0]

    def logits(self, values: torch.Tensor) -> torch.Tensor:
        return values[..., 0]


class SafeObjective:
    """`parl_safe`'s lexicographic order (module docstring): values are (Q̄_r, Q̄_c); feasible ⇔ Q̄_c ≤ budget."""

    def __init__(
        self,
        critic: DistributionalQEnsemble,
        cost_critic: DistributionalQEnsemble,
        budget: float,
        ensemble_min: bool = False,
    ):
        self.critic, self.cost_critic, self.budget, self.ensemble_min = critic, cost_critic, budget, ensemble_min

    @torch.no_grad()
    def values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.critic.q(obs, actions).mean(0), self.cost_critic.q(obs, actions).mean(0)], -1)

    def ascent(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def fn(o, a):
            q, qc = self.critic.q(o, a), self.cost_critic.q(o, a)
            # ensemble_min: pessimistic in both (min reward, max cost)
            r, c = (q.amin(0), qc.amax(0)) if self.ensemble_min else (q.mean(0), qc.mean(0))
            objective = torch.where(c <= self.budget, r, -c)  # ascend Q_r when feasible, descend Q_c when not
            return torch.stack([r, c], -1), objective

        return _value_and_grad(fn, obs, actions)

    def worst(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor([-math.inf, math.inf], dtype=like.dtype, device=like.device).expand(n, 2)

    def feasible(self, values: torch.Tensor) -> torch.Tensor:
        return values[..., 1] <= self.budget

    def better(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        new_ok, old_ok = self.feasible(new), self.feasible(old)
        same_class = torch.where(new_ok, new[..., 0] >= old[..., 0], new[..., 1] <= old[..., 1])
        return torch.where(new_ok == old_ok, same_class, new_ok)

    def rank_key(self, values: torch.Tensor) -> torch.Tensor:
        """Feasible candidates score 1 + Q_r − min_row Q_r ≥ 1; infeasible ones budget − Q_c < 0."""
        r, c = values[..., 0], values[..., 1]
        return torch.where(self.feasible(values), 1.0 + r - r.amin(-1, keepdim=True), self.budget - c)

    def logits(self, values: torch.Tensor) -> torch.Tensor:
        """Q_r over the feasible candidates (−∞ elsewhere); −Q_c over all when none is feasible."""
        ok = self.feasible(values)
        masked = torch.where(ok, values[..., 0], torch.full_like(values[..., 0], -math.inf))
        return torch.where(ok.any(-1, keepdim=True), masked, -values[..., 1])


# ---------------------------------------------------------------------------------------------------
# the action optimisation (action_optimization.py) as small functions


def global_rerank(
    key: torch.Tensor, actions: torch.Tensor, k: int, dataset_actions: torch.Tensor | None = None
) -> torch.Tensor:
    """The k candidates with the largest ``key`` ([B, N]) of ``actions`` ([B, N, A]), in ascending order (the best
    last; a stable argsort as jnp.argsort); with ``dataset_actions`` ([B, A]) the worst kept one is dropped and the
    dataset action appended. k = N keeps the sampled order (the authors skip the sort then)."""
    b, n, a = actions.shape
    if k < n:
        top = torch.argsort(key, dim=1, stable=True)[:, n - k :]
        actions = actions.gather(1, top[..., None].expand(b, k, a))
    if dataset_actions is not None:
        actions = torch.cat([actions[:, 1:], dataset_actions[:, None]], dim=1)
    return actions


def local_ascent(
    objective,
    obs: torch.Tensor,
    actions: torch.Tensor,
    num_steps: int,
    step_size: float,
    low: torch.Tensor,
    high: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``local_optimization_steps`` (keep_action_with_max_value=True): T steps a ← clip(a + η·∇_a objective);
    iterate i's value is computed with its gradient, the final iterate's after the loop; returns the best iterate
    per row [M, A], its values [M, D] and its index in 0..T [M]."""
    best, best_values = actions, objective.worst(actions.shape[0], actions)
    best_index = torch.zeros(actions.shape[0], dtype=torch.long, device=actions.device)
    a = actions
    for i in range(num_steps + 1):
        if i < num_steps:
            values, grad = objective.ascent(obs, a)
        else:
            values = objective.ascent(obs, a)[0] if objective.ensemble_min else objective.values(obs, a)
        take = objective.better(values, best_values)
        best = torch.where(take[:, None], a, best)
        best_values = torch.where(take[:, None], values, best_values)
        best_index = torch.where(take, i, best_index)
        if i < num_steps:
            a = torch.maximum(torch.minimum(a + step_size * grad, high), low)
    return best, best_values, best_index


def optimize_actions(
    objective,
    obs: torch.Tensor,
    base_actions: torch.Tensor,
    num_actions_to_keep: int,
    num_steps: int,
    step_size: float,
    low: torch.Tensor,
    high: torch.Tensor,
    dataset_actions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global re-ranking of the base policy's samples [B, N, A], then the local step on the k kept ones.
    Returns the candidates [B, k, A] and their values [B, k, D] (ensemble means, as the authors' final
    ``forward_critic(...).mean(axis=0)``)."""
    b, n, a = base_actions.shape
    k = num_actions_to_keep
    ranked = objective.values(repeat_rows(obs, n), base_actions.reshape(b * n, a)).view(b, n, -1)
    kept = global_rerank(objective.rank_key(ranked), base_actions, k, dataset_actions)
    rep = repeat_rows(obs, k)
    best, values, _ = local_ascent(objective, rep, kept.reshape(b * k, a), num_steps, step_size, low, high)
    if objective.ensemble_min:  # the local step ranked by the min; selection uses the mean
        values = objective.values(rep, best)
    return best.view(b, k, a), values.view(b, k, -1)


def select(logits: torch.Tensor, argmax: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index [B] of the chosen candidate: argmax of the logits (the first on ties, as jnp.argmax), or a sample of
    Categorical(logits) (distrax.MixtureSameFamily over the candidates)."""
    if argmax:
        return logits.argmax(dim=1)
    return torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)


# ---------------------------------------------------------------------------------------------------
# the critic's loss terms


def td_target(
    reward: torch.Tensor, mask: torch.Tensor, next_q: torch.Tensor, members: torch.Tensor, gamma: float
) -> torch.Tensor:
    """r + γ·mask·min_{j ∈ members} Q̄_j(s', a') with next_q [E, B] (sac.py::critic_loss_fn, subsampled)."""
    return reward + gamma * mask * next_q.index_select(0, members).amin(0)


def calql_q_diff(
    q_data: torch.Tensor,
    q_rand: torch.Tensor,
    q_next: torch.Tensor,
    q_cur: torch.Tensor,
    n_actions: int,
    floor: torch.Tensor | None,
    temp: float = 1.0,
) -> torch.Tensor:
    """cql.py::_get_cql_q_diff without importance sampling, per member [S, B]: q_data [S, B], q_rand [S, B, n],
    q_next and q_cur [S, B] (one deterministic policy action, counted n times). With ``floor`` [B] (Cal-QL) the
    policy-action values enter at no less than the MC return."""
    q_next = q_next[..., None].expand(*q_next.shape, n_actions)
    q_cur = q_cur[..., None].expand(*q_cur.shape, n_actions)
    if floor is not None:
        q_next = torch.maximum(q_next, floor[:, None])
        q_cur = torch.maximum(q_cur, floor[:, None])
    samples = torch.cat([q_rand, q_next, q_cur, q_data[..., None]], dim=-1)
    samples = samples - math.log(samples.shape[-1]) * temp
    return temp * torch.logsumexp(samples / temp, dim=-1) - q_data


# ---------------------------------------------------------------------------------------------------


@register("parl")
class PARL(Algorithm):
    Config = PARLConfig
    online_mode = OnlineMode.OFF_POLICY
    # The action optimisation inside every update differentiates the critic w.r.t. actions with
    # torch.autograd.grad, which torch.func.vmap (K seeds as one model) cannot run; one process per seed.
    batched_seeds = False

    def __init__(self, config: PARLConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        c, dev = config, ctx.device
        self._check(c)
        self.scale = ActionScale(ctx.action_low, ctx.action_high).to(dev)
        self.base = make_policy(c, ctx.obs_dim, ctx.act_dim, ctx.action_low, ctx.action_high).to(dev)
        lo, hi = (c.q_min, c.q_max) if c.q_min is not None else (-100.0, 0.0)  # set from the data in `prepare`
        self.critic = self._make_critic(lo, hi).to(dev)
        self.critic_target = self._make_critic(lo, hi).to(dev)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.optimizers["policy"] = adam(self.base.trainable(), lr=0.0)  # lr set per step (`_policy_lr`)
        self.optimizers["critic"] = adam(self.critic.parameters(), lr=c.critic_lr)
        # randomness owned by the algorithm (base-policy samples, subsampled members, random actions, diffusion
        # noise) so that checkpoints restore it; seeded from the global RNG, which the training loop seeds
        self._gen = torch.Generator(device=dev)
        self._gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self._act_gen = torch.Generator(device=dev)
        self._act_gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self.online = False
        self._online_started = False  # the switch's one-off resets happened (checkpointed)
        self._policy_phase = "pretrain" if c.pretrain_steps > 0 else "distill"
        self._policy_steps = 0  # optimizer steps in the current phase (the lr schedule's count)
        self.offline_mc: torch.Tensor | None = None

    @staticmethod
    def _check(c: PARLConfig) -> None:
        if c.policy_class not in POLICY_CLASSES:
            raise ValueError(f"policy_class={c.policy_class!r}; use one of {', '.join(POLICY_CLASSES)}")
        if c.num_actions_to_keep > c.num_base_policy_actions:
            raise ValueError(
                f"num_actions_to_keep ({c.num_actions_to_keep}) cannot exceed num_base_policy_actions "
                f"({c.num_base_policy_actions})"
            )
        if not 1 <= c.critic_subsample_size <= c.num_critics:
            raise ValueError(f"critic_subsample_size must lie in [1, num_critics={c.num_critics}]")
        if c.pretrain_steps < 0 or c.policy_warmup_steps < 0 or c.step_size < 0:
            raise ValueError("pretrain_steps, policy_warmup_steps and step_size must be >= 0")
        if (c.q_min is None) != (c.q_max is None) or (c.q_min is not None and not c.q_max > c.q_min):
            raise ValueError("set both q_min and q_max (q_max > q_min), or neither (derived from the data)")

    def _make_critic(self, lo: float, hi: float) -> DistributionalQEnsemble:
        c = self.config
        return DistributionalQEnsemble(
            self.ctx.obs_dim, self.ctx.act_dim, c.num_critics, c.critic_hidden, c.num_bins, lo, hi
        )

    def objective(self):
        return RewardObjective(self.critic, self.config.optimize_critic_ensemble_min)

    # -- data ---------------------------------------------------------------------------------------------
    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        c = self.config
        if c.q_min is None:
            lo, hi = value_range(data.rewards * c.reward_scale, c.gamma)
            self.critic.set_range(lo, hi)
            self.critic_target.set_range(lo, hi)
        if c.calql:
            self.offline_mc = data.mc_returns(c.gamma)
        return data

    def sample(self, data: OfflineDataset, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        idx = data.sample_indices(batch_size, generator)
        batch = data.batch(idx)
        return batch._replace(mc_returns=self.offline_mc[idx]) if self.offline_mc is not None else batch

    @property
    def mc_gamma(self) -> float | None:
        return self.config.gamma if self.config.calql else None

    # -- the action optimisation as a policy ----------------------------------------------------------------
    @property
    def _low(self) -> torch.Tensor:
        return self.scale.center - self.scale.half_range

    @property
    def _high(self) -> torch.Tensor:
        return self.scale.center + self.scale.half_range

    def candidates(
        self, obs: torch.Tensor, generator: torch.Generator | None, dataset_actions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Sample N base-policy actions per state and optimise them: candidates [B, k, A], values [B, k, D] and
        the objective that ranked them."""
        c = self.config
        objective = self.objective()
        with torch.no_grad():
            base = self.base.sample(obs, c.num_base_policy_actions, generator)
        cand, values = optimize_actions(
            objective,
            obs,
            base,
            c.num_actions_to_keep,
            c.num_steps,
            c.step_size,
            self._low,
            self._high,
            dataset_actions,
        )
        return cand, values, objective

    def pa_actions(
        self,
        obs: torch.Tensor,
        argmax: bool,
        generator: torch.Generator | None,
        dataset_actions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """π_PA(s): the selected optimised candidate per state [B, A] (no gradient to any parameter)."""
        cand, values, objective = self.candidates(obs, generator, dataset_actions)
        idx = select(objective.logits(values), argmax, generator)
        return cand[torch.arange(cand.shape[0], device=cand.device), idx].detach()

    # -- the policy's supervised steps ----------------------------------------------------------------------
    def _policy_lr(self) -> float:
        c = self.config
        if self._policy_phase == "pretrain":
            return warmup_cosine_lr(self._policy_steps, c.pretrain_lr, c.policy_warmup_steps, c.pretrain_lr_decay_steps)
        return warmup_cosine_lr(self._policy_steps, c.policy_lr, c.policy_warmup_steps, 0)

    def _enter_distillation(self) -> None:
        """The authors restore the BC checkpoint into a new agent with lr 5e-5: a fresh Adam and warm-up."""
        if self._policy_phase != "distill":
            self._policy_phase, self._policy_steps = "distill", 0
            self.optimizers["policy"].state.clear()

    def _policy_step(self, loss: torch.Tensor) -> None:
        lr = self._policy_lr()
        for group in self.optimizers["policy"].param_groups:
            group["lr"] = lr
        optimize(self.optimizers["policy"], loss)
        self._policy_steps += 1
        self.base.after_step()

    def _bc_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        act = torch.maximum(torch.minimum(batch.actions, self._high), self._low)
        loss = self.base.supervised_loss(batch.observations, act, self._gen)
        self._policy_step(loss)
        return {"bc_loss": loss.detach()}

    def _distill_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Distil the action-optimised version of the base policy into it (train.py's online loop)."""
        self._enter_distillation()
        obs = batch.observations
        act = torch.maximum(torch.minimum(batch.actions, self._high), self._low)
        target = self.pa_actions(obs, self.config.distill_argmax, self._gen, dataset_actions=act)
        loss = self.base.supervised_loss(obs, target, self._gen)
        self._policy_step(loss)
        return {"distill_loss": loss.detach(), "distill_shift": (target - act).norm(dim=-1).mean()}

    # -- the critic ---------------------------------------------------------------------------------------
    def _backup_actions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The critic's policy at s' and at s: argmax of the action optimisation (forward_policy, train=True)."""
        a_next = self.pa_actions(batch.next_observations, True, self._gen)
        a_cur = self.pa_actions(batch.observations, True, self._gen)
        return a_next, a_cur

    def _members(self) -> torch.Tensor:
        c = self.config
        return torch.randint(0, c.num_critics, (c.critic_subsample_size,), device=self.ctx.device, generator=self._gen)

    def _critic_step(self, batch: Batch, a_next: torch.Tensor, a_cur: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        obs, b = batch.observations, batch.observations.shape[0]
        act = torch.maximum(torch.minimum(batch.actions, self._high), self._low)
        mask = 1.0 - batch.terminals
        with torch.no_grad():
            target = td_target(
                batch.rewards * c.reward_scale,
                mask,
                self.critic_target.q(batch.next_observations, a_next),
                self._members(),
                c.gamma,
            )
        # one critic pass over [a_data, a', a_π, n uniform actions] at s (CQL evaluates all of them at s)
        n = c.cql_n_actions
        unif = self._low + (self._high - self._low) * torch.rand(
            b, n, act.shape[1], dtype=act.dtype, device=act.device, generator=self._gen
        )
        actions = torch.cat([act[:, None], a_next[:, None], a_cur[:, None], unif], dim=1)
        q, logits = self.critic(repeat_rows(obs, n + 3), actions.reshape(b * (n + 3), -1))
        q = q.view(-1, b, n + 3)
        logits_data = logits.view(q.shape[0], b, n + 3, -1)[:, :, 0]
        td_loss = self.critic.loss(logits_data, target).mean()
        members = self._members()
        qs = q.index_select(0, members)
        floor = None
        if c.calql:
            if batch.mc_returns is None:
                raise ValueError("Cal-QL needs Monte-Carlo returns in every batch (batch.mc_returns is None)")
            floor = batch.mc_returns * c.reward_scale
        q_diff = calql_q_diff(qs[..., 0], qs[..., 3:], qs[..., 1], qs[..., 2], n, floor, c.cql_temp)
        loss = td_loss + c.cql_alpha * q_diff.mean()
        optimize(self.optimizers["critic"], loss)
        soft_update(self.critic_target.parameters(), self.critic.parameters(), c.tau)
        return {
            "critic_loss": loss.detach(),
            "td_loss": td_loss.detach(),
            "cql_diff": q_diff.mean().detach(),
            "q_data": q[..., 0].mean().detach(),
            "target_q": target.mean(),
        }

    # -- updates ------------------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        self.num_updates += 1
        pretraining = self.num_updates <= c.pretrain_steps
        metrics: dict[str, torch.Tensor] = {}
        if pretraining:
            metrics.update(self._bc_step(batch))
        elif self.online or c.offline_distill:
            metrics.update(self._distill_step(batch))
        if not pretraining or c.pretrain_critic:
            metrics.update(self._critic_step(batch, *self._backup_actions(batch)))
        return metrics

    def online_update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One distillation step, then one critic step (base_policy_utd = critic_utd = 1)."""
        self.num_updates += 1
        metrics = self._distill_step(batch)
        metrics.update(self._critic_step(batch, *self._backup_actions(batch)))
        return metrics

    def start_online(self, offline: OfflineDataset) -> None:
        self.online = True
        if not self._online_started:  # once per run, not again on resume
            self._online_started = True
            self.optimizers["critic"].state.clear()  # train.py::restart_agent_optimizer_state
            self._enter_distillation()

    # -- acting -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """The best optimised candidate (``max_q_value``), or a softmax(Q) sample of them when not
        deterministic; base-policy samples draw fresh noise from the algorithm's checkpointed stream."""
        return self.pa_actions(obs.float(), deterministic, self._act_gen)

    def explore(self, obs: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Online data collection takes the argmax candidate (data_collection_particle_choosing_strategy)."""
        return self.policy(obs, deterministic=True)

    @torch.no_grad()
    def act_base(self, obs: np.ndarray) -> np.ndarray:
        """The base policy alone (no action optimisation): the BC policy PA-RL starts from, for comparisons."""
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.ctx.device)
        single = obs_t.ndim == 1
        was_training = self.training
        self.eval()
        try:
            action = self.base.act(obs_t[None] if single else obs_t, self._act_gen)
        finally:
            self.train(was_training)
        out = action.cpu().numpy()
        return out[0] if single else out

    # -- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        state = super().state_dict(*args, **kwargs)
        state["parl"] = {
            "generator": self._gen.get_state(),
            "act_generator": self._act_gen.get_state(),
            "policy_phase": self._policy_phase,
            "policy_steps": self._policy_steps,
            "online_started": self._online_started,
        }
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True):  # type: ignore[override]
        result = super().load_state_dict(state, strict=strict)
        extra = state["parl"]
        self._gen.set_state(extra["generator"].cpu())
        self._act_gen.set_state(extra["act_generator"].cpu())
        self._policy_phase = extra["policy_phase"]
        self._policy_steps = int(extra["policy_steps"])
        self._online_started = bool(extra["online_started"])
        return result


# ---------------------------------------------------------------------------------------------------
# the safe variant


@dataclass
class PARLSafeConfig(PARLConfig):
    # feasibility: ensemble-mean Q_c ≤ cost_budget; None: κ·(1 − γ^H)/((1 − γ)·H) from the run's cost limit κ
    cost_budget: float | None = None
    cost_q_max: float | None = None  # top of the cost support; None: max(cost)/(1 − γ) of the data


@register("parl_safe")
class PARLSafe(PARL):
    """PA-RL whose action optimisation maximises Q_r among the candidates a cost critic deems feasible."""

    Config = PARLSafeConfig

    def __init__(self, config: PARLSafeConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        c = config
        if c.cost_q_max is not None and not c.cost_q_max > 0:
            raise ValueError(f"cost_q_max must be > 0, got {c.cost_q_max}")
        top = c.cost_q_max if c.cost_q_max is not None else 1.0 / (1.0 - c.gamma)
        self.cost_critic = self._make_critic(0.0, top).to(ctx.device)
        self.cost_critic_target = self._make_critic(0.0, top).to(ctx.device)
        self.cost_critic_target.load_state_dict(self.cost_critic.state_dict())
        self.cost_critic_target.requires_grad_(False)
        self.optimizers["cost_critic"] = adam(self.cost_critic.parameters(), lr=c.critic_lr)
        self.cost_budget = (
            c.cost_budget
            if c.cost_budget is not None
            else per_step_cost_threshold(ctx.cost_limit, c.gamma, ctx.max_episode_steps)
        )

    def objective(self):
        return SafeObjective(self.critic, self.cost_critic, self.cost_budget, self.config.optimize_critic_ensemble_min)

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        data = super().prepare(data)
        if self.config.cost_q_max is None:
            lo, hi = value_range(data.costs, self.config.gamma)
            self.cost_critic.set_range(lo, hi)
            self.cost_critic_target.set_range(lo, hi)
        return data

    def _critic_step(self, batch: Batch, a_next: torch.Tensor, a_cur: torch.Tensor) -> dict[str, torch.Tensor]:
        metrics = super()._critic_step(batch, a_next, a_cur)
        c = self.config
        act = torch.maximum(torch.minimum(batch.actions, self._high), self._low)
        with torch.no_grad():  # pessimistic mirror of the reward backup: max over the subsampled members
            members = self._members()
            next_qc = self.cost_critic_target.q(batch.next_observations, a_next).index_select(0, members).amax(0)
            target = batch.costs + c.gamma * (1.0 - batch.terminals) * next_qc
        qc, logits = self.cost_critic(batch.observations, act)
        loss = self.cost_critic.loss(logits, target).mean()
        optimize(self.optimizers["cost_critic"], loss)
        soft_update(self.cost_critic_target.parameters(), self.cost_critic.parameters(), c.tau)
        metrics.update(
            cost_critic_loss=loss.detach(),
            qc_data=qc.mean().detach(),
            feasible_data=(qc.mean(0) <= self.cost_budget).float().mean().detach(),
        )
        return metrics
