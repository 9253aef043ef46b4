"""`CvxpySolver` (DPP parameters, compiled once per problem shape: the general case) and `CvxpyRebuildSolver`
(a fresh problem per solve: the benchmarks' slow baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np

from saferl.safety.qp_problem import RowwiseSolver

CVXPY_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    # interior point, tightened so that cvxpy can serve as the 1e-6 test oracle
    "CLARABEL": dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, tol_ktratio=1e-8),
    "OSQP": dict(eps_abs=1e-9, eps_rel=1e-9, max_iter=50_000),
}


class CvxpySolver(RowwiseSolver):
    """cvxpy with DPP parameters (A, b, u_nom, box): each problem shape is compiled once, then re-solved."""

    name = "cvxpy"

    def __init__(self, solver: str = "CLARABEL", **options: Any):
        self.solver = solver
        self.options = {**CVXPY_DEFAULT_OPTIONS.get(solver, {}), **options}
        self._problems: dict[tuple[int, int], Any] = {}

    def _problem(self, m: int, n: int):
        key = (m, n)
        if key not in self._problems:
            import cvxpy as cp

            u, s = cp.Variable(n), cp.Variable(m, nonneg=True)
            u_nom, A, b = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
            lo, hi = cp.Parameter(n), cp.Parameter(n)
            box = [u >= lo, u <= hi]
            qp = cp.Problem(cp.Minimize(cp.sum_squares(u - u_nom)), [A @ u >= b, *box])
            relax = cp.Problem(cp.Minimize(cp.sum_squares(s)), [A @ u + s >= b, *box])
            assert qp.is_dpp() and relax.is_dpp()
            self._problems[key] = dict(qp=qp, relax=relax, u=u, s=s, u_nom=u_nom, A=A, b=b, lo=lo, hi=hi)
        return self._problems[key]

    def _solve_one(self, u_nom, A, b, lo, hi) -> tuple[np.ndarray | None, str]:
        p = self._problem(*A.shape)
        p["u_nom"].value, p["A"].value, p["b"].value, p["lo"].value, p["hi"].value = u_nom, A, b, lo, hi
        return _cvxpy_result(p["qp"], p["u"], self.solver, self.options)

    def _min_violation(self, u_nom, A, b, lo, hi) -> np.ndarray | None:
        p = self._problem(*A.shape)
        p["u_nom"].value, p["A"].value, p["b"].value, p["lo"].value, p["hi"].value = u_nom, A, b, lo, hi
        x, status = _cvxpy_result(p["relax"], p["s"], self.solver, self.options)
        return None if x is None else np.maximum(x, 0.0)


def _cvxpy_result(problem, var, solver: str, options: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    import cvxpy as cp

    try:
        problem.solve(solver=solver, **options)
    except cp.error.SolverError as err:
        return None, f"failed: {err}"
    if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return None, "infeasible"
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or var.value is None:
        return None, f"failed: cvxpy status {problem.status!r}"
    return np.asarray(var.value, dtype=np.float64), "optimal"


class CvxpyRebuildSolver(CvxpySolver):
    """A fresh cvxpy problem with constant data for every solve (what a naive filter does): the benchmark's
    slow baseline."""

    name = "cvxpy-rebuild"

    def _solve_one(self, u_nom, A, b, lo, hi) -> tuple[np.ndarray | None, str]:
        import cvxpy as cp

        u = cp.Variable(A.shape[1])
        qp = cp.Problem(cp.Minimize(cp.sum_squares(u - u_nom)), [A @ u >= b, u >= lo, u <= hi])
        return _cvxpy_result(qp, u, self.solver, self.options)

    def _min_violation(self, u_nom, A, b, lo, hi) -> np.ndarray | None:
        import cvxpy as cp

        u, s = cp.Variable(A.shape[1]), cp.Variable(A.shape[0], nonneg=True)
        relax = cp.Problem(cp.Minimize(cp.sum_squares(s)), [A @ u + s >= b, u >= lo, u <= hi])
        x, _ = _cvxpy_result(relax, s, self.solver, self.options)
        return None if x is None else np.maximum(x, 0.0)
