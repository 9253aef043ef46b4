"""The QP safety filter: solvers against a cvxpy oracle, barriers, infeasibility modes, the gymnasium
wrapper (single and vector envs), and drop-in use on PointRobot, HalfCheetah and a stable-baselines3 policy."""

from __future__ import annotations

import cvxpy as cp
import gymnasium as gym
import numpy as np
import pytest
import torch

import saferl  # noqa: F401  (registers the saferl/* envs)
from saferl.envs import get_task
from saferl.envs.hazard_nav import POINT_ROBOT
from saferl.safety import (
    Barrier,
    ControlAffineCBF,
    CostCriticBarrier,
    CvxpyRebuildSolver,
    CvxpySolver,
    DAQPSolver,
    ExactProjection,
    InfeasibleConstraintError,
    OSQPSolver,
    SafetyFilter,
    VectorSafetyFilter,
    make_solver,
)
from saferl.safety.velocity import VelocityBarrier, fit_velocity_model

# Clarabel (interior point) at tight tolerances; OSQP through cvxpy (with its own polishing) as the second
# opinion for the rare problem where Clarabel stops early.
ORACLE = dict(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, tol_ktratio=1e-8)
ORACLE_BACKUP = dict(solver="OSQP", eps_abs=1e-10, eps_rel=1e-10, max_iter=200_000, polish=True)


def _oracle_solve(prob: cp.Problem) -> None:
    try:
        prob.solve(**ORACLE)
    except cp.error.SolverError:
        pass
    if prob.status != cp.OPTIMAL:
        prob.solve(**ORACLE_BACKUP)
    assert prob.status == cp.OPTIMAL, prob.status


# ---------------------------------------------------------------------------------------------------
# random problems and the cvxpy oracle


def random_problems(rng, count: int, m: int, n: int, infeasible: bool = False, degenerate: bool = False, box=None):
    """Feasible (or, with ``infeasible``, infeasible) QPs with a random asymmetric box (or the given one);
    about half of the feasible ones need a correction. Rows are scaled over four orders of magnitude."""
    if box is None:
        lo, hi = -rng.uniform(0.2, 2.0, (count, n)), rng.uniform(0.2, 2.0, (count, n))
    else:
        lo, hi = np.tile(box[0], (count, 1)), np.tile(box[1], (count, 1))
    u_nom = rng.uniform(lo - 1.0, hi + 1.0)
    A = rng.normal(size=(count, m, n)) * 10.0 ** rng.uniform(-2, 2, (count, m, 1))
    if infeasible:
        # Well-scaled rows: the minimal-violation objective ‖s‖² is flat in tiny violations, so rows four
        # orders of magnitude apart would test the oracle's tolerance rather than the solvers.
        A = rng.normal(size=(count, m, n)) * rng.uniform(0.5, 2.0, (count, m, 1))
        A = np.where(np.abs(A) < 0.05, 0.05, A)
        # the first row asks for more than any action in the box can give
        best = np.einsum("kn,kn->k", np.abs(A[:, 0]), np.where(A[:, 0] > 0, hi, -lo))
        b = np.einsum("kmn,kn->km", A, rng.uniform(lo, hi)[:, :])
        b[:, 0] = best * (1.0 + rng.uniform(0.05, 0.5, count)) + rng.uniform(0.01, 0.5, count)
        return u_nom, A, b, lo, hi
    x = rng.uniform(lo, hi)
    slack = (
        0.0 if degenerate else rng.uniform(0.0, 1.0, (count, m)) * np.abs(A).sum(-1) * (rng.random((count, m)) < 0.7)
    )
    b = np.einsum("kmn,kn->km", A, x) - slack
    return u_nom, A, b, lo, hi


_ORACLES: dict = {}


