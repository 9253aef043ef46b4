"""The safety-filter QP ``min ‖u − u_nom‖²  s.t.  A u ≥ b,  lo ≤ u ≤ hi``: batching, the action box, the
feasibility tolerance, the `QPResult` every solver returns, the `QPSolver` interface and `RowwiseSolver`, the
base of the solvers that take one problem at a time, with the two-stage relaxation for infeasible problems.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

OSQP_INFTY = 1e30  # OSQP's infinity (its Python update clips to it; the direct path must do the same)

# Primal feasibility tolerance, relative to 1 + |b|: a returned action counts as feasible when
# A u ≥ b − FEAS_TOL·(1 + |b|).
FEAS_TOL = 1e-9


class QPSolverError(RuntimeError):
    """A solver failed on a problem it should solve (not an infeasible problem: that is reported)."""


@dataclass
class QPResult:
    u: np.ndarray  # [B, n] (or [n] for a single problem)
    feasible: np.ndarray  # [B] bool: the constraints and the box admit an action
    slack: np.ndarray  # [B] ‖max(0, b − A u)‖₂ of the returned action

    def __getitem__(self, i: int) -> QPResult:
        return QPResult(self.u[i], self.feasible[i], self.slack[i])


def as_batch(u_nom: np.ndarray, A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Bring (u_nom, A, b) to ``[B, n], [B, m, n], [B, m]`` float64; the flag says the input was unbatched."""
    u_nom = np.asarray(u_nom, dtype=np.float64)
    single = u_nom.ndim == 1
    u_nom = u_nom.reshape(-1, u_nom.shape[-1])
    batch, n = u_nom.shape
    A = np.asarray(A, dtype=np.float64).reshape(batch, -1, n)
    b = np.asarray(b, dtype=np.float64).reshape(batch, -1)
    if A.shape[1] != b.shape[1]:
        raise ValueError(f"A has {A.shape[1]} constraint rows but b has {b.shape[1]} entries")
    return u_nom, A, b, single


def violation(u: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row constraint violation ``max(0, b − A u)`` for batched ``u [B, n]``: ``[B, m]``."""
    return np.maximum(0.0, b - np.einsum("bmn,bn->bm", A, u))


def _finish(u: np.ndarray, feasible: np.ndarray, A: np.ndarray, b: np.ndarray, single: bool) -> QPResult:
    slack = np.zeros(len(u))
    if not feasible.all():
        slack[~feasible] = np.linalg.norm(violation(u[~feasible], A[~feasible], b[~feasible]), axis=-1)
    if single:
        return QPResult(u[0], feasible[0], slack[0])
    return QPResult(u, feasible, slack)


def _box(lo: Any, hi: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if lo.shape != (n,):
        lo = np.full(n, lo) if lo.ndim == 0 else np.broadcast_to(lo, (n,))
    if hi.shape != (n,):
        hi = np.full(n, hi) if hi.ndim == 0 else np.broadcast_to(hi, (n,))
    if not (lo <= hi).all() or not np.isfinite(hi - lo).all():  # one pass catches NaN, ±inf and low > high
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError("the action box must be finite (got an infinite or NaN bound)")
        raise ValueError(f"action box has low > high: low={lo}, high={hi}")
    return lo, hi


def box_feasible(u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Rows whose clipped nominal action already satisfies every constraint (then it is the QP's solution)."""
    u = np.clip(u_nom, lo, hi)
    return np.all(np.einsum("bmn,bn->bm", A, u) >= b - FEAS_TOL * (1.0 + np.abs(b)), axis=-1)


class QPSolver(ABC):
    """Interface: ``solve`` takes any (batched or single) problem; ``solve_batch`` takes checked inputs
    (float64 ``[B, n], [B, m, n], [B, m]`` and a finite box ``[n]``) and returns ``(u, feasible)``."""

    name: str = ""

    def solve(self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: Any, hi: Any) -> QPResult:
        u_nom, A, b, single = as_batch(u_nom, A, b)
        lo, hi = _box(lo, hi, u_nom.shape[1])
        u, feasible = self.solve_batch(u_nom, A, b, lo, hi)
        return _finish(u, feasible, A, b, single)

    @abstractmethod
    def solve_batch(
        self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Solutions ``[B, n]`` and per-row feasibility ``[B]`` (infeasible rows: minimal violation)."""


class RowwiseSolver(QPSolver):
    """Solvers that take one problem at a time (OSQP, cvxpy), with the two-stage relaxation when infeasible."""

    @abstractmethod
    def _solve_one(self, u_nom, A, b, lo, hi) -> tuple[np.ndarray | None, str]:
        """The QP's solution (None when infeasible or failed) and the solver's status."""

    @abstractmethod
    def _min_violation(self, u_nom, A, b, lo, hi) -> np.ndarray | None:
        """Per-row slack s ≥ 0 of the smallest total violation: A u ≥ b − s is feasible in the box."""

    def solve_batch(
        self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        u = np.clip(u_nom, lo, hi)
        feasible = np.ones(len(u), dtype=bool)
        if len(u) == 1:  # one env step: skip the batched bookkeeping
            rows = [] if (A[0] @ u[0] >= b[0] - FEAS_TOL * (1.0 + np.abs(b[0]))).all() else [0]
        else:
            rows = np.flatnonzero(~box_feasible(u_nom, A, b, lo, hi))
        for i in rows:
            x, status = self._solve_one(u_nom[i], A[i], b[i], lo, hi)
            if status == "infeasible":
                feasible[i] = False
                x = relaxed(self, u_nom[i], A[i], b[i], lo, hi)
            if x is None:
                raise QPSolverError(f"{self.name} could not solve the safety-filter QP ({status})")
            u[i] = np.clip(x, lo, hi)
        return u, feasible


def relaxed(solver, u_nom, A, b, lo, hi) -> np.ndarray | None:
    """Stage 2 of the lexicographic relaxation: the closest action among the minimal-violation ones."""
    s = solver._min_violation(u_nom, A, b, lo, hi)
    if s is None:
        return None
    for margin in (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4):  # stage 1 is only accurate to the solver tolerance
        x, status = solver._solve_one(u_nom, A, b - s - margin * (1.0 + np.abs(b)), lo, hi)
        if x is not None:
            return x
    return None
