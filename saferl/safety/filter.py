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

import math
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from saferl.safety.qp import (
    SOLVERS,
    AutoSolver,
    QPResult,
    as_batch,
    make_solver,
    project_halfspace_box_1,
    violation,
)

ON_INFEASIBLE = ("slack", "raise", "fallback")
_INTERVENTION_TOL = 1e-12


class InfeasibleConstraintError(RuntimeError):
    """No action in the box satisfies the barrier constraints (raised with ``on_infeasible="raise"``)."""


FallbackAction = Callable[[np.ndarray], np.ndarray] | np.ndarray | None


class _FilterCore:
    """The per-batch work shared by the single-env and the vector wrapper."""

    def __init__(
        self,
        barrier: Any,
        low: np.ndarray,
        high: np.ndarray,
        solver: str,
        on_infeasible: str,
        fallback_action: FallbackAction,
        solver_options: dict[str, Any] | None,
    ):
        if not callable(getattr(barrier, "constraints", None)):
            raise TypeError(
                f"barrier must have a method constraints(obs, u_nom) -> (A, b); got {type(barrier).__name__}"
            )
        if on_infeasible not in ON_INFEASIBLE:
            raise ValueError(f"on_infeasible must be one of {', '.join(ON_INFEASIBLE)}, got {on_infeasible!r}")
        if solver not in SOLVERS:
            raise ValueError(f"unknown QP solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        if fallback_action is not None and on_infeasible != "fallback":
            raise ValueError("fallback_action is only used with on_infeasible='fallback'")
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(
                "SafetyFilter needs a bounded action box (the QP projects onto it); wrap the env with "
                "gymnasium.wrappers.RescaleAction or pass action_low/action_high"
            )
        if np.any(low > high):
            raise ValueError(f"SafetyFilter: action box has low > high: low={low}, high={high}")
        self.barrier = barrier
        self.low, self.high = low, high
        self._low_list, self._high_list = low.tolist(), high.tolist()
        self.n = low.shape[0]
        self.solver_name = solver
        options = solver_options or {}
        self.solver = AutoSolver(**options) if solver == "auto" else make_solver(solver, **options)
        self._scalar_exact = solver in ("auto", "exact")
        self.on_infeasible = on_infeasible
        self.fallback_action = fallback_action

    @classmethod
    def for_space(
        cls,
        space: gym.Space,
        barrier: Any,
        solver: str,
        on_infeasible: str,
        fallback_action: FallbackAction,
        action_low: np.ndarray | None,
        action_high: np.ndarray | None,
        solver_options: dict[str, Any] | None,
    ) -> _FilterCore:
        """The core for an env's (single) action space; ``action_low``/``action_high`` narrow its box."""
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise TypeError(f"SafetyFilter needs a flat Box action space, got {space}")
        low = space.low if action_low is None else np.broadcast_to(action_low, space.shape)
        high = space.high if action_high is None else np.broadcast_to(action_high, space.shape)
        return cls(barrier, low, high, solver, on_infeasible, fallback_action, solver_options)

    def _solve(self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray) -> QPResult:
        u, feasible = self.solver.solve_batch(u_nom, A, b, self.low, self.high)
        slack = np.zeros(len(u))
        if not feasible.all():
            slack[~feasible] = np.linalg.norm(violation(u[~feasible], A[~feasible], b[~feasible]), axis=1)
        return QPResult(u, feasible, slack)

    def _ascent_action(self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Barrier-gradient ascent: the box vertex that most increases the violated rows (normalised)."""
        u0 = np.clip(u_nom, self.low, self.high)
        violated = A @ u0 < b
        rows = A[violated] if violated.any() else A
        d = (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-300)).sum(axis=0)
        return np.where(d > 0, self.high, np.where(d < 0, self.low, u0))

    def filter_one(
        self, obs: np.ndarray, u_nom: np.ndarray, describe: Callable[[int], str]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Filter one env step; the common case (one constraint row, a feasible QP, exact solver) runs on
        Python floats, because numpy's per-call overhead would dominate a 6-dimensional projection."""
        if self._scalar_exact:
            u_arr = np.asarray(u_nom, dtype=np.float64).reshape(1, -1)
            u_list = u_arr[0].tolist()
            if len(u_list) == self.n and all(map(math.isfinite, u_list)):
                A, b = self.barrier.constraints(obs[None], u_arr)
                A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64)
                if A.size == self.n and b.size == 1:
                    a, bb = A.ravel().tolist(), float(b.ravel()[0])
                    if all(map(math.isfinite, a)) and math.isfinite(bb):
                        t0 = time.perf_counter()
                        u, ok = project_halfspace_box_1(u_list, a, bb, self._low_list, self._high_list)
                        solve_us = (time.perf_counter() - t0) * 1e6
                        if ok:
                            lo, hi = self._low_list, self._high_list
                            sq = sum((u[j] - min(max(u_list[j], lo[j]), hi[j])) ** 2 for j in range(self.n))
                            correction = math.sqrt(sq)
                            return np.array(u), {
                                "intervened": correction > _INTERVENTION_TOL,
                                "correction_norm": correction,
                                "status": "optimal",
                                "slack": 0.0,
                                "solve_time_us": solve_us,
                                "infeasible": False,
                            }
        # several rows, an infeasible step, bad input or another solver: the batched path handles it all
        u, rec = self.filter(obs[None], np.asarray(u_nom)[None], describe)
        return u[0], {k: v[0].item() if isinstance(v[0], np.generic) else v[0] for k, v in rec.items()}

    def filter(
        self, obs: np.ndarray, u_nom: np.ndarray, describe: Callable[[int], str]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Filter a batch: ``obs [B, ...]``, ``u_nom [B, n]`` → executed actions ``[B, n]`` and records."""
        u_nom = np.asarray(u_nom, dtype=np.float64).reshape(len(obs), self.n)
        if not np.all(np.isfinite(u_nom)):
            raise ValueError(f"SafetyFilter: the nominal action is not finite at {describe(0)}: {u_nom}")
        A, b = self.barrier.constraints(obs, u_nom)
        u_nom, A, b, _ = as_batch(u_nom, A, b)
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b))):
            bad = int(np.flatnonzero(~(np.isfinite(A).all(axis=(1, 2)) & np.isfinite(b).all(axis=1)))[0])
            raise ValueError(f"SafetyFilter: the barrier returned NaN/inf constraints at {describe(bad)}")
        t0 = time.perf_counter()
        result = self._solve(u_nom, A, b)
        solve_us = (time.perf_counter() - t0) * 1e6 / len(u_nom)
        u, slack = result.u, np.array(result.slack, dtype=np.float64)
        status = np.where(result.feasible, "optimal", "relaxed").astype(object)
        for i in np.flatnonzero(~result.feasible):
            if self.on_infeasible == "raise":
                raise InfeasibleConstraintError(
                    f"SafetyFilter: at {describe(i)} no action in the box [{self.low}, {self.high}] satisfies "
                    f"the barrier constraints A·u ≥ b (A={A[i].tolist()}, b={b[i].tolist()}); the smallest "
                    f"achievable violation is {slack[i]:.4g}. Use on_infeasible='slack' or 'fallback' to "
                    "continue with a reported violation."
                )
            if self.on_infeasible == "fallback":
                if self.fallback_action is None:
                    u[i] = self._ascent_action(u_nom[i], A[i], b[i])
                else:
                    fb = self.fallback_action(obs[i]) if callable(self.fallback_action) else self.fallback_action
                    u[i] = np.clip(np.asarray(fb, dtype=np.float64).reshape(self.n), self.low, self.high)
                slack[i] = float(np.linalg.norm(violation(u[i : i + 1], A[i : i + 1], b[i : i + 1])))
                status[i] = "fallback"
        correction = np.linalg.norm(u - np.clip(u_nom, self.low, self.high), axis=1)
        records = {
            "intervened": correction > _INTERVENTION_TOL,
            "correction_norm": correction,
            "status": status,
            "slack": slack,
            "solve_time_us": np.full(len(u), solve_us),
            "infeasible": ~np.asarray(result.feasible, dtype=bool),
        }
        return u, records


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
        solver: ``"auto"`` (exact projection for one constraint row, OSQP for several), ``"exact"``,
            ``"osqp"``, ``"cvxpy"`` (DPP, compiled once) or ``"cvxpy-rebuild"`` (slow reference).
        on_infeasible: ``"slack"``, ``"raise"`` or ``"fallback"`` (see the module docstring).
        fallback_action: with ``"fallback"``, a safe action or a function obs → safe action; None uses the
            barrier-gradient ascent action.
        action_low, action_high: override the box (defaults: the env's action space bounds).
        solver_options: keyword arguments for the solver (e.g. OSQP tolerances, a cvxpy solver name).
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
        super().__init__(env)
        self.core = _FilterCore.for_space(
            env.action_space, barrier, solver, on_infeasible, fallback_action, action_low, action_high, solver_options
        )
        self._obs: np.ndarray | None = None
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
        u, rec = self.core.filter_one(self._obs, action, self._describe)
        # u lies in [low, high] and those bounds are values of the space's dtype, so the cast stays inside
        self.last_action = u.astype(self.action_space.dtype)
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
        super().__init__(env)
        self.core = _FilterCore.for_space(
            env.single_action_space,
            barrier,
            solver,
            on_infeasible,
            fallback_action,
            action_low,
            action_high,
            solver_options,
        )
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
