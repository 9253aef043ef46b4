"""The per-step work of `SafetyFilter`, shared by the single-env and the vector wrapper: evaluate the barrier,
solve the QP (on Python floats or one unbatched DAQP problem for a single env step), apply ``on_infeasible``
and build the per-step records."""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from saferl.errors import SaferlError
from saferl.safety.qp import (
    SOLVERS,
    AutoSolver,
    QPResult,
    as_batch,
    clip_list,
    make_solver,
    project_halfspace_box_1,
    violation,
)

ON_INFEASIBLE = ("slack", "raise", "fallback")
_INTERVENTION_TOL = 1e-12


def _record(correction: float, solve_us: float) -> dict[str, Any]:
    """The per-step record of a feasible step."""
    return {
        "intervened": correction > _INTERVENTION_TOL,
        "correction_norm": correction,
        "status": "optimal",
        "slack": 0.0,
        "solve_time_us": solve_us,
        "infeasible": False,
    }


class InfeasibleConstraintError(RuntimeError):
    """No action in the box satisfies the barrier constraints (raised with ``on_infeasible="raise"``)."""


FallbackAction = Callable[[np.ndarray], np.ndarray] | np.ndarray | None


class SafetyFilterArgumentError(SaferlError, ValueError):
    """A `SafetyFilter` argument with a bad value (a `ValueError` too, as these were before)."""


class SafetyFilterTypeError(SaferlError, TypeError):
    """A `SafetyFilter` argument of the wrong kind: the action space, the barrier (a `TypeError` too)."""


