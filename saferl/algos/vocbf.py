"""V-OCBF: value-guided offline control barrier functions (Tayal et al., "Learning Safety Filters from
Offline Data via Value-Guided Offline Control Barrier Functions", arXiv 2512.10822; authors' code
tayalmanan28/v-ocbf, ``jaxrl5/agents/vocbf/vocbf.py`` and ``launcher/examples/train_offline.py``).

Three things are learned from the same offline data, every update on the same batch:

1. The barrier, model-free. A safety critic Q_c(s, a) and value V_c(s) on the signed margin h(s) (h ≥ 0
   safe) with the discounted reach-avoid ("hj") backup

       y = (1 − γ)·h(s) + γ·min(h(s), V_c(s'))     (non-terminal),     y = h(s)   (terminal),

   and V_c as the *upper* expectile (τ = 0.9) of min_i Q_c,i(s, a) over dataset actions only, so V_c(s)
   approaches the best in-support action's value without querying out-of-distribution actions.
   V_c ≈ B(s) is the control barrier function.
2. A control-affine model ṡ ≈ f(s) + g(s)·u (two MLPs) from s' ≈ s + (f + g·u)·dt.
3. A nominal behaviour-cloning policy (MSE, tanh head) on every transition.

At evaluation the nominal policy is filtered by the CBF-QP  min ‖u − u_nom‖²  s.t.
∇B·f + ∇B·g·u + α·B ≥ 0  (α = 1) with the action box, through `saferl.safety.SafetyFilter`.

Defaults from the authors' ``configs/train_config.py`` and ``train_offline.py`` (Point/Boat robot runs):
critic and value lr 3e-4, 2 critics of (256, 256), γ 0.99, expectile 0.9, batch 256, 100k steps; BC
3×256 with lr 3e-4; dynamics 3×64 with lr 1e-3; cbf_alpha 1.0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, optimize
from saferl.algos.registry import register
from saferl.data import Batch, DatasetError, OfflineDataset
from saferl.nn import MLP, DeterministicActor, QEnsemble, ValueNet, expectile_loss

EVAL_FILTERS = ("cbf", "critic", "none")


@dataclass
class VOCBFConfig(AlgoConfig):
    batch_size: int = 256
    steps: int = 100_000
    hidden: tuple[int, ...] = (256, 256)  # Q_c and V_c
    num_critics: int = 2
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    discount: float = 0.99
    expectile: float = 0.9  # the authors' cost_critic_hyperparam: V_c ≈ max over in-support actions
    value_layer_norm: bool = False
    bc_hidden: tuple[int, ...] = (256, 256, 256)
    bc_lr: float = 3e-4
    dyn_hidden: tuple[int, ...] = (64, 64, 64)
    dyn_lr: float = 1e-3
    cbf_alpha: float = 1.0
    # evaluation: "cbf" = ControlAffineCBF on V_c with the learned f, g (the paper's filter); "critic" =
    # the model-free linearisation of Q_c(s, u) ≥ 0 around u_nom; "none" = the unfiltered BC policy
    eval_filter: str = "cbf"
    solver: str = "auto"
    on_infeasible: str = "slack"


class AffineDynamics(nn.Module):
    """ṡ = f(s) + g(s)·u with f: obs → [d] and g: obs → [d, n], each an MLP (authors' AffineDynamics)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.f_net = MLP(obs_dim, obs_dim, hidden)
        self.g_net = MLP(obs_dim, obs_dim * act_dim, hidden)

    def f(self, obs: torch.Tensor) -> torch.Tensor:
        return self.f_net(obs)

    def g(self, obs: torch.Tensor) -> torch.Tensor:
        return self.g_net(obs).reshape(*obs.shape[:-1], self.obs_dim, self.act_dim)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """ṡ at (s, u)."""
        return self.f(obs) + (self.g(obs) @ action.unsqueeze(-1)).squeeze(-1)


def hj_target(h: torch.Tensor, next_v: torch.Tensor, terminal: torch.Tensor, discount: float) -> torch.Tensor:
    """Discounted reach-avoid backup of the safety margin (authors' ``critic_type="hj"``)."""
    bootstrap = (1.0 - discount) * h + discount * torch.minimum(h, next_v)
    return torch.where(terminal > 0.5, h, bootstrap)


@register("vocbf")
class VOCBF(Algorithm):
    Config = VOCBFConfig
    wraps_eval_env = True  # evaluation runs the nominal policy through a safety filter (wrap_eval_env)

    def __init__(self, config: VOCBFConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        if config.eval_filter not in EVAL_FILTERS:
            raise ValueError(f"vocbf: eval_filter must be one of {', '.join(EVAL_FILTERS)}, got {config.eval_filter!r}")
        task = ctx.task
        if task is None or task.barrier is None:
            raise DatasetError(
                "vocbf learns its barrier from the signed safety margin h(s) (h >= 0 safe); this task has no "
                "barrier h in saferl.envs.TASKS"
            )
        self.margin: Callable[[torch.Tensor], torch.Tensor] = task.barrier
        # The authors use dt = 1/max_episode_steps as "a rough approximation"; the task's real step is better
        # (f and g come out in the env's units, so α keeps its meaning).
        self.dt = float(task.dt) if task.dt else 1.0 / ctx.max_episode_steps
        o, a, dev = ctx.obs_dim, ctx.act_dim, ctx.device
        self.critic = QEnsemble(o, a, config.num_critics, config.hidden).to(dev)
        self.value = ValueNet(o, config.hidden, layer_norm=config.value_layer_norm).to(dev)
        self.actor = DeterministicActor(o, a, ctx.action_low, ctx.action_high, config.bc_hidden).to(dev)
        self.dynamics = AffineDynamics(o, a, config.dyn_hidden).to(dev)
        # The authors keep a Polyak target critic that no loss reads (the Q target bootstraps from V_c),
        # so there is none here.
        self.optimizers["critic"] = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr, foreach=True)
        self.optimizers["value"] = torch.optim.Adam(self.value.parameters(), lr=config.value_lr, foreach=True)
        self.optimizers["actor"] = torch.optim.Adam(self.actor.parameters(), lr=config.bc_lr, foreach=True)
        self.optimizers["dynamics"] = torch.optim.Adam(self.dynamics.parameters(), lr=config.dyn_lr, foreach=True)

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        h = self.margin(data.observations[:1])
        if h.shape != (1,):
            raise DatasetError(f"vocbf: the task's barrier must return one value per state, got shape {tuple(h.shape)}")
        return data

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        obs, act, next_obs = batch.observations, batch.actions, batch.next_observations
        h = self.margin(obs)

        # V_c first, regressed on the online critics (authors' order: update_vc, then update_qc)
        with torch.no_grad():
            q_min = self.critic(obs, act).amin(dim=0)
        v = self.value(obs)
        value_loss = expectile_loss(q_min - v, cfg.expectile).mean()
        optimize(self.optimizers["value"], value_loss)

        with torch.no_grad():
            target = hj_target(h, self.value(next_obs), batch.terminals, cfg.discount)
        q = self.critic(obs, act)  # [E, B]
        critic_loss = (q - target).pow(2).mean()
        optimize(self.optimizers["critic"], critic_loss)

        actor_loss = F.mse_loss(self.actor(obs), act)
        optimize(self.optimizers["actor"], actor_loss)

        # Same minimiser as the authors' MSE on s' = s + (f + g·u)·dt, measured in velocity units.
        dynamics_loss = F.mse_loss(self.dynamics(obs, act), (next_obs - obs) / self.dt)
        optimize(self.optimizers["dynamics"], dynamics_loss)

        return {
            "value_loss": value_loss.detach(),
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "dynamics_loss": dynamics_loss.detach(),
            "vc_mean": v.detach().mean(),
            "qc_mean": q.detach().mean(),
            "h_mean": h.mean(),
        }

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """The nominal (unfiltered) behaviour-cloning policy; the filter wraps the env at evaluation."""
        return self.actor(obs)

    # -- the safety filter ------------------------------------------------------------------------
    def barrier(self, alpha: float | None = None) -> Any:
        """The learned CBF: B = V_c with the learned control-affine model, ∇B·f + ∇B·g·u + α·B ≥ 0."""
        from saferl.safety import ControlAffineCBF

        alpha = self.config.cbf_alpha if alpha is None else alpha
        return ControlAffineCBF(self.value, self.dynamics.f, self.dynamics.g, alpha=alpha)

    def critic_barrier(self) -> Any:
        """Model-free alternative: Q_c(s, u) ≥ 0 (pessimistic member) linearised in u around u_nom."""
        from saferl.safety import CostCriticBarrier

        return CostCriticBarrier(self.critic, threshold=0.0, sense=">=", reduce="min", value=self.value)

    def wrap_eval_env(self, env: gym.Env) -> gym.Env:
        """Training-loop hook: evaluation episodes run the nominal policy through the safety filter."""
        if self.config.eval_filter == "none":
            return env
        from saferl.safety import SafetyFilter

        barrier = self.barrier() if self.config.eval_filter == "cbf" else self.critic_barrier()
        return SafetyFilter(env, barrier, solver=self.config.solver, on_infeasible=self.config.on_infeasible)
