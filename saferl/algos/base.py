"""What every algorithm offers the training loop, and what the loop tells it about the problem."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from saferl.data import Batch, OfflineDataset
from saferl.envs import TaskSpec
from saferl.nn import members

if TYPE_CHECKING:
    import gymnasium as gym

    from saferl.evaluation import BatchPolicy, EpisodicPolicy


@dataclass
class AlgoContext:
    """Problem facts an algorithm may need: shapes, action box, the cost limit and the task."""

    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    cost_limit: float
    max_episode_steps: int
    device: torch.device
    task: TaskSpec | None = None

    @classmethod
    def for_task(
        cls,
        task: TaskSpec,
        source: OfflineDataset | gym.Env,
        cost_limit: float,
        device: torch.device | str = "cpu",
    ) -> AlgoContext:
        """The context of training on ``task``: shapes from ``source`` (a dataset or an env), the action box
        from the env (the task's own env when ``source`` is a dataset), episode length from the task."""
        if isinstance(source, OfflineDataset):
            import gymnasium as gym

            env = gym.make(task.env_id)
            space = env.action_space
            env.close()
            obs_dim, act_dim = source.obs_dim, source.act_dim
        else:
            space = source.action_space
            obs_dim = int(np.prod(source.observation_space.shape))
            act_dim = int(np.prod(space.shape))
        return cls(
            obs_dim=obs_dim,
            act_dim=act_dim,
            action_low=space.low,
            action_high=space.high,
            cost_limit=float(cost_limit),
            max_episode_steps=task.max_episode_steps,
            device=torch.device(device),
            task=task,
        )


@dataclass
class AlgoConfig:
    """Fields every algorithm config has; subclasses add their hyperparameters."""

    batch_size: int = 256
    steps: int = 100_000  # default training length of this algorithm (``steps=`` overrides)


@dataclass
class BasePolicyConfig(AlgoConfig):
    """Fields of algorithms that adjust the frozen trained policy of another run (``base_policy = True``, e.g.
    CDSA; ``init_from=<run dir>`` names the run). `saferl.runs` fills them in from that run and config.yaml
    records them, so `load_run` rebuilds the base (its weights are in the run's own checkpoint) without the
    base run's directory. They are a record, not options: a run refuses values that disagree with init_from."""

    base_run: str = ""  # the base run's directory (absolute)
    base_algo: str = ""  # its algorithm (a REGISTRY name)
    base_options: dict[str, Any] = field(default_factory=dict)  # its algorithm options (config.yaml's algo block)


@dataclass
class O2OConfig(AlgoConfig):
    """Fields of offline→online algorithms: how the online phase (``online_steps=`` env steps) runs.

    ``online_offline_ratio``: share of each online batch drawn from the offline dataset; 0 = online data only
    (a fresh buffer), a value in (0, 1) = that fixed share (Cal-QL's mixing ratio), −1 = one buffer holding
    the offline data followed by the online data, sampled uniformly (IQL / FamO2O fine-tuning).
    """

    online_buffer_size: int = 1_000_000  # online transitions kept (FIFO)
    online_offline_ratio: float = -1.0
    online_warmup: int = 0  # env steps collected with the pretrained policy before the first online update
    updates_per_step: float = 1.0  # gradient updates per env step (UTD)


class OnlineMode(enum.StrEnum):
    """How an offline→online algorithm's online phase collects data (`saferl.online.OnlineLoop`)."""

    OFF_POLICY = "off_policy"  # a replay buffer; ``online_update(batch)`` ``updates_per_step`` times per env step
    ON_POLICY = "on_policy"  # whole episodes, at least ``rollout_steps`` env steps, per ``online_update(rollout)``


class ExpertData(enum.StrEnum):
    """How an algorithm uses expert demonstrations (``expert_dataset=``, `saferl.runs`), declared by its
    ``expert_data`` ClassVar; an algorithm that reads them gets them through ``prepare_imitation``."""

    NONE = "none"  # never reads expert data: expert_dataset= is refused
    OPTIONAL = "optional"  # trains without; with expert_dataset= it calls prepare_imitation
    REQUIRED = "required"  # imitation: a run without expert_dataset= is refused


class Algorithm(nn.Module):
    """Base class: networks are submodules; optimizers live in ``self.optimizers`` so that
    ``state_dict`` captures everything a resumed run needs.

    Everything the training loop asks of an algorithm is declared here with its default; the loop calls these
    members directly. Offline→online algorithms set ``online_mode`` (an `OnlineMode`; its string value is
    accepted and checked when the class is defined): off-policy (the loop keeps a replay buffer, calls
    ``explore`` for every env step and ``online_update(batch)`` ``updates_per_step`` times per step) or
    on-policy (the loop collects whole episodes, at least ``rollout_steps`` env steps, and calls
    ``online_update(rollout)`` with them as an `OfflineDataset`). ``start_online`` runs once at the switch.
    """

    name: ClassVar[str]
    Config: ClassVar[type[AlgoConfig]] = AlgoConfig
    online_mode: ClassVar[OnlineMode | None] = None  # None: offline only
    # True when `wrap_eval_env` changes the env: the final evaluation then also reports the bare policy
    wraps_eval_env: ClassVar[bool] = False
    # False when ``update`` cannot run under ``torch.func.vmap`` (K seeds as one batched model, ``seeds=[…]``):
    # such an algorithm is refused there with a request to run one process per seed
    batched_seeds: ClassVar[bool] = True
    # True: one trained model serves every cost threshold κ, which it takes as an input when acting
    # (`episodic_policy(κ)`, e.g. CDT's cost-to-go); runs then evaluate it conditioned on each κ they report
    threshold_conditioned: ClassVar[bool] = False
    # whether ``expert_dataset=`` is refused, accepted or needed (an `ExpertData`; its string value is accepted)
    expert_data: ClassVar[ExpertData] = ExpertData.NONE
    # True: the algorithm adjusts the frozen policy of another trained run (``init_from=<run dir>``, needed); its
    # Config is a `BasePolicyConfig` and its constructor takes that run's algorithm as ``base=`` (`saferl.runs`)
    base_policy: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mode = cls.__dict__.get("online_mode")
        if mode is not None and not isinstance(mode, OnlineMode):
            try:
                cls.online_mode = OnlineMode(mode)
            except ValueError:
                known = ", ".join(repr(m.value) for m in OnlineMode)
                raise TypeError(f"{cls.__qualname__}.online_mode={mode!r}; use None, {known}") from None
        expert = cls.__dict__.get("expert_data")
        if expert is not None and not isinstance(expert, ExpertData):
            try:
                cls.expert_data = ExpertData(expert)
            except ValueError:
                known = ", ".join(repr(m.value) for m in ExpertData)
                raise TypeError(f"{cls.__qualname__}.expert_data={expert!r}; use one of {known}") from None

    def __init__(self, config: AlgoConfig, ctx: AlgoContext):
        super().__init__()
        self.config = config
        self.ctx = ctx
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.num_updates = 0  # algorithms with delayed updates count here; checkpointed

    @classmethod
    def make_config(cls, overrides: dict[str, Any]) -> AlgoConfig:
        """Build the config from Hydra's ``algo`` group, rejecting keys the algorithm does not have."""
        fields = {f.name: f for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ValueError(
                f"algorithm {cls.name!r} has no option(s) {', '.join(unknown)}; its options are "
                f"{', '.join(sorted(fields))}"
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        for name, value in values.items():
            problem = _field_problem(name, value)
            if problem:
                default = fields[name].default
                hint = f" (its default is {default!r})" if default is not dataclasses.MISSING else ""
                raise ValueError(f"algo.{name}={value!r} is not allowed: {problem}{hint}")
        return cls.Config(**values)

    # -- hooks for the training loop ------------------------------------------------------------
    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        """Preprocess the dataset once before training (filter episodes, rescale rewards, …)."""
        return data

    def prepare_imitation(self, data: OfflineDataset, expert: OfflineDataset) -> OfflineDataset:
        """Called instead of ``prepare`` when the run has expert episodes (``expert_dataset=``; only for
        algorithms whose ``expert_data`` is not NONE): ``data`` is the training dataset, ``expert`` the expert
        episodes the run selected (same shapes and task). Returns the data the loop samples from: by default the
        training data ∪ the expert episodes; an algorithm that also needs ``expert`` at sampling time keeps a
        reference to it."""
        return union_with_expert(data, expert)

    def sample(self, data: OfflineDataset, batch_size: int, generator: torch.Generator | None = None) -> Any:
        """Draw one training batch (override for extra per-transition data or sequences)."""
        return data.sample(batch_size, generator=generator)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step; returns scalar tensors (no host sync: the loop reads them at log time)."""
        raise NotImplementedError

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for a batch of observation tensors."""
        raise NotImplementedError

    # -- hooks for evaluation -------------------------------------------------------------------
    def episodic_policy(self, cost_target: float | None = None) -> BatchPolicy | EpisodicPolicy:
        """What evaluation rollouts call: ``act`` by default; sequence models return an `EpisodicPolicy`
        that keeps per-episode context (CDT: returns-to-go; HNPG: the step). ``cost_target``: the threshold κ
        a `threshold_conditioned` algorithm acts for (None: the run's cost limit); others ignore it."""
        return self.act

    def wrap_eval_env(self, env: gym.Env) -> gym.Env:
        """Wrap every evaluation env (e.g. V-OCBF's safety filter around the nominal policy); identity by
        default. Algorithms that wrap set ``wraps_eval_env = True``."""
        return env

    # -- offline→online hooks (used only when ``online_mode`` is set) -------------------------------
    def start_online(self, offline: OfflineDataset) -> None:
        """Called when the online phase begins, and again when a run resumes in it (so: idempotent):
        switch schedules to their online values, keep a reference to the offline data, …"""

    def check_online(self) -> None:
        """Raise ValueError (with what to do instead) when this algorithm cannot fine-tune on ctx's task;
        `saferl.runs` calls it once per offline→online run, before a run directory exists."""

    @property
    def mc_gamma(self) -> float | None:
        """Off-policy: the discount of the Monte-Carlo returns-to-go the replay buffer stores with every row
        (Cal-QL); None (the default) stores none and lets transitions in as they happen."""
        return None

    @property
    def rollout_steps(self) -> int:
        """On-policy: the least number of env steps (whole episodes) behind each ``online_update(rollout)``;
        by default the config's ``rollout_steps`` field, which on-policy configs declare."""
        steps = getattr(self.config, "rollout_steps", None)  # on-policy configs only; O2OConfig has no such field
        if steps is None:
            raise NotImplementedError(f"{self.name} is on-policy but its config has no rollout_steps")
        return int(steps)

    def explore(self, obs: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The action taken in the env while collecting online data (default: a policy sample).
        ``timesteps`` (int64 [B]) is each env's step index within its episode, for finite-horizon policies
        with one network per step (HNPG); such algorithms also override ``episodic_policy()`` for evaluation."""
        return self.policy(obs, deterministic=False)

    def online_update(self, batch: Any) -> dict[str, torch.Tensor]:
        """One online update: a replay `Batch` (off-policy) or a rollout `OfflineDataset` (on-policy)."""
        return self.update(batch)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of numpy observations ``[B, obs_dim]`` (a single ``[obs_dim]`` works too)."""
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.ctx.device)
        single = obs_t.ndim == 1
        was_training = self.training
        if was_training:  # switching modes walks every submodule: only pay for it when needed
            self.eval()
        try:
            with torch.inference_mode():
                action = self.policy(obs_t[None] if single else obs_t, deterministic)
        finally:
            if was_training:
                self.train(True)
        out = action.float().cpu().numpy()
        return out[0] if single else out

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {
            "modules": super().state_dict(*args, **kwargs),
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "schedulers": {k: sched.state_dict() for k, sched in self.schedulers.items()},
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True):  # type: ignore[override]
        result = super().load_state_dict(state["modules"], strict=strict)
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        for key, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][key])
        self.num_updates = state.get("num_updates", 0)
        return result


def union_with_expert(data: OfflineDataset, expert: OfflineDataset) -> OfflineDataset:
    """The training data ∪ the expert episodes: ``data`` followed by ``expert``, or ``data`` itself when the
    expert episodes were taken from it (``expert_dataset=safe-top`` marks them ``from_training_data``)."""
    if expert.metadata.get("from_training_data"):
        return data
    return data.concat(expert)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _field_problem(name: str, value: Any) -> str | None:
    """What is wrong with an algorithm option, judged by its name alone (the conventions every config follows):
    batch sizes and ensemble/sample counts are whole numbers >= 1, learning rates finite and >= 0, hidden sizes
    whole numbers >= 1, discounts in [0, 1], the algorithm's default ``steps`` a whole number >= 0. None when
    the value is fine or the name follows no convention."""
    if name == "batch_size" or name.endswith("_batch_size") or name.startswith("num_"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"{name} must be a whole number >= 1; use e.g. algo.{name}={256 if 'batch' in name else 2}"
    elif name in ("lr", "learning_rate") or name.endswith("_lr"):
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            return f"a learning rate must be a finite number >= 0; use e.g. algo.{name}=3e-4"
    elif name == "hidden" or name.endswith("_hidden"):
        sizes = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
            return f"hidden layer sizes must be whole numbers >= 1; use e.g. algo.{name}=[256,256]"
    elif name in ("discount", "gamma"):
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            return f"a discount must lie in [0, 1]; use e.g. algo.{name}=0.99"
    elif name == "steps":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return "the algorithm's default training length must be a whole number >= 0; use e.g. algo.steps=10000"
    return None


def adam(params, lr: float, weight_decay: float = 0.0, decoupled: bool = False) -> torch.optim.Optimizer:
    """Adam (or AdamW) with the fused kernel: one pass over all parameters instead of one per tensor."""
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay, fused=True)


def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float | None = None) -> None:
    """zero_grad → backward → (clip) → step for one loss and its optimizer (under a `MemberStack`: every
    member's step, with its own clipping)."""
    optimize_accumulated(optimizer, (loss,), max_grad_norm)


def optimize_accumulated(
    optimizer: torch.optim.Optimizer, losses: Iterable[torch.Tensor], max_grad_norm: float | None = None
) -> None:
    """`optimize` for a loss that comes in parts (gradient accumulation over a batch's chunks): each part's
    backward runs as soon as it is produced, so one chunk's graph is freed before the next chunk's forward.

    The backward computes gradients for this optimizer's parameters only: what a loss would leave on other
    parameters (a critic's, under the actor's loss) is never read, since every step zeroes its own first, and
    skipping it drops the critic's weight-gradient matmuls from every actor update.
    """
    stack = members.active()
    if stack is not None and stack.owns(optimizer):
        stack.step(optimizer, losses, max_grad_norm)
        return
    params = trainable(optimizer)
    optimizer.zero_grad(set_to_none=True)
    for loss in losses:
        loss.backward(inputs=params)
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()


def trainable(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters that take gradients."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
