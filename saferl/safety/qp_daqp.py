"""`DAQPSolver`: DAQP, a dual active-set solver for small dense QPs (https://github.com/darnstrom/daqp).

At the filter's size (n ≤ ~10 actions, a few rows) an active-set method finishes in a handful of
iterations and returns the exact solution on its active set, with no set-up to cache and no ADMM
tolerance to polish away; the per-solve cost is mostly the Python call. The action box goes in as DAQP's
simple bounds (the first n entries of the bound vectors), the rows as ``b ≤ A u ≤ +inf``.
"""

from __future__ import annotations

import operator

import numpy as np

from saferl.safety.qp_cvxpy import CvxpySolver
from saferl.safety.qp_problem import FEAS_TOL, OSQP_INFTY, RowwiseSolver

# DAQP exit flags (https://darnstrom.github.io/daqp/parameters): 1 optimal, 2 optimal with soft constraints
# violated, -1 primal infeasible; the rest (cycling, iteration limit, ...) are failures.
_OPTIMAL = (1, 2)
_INFEASIBLE = -1


class DAQPSolver(RowwiseSolver):
    """DAQP per problem: ``min ½‖u‖² − u_nomᵀu`` (same minimiser as ‖u − u_nom‖²) over rows and box.

    ``primal_tol`` is DAQP's absolute feasibility tolerance; it is set far below the filter's ``FEAS_TOL``
    relative check so that a returned action passes it for rows of any scale. A failed solve (not an
    infeasible one) retries in cvxpy/Clarabel, as `OSQPSolver` does.
    """

    name = "daqp"

    def __init__(self, primal_tol: float = 1e-12, dual_tol: float = 1e-12, iter_limit: int = 1000):
        self.settings = dict(primal_tol=primal_tol, dual_tol=dual_tol, iter_limit=iter_limit)
        self._eye: dict[int, np.ndarray] = {}
        self._bounds: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._cvxpy: CvxpySolver | None = None

    def solve_one(
        self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[np.ndarray, bool]:
        """One problem (float64 ``[n], [m, n], [m]``, a checked box ``[n]``): ``(u, feasible)``, the same
        solution as ``solve_batch`` on a batch of one, without the batch bookkeeping (the single-env filter
        path: at this size each numpy call costs about as much as DAQP's whole solve, so the "already safe"
        test runs on Python floats)."""
        u = u_nom.clip(lo, hi)
        ul = u.tolist()
        for row, bi in zip(A.tolist(), b.tolist(), strict=True):
            if sum(map(operator.mul, row, ul)) < bi - FEAS_TOL * (1.0 + abs(bi)):
                break
        else:  # already safe: the clipped nominal action, exactly
            return u, True
        m, n = A.shape
        bounds = self._bounds.get((m, n))
        if bounds is None:
            upper = np.full(n + m, OSQP_INFTY)
            bounds = self._bounds[m, n] = (upper, np.empty(n + m))
        upper, lower = bounds
        upper[:n] = hi
        lower[:n] = lo
        lower[n:] = b
        H = self._eye.get(n)
        if H is None:
            H = self._eye[n] = np.eye(n)
        import daqp

        x, _, flag, _ = daqp.solve(H, -u_nom, A, upper, lower, **self.settings)
        if flag in _OPTIMAL:
            return x.clip(lo, hi), True
        # infeasible (the relaxation) or failed (the cvxpy retry): the general path
        u, feasible = self.solve_batch(u_nom[None], A[None], b[None], lo, hi)
        return u[0], bool(feasible[0])

    def _backup(self) -> CvxpySolver:
        if self._cvxpy is None:
            self._cvxpy = CvxpySolver()
        return self._cvxpy

    def _solve_one(self, u_nom, A, b, lo, hi) -> tuple[np.ndarray | None, str]:
        import daqp

        m, n = A.shape
        H = self._eye.get(n)
        if H is None:
            H = self._eye[n] = np.eye(n)
        upper = np.empty(n + m)
        upper[:n] = hi
        upper[n:] = OSQP_INFTY
        lower = np.empty(n + m)
        lower[:n] = lo
        lower[n:] = b
        x, _, flag, _ = daqp.solve(H, -u_nom, A, upper, lower, **self.settings)
        if flag in _OPTIMAL:
            return np.asarray(x, dtype=np.float64), "optimal"
        if flag == _INFEASIBLE:
            return None, "infeasible"
        return self._backup()._solve_one(u_nom, A, b, lo, hi)

    def _min_violation(self, u_nom, A, b, lo, hi) -> np.ndarray | None:
        """Stage 1 over (u, s): min ‖s‖² s.t. A u + s ≥ b, box, s ≥ 0. The Hessian is singular in u, so
        DAQP runs its proximal-point outer loop (``eps_prox`` > 0), which converges to an exact minimiser."""
        import daqp

        m, n = A.shape
        H = np.zeros((n + m, n + m))
        H[n:, n:] = 2.0 * np.eye(m)
        C = np.concatenate([A, np.eye(m)], axis=1)
        upper = np.r_[hi, np.full(m, OSQP_INFTY), np.full(m, OSQP_INFTY)]
        lower = np.r_[lo, np.zeros(m), b]
        x, _, flag, _ = daqp.solve(H, np.zeros(n + m), C, upper, lower, eps_prox=1e-6, iter_limit=10_000)
        if flag not in _OPTIMAL:
            return self._backup()._min_violation(u_nom, A, b, lo, hi)
        return np.maximum(np.asarray(x[n:], dtype=np.float64), 0.0)