def oracle(u_nom, A, b, lo, hi):
    """cvxpy + Clarabel at tight tolerances, one problem at a time (a block-diagonal batch loses accuracy:
    Clarabel's tolerances are relative to the whole problem)."""
    count, m, n = A.shape
    if (m, n) not in _ORACLES:
        u, un, Ap, bp, lp, hp = (
            cp.Variable(n),
            cp.Parameter(n),
            cp.Parameter((m, n)),
            cp.Parameter(m),
            cp.Parameter(n),
            cp.Parameter(n),
        )
        prob = cp.Problem(cp.Minimize(cp.sum_squares(u - un)), [Ap @ u >= bp, u >= lp, u <= hp])
        _ORACLES[m, n] = (prob, u, (un, Ap, bp, lp, hp))
    prob, u, params = _ORACLES[m, n]
    out = np.empty((count, n))
    for i in range(count):
        for param, value in zip(params, (u_nom[i], A[i], b[i], lo[i], hi[i]), strict=True):
            param.value = value
        _oracle_solve(prob)
        out[i] = u.value
    return out


def oracle_relaxed(u_nom, A, b, lo, hi):
    """Lexicographic minimal violation: min ‖s‖² s.t. Au + s ≥ b, box; then the closest u with that s."""
    count, m, n = A.shape
    u_out, slack = np.empty((count, n)), np.empty(count)
    for i in range(count):
        u, s = cp.Variable(n), cp.Variable(m, nonneg=True)
        box = [u >= lo[i], u <= hi[i]]
        _oracle_solve(cp.Problem(cp.Minimize(cp.sum_squares(s)), [A[i] @ u + s >= b[i], *box]))
        s_star = np.maximum(s.value, 0.0)
        prob = cp.Problem(cp.Minimize(cp.sum_squares(u - u_nom[i])), [A[i] @ u >= b[i] - s_star - 1e-9, *box])
        _oracle_solve(prob)
        u_out[i], slack[i] = u.value, np.linalg.norm(s_star)
    return u_out, slack


def _check_against(solver, problems, expected, tol=1e-6):
    u_nom, A, b, lo, hi = problems
    for i in range(len(u_nom)):
        res = solver.solve(u_nom[i], A[i], b[i], lo[i], hi[i])
        assert res.feasible, f"{solver.name} called a feasible problem infeasible (problem {i})"
        np.testing.assert_allclose(res.u, expected[i], atol=tol, rtol=0, err_msg=f"{solver.name}, problem {i}")
        assert np.all(A[i] @ res.u >= b[i] - 1e-8 * (1 + np.abs(b[i]))), f"{solver.name} violates A u >= b"
        assert np.all(res.u >= lo[i]) and np.all(res.u <= hi[i])
        assert res.slack == 0.0
        clipped = np.clip(u_nom[i], lo[i], hi[i])
        if np.all(A[i] @ clipped >= b[i]):  # already safe: returned exactly, no correction at all
            np.testing.assert_array_equal(res.u, clipped)


@pytest.mark.parametrize(("m", "n", "count"), [(1, 2, 250), (1, 6, 250), (3, 6, 250), (4, 2, 150), (2, 8, 150)])
def test_solvers_match_the_cvxpy_oracle_on_random_feasible_qps(m, n, count):
    """1050 random feasible QPs in all: every solver equals the oracle to 1e-6 and is feasible."""
    rng = np.random.default_rng(1000 * m + n)
    problems = random_problems(rng, count, m, n)
    expected = oracle(*problems)
    u_nom, A, b, lo, hi = problems
    moved = np.linalg.norm(expected - np.clip(u_nom, lo, hi), axis=1) > 1e-6
    assert 0.2 < moved.mean() < 0.95, "the generator should mix active and inactive constraints"
    solvers = [OSQPSolver(), CvxpySolver(), make_solver("exact") if m == 1 else None]
    for solver in filter(None, solvers):
        _check_against(solver, problems, expected)
    _check_against(CvxpyRebuildSolver(), tuple(p[:20] for p in problems), expected[:20])
    if m == 1:  # the vectorised projection on the whole batch (the single-problem path is the scalar sweep)
        for k in range(count):
            u = ExactProjection().solve(u_nom[k : k + 1], A[k : k + 1], b[k : k + 1], lo[k], hi[k]).u
            np.testing.assert_allclose(u[0], expected[k], atol=1e-6, rtol=0)
        u_nom, A, b, lo, hi = random_problems(rng, 200, 1, n, box=(np.full(n, -0.7), np.full(n, 1.3)))
        expected_box = oracle(u_nom, A, b, lo, hi)
        res = ExactProjection().solve(u_nom, A, b, lo[0], hi[0])  # one box for the batch, as in a vector env
        np.testing.assert_allclose(res.u, expected_box, atol=1e-6, rtol=0)
        assert res.feasible.all()


