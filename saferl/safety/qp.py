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
* `CvxpySolver` — cvxpy with DPP parameters, compiled once per shape; the general case.
* `CvxpyRebuildSolver` — builds a fresh cvxpy problem for every solve: the slow baseline for benchmarks.
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


class _RowwiseSolver(QPSolver):
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
                x = _relaxed(self, u_nom[i], A[i], b[i], lo, hi)
            if x is None:
                raise QPSolverError(f"{self.name} could not solve the safety-filter QP ({status})")
            u[i] = np.clip(x, lo, hi)
        return u, feasible


# ---------------------------------------------------------------------------------------------------
# one half-space + box: exact


def project_halfspace_box(
    u_nom: np.ndarray, a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact solution of ``min ‖u − u_nom‖² s.t. aᵀu ≥ b, lo ≤ u ≤ hi`` for a batch (``[B, n], [B, n], [B]``).

    KKT: ``u(λ) = clip(u_nom + λ a, lo, hi)`` with λ ≥ 0, and ``φ(λ) = aᵀu(λ)`` is nondecreasing and
    piecewise linear with breakpoints where a coordinate reaches a bound. Evaluate φ at the sorted
    breakpoints, find the segment where it crosses b and interpolate: exact up to rounding. When
    ``b > max_box aᵀu`` there is no feasible action and the minimal-violation action (the box vertex that
    maximises aᵀu; coordinates with a_j = 0 stay at clip(u_nom_j)) is returned. Returns (u, feasible).
    """
    u_clip = np.clip(u_nom, lo, hi)
    phi0 = np.einsum("bn,bn->b", a, u_clip)
    u_max = np.where(a > 0, hi, np.where(a < 0, lo, u_clip))
    phi_max = np.einsum("bn,bn->b", a, u_max)
    tol = FEAS_TOL * (1.0 + np.abs(b))
    feasible = phi_max >= b - tol
    u = np.where((phi0 >= b)[:, None], u_clip, u_max)
    rows = np.flatnonzero((phi0 < b) & (phi_max > b))
    if rows.size:
        ar, ur, br = a[rows], u_nom[rows], b[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.concatenate([(lo - ur) / ar, (hi - ur) / ar], axis=1)
        t = np.where(np.isfinite(t), np.maximum(t, 0.0), 0.0)  # a_j = 0: no breakpoint; λ < 0 is irrelevant
        t = np.sort(np.concatenate([np.zeros((rows.size, 1)), t], axis=1), axis=1)  # [R, K]
        phi = np.einsum("rkn,rn->rk", np.clip(ur[:, None, :] + t[:, :, None] * ar[:, None, :], lo, hi), ar)
        k = np.argmax(phi >= br[:, None], axis=1)  # first breakpoint at or past b (k ≥ 1 since φ(0) < b)
        idx = np.arange(rows.size)
        t0, t1, p0, p1 = t[idx, k - 1], t[idx, k], phi[idx, k - 1], phi[idx, k]
        lam = t0 + (br - p0) * (t1 - t0) / (p1 - p0)
        u[rows] = np.clip(ur + lam[:, None] * ar, lo, hi)
    return u, feasible


def project_halfspace_box_1(
    u_nom: list[float], a: list[float], b: float, lo: list[float], hi: list[float]
) -> tuple[list[float], bool]:
    """`project_halfspace_box` for one problem on Python floats: an O(n log n) sweep over the breakpoints.

    A single env step pays numpy's per-call overhead ~30 times in the vectorised version; this scalar
    sweep is several times faster for the small action dimensions of control tasks. Same maths: between
    breakpoints φ(λ) = aᵀclip(u_nom + λa) grows with slope Σ_{j free} a_j².
    """
    n = len(u_nom)
    u = [min(max(u_nom[j], lo[j]), hi[j]) for j in range(n)]
    phi = sum(a[j] * u[j] for j in range(n))
    if phi >= b:
        return u, True
    phi_max = sum(a[j] * (hi[j] if a[j] > 0 else lo[j]) for j in range(n) if a[j] != 0.0)
    if phi_max <= b:  # infeasible, or feasible only at the vertex that maximises aᵀu
        for j in range(n):
            if a[j] > 0:
                u[j] = hi[j]
            elif a[j] < 0:
                u[j] = lo[j]
        return u, phi_max >= b - FEAS_TOL * (1.0 + abs(b))
    slope = 0.0
    events: list[tuple[float, float]] = []  # (λ, change of slope)
    for j in range(n):
        aj = a[j]
        if aj == 0.0:
            continue
        enter = (lo[j] - u_nom[j]) / aj if aj > 0 else (hi[j] - u_nom[j]) / aj  # leaves its start bound
        leave = (hi[j] - u_nom[j]) / aj if aj > 0 else (lo[j] - u_nom[j]) / aj  # reaches its far bound
        if leave <= 0.0:
            continue  # saturated from the start
        if enter <= 0.0:
            slope += aj * aj
        else:
            events.append((enter, aj * aj))
        events.append((leave, -aj * aj))
    events.sort()
    lam = 0.0
    for t, d_slope in events:
        nxt = phi + slope * (t - lam)
        if nxt >= b:
            break
        phi, lam = nxt, t
        slope += d_slope
    else:  # rounding kept φ below b up to the last breakpoint: the solution is the maximising vertex
        lam = events[-1][0] if events else 0.0
        return [min(max(u_nom[j] + lam * a[j], lo[j]), hi[j]) for j in range(n)], True
    lam += (b - phi) / slope
    return [min(max(u_nom[j] + lam * a[j], lo[j]), hi[j]) for j in range(n)], True


class ExactProjection(QPSolver):
    """Closed-form projection for *one* half-space plus the box (the common single-CBF case)."""

    name = "exact"

    def solve_batch(
        self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if A.shape[1] != 1:
            raise ValueError(
                f"the exact projection handles one constraint row; this problem has {A.shape[1]} "
                "(use solver='osqp', 'cvxpy' or 'auto')"
            )
        if len(u_nom) == 1:  # one env step: the scalar sweep avoids numpy's per-call overhead
            u1, ok = project_halfspace_box_1(
                u_nom[0].tolist(), A[0, 0].tolist(), float(b[0, 0]), lo.tolist(), hi.tolist()
            )
            return np.array([u1]), np.array([ok])
        return project_halfspace_box(u_nom, A[:, 0], b[:, 0], lo, hi)


# ---------------------------------------------------------------------------------------------------
# general m: the shared two-stage relaxation and an exact active-set refinement


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


class OSQPSolver(_RowwiseSolver):
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


def _relaxed(solver, u_nom, A, b, lo, hi) -> np.ndarray | None:
    """Stage 2 of the lexicographic relaxation: the closest action among the minimal-violation ones."""
    s = solver._min_violation(u_nom, A, b, lo, hi)
    if s is None:
        return None
    for margin in (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4):  # stage 1 is only accurate to the solver tolerance
        x, status = solver._solve_one(u_nom, A, b - s - margin * (1.0 + np.abs(b)), lo, hi)
        if x is not None:
            return x
    return None


# ---------------------------------------------------------------------------------------------------
# cvxpy


CVXPY_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    # interior point, tightened so that cvxpy can serve as the 1e-6 test oracle
    "CLARABEL": dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, tol_ktratio=1e-8),
    "OSQP": dict(eps_abs=1e-9, eps_rel=1e-9, max_iter=50_000),
}


class CvxpySolver(_RowwiseSolver):
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


# ---------------------------------------------------------------------------------------------------

SOLVERS = ("auto", "exact", "osqp", "cvxpy", "cvxpy-rebuild")


def make_solver(name: str, **options: Any) -> QPSolver:
    """Solver by name. ``auto`` is resolved per problem by the filter (exact for one row, else OSQP)."""
    if name == "exact":
        return ExactProjection()
    if name == "osqp":
        return OSQPSolver(**options)
    if name == "cvxpy":
        return CvxpySolver(**options)
    if name == "cvxpy-rebuild":
        return CvxpyRebuildSolver(**options)
    raise ValueError(f"unknown QP solver {name!r}; choose one of {', '.join(SOLVERS)}")


class AutoSolver(QPSolver):
    """The fastest exact solver for each problem: the closed-form projection for one constraint row, OSQP
    for several."""

    name = "auto"

    def __init__(self, **osqp_options: Any):
        self.exact = ExactProjection()
        self.osqp = OSQPSolver(**osqp_options)

    def solve_batch(
        self, u_nom: np.ndarray, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return (self.exact if A.shape[1] == 1 else self.osqp).solve_batch(u_nom, A, b, lo, hi)
