"""`SafetyFilter`: a drop-in gymnasium wrapper that projects every action onto the barrier's safe set.

Each step solves ``min ‖u − u_nom‖²  s.t.  A(s) u ≥ b(s),  low ≤ u ≤ high`` for the nominal action u_nom
the agent passed to ``step``, executes the solution, and writes ``info["safety_filter"]``:

    intervened       the executed action differs from the (box-clipped) nominal one
    correction_norm  ‖u − clip(u_nom)‖₂
    status           "optimal" | "relaxed" (infeasible, minimal-violation action) | "fallback" | "skipped"
    slack            ‖max(0, b − A u)‖₂ of the executed action (0 unless the step was infeasible)
    solve_time_us    wall time of the QP solve
    infeasible       no action in the box satisfied the constraints (counted, whatever the mode)
    episode_interventions, episode_infeasible   running counts for the current episode

An infeasible step is never executed silently: ``on_infeasible="slack"`` executes the minimal-violation
action and reports its slack, ``"raise"`` raises `InfeasibleConstraintError` naming the step and the
violation, ``"fallback"`` executes ``fallback_action(obs)`` (or, without one, the barrier-gradient ascent
action: the box vertex that increases the violated constraint rows fastest). Every infeasible step is
counted.

Wrapping a ``gymnasium.vector.VectorEnv`` gives a `VectorSafetyFilter`: the barrier is evaluated once for
the whole batch and the per-env records come back as arrays in ``infos["safety_filter"]``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from saferl.safety.filter_core import (
    ON_INFEASIBLE,
    FallbackAction,
    InfeasibleConstraintError,
    SafetyFilterArgumentError,
    SafetyFilterTypeError,
    _FilterCore,
)

__all__ = [
    "ON_INFEASIBLE",
    "CorrectsActions",
    "FallbackAction",
    "InfeasibleConstraintError",
    "SafetyFilter",
    "SafetyFilterArgumentError",
    "SafetyFilterTypeError",
    "VectorSafetyFilter",
]


@runtime_checkable
class CorrectsActions(Protocol):
    """An env (wrapper) that may execute another action than the one it was given, as a safety filter does.

    ``last_action`` is the action the wrapped env executed at the last ``step`` (None before the first); the
    online loop (`saferl.online.OnlineLoop`) stores it instead of the proposed one, so replay data holds what
    the env really did.
    """

    last_action: np.ndarray | None


class SafetyFilter(gym.Wrapper):
    """QP safety filter around a gymnasium env (or, through `VectorSafetyFilter`, a vector env).

    It `CorrectsActions`: after each ``step``, ``last_action`` is the filtered action the env executed.

    Args:
        env: the env whose actions are filtered; its action space must be a bounded Box.
        barrier: an object with ``constraints(obs, u_nom) -> (A, b)`` (see `saferl.safety.Barrier`).
        solver: ``"auto"`` (exact projection for one constraint row, DAQP for several), ``"exact"``,
            ``"daqp"``, ``"osqp"``, ``"cvxpy"`` (DPP, compiled once) or ``"cvxpy-rebuild"`` (slow reference).
        on_infeasible: ``"slack"``, ``"raise"`` or ``"fallback"`` (see the module docstring).
        fallback_action: with ``"fallback"``, a safe action or a function obs → safe action; None uses the
            barrier-gradient ascent action.
        action_low, action_high: override the box (defaults: the env's action space bounds).
        solver_options: keyword arguments for the solver (e.g. DAQP/OSQP tolerances, a cvxpy solver name).
    """

    last_action: np.ndarray | None  # the filtered action of the last step (see `CorrectsActions`)

    def __new__(cls, env: Any = None, *args: Any, **kwargs: Any):
        if isinstance(env, gym.vector.VectorEnv):
            return VectorSafetyFilter(env, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        env: gym.Env,
        barrier: Any,
        solver: str = "auto",
        on_infeasible: str = "slack",
        fallback_action: FallbackAction = None,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        solver_options: dict[str, Any] | None = None,
    ):
        core = _FilterCore.for_space(
            env.action_space, barrier, solver, on_infeasible, fallback_action, action_low, action_high, solver_options
        )
        super().__init__(env)
        self.core = core
        self._obs: np.ndarray | None = None
        # `self.action_space` walks the whole wrapper chain on every access: read the dtype once
        self._dtype = env.action_space.dtype
        self.last_action: np.ndarray | None = None
        self.total_steps = self.total_interventions = self.total_infeasible = 0
        self.episode_steps = self.episode_interventions = self.episode_infeasible = 0

    @property
    def barrier(self) -> Any:
        return self.core.barrier

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = np.asarray(obs)
        self.episode_steps = self.episode_interventions = self.episode_infeasible = 0
        return obs, info

    def _describe(self, _row: int) -> str:
        return f"step {self.total_steps + 1} (episode step {self.episode_steps + 1})"

    def step(self, action):
        if self._obs is None:
            raise gym.error.ResetNeeded("SafetyFilter: call reset() before step()")
        # u lies in [low, high] and those bounds are values of the space's dtype, so the cast stays inside
        self.last_action, rec = self.core.filter_one(self._obs, action, self._describe, self._dtype)
        obs, reward, terminated, truncated, info = self.env.step(self.last_action)
        self._obs = np.asarray(obs)
        intervened, infeasible = bool(rec["intervened"]), bool(rec["infeasible"])
        self.total_steps += 1
        self.episode_steps += 1
        self.total_interventions += intervened
        self.episode_interventions += intervened
        self.total_infeasible += infeasible
        self.episode_infeasible += infeasible
        info = dict(info)
        info["safety_filter"] = {
            "intervened": intervened,
            "correction_norm": float(rec["correction_norm"]),
            "status": rec["status"],
            "slack": float(rec["slack"]),
            "solve_time_us": float(rec["solve_time_us"]),
            "infeasible": infeasible,
            "episode_interventions": self.episode_interventions,
            "episode_infeasible": self.episode_infeasible,
        }
        return obs, reward, terminated, truncated, info


class VectorSafetyFilter(gym.vector.VectorWrapper):
    """`SafetyFilter` for a gymnasium vector env: one barrier evaluation and one batched solve per step.

    With the default ``NEXT_STEP`` autoreset, the step after an episode ends only resets that sub-env and
    ignores its action: those rows are not filtered and are reported with status ``"skipped"``.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        barrier: Any,
        solver: str = "auto",
        on_infeasible: str = "slack",
        fallback_action: FallbackAction = None,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        solver_options: dict[str, Any] | None = None,
    ):
        core = _FilterCore.for_space(
            env.single_action_space,
            barrier,
            solver,
            on_infeasible,
            fallback_action,
            action_low,
            action_high,
            solver_options,
        )
        super().__init__(env)
        self.core = core
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        self._next_step_reset = mode == gym.vector.AutoresetMode.NEXT_STEP
        n = env.num_envs
        self._obs: np.ndarray | None = None
        self._resetting = np.zeros(n, dtype=bool)
        self.last_action: np.ndarray | None = None
        self.total_steps = 0
        self.total_interventions = np.zeros(n, dtype=np.int64)
        self.total_infeasible = np.zeros(n, dtype=np.int64)
        self.episode_steps = np.zeros(n, dtype=np.int64)
        self.episode_interventions = np.zeros(n, dtype=np.int64)
        self.episode_infeasible = np.zeros(n, dtype=np.int64)

    @property
    def barrier(self) -> Any:
        return self.core.barrier

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)))
        self._obs = np.asarray(obs)
        self._resetting[mask] = False
        for counter in (self.episode_steps, self.episode_interventions, self.episode_infeasible):
            counter[mask] = 0
        return obs, info

    def step(self, actions):
        if self._obs is None:
            raise gym.error.ResetNeeded("SafetyFilter: call reset() before step()")
        n = self.num_envs
        u_nom = np.asarray(actions, dtype=np.float64).reshape(n, self.core.n)
        u = np.clip(u_nom, self.core.low, self.core.high)
        records = {
            "intervened": np.zeros(n, dtype=bool),
            "correction_norm": np.zeros(n),
            "status": np.full(n, "skipped", dtype=object),
            "slack": np.zeros(n),
            "solve_time_us": np.zeros(n),
            "infeasible": np.zeros(n, dtype=bool),
        }
        live = np.flatnonzero(~self._resetting)
        if live.size:

            def describe(row: int) -> str:
                i = int(live[row])
                return f"step {self.total_steps + 1} of env {i} (episode step {self.episode_steps[i] + 1})"

            u_live, rec = self.core.filter(self._obs[live], u_nom[live], describe)
            u[live] = u_live
            for key, value in rec.items():
                records[key][live] = value
        # a sub-env that was resetting starts a new episode on this step
        for counter in (self.episode_steps, self.episode_interventions, self.episode_infeasible):
            counter[self._resetting] = 0
        space = self.single_action_space
        self.last_action = np.clip(u.astype(space.dtype), space.low, space.high)
        obs, rewards, terminated, truncated, infos = self.env.step(self.last_action)
        self._obs = np.asarray(obs)
        stepped = ~self._resetting
        self.total_steps += 1
        self.episode_steps += stepped
        self.total_interventions += records["intervened"]
        self.episode_interventions += records["intervened"]
        self.total_infeasible += records["infeasible"]
        self.episode_infeasible += records["infeasible"]
        done = np.asarray(terminated) | np.asarray(truncated)
        infos = dict(infos)
        infos["safety_filter"] = {
            **records,
            "episode_interventions": self.episode_interventions.copy(),
            "episode_infeasible": self.episode_infeasible.copy(),
        }
        infos["_safety_filter"] = np.ones(n, dtype=bool)
        if self._next_step_reset:
            self._resetting = done
        else:  # SAME_STEP (the returned obs already starts the next episode) or DISABLED (reset() zeroes)
            self._resetting = np.zeros(n, dtype=bool)
            if self.env.metadata.get("autoreset_mode") == gym.vector.AutoresetMode.SAME_STEP:
                for counter in (self.episode_steps, self.episode_interventions, self.episode_infeasible):
                    counter[done] = 0
        return obs, rewards, terminated, truncated, infos
