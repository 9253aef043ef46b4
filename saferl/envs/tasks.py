"""The task table: one entry per registered task, keyed by its Hydra name.

Reward normalisation constants (R_min, R_max) are the minimum and maximum episode reward returns of the
task's reference dataset (DSRL's convention), measured by building that dataset with its recipe and
default seed (`python -m saferl.collect env=<name>` prints them); `tests/test_datasets.py` rebuilds the
reference datasets and checks these numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from saferl.envs import comb_lock, hazard_nav, run_circle, velocity
from saferl.errors import SaferlError


class UnknownTaskError(SaferlError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class TaskSpec:
    name: str  # Hydra name, kebab-case
    env_id: str  # gymnasium id
    entry_point: str
    max_episode_steps: int
    cost_thresholds: tuple[float, ...]
    default_cost_limit: float
    dataset_id: str  # reference dataset, built locally by its recipe
    # DSRL's R_min/R_max of the reference dataset; None until a reference build has measured them (the
    # training loop then takes the constants recorded in the dataset it trains on, and says so).
    reward_min: float | None
    reward_max: float | None
    description: str = ""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    # Barrier h (h ≥ 0 safe, cost = 1[h(s') < 0]) and, where known, the dynamics (control-affine, continuous time:
    # ṡ = f(s) + g(s)·u); dt is the env's step.
    barrier: Callable[[Any], Any] | None = field(default=None, repr=False)
    drift: Callable[[Any], Any] | None = field(default=None, repr=False)
    control_matrix: Callable[[Any], Any] | None = field(default=None, repr=False)
    dt: float | None = None
    # Tasks whose observation encodes the step index within the episode (the combination lock) say how to read
    # it (batched, numpy or torch → int64), so finite-horizon policies with one network per step (HNPG) can
    # act from observations alone.
    timestep: Callable[[Any], Any] | None = field(default=None, repr=False)
    # False for tasks that end every episode themselves (terminated) within max_episode_steps: they are
    # registered without gymnasium's TimeLimit, which would also flag their last step as truncated.
    time_limit: bool = True
    # Other envs whose recordings share this task's observations, actions and dynamics (any version): the
    # velocity tasks accept D4RL-style Minari datasets recorded on gymnasium's own ``HalfCheetah-v5`` etc.
    compatible_envs: tuple[str, ...] = ()

    def records_on(self, env_id: str | None) -> bool:
        """Whether a dataset recorded on ``env_id`` (Minari's env spec) was recorded on this task; None (the
        dataset names no env) cannot be checked and counts as yes."""
        if env_id is None or env_id == self.env_id:
            return True
        return env_id.rsplit("-v", 1)[0] in self.compatible_envs

    def f(self, obs: Any) -> Any:
        if self.drift is None:
            raise ValueError(f"task {self.name} has no known dynamics")
        return self.drift(obs)

    def g(self, obs: Any) -> Any:
        if self.control_matrix is None:
            raise ValueError(f"task {self.name} has no known dynamics")
        return self.control_matrix(obs)

    def normalized_reward(self, episode_return: float) -> float:
        if self.reward_min is None or self.reward_max is None:
            raise ValueError(
                f"task {self.name} has no reward normalisation constants yet; build its reference dataset "
                f"(python -m saferl.collect env={self.name} budget=full) and use with_reward_range()"
            )
        return (episode_return - self.reward_min) / (self.reward_max - self.reward_min)

    def with_reward_range(self, reward_min: float, reward_max: float) -> TaskSpec:
        return replace(self, reward_min=float(reward_min), reward_max=float(reward_max))


def _nav_task(name: str, cls_name: str, geo: hazard_nav.NavGeometry, **kwargs: Any) -> TaskSpec:
    return TaskSpec(
        name=name,
        env_id=f"saferl/{cls_name}-v0",
        entry_point=f"saferl.envs.hazard_nav:{cls_name}Env",
        max_episode_steps=geo.max_episode_steps,
        barrier=partial(hazard_nav.barrier, geometry=geo),
        drift=partial(hazard_nav.drift, geometry=geo),
        control_matrix=partial(hazard_nav.control_matrix, geometry=geo),
        dt=geo.dt,
        dataset_id=f"saferl/{cls_name}/mixed-v0",
        **kwargs,
    )


def _velocity_task(agent: str, reward_range: tuple[float, float] | None = None) -> TaskSpec:
    rule = velocity.VELOCITY_RULES[agent]
    speed = "planar speed" if rule.planar else "x-velocity"
    return TaskSpec(
        name=f"{agent.lower()}-velocity",
        env_id=f"saferl/{agent}Velocity-v1",
        entry_point="saferl.envs.velocity:VelocityCostEnv",
        env_kwargs={"agent": agent},
        max_episode_steps=1000,
        cost_thresholds=(20.0, 40.0, 80.0),
        default_cost_limit=40.0,
        dataset_id=f"saferl/{agent}Velocity/mixed-v0",
        reward_min=None if reward_range is None else reward_range[0],
        reward_max=None if reward_range is None else reward_range[1],
        description=f"{agent}-v5, cost 1 per step with {speed} > {rule.threshold} (safety-gymnasium v1), 1000 steps",
        compatible_envs=(agent,),
        barrier=partial(velocity.barrier, rule=rule),  # no known dynamics: learned barriers only (V-OCBF)
        dt=rule.dt,
    )


def _run_circle_task(name: str, reward_range: tuple[float, float] | None = None) -> TaskSpec:
    spec = run_circle.ENV_SPECS[name]
    return TaskSpec(
        name=name,
        env_id=spec["env_id"],
        entry_point=spec["entry_point"],
        max_episode_steps=spec["max_episode_steps"],
        cost_thresholds=spec["cost_thresholds"],
        default_cost_limit=20.0,
        dataset_id=spec["env_id"].replace("-v0", "/mixed-v0"),
        reward_min=None if reward_range is None else reward_range[0],
        reward_max=None if reward_range is None else reward_range[1],
        description=spec["description"],
        barrier=partial(run_circle.barrier, name=name),  # no known dynamics: learned barriers only (V-OCBF)
        dt=run_circle.TASK_CONSTANTS[name]["dt"],
    )


# R_min/R_max of the Run/Circle reference builds recorded in benchmarks/datasets.md
_RUN_CIRCLE_REFERENCE = {"car-run": (-68.0750159581612, 1086.5871691020789)}

TASKS: dict[str, TaskSpec] = {
    task.name: task
    for task in [
        _nav_task(
            "point-robot",
            "PointRobot",
            hazard_nav.POINT_ROBOT,
            cost_thresholds=(5.0, 10.0, 20.0),
            default_cost_limit=10.0,
            reward_min=-0.9919852083548903,
            reward_max=17.51014168560505,
            description="2-D point robot, ṗ = u, goal (2.2, 2.2), three disc hazards, 200 steps",
        ),
        _nav_task(
            "boat-robot",
            "BoatRobot",
            hazard_nav.BOAT_ROBOT,
            cost_thresholds=(5.0, 10.0, 20.0),
            default_cost_limit=10.0,
            reward_min=-6.962255525868386,
            reward_max=2.3376313215121627,
            description="V-OCBF boat in a river current, ẋ = u1 + 2 − 0.5y², ẏ = u2, goal (1.5, 0), 400 steps",
        ),
        # R_min/R_max: the reference builds (recipe v2) recorded in benchmarks/datasets.md
        _velocity_task("HalfCheetah", (-208.85163899296975, 4000.7663640261762)),
        _velocity_task("Hopper", (84.78408413433344, 3037.5866278019676)),
        _velocity_task("Walker2d"),
        _velocity_task("Swimmer"),
        _velocity_task("Ant"),
        _velocity_task("Humanoid"),
        *(_run_circle_task(name, _RUN_CIRCLE_REFERENCE.get(name)) for name in run_circle.ENV_SPECS),
        TaskSpec(
            name="combination-lock",
            env_id="saferl/CombinationLock-v0",
            entry_point="saferl.envs.comb_lock:CombinationLockEnv",
            env_kwargs={"horizon": comb_lock.DEFAULT_HORIZON},
            max_episode_steps=comb_lock.DEFAULT_HORIZON,
            # No constraint: the cost is always 0, so the strictest limit κ = 0 is met by every policy
            # (DSRL's normalised cost (0 + 1)/(0 + 1) = 1 ≤ 1).
            cost_thresholds=(0.0,),
            default_cost_limit=0.0,
            dataset_id="saferl/CombinationLock/eps-greedy-v0",
            # episode returns lie in {0, 0.1, 1}: 0 and 1 are the reference dataset's min and max
            reward_min=0.0,
            reward_max=1.0,
            timestep=comb_lock.timestep,
            time_limit=False,  # every episode terminates after exactly `horizon` steps
            description="HNPG's continuous combination lock: H = 5 steps, 10 arms picked by softmax(a/0.1), "
            "reward 1 only for the right arm at every step, Hadamard-rotated noisy observations, no cost "
            "(other horizons: gymnasium.make(id, horizon=H))",
        ),
    ]
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by Hydra name (``point-robot``) or gymnasium id (``saferl/PointRobot-v0``)."""
    if name in TASKS:
        return TASKS[name]
    for task in TASKS.values():
        if task.env_id == name:
            return task
    valid = ", ".join(sorted(TASKS))
    raise UnknownTaskError(f"unknown task {name!r}; valid tasks: {valid}")