def test_osqp_and_daqp_handle_degenerate_vertices():
    """Several constraints through one point (more active rows than free coordinates)."""
    rng = np.random.default_rng(7)
    problems = random_problems(rng, 150, 4, 2, degenerate=True)
    expected = oracle(*problems)
    _check_against(OSQPSolver(), problems, expected)
    _check_against(DAQPSolver(), problems, expected)


def test_daqp_matches_the_cvxpy_oracle_on_1000_random_qps():
    """1000 random feasible QPs (action dims 2–6, 1–5 rows, random boxes): DAQP's action equals the oracle's
    to 1e-6 (absolute), its objective ‖u − u_nom‖² to 1e-6·(1 + f*), and it is feasible to 1e-8."""
    rng = np.random.default_rng(2026)
    solver = make_solver("daqp")
    sizes, counts = np.unique(rng.integers((1, 2), (6, 7), size=(1000, 2)), axis=0, return_counts=True)
    assert sizes.shape[0] == 25 and counts.sum() == 1000
    for (m, n), count in zip(sizes.tolist(), counts.tolist(), strict=True):
        problems = random_problems(rng, count, m, n)
        expected = oracle(*problems)
        _check_against(solver, problems, expected)
        u_nom, A, b, lo, hi = problems
        for i in range(count):
            f, f_ref = (
                np.sum((x - u_nom[i]) ** 2) for x in (solver.solve(u_nom[i], A[i], b[i], lo[i], hi[i]).u, expected[i])
            )
            assert abs(f - f_ref) <= 1e-6 * (1.0 + f_ref), (m, n, i, f, f_ref)


def test_daqp_failure_falls_back_to_cvxpy_and_infeasible_is_reported(monkeypatch):
    """A DAQP exit flag other than optimal/infeasible (here: iteration limit) is not trusted: the problem
    goes to cvxpy. An infeasible problem is never returned as solved."""
    import daqp

    rng = np.random.default_rng(5)
    u_nom, A, b, lo, hi = random_problems(rng, 20, 3, 4)
    expected = oracle(u_nom, A, b, lo, hi)
    real = daqp.solve
    monkeypatch.setattr(daqp, "solve", lambda *a, **k: (real(*a, **k)[0] * 0.0, 0.0, -4, {}))
    _check_against(DAQPSolver(), (u_nom, A, b, lo, hi), expected)
    monkeypatch.setattr(daqp, "solve", real)
    res = DAQPSolver().solve(np.zeros(2), np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([0.5, 0.5]), -1.0, 1.0)
    assert not res.feasible and res.slack > 0.5  # u₀ ≥ 0.5 and u₀ ≤ −0.5: violation split, ‖(0.5, 0.5)‖
    np.testing.assert_allclose(res.slack, np.sqrt(0.5), atol=1e-6)


@pytest.mark.parametrize(("m", "n"), [(1, 3), (1, 6), (3, 4)])
def test_infeasible_qps_return_the_minimal_violation_action(m, n):
    """The lexicographic relaxation: the smallest violation ‖max(0, b − Au)‖, then the closest action.
    The closed form is exact; OSQP and cvxpy solve two QPs (the second with the first one's violation) and
    match the oracle to their tolerances."""
    rng = np.random.default_rng(31 * m + n)
    problems = random_problems(rng, 60, m, n, infeasible=True)
    u_ref, slack_ref = oracle_relaxed(*problems)
    u_nom, A, b, lo, hi = problems
    solvers = [OSQPSolver(), CvxpySolver(), DAQPSolver()] + ([ExactProjection()] if m == 1 else [])
    for solver in solvers:
        for i in range(len(u_nom)):
            res = solver.solve(u_nom[i], A[i], b[i], lo[i], hi[i])
            msg = f"{solver.name}, problem {i}"
            assert not res.feasible, msg
            assert np.all(res.u >= lo[i]) and np.all(res.u <= hi[i]), msg
            scale = 1.0 + np.abs(b[i])
            np.testing.assert_allclose(res.slack, slack_ref[i], rtol=1e-6, atol=1e-6, err_msg=msg)
            np.testing.assert_allclose(
                np.maximum(0, b[i] - A[i] @ res.u),
                np.maximum(0, b[i] - A[i] @ u_ref[i]),
                atol=1e-6 * scale.max(),
                err_msg=msg,
            )
            dist, dist_ref = np.sum((res.u - u_nom[i]) ** 2), np.sum((u_ref[i] - u_nom[i]) ** 2)
            assert abs(dist - dist_ref) <= 1e-5 * (1 + dist_ref), msg
            if solver.name == "exact":
                np.testing.assert_allclose(res.u, u_ref[i], atol=1e-6, rtol=0, err_msg=msg)


