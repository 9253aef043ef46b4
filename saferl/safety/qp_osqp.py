"""`OSQPSolver`: OSQP's own API, set up once per problem shape, then ``update`` + ``solve``, polished to the exact
solution on its active set (a KKT check on the active set OSQP's duals point to)."""

from __future__ import annotations

from typing import Any

import numpy as np

from saferl.safety.qp_cvxpy import CvxpySolver
from saferl.safety.qp_problem import FEAS_TOL, OSQP_INFTY, RowwiseSolver


def _kkt_on_active_set(
    rows: np.ndarray,
    at_lo: np.ndarray,
    at_hi: np.ndarray,
    u_nom: np.ndarray,
    A: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> np.ndarray | None:
    """Exact solution of the QP on a guessed active set, or None when the guess fails the KKT check.

    Active constraint rows R (A_R u = b_R) and coordinates fixed at a bound; the free coordinates F move
    from u_nom along A_RFᵀν with (A_RF A_RFᵀ) ν = b_R − A_R u. KKT (stationarity 2(u − u_nom) = A_Rᵀμ + μ_lo
    − μ_hi, all μ ≥ 0) then needs ν ≥ 0, (u − u_nom − A_Rᵀν)_j ≥ 0 where j sits at lo and ≤ 0 where it
    sits at hi, and primal feasibility.
    """
    free = ~(at_lo | at_hi)
    u = np.where(at_lo, lo, np.where(at_hi, hi, u_nom))
    nu = np.zeros(0)
    AR = A[rows]
    if rows.any():
        AF = AR[:, free]
        M = AF @ AF.T
        rhs = b[rows] - AR @ u
        try:
            nu = np.linalg.solve(M, rhs)
        except np.linalg.LinAlgError:
            nu = np.linalg.lstsq(M, rhs, rcond=None)[0]
        u[free] += AF.T @ nu
    r = u - u_nom - AR.T @ nu
    tol = 1e-9 * (1.0 + np.abs(u_nom).max() + np.abs(nu).max(initial=0.0))
    if rows.any() and (nu < -tol).any() and np.linalg.matrix_rank(M) < rows.sum():
        # Degenerate vertex (more active rows than the free coordinates can separate): the multipliers are
        # not unique, so look for a nonnegative set that explains the same step.
        from scipy.optimize import nnls

        nu, res = nnls(AF.T, u[free] - u_nom[free])
        if res > 1e-9 * (1.0 + np.abs(u[free] - u_nom[free]).max(initial=0.0)):
            return None
        r = u - u_nom - AR.T @ nu
    if (nu < -tol).any() or (r[at_lo] < -tol).any() or (r[at_hi] > tol).any():
        return None
    box_tol = FEAS_TOL * (1.0 + np.abs(lo) + np.abs(hi))
    if (u < lo - box_tol).any() or (u > hi + box_tol).any() or (A @ u < b - FEAS_TOL * (1.0 + np.abs(b))).any():
        return None
    return np.clip(u, lo, hi)


def _refine_active_set(
    x: np.ndarray, y: np.ndarray, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray | None:
    """Turn an approximate solution (OSQP's x and duals y for the rows [A; I]) into the exact one.

    OSQP's duals mark the active set (y < 0: at the lower bound, y > 0: at the upper bound); if that guess
    fails the KKT check, the rows within 1e-6 of a bound are tried. This is what OSQP's ``polishing`` does,
    without its prints to stdout.
    """
    m = A.shape[0]
    tol = 1e-7 * (1.0 + np.abs(y).max())
    ya, yb = y[:m], y[m:]
    u = _kkt_on_active_set(ya < -tol, yb < -tol, yb > tol, u_nom, A, b, lo, hi)
    if u is None:
        near = 1e-6
        u = _kkt_on_active_set(
            A @ x - b <= near * (1.0 + np.abs(b)), x - lo <= near, hi - x <= near, u_nom, A, b, lo, hi
        )
    return u


class _OSQPWorkspace:
    """One OSQP problem of a fixed shape: min ‖u − u_nom‖² s.t. b ≤ A u, lo ≤ u ≤ hi, with C = [A; I].

    C is set up with a dense sparsity pattern (explicit zeros included), so that ``update(Ax=...)`` can
    refresh A in CSC order: column j holds ``A[:, j]`` and then the box row's 1. The value buffers are
    preallocated, because at this size numpy's per-call overhead costs more than OSQP's iterations.
    """

    def __init__(self, m: int, n: int, settings: dict[str, Any]):
        import osqp
        import scipy.sparse as sp

        indices = np.concatenate([np.r_[np.arange(m), m + j] for j in range(n)])
        C = sp.csc_matrix((np.ones(n * (m + 1)), indices, np.arange(n + 1) * (m + 1)), shape=(m + n, n))
        self.m = m
        self.ax = np.ones((n, m + 1))  # CSC values of C, column by column
        self.low = np.r_[np.zeros(m), -np.ones(n)]
        self.hi = np.ones(n)
        self.solver = osqp.OSQP()
        self.solver.setup(
            sp.csc_matrix(2.0 * np.eye(n)), np.zeros(n), C, self.low, np.r_[np.full(m, OSQP_INFTY), self.hi], **settings
        )
        # osqp's Python `update`/`solve` refresh a derivative cache and build an info namespace on every call,
        # about as long as the solve itself at this size; when the compiled solver object of osqp 1.x is there,
        # call its update/solve directly (same arguments, same results).
        ext = getattr(self.solver, "_solver", None)
        needed = ("update_data_vec", "update_data_mat", "solve", "solution", "info")
        self.ext = ext if ext is not None and all(hasattr(ext, a) for a in needed) else None

    def solve(self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple:
        """(x, y, status_val, status, polished) of one solve."""
        self.ax[:, : self.m] = A.T
        self.low[: self.m] = b
        self.low[self.m :] = lo
        up = None
        if not np.array_equal(hi, self.hi):
            self.hi = hi.copy()
            up = np.r_[np.full(self.m, OSQP_INFTY), hi]
        if self.ext is not None:
            self.ext.update_data_vec(q=-2.0 * u_nom, l=self.low, u=up)
            self.ext.update_data_mat(P_x=None, P_i=None, A_x=self.ax.ravel(), A_i=None)
            self.ext.solve()
            info = self.ext.info
            return self.ext.solution.x, self.ext.solution.y, info.status_val, info.status, info.status_polish == 1
        update = dict(q=-2.0 * u_nom, Ax=self.ax.ravel(), l=self.low)
        if up is not None:
            update["u"] = up
        self.solver.update(**update)
        res = self.solver.solve(raise_error=False)
        return res.x, res.y, res.info.status_val, res.info.status, res.info.status_polish == 1


class OSQPSolver(RowwiseSolver):
    """OSQP through its own API: one workspace per problem shape, reused with ``update`` + ``solve``.

    ADMM alone is accurate to its tolerance relative to the problem's scaling (a row of norm 100 can be
    violated by ~1e-6), so by default (``refine=True``) the solution is made exact on its active set: by
    OSQP's own ``polishing``, and where that fails (degenerate vertices) by `_refine_active_set`; when no
    active set verifies, the problem goes to cvxpy/Clarabel. osqp 1.1.3 prints "Polishing not needed" to
    stdout whenever a solution has no active constraint; the solvers only call OSQP when the clipped
    nominal action violates a row, so every solution has one and the message does not appear.
    """

    name = "osqp"

    def __init__(self, eps_abs: float = 1e-7, eps_rel: float = 1e-7, max_iter: int = 20_000, refine: bool = True):
        self.settings = dict(
            verbose=False,
            eps_abs=eps_abs,
            eps_rel=eps_rel,
            eps_prim_inf=1e-9,
            eps_dual_inf=1e-9,
            max_iter=max_iter,
            polishing=refine,
            warm_starting=True,
        )
        self.refine = refine
        self._cvxpy: CvxpySolver | None = None
        self._work: dict[tuple[int, int], _OSQPWorkspace] = {}
        self._relax: dict[tuple[int, int], Any] = {}

    # -- workspaces ---------------------------------------------------------------------------------
    def _workspace(self, m: int, n: int) -> _OSQPWorkspace:
        work = self._work.get((m, n))
        if work is None:
            work = self._work[m, n] = _OSQPWorkspace(m, n, self.settings)
        return work

    def _relax_workspace(self, m: int, n: int):
        """Stage 1 of the relaxation: variables (u, s); min ‖s‖² s.t. A u + s ≥ b, box, s ≥ 0."""
        key = (m, n)
        if key not in self._relax:
            import osqp
            import scipy.sparse as sp

            cols_u = [np.r_[np.arange(m), m + j] for j in range(n)]
            cols_s = [np.r_[i, m + n + i] for i in range(m)]
            indices = np.concatenate(cols_u + cols_s)
            indptr = np.r_[np.arange(n + 1) * (m + 1), n * (m + 1) + 2 * np.arange(1, m + 1)]
            C = sp.csc_matrix((np.ones(indices.size), indices, indptr), shape=(2 * m + n, n + m))
            P = sp.csc_matrix(sp.diags(np.r_[np.zeros(n), 2.0 * np.ones(m)]))
            solver = osqp.OSQP()
            low = np.r_[np.zeros(m), -np.ones(n), np.zeros(m)]
            up = np.r_[np.full(m, np.inf), np.ones(n), np.full(m, np.inf)]
            # stage 1 sets the violation that stage 2 must honour, so it is solved much more tightly (and rarely)
            tight = {**self.settings, "eps_abs": 1e-10, "eps_rel": 1e-10, "max_iter": 200_000}
            solver.setup(P, np.zeros(n + m), C, low, up, **tight)
            self._relax[key] = solver
        return self._relax[key]

    # -- solving ------------------------------------------------------------------------------------
    def _solve_one(self, u_nom, A, b, lo, hi) -> tuple[np.ndarray | None, str]:
        x, status = self._osqp_one(u_nom, A, b, lo, hi)
        if x is None and status != "infeasible":
            # OSQP adapts its step size ρ to the previous problem and occasionally stalls on the next one:
            # retry in a fresh workspace, then fall back to cvxpy/Clarabel (an interior-point method).
            self._work.pop(A.shape, None)
            x, status = self._osqp_one(u_nom, A, b, lo, hi)
        if x is None and status != "infeasible":
            x, status = self._backup()._solve_one(u_nom, A, b, lo, hi)
        return x, status

    def _backup(self) -> CvxpySolver:
        if self._cvxpy is None:
            self._cvxpy = CvxpySolver()
        return self._cvxpy

    def _osqp_one(self, u_nom, A, b, lo, hi) -> tuple[np.ndarray | None, str]:
        import osqp

        x, y, status, status_name, polished = self._workspace(*A.shape).solve(u_nom, A, b, lo, hi)
        if status in (osqp.SolverStatus.OSQP_PRIMAL_INFEASIBLE, osqp.SolverStatus.OSQP_PRIMAL_INFEASIBLE_INACCURATE):
            return None, "infeasible"
        if status not in (osqp.SolverStatus.OSQP_SOLVED, osqp.SolverStatus.OSQP_SOLVED_INACCURATE):
            return None, f"failed: OSQP status {status_name!r}"
        if polished or not self.refine:
            return np.array(x), "optimal"
        exact = _refine_active_set(np.array(x), np.array(y), u_nom, A, b, lo, hi)
        if exact is not None:
            return exact, "optimal"
        return None, "failed: no active set of OSQP's solution passes the KKT check"

    def _min_violation(self, u_nom, A, b, lo, hi) -> np.ndarray | None:
        import osqp

        m, n = A.shape
        solver = self._relax_workspace(m, n)
        Ax = np.concatenate([np.concatenate([A.T, np.ones((n, 1))], axis=1).ravel(), np.ones(2 * m)])
        low = np.r_[b, lo, np.zeros(m)]
        up = np.r_[np.full(m, np.inf), hi, np.full(m, np.inf)]
        solver.update(q=np.zeros(n + m), Ax=Ax, l=low, u=up)
        res = solver.solve(raise_error=False)
        if res.info.status_val not in (osqp.SolverStatus.OSQP_SOLVED, osqp.SolverStatus.OSQP_SOLVED_INACCURATE):
            self._relax.pop((m, n), None)
            return self._backup()._min_violation(u_nom, A, b, lo, hi)
        return np.maximum(np.asarray(res.x[n:], dtype=np.float64), 0.0)
