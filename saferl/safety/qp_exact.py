"""One half-space plus the action box, solved exactly in closed form (KKT breakpoint search): vectorised for
batches, and a scalar sweep on Python floats for a single env step."""

from __future__ import annotations

import operator

import numpy as np

from saferl.safety.qp_problem import FEAS_TOL, QPSolver


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


def clip_list(x: list[float], lo: list[float], hi: list[float]) -> list[float]:
    """``min(max(x_j, lo_j), hi_j)`` per entry (same values, -0.0 included), without the two calls each."""
    return [lj if xj < lj else (hj if xj > hj else xj) for xj, lj, hj in zip(x, lo, hi, strict=True)]


def project_halfspace_box_1(
    u_nom: list[float], a: list[float], b: float, lo: list[float], hi: list[float]
) -> tuple[list[float], bool]:
    """`project_halfspace_box` for one problem on Python floats: an O(n log n) sweep over the breakpoints.

    A single env step pays numpy's per-call overhead ~30 times in the vectorised version; this scalar
    sweep is several times faster for the small action dimensions of control tasks. Same maths: between
    breakpoints φ(λ) = aᵀclip(u_nom + λa) grows with slope Σ_{j free} a_j².
    """
    n = len(u_nom)
    u = clip_list(u_nom, lo, hi)
    phi = sum(map(operator.mul, a, u))
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
