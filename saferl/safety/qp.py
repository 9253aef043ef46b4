"""QP solvers for the safety filter: ``min ‖u − u_nom‖²  s.t.  A u ≥ b,  lo ≤ u ≤ hi``.

Every solver takes a batch of problems (``u_nom [B, n]``, ``A [B, m, n]``, ``b [B, m]``; single problems
without the batch axis work too) and returns a `QPResult`. When the constraints and the box admit no
action, a solver returns the *minimal-violation* action instead (the lexicographic relaxation): first
minimise the squared violation ``‖max(0, b − A u)‖²`` over the box, then, among those minimisers, the
distance to ``u_nom``. ``feasible`` tells the two cases apart and ``slack`` is ``‖max(0, b − A u)‖₂`` of the
returned action (0 when feasible). What to *do* with an infeasible step is the filter's decision.

* `ExactProjection` — one half-space plus the box, in closed form (KKT breakpoint search), vectorised.
* `OSQPSolver` — OSQP's own API: set up once per problem shape, then ``update`` + ``solve``, polished to
  the exact solution on its active set.
* `DAQPSolver` — DAQP, a dense dual active-set solver: exact, and the fastest general solver at this size.
* `CvxpySolver` — cvxpy with DPP parameters, compiled once per shape; the general case.
* `CvxpyRebuildSolver` — builds a fresh cvxpy problem for every solve: the slow baseline for benchmarks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saferl.safety.qp_cvxpy import CvxpyRebuildSolver, CvxpySolver
from saferl.safety.qp_daqp import DAQPSolver
from saferl.safety.qp_exact import ExactProjection, clip_list, project_halfspace_box, project_halfspace_box_1
from saferl.safety.qp_osqp import OSQPSolver
from saferl.safety.qp_problem import (
    FEAS_TOL,
    OSQP_INFTY,
    QPResult,
    QPSolver,
    QPSolverError,
    RowwiseSolver,
    as_batch,
    box_feasible,
    violation,
)

__all__ = [
    "FEAS_TOL",
    "OSQP_INFTY",
    "SOLVERS",
    "AutoSolver",
    "CvxpyRebuildSolver",
    "CvxpySolver",
    "DAQPSolver",
    "ExactProjection",
    "OSQPSolver",
    "QPResult",
    "QPSolver",
    "QPSolverError",
    "RowwiseSolver",
    "as_batch",
    "box_feasible",
    "clip_list",
    "make_solver",
    "project_halfspace_box",
    "project_halfspace_box_1",
    "violation",
]

SOLVERS = ("auto", "exact", "daqp", "osqp", "cvxpy", "cvxpy-rebuild")


def make_solver(name: str, **options: Any) -> QPSolver:
    """Solver by name. ``auto`` is resolved per problem by the filter (exact for one row, else DAQP)."""
    if name == "exact":
        return ExactProjection()
    if name == "daqp":
        return DAQPSolver(**options)
    if name == "osqp":
        return OSQPSolver(**options)
    if name == "cvxpy":
        return CvxpySolver(**options)
    if name == "cvxpy-rebuild":
        return CvxpyRebuildSolver(**options)
    raise ValueError(f"unknown QP solver {name!r}; choose one of {', '.join(SOLVERS)}")


class AutoSolver(QPSolver):
    """The fastest exact solver for each problem: the closed-form projection for one constraint row, DAQP
    for several (measured in benchmarks/filter_latency.md; ``options`` go to DAQP)."""

    name = "auto"

    def __init__(self, **daqp_options: Any):
        self.exact = ExactProjection()
        self.daqp = DAQPSolver(**daqp_options)

    def solve_batch(
        self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return (self.exact if A.shape[1] == 1 else self.daqp).solve_batch(u_nom, A, b, lo, hi)