class _FilterCore:
    """The per-batch work shared by the single-env and the vector wrapper."""

    def __init__(
        self,
        barrier: Any,
        low: np.ndarray,
        high: np.ndarray,
        solver: Any,
        on_infeasible: Any,
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
        # several rows on one env step: DAQP on the single problem, without the batch bookkeeping
        daqp = self.solver.daqp if solver == "auto" else self.solver if solver == "daqp" else None
        self._rows_one = None if daqp is None else daqp.solve_one
        self._fast = self._scalar_exact or self._rows_one is not None
        self._shape = (self.n,)
        row = getattr(barrier, "constraint_row", None)
        self._row = row if callable(row) else None
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
        """The core for an env's (single) action space; ``action_low``/``action_high`` narrow its box. The
        arguments are checked first, each error naming the bad value and what to pass instead."""
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise SafetyFilterTypeError(
                f"SafetyFilter needs a flat (1-D) Box action space, got {space}; it filters continuous actions: "
                "wrap an env whose action_space is a 1-D gymnasium.spaces.Box (reshape others with an ActionWrapper)"
            )
        if not callable(getattr(barrier, "constraints", None)):
            raise SafetyFilterTypeError(
                f"barrier={type(barrier).__name__} has no method constraints(obs, u_nom) -> (A, b); pass a "
                "saferl.safety.Barrier such as ControlAffineCBF(h, f, g) or ControlAffineCBF.for_task(task)"
            )
        if not isinstance(solver, str) or solver not in SOLVERS:
            raise SafetyFilterArgumentError(f"unknown QP solver {solver!r}; use solver= one of {', '.join(SOLVERS)}")
        if not isinstance(on_infeasible, str) or on_infeasible not in ON_INFEASIBLE:
            raise SafetyFilterArgumentError(
                f"on_infeasible must be one of {', '.join(ON_INFEASIBLE)}, got {on_infeasible!r}; use "
                "on_infeasible='slack' (the minimal-violation action, reported)"
            )
        if solver_options is not None and not isinstance(solver_options, dict):
            raise SafetyFilterArgumentError(
                f"solver_options={solver_options!r} is not a dict; pass keyword arguments for the solver as a dict"
            )
        try:
            low = space.low if action_low is None else np.broadcast_to(action_low, space.shape)
            high = space.high if action_high is None else np.broadcast_to(action_high, space.shape)
            return cls(barrier, low, high, solver, on_infeasible, fallback_action, solver_options)
        except TypeError as err:
            if isinstance(err, SaferlError):
                raise
            raise SafetyFilterTypeError(
                str(err) if str(err).startswith("SafetyFilter") else f"SafetyFilter: {err}"
            ) from None
        except ValueError as err:
            if isinstance(err, SaferlError):
                raise
            message = str(err) if "SafetyFilter" in str(err) else f"SafetyFilter: {err}"
            raise SafetyFilterArgumentError(message) from None

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

    def _row_one(self, obs: np.ndarray, u_nom: Any) -> tuple[list[float], Any, Any] | None:
        """(u_nom, a, b) for one step: one row on Python floats for the exact projection, else (several rows,
        or solver 'daqp') float64 ``A [m, n], b [m]``; None for what only the batched path handles (bad
        input, NaN rows, unexpected shapes).

        Barriers with ``constraint_row(obs, u_nom) -> (a, b)`` give the row without any numpy batching;
        the others go through ``constraints`` on a batch of one.
        """
        if type(u_nom) is np.ndarray and u_nom.shape == self._shape:
            u_list = u_nom.tolist()  # float32 → Python float is exact, as the float64 cast was
        else:
            u_list = np.asarray(u_nom, dtype=np.float64).ravel().tolist()
            if len(u_list) != self.n:
                return None
        if not all(map(math.isfinite, u_list)):
            return None
        if self._row is not None:
            a, b = self._row(obs, u_list)
        else:
            A, b = self.barrier.constraints(obs[None], np.array([u_list]))
            A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64)
            if A.size != self.n or b.size != 1 or not self._scalar_exact:
                m = b.size
                if self._rows_one is None or A.shape != (1, m, self.n) or b.shape != (1, m):
                    return None
                if not (np.isfinite(A).all() and np.isfinite(b).all()):
                    return None
                return u_list, A[0], b[0]
            a, b = A.ravel().tolist(), b.ravel()[0]
        if not self._scalar_exact:  # solver 'daqp' and a barrier with `constraint_row`
            return u_list, np.array([a], dtype=np.float64), np.array([b], dtype=np.float64)
        b = float(b)
        if len(a) != self.n or not (math.isfinite(b) and all(map(math.isfinite, a))):
            return None
        return u_list, a, b

    def _scalar_step(self, u_list: list[float], a: list[float], b: float, dtype: Any) -> tuple | None:
        """One row, exact projection on Python floats; None when infeasible (the batched path reports it)."""
        lo, hi = self._low_list, self._high_list
        t0 = time.perf_counter()
        clipped = clip_list(u_list, lo, hi)
        if sum(map(operator.mul, a, clipped)) >= b:  # already safe: the projection's own first test
            u, ok, correction = clipped, True, 0.0
        else:
            u, ok = project_halfspace_box_1(u_list, a, b, lo, hi)
            correction = math.sqrt(sum((uj - cj) ** 2 for uj, cj in zip(u, clipped, strict=True)))
        solve_us = (time.perf_counter() - t0) * 1e6
        if not ok:
            return None
        return np.array(u, dtype=dtype), _record(correction, solve_us)

    def _rows_step(self, u_list: list[float], A: np.ndarray, b: np.ndarray, dtype: Any) -> tuple | None:
        """Several rows (or solver 'daqp'), DAQP on the one problem; None when infeasible."""
        u_nom = np.array(u_list)
        t0 = time.perf_counter()
        u, ok = self._rows_one(u_nom, A, b, self.low, self.high)
        solve_us = (time.perf_counter() - t0) * 1e6
        if not ok:
            return None
        # the batched path's expression on [1, n], so that the value is the same to the last bit
        correction = np.linalg.norm((u - np.clip(u_nom, self.low, self.high))[None], axis=1)[0].item()
        return u.astype(dtype), _record(correction, solve_us)

    def filter_one(
        self, obs: np.ndarray, u_nom: np.ndarray, describe: Callable[[int], str], dtype: Any = np.float64
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Filter one env step, returning the action as ``dtype``. The common cases (a feasible QP with one
        row and the exact solver, or several rows and DAQP) skip the batch bookkeeping: at 6 actions numpy's
        per-call overhead would dominate the solve."""
        row = self._row_one(obs, u_nom) if self._fast else None
        if row is not None:
            step = self._scalar_step if type(row[1]) is list else self._rows_step
            out = step(*row, dtype)
            if out is not None:
                return out
        # an infeasible step, bad input or another solver: the batched path handles it all
        u, rec = self.filter(obs[None], np.asarray(u_nom)[None], describe)
        return u[0].astype(dtype), {k: v[0].item() if isinstance(v[0], np.generic) else v[0] for k, v in rec.items()}

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