def test_exact_solver_rejects_several_rows_and_bad_boxes():
    with pytest.raises(ValueError, match="one constraint row"):
        ExactProjection().solve(np.zeros(2), np.ones((2, 2)), np.zeros(2), -1.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        ExactProjection().solve(np.zeros(2), np.ones((1, 2)), np.zeros(1), -np.inf, 1.0)
    with pytest.raises(ValueError, match="unknown QP solver"):
        make_solver("gurobi")


# ---------------------------------------------------------------------------------------------------
# barriers


def _disc_h(c, r):
    return lambda x: ((x[..., 0] - c[0]) ** 2 + (x[..., 1] - c[1]) ** 2) - r * r


def test_control_affine_cbf_rows_match_the_analytic_formulas():
    c, r, alpha, dt = np.array([0.3, -0.2]), 0.5, 2.0, 0.05
    f = lambda x: np.stack([1.0 + 0.0 * x[..., 0], 0.5 * x[..., 0]], -1)  # noqa: E731
    g = lambda x: np.broadcast_to(np.array([[1.0, 0.2], [0.0, 2.0]]), (*x.shape[:-1], 2, 2))  # noqa: E731
    grad = lambda x: 2.0 * (x - c)  # noqa: E731
    x = np.random.default_rng(0).uniform(-2, 2, (7, 2))
    u_nom = np.random.default_rng(1).uniform(-1, 1, (7, 2))
    G = g(x)
    want_A = np.einsum("bd,bdn->bn", grad(x), G)[:, None]
    want_b = (-np.einsum("bd,bd->b", grad(x), f(x)) - alpha * _disc_h(c, r)(x))[:, None]
    torch_cbf = ControlAffineCBF(_disc_h(c, r), f, g, alpha=alpha)  # ∇h by autograd
    numpy_cbf = ControlAffineCBF(_disc_h(c, r), f, g, alpha=alpha, grad_h=grad)
    for cbf in (torch_cbf, numpy_cbf):
        A, b = cbf.constraints(x, u_nom)
        np.testing.assert_allclose(A, want_A, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, want_b, rtol=1e-10, atol=1e-12)
    # discrete time: h(x⁺(u_nom)) + ∇h(x⁺)·g·dt·(u − u_nom) ≥ (1 − α dt) h(x)
    x_next = x + (f(x) + np.einsum("bdn,bn->bd", G, u_nom)) * dt
    A_d = dt * np.einsum("bd,bdn->bn", grad(x_next), G)[:, None]
    b_d = ((1 - alpha * dt) * _disc_h(c, r)(x) - _disc_h(c, r)(x_next))[:, None] + np.einsum("bmn,bn->bm", A_d, u_nom)
    for kwargs in ({}, {"grad_h": grad}):
        A, b = ControlAffineCBF(_disc_h(c, r), f, g, alpha=alpha, form="discrete", dt=dt, **kwargs).constraints(
            x, u_nom
        )
        np.testing.assert_allclose(A, A_d, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, b_d, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="alpha·dt"):
        ControlAffineCBF(_disc_h(c, r), f, g, alpha=30.0, form="discrete", dt=dt)


def test_learned_barrier_gradients_leave_parameter_grads_alone():
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    h = lambda x: net(x).squeeze(-1)  # noqa: E731
    cbf = ControlAffineCBF(net, lambda x: torch.zeros_like(x), lambda x: torch.eye(2).expand(len(x), 2, 2), alpha=1.0)
    assert cbf.dtype == torch.float32
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    A, b = cbf.constraints(x, np.zeros((5, 2)))
    xt = torch.as_tensor(x).requires_grad_(True)
    (grad,) = torch.autograd.grad(h(xt).sum(), xt)
    np.testing.assert_allclose(A[:, 0], grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(b[:, 0], -h(torch.as_tensor(x)).detach().numpy(), rtol=1e-5)
    assert all(p.grad is None for p in net.parameters())


def test_cost_critic_barrier_linearises_the_critic_around_the_nominal_action():
    w = torch.tensor([1.0, -2.0], dtype=torch.float64)

    def q(obs, u):  # two members, Q_e = obs₀ − ‖u − e·w‖²
        members = [obs[:, 0] - ((u - e * w) ** 2).sum(-1) for e in (0.0, 1.0)]
        return torch.stack(members)

    obs = np.array([[2.0, 0.0], [0.5, 0.0]])
    u_nom = np.array([[0.5, 0.5], [-0.3, 0.2]])
    barrier = CostCriticBarrier(q, threshold=0.0, sense=">=")
    A, b = barrier.constraints(obs, u_nom)
    qv = q(torch.as_tensor(obs), torch.as_tensor(u_nom)).numpy()
    member = qv.argmin(0)  # the pessimistic member
    for i in range(2):
        e = float(member[i])
        grad = -2.0 * (u_nom[i] - e * w.numpy())
        np.testing.assert_allclose(A[i, 0], grad)
        np.testing.assert_allclose(b[i, 0], -qv[member[i], i] + grad @ u_nom[i])
    A2, b2 = CostCriticBarrier(q, threshold=1.0, sense="<=").constraints(obs, u_nom)
    top = qv.argmax(0)
    grad0 = -2.0 * (u_nom[0] - float(top[0]) * w.numpy())
    np.testing.assert_allclose(A2[0, 0], -grad0)
    np.testing.assert_allclose(b2[0, 0], qv[top[0], 0] - 1.0 - grad0 @ u_nom[0])


# ---------------------------------------------------------------------------------------------------
# the wrapper


class LineEnv(gym.Env):
    """x' = x + 0.1·(u₀ + u₁); obs = (x, demand). The barrier asks u₀ + u₁ ≥ demand (infeasible above 2)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, demands):
        self.demands = list(demands)
        self.t = 0
        self.x = 0.0

    def _obs(self):
        return np.array([self.x, self.demands[min(self.t, len(self.demands) - 1)]])

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, 0.0
        return self._obs(), {"cost": 0.0}

    def step(self, action):
        self.x += 0.1 * float(action[0] + action[1])
        self.t += 1
        return self._obs(), 0.0, False, self.t >= len(self.demands), {"cost": 0.0}


class DemandBarrier(Barrier):
    def constraints(self, obs, u_nom):
        return np.ones((len(obs), 1, 2)), obs[:, 1:2].copy()


def test_no_intervention_when_the_nominal_action_is_safe():
    env = SafetyFilter(LineEnv([-1.0, 0.0, 0.5, 1.5]), DemandBarrier())
    env.reset()
    _, _, _, _, info = env.step(np.array([0.2, -0.3]))  # 0.2 − 0.3 ≥ −1
    rec = info["safety_filter"]
    assert rec["intervened"] is False and rec["correction_norm"] == 0.0 and rec["status"] == "optimal"
    np.testing.assert_array_equal(env.last_action, np.array([0.2, -0.3], dtype=np.float32))
    _, _, _, _, info = env.step(np.array([0.5, -0.5]))  # exactly on the boundary: still no change
    assert info["safety_filter"]["intervened"] is False
    _, _, _, _, info = env.step(np.array([0.0, 0.0]))  # needs 0.5: projected onto u₀ + u₁ = 0.5
    assert info["safety_filter"]["intervened"] is True
    np.testing.assert_allclose(env.last_action, [0.25, 0.25], atol=1e-7)
    np.testing.assert_allclose(info["safety_filter"]["correction_norm"], np.sqrt(2) * 0.25, rtol=1e-6)
    assert info["safety_filter"]["episode_interventions"] == 1


@pytest.mark.parametrize("solver", ["auto", "exact", "daqp", "osqp", "cvxpy"])
def test_slack_mode_executes_and_reports_the_minimal_violation(solver):
    env = SafetyFilter(LineEnv([-1.0, 2.5, 3.0, -1.0]), DemandBarrier(), solver=solver, on_infeasible="slack")
    env.reset()
    statuses, slacks = [], []
    for _ in range(4):
        _, _, _, _, info = env.step(np.array([-1.0, 0.3]))
        statuses.append(info["safety_filter"]["status"])
        slacks.append(info["safety_filter"]["slack"])
    assert statuses == ["optimal", "relaxed", "relaxed", "optimal"]
    np.testing.assert_allclose(slacks, [0.0, 0.5, 1.0, 0.0], atol=1e-6)
    assert (
        env.episode_infeasible == 2 and env.total_infeasible == 2 and info["safety_filter"]["episode_infeasible"] == 2
    )
    assert env.episode_interventions == 2  # the infeasible steps; the others were safe as they came


class TwoRowBarrier(Barrier):
    """u₀ + u₁ ≥ demand and u₀ ≥ −0.5: two rows, so "auto" solves with DAQP."""

    def constraints(self, obs, u_nom):
        A = np.tile(np.array([[1.0, 1.0], [1.0, 0.0]]), (len(obs), 1, 1))
        return A, np.stack([obs[:, 1], np.full(len(obs), -0.5)], axis=1)


@pytest.mark.parametrize("solver", ["auto", "daqp", "osqp"])
def test_several_rows_infeasible_steps_follow_on_infeasible(solver):
    """The same contract with several rows: slack reports the minimal violation, raise raises, and
    fallback executes the ascent action; an infeasible step is never passed through as solved."""
    env = SafetyFilter(LineEnv([0.5, 2.5]), TwoRowBarrier(), solver=solver)
    env.reset()
    _, _, _, _, info = env.step(np.array([-1.0, 0.3]))
    np.testing.assert_allclose(env.last_action, [-0.4, 0.9], atol=1e-6)  # onto u₀ + u₁ = 0.5
    _, _, _, _, info = env.step(np.array([-1.0, 0.3]))
    rec = info["safety_filter"]
    assert rec["status"] == "relaxed" and rec["infeasible"] is True
    np.testing.assert_allclose([rec["slack"], *env.last_action], [0.5, 1.0, 1.0], atol=1e-6)
    env = SafetyFilter(LineEnv([2.5]), TwoRowBarrier(), solver=solver, on_infeasible="raise")
    env.reset()
    with pytest.raises(InfeasibleConstraintError, match="violation is 0.5"):
        env.step(np.zeros(2))
    env = SafetyFilter(LineEnv([2.5]), TwoRowBarrier(), solver=solver, on_infeasible="fallback")
    env.reset()
    _, _, _, _, info = env.step(np.zeros(2))
    assert info["safety_filter"]["status"] == "fallback" and env.episode_infeasible == 1


def test_raise_mode_names_the_step_and_the_violation():
    env = SafetyFilter(LineEnv([0.0, 0.0, 2.75]), DemandBarrier(), on_infeasible="raise")
    env.reset()
    env.step(np.zeros(2))
    env.step(np.zeros(2))
    with pytest.raises(InfeasibleConstraintError, match=r"step 3 \(episode step 3\).*violation is 0\.75"):
        env.step(np.zeros(2))


def test_fallback_mode_uses_the_given_action_or_the_barrier_ascent_action():
    env = SafetyFilter(
        LineEnv([3.0]), DemandBarrier(), on_infeasible="fallback", fallback_action=lambda obs: [0.9, 0.4]
    )
    env.reset()
    _, _, _, _, info = env.step(np.array([-1.0, -1.0]))
    np.testing.assert_allclose(env.last_action, [0.9, 0.4], atol=1e-7)
    assert info["safety_filter"]["status"] == "fallback" and info["safety_filter"]["infeasible"] is True
    np.testing.assert_allclose(info["safety_filter"]["slack"], 3.0 - 1.3, atol=1e-6)
    env = SafetyFilter(LineEnv([3.0]), DemandBarrier(), on_infeasible="fallback")
    env.reset()
    _, _, _, _, info = env.step(np.array([-1.0, -1.0]))
    np.testing.assert_allclose(env.last_action, [1.0, 1.0])  # steepest ascent of u₀ + u₁ in the box
    assert env.episode_infeasible == 1


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="on_infeasible"):
        SafetyFilter(LineEnv([0.0]), DemandBarrier(), on_infeasible="ignore")
    with pytest.raises(TypeError, match="constraints"):
        SafetyFilter(LineEnv([0.0]), barrier=object())
    with pytest.raises(ValueError, match="fallback_action"):
        SafetyFilter(LineEnv([0.0]), DemandBarrier(), fallback_action=[0.0, 0.0])
    with pytest.raises(ValueError, match="bounded action box"):
        SafetyFilter(LineEnv([0.0]), DemandBarrier(), action_low=-np.inf)
    env = SafetyFilter(LineEnv([0.0, 0.0]), DemandBarrier())
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(2))
    env.reset()
    with pytest.raises(ValueError, match="not finite"):
        env.step(np.array([np.nan, 0.0]))

    class NaNBarrier(Barrier):
        def constraints(self, obs, u_nom):
            return np.full((len(obs), 1, 2), np.nan), np.zeros((len(obs), 1))

    env = SafetyFilter(LineEnv([0.0]), NaNBarrier())
    env.reset()
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.zeros(2))


# ---------------------------------------------------------------------------------------------------
# drop-in use


GOAL = np.array(POINT_ROBOT.goal)


def goal_seeking(obs: np.ndarray) -> np.ndarray:
    """Drives straight at the goal and ignores the hazards (the main hazard lies across its path)."""
    return np.clip(3.0 * (GOAL - obs), -1.0, 1.0)


def per_hazard_h(x):
    """One barrier per hazard disc (k = 3 constraint rows), for the several-constraint path."""
    return torch.stack([(x[..., 0] - cx) ** 2 + (x[..., 1] - cy) ** 2 - r * r for cx, cy, r in POINT_ROBOT.hazards], -1)


def _episode_costs(env, episodes: int, policy=goal_seeking) -> np.ndarray:
    costs = np.zeros(episodes)
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy(obs))
            costs[ep] += info["cost"]
            done = terminated or truncated
    return costs


def test_point_robot_drop_in_filter_removes_all_cost():
    task = get_task("point-robot")
    plain = _episode_costs(gym.make(task.env_id), 8)
    assert plain.min() > 0, "the hazard-ignoring policy should incur cost in every episode"
    filtered_env = SafetyFilter(gym.make(task.env_id), ControlAffineCBF.for_task(task, alpha=5.0))
    filtered = _episode_costs(filtered_env, 8)
    assert filtered.max() == 0.0
    assert filtered_env.total_interventions > 0 and filtered_env.total_infeasible == 0
    discrete = SafetyFilter(gym.make(task.env_id), ControlAffineCBF.for_task(task, alpha=5.0, form="discrete"))
    assert _episode_costs(discrete, 4).max() == 0.0


def test_vector_filter_matches_the_single_env_path_and_removes_cost_over_many_episodes():
    task = get_task("point-robot")
    for make_barrier, steps in (
        (lambda: ControlAffineCBF.for_task(task, alpha=5.0), 200),
        (lambda: per_hazard_cbf(), 60),
    ):
        n = 10
        venv = SafetyFilter(gym.vector.SyncVectorEnv([lambda: gym.make(task.env_id)] * n), make_barrier())
        assert isinstance(venv, VectorSafetyFilter)
        singles = [SafetyFilter(gym.make(task.env_id), make_barrier()) for _ in range(n)]
        obs, _ = venv.reset(seed=list(range(n)))
        single_obs = np.stack([env.reset(seed=i)[0] for i, env in enumerate(singles)])
        np.testing.assert_array_equal(obs, single_obs)
        costs = np.zeros(n)
        for _ in range(steps):
            obs, _, term, trunc, infos = venv.step(goal_seeking(obs))
            if infos["safety_filter"]["status"][0] == "skipped":
                break
            singles_out = [env.step(goal_seeking(o)) for env, o in zip(singles, single_obs, strict=True)]
            single_obs = np.stack([out[0] for out in singles_out])
            np.testing.assert_allclose(venv.last_action, np.stack([e.last_action for e in singles]), atol=1e-6)
            np.testing.assert_allclose(obs, single_obs, atol=1e-5)
            costs += infos["cost"]
        assert costs.max() == 0.0
        np.testing.assert_array_equal(venv.episode_interventions, [e.episode_interventions for e in singles])
        assert venv.episode_interventions.min() > 0


def per_hazard_cbf():
    task = get_task("point-robot")
    return ControlAffineCBF(per_hazard_h, task.drift, task.control_matrix, alpha=5.0)


def test_vector_filter_skips_autoreset_steps_and_restarts_episode_counts():
    task = get_task("point-robot")
    venv = SafetyFilter(
        gym.vector.SyncVectorEnv([lambda: gym.make(task.env_id, max_episode_steps=40)] * 2),
        ControlAffineCBF.for_task(task, alpha=5.0),
    )
    obs, _ = venv.reset(seed=[0, 1])
    statuses = []
    for _ in range(42):
        obs, _, _, trunc, infos = venv.step(goal_seeking(obs))
        statuses.append(infos["safety_filter"]["status"][0])
    assert statuses[:40].count("skipped") == 0 and statuses[40] == "skipped"
    assert venv.episode_steps.tolist() == [1, 1]  # the step after the reset starts a new episode


def test_halfcheetah_with_a_user_barrier_and_an_sb3_policy(tmp_path):
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import Logger

    rng = np.random.default_rng(0)
    w, c = fit_velocity_model(gym.make("HalfCheetah-v5"), 1000, rng)
    barrier = VelocityBarrier(v_max=0.5, w=w, c=c)
    env = SafetyFilter(gym.make("HalfCheetah-v5"), barrier)
    model = SAC(
        "MlpPolicy", env, learning_starts=90, batch_size=16, policy_kwargs={"net_arch": [16, 16]}, seed=0, device="cpu"
    )
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(total_timesteps=100)  # SB3 collects and trains through the filter (inside its DummyVecEnv)
    assert env.total_steps == 100 and model.num_timesteps == 100

    # An open-loop gait as the nominal policy: the barrier binds, and every executed action is feasible.
    def gait(t):
        return np.clip(1.5 * np.sin(0.8 * t + np.arange(6)), -1, 1)

    A, b = barrier.constraints(np.arange(17.0)[None], np.zeros((1, 6)))
    a_row, b_row = barrier.constraint_row(np.arange(17.0), [0.0] * 6)  # the filter's per-step fast path
    assert a_row == A[0, 0].tolist() and b_row == b[0, 0]

    class RowsOnly:  # the same barrier without `constraint_row`: the numpy path, the same actions
        constraints = barrier.constraints

    envs = [SafetyFilter(gym.make("HalfCheetah-v5"), bar) for bar in (barrier, RowsOnly())]
    for e in envs:
        e.reset(seed=2)
    for t in range(200):
        infos = [e.step(gait(t))[4]["safety_filter"] for e in envs]
        np.testing.assert_array_equal(envs[0].last_action, envs[1].last_action)
        assert {k: v for k, v in infos[0].items() if k != "solve_time_us"} == {
            k: v for k, v in infos[1].items() if k != "solve_time_us"
        }
    assert envs[0].total_interventions > 0

    filtered = SafetyFilter(gym.make("HalfCheetah-v5"), barrier)
    obs, _ = filtered.reset(seed=1)
    for t in range(300):
        A, b = barrier.constraints(obs[None], gait(t)[None])
        obs, _, _, _, info = filtered.step(gait(t))
        assert info["safety_filter"]["infeasible"] or A[0, 0] @ filtered.last_action >= b[0, 0] - 1e-5
        assert np.all(np.abs(filtered.last_action) <= 1.0)
    assert 0 < filtered.total_interventions < 300

    obs, _ = env.reset(seed=3)
    for _ in range(50):  # the trained SB3 policy through the filter
        action, _ = model.predict(obs, deterministic=True)
        obs, _, _, _, info = env.step(action)
        assert set(info["safety_filter"]) >= {"intervened", "correction_norm", "status", "slack", "solve_time_us"}
