"""The safety filter with plain numpy barriers (issue 17): per-state and batched callables, numpy or torch,
numerical ∇h, list / 1-d returns of f and g, and the error for a callable that cannot take states."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from saferl.safety import ControlAffineCBF, SafetyFilter
from saferl.safety.barriers import BarrierSignatureError

CENTER, RADIUS, GOAL, DT, ALPHA = np.array([0.0, 0.0]), 0.5, np.array([2.0, 0.3]), 0.1, 2.0


class SingleIntegrator(gym.Env):
    """x' = x + dt·u in the plane, a disc hazard between the start and the goal; cost 1 inside the disc."""

    def __init__(self, start=(-2.0, 0.0), max_steps: int = 80):
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (2,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float64)
        self.start, self.max_steps = np.array(start), max_steps

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = self.start.copy(), 0
        return self.x.copy(), {"cost": 0.0}

    def step(self, action):
        self.x = self.x + DT * np.asarray(action, dtype=np.float64)
        self.t += 1
        cost = float(np.sum((self.x - CENTER) ** 2) < RADIUS**2)
        return self.x.copy(), -float(np.linalg.norm(self.x - GOAL)), False, self.t >= self.max_steps, {"cost": cost}


def goal_seeking(x: np.ndarray) -> np.ndarray:
    """Straight at the goal, hazard ignored (works on one state or a batch)."""
    return np.clip(2.0 * (GOAL - x), -1.0, 1.0)


# the plain-numpy, one-state callables
def h_state(x):
    return float(np.sum((x - CENTER) ** 2) - RADIUS**2)


def f_state(x):
    return np.zeros(2)


def g_state(x):
    return np.eye(2)


def analytic_rows(x: np.ndarray, f: np.ndarray, G: np.ndarray, alpha: float = ALPHA):
    """The continuous-time CBF row of the disc barrier: ∇h·g·u ≥ −∇h·f − α·h with ∇h = 2(x − c)."""
    grad = 2.0 * (x - CENTER)
    hv = np.sum((x - CENTER) ** 2, axis=-1) - RADIUS**2
    return np.einsum("bd,bdn->bn", grad, G)[:, None], (-np.einsum("bd,bd->b", grad, f) - alpha * hv)[:, None]


def run_episode(env: gym.Env):
    """States before each step, the intervened flags and the total cost of one episode."""
    obs, _ = env.reset(seed=0)
    states, intervened, cost, done = [obs], [], 0.0, False
    while not done:
        obs, _, terminated, truncated, info = env.step(goal_seeking(obs))
        intervened.append(info.get("safety_filter", {}).get("intervened", False))
        cost += info["cost"]
        states.append(obs)
        done = terminated or truncated
    return np.array(states), np.array(intervened), cost


def test_plain_numpy_one_state_lambdas_keep_the_integrator_out_of_the_hazard():
    plain_states, _, plain_cost = run_episode(SingleIntegrator())
    plain_h = np.sum((plain_states - CENTER) ** 2, axis=1) - RADIUS**2
    assert plain_cost > 0 and plain_h.min() < 0, "the unfiltered goal-seeker must cross the hazard"

    env = SafetyFilter(SingleIntegrator(), ControlAffineCBF(h=h_state, f=f_state, g=g_state, alpha=ALPHA))
    states, intervened, cost = run_episode(env)
    dist = np.linalg.norm(states - CENTER, axis=1)
    # α·dt = 0.2 ≤ 1 and h is convex, so h(x + dt·u) ≥ h + dt·∇h·u ≥ (1 − α·dt)·h ≥ 0: no violation at all
    assert cost == 0.0 and (dist >= RADIUS).all()
    assert env.total_interventions > 0 and env.total_infeasible == 0
    # the filter only acts where ∇h·u_nom < −α·h is possible: 2ρ·‖u_nom‖ ≥ α(ρ² − r²) with ‖u_nom‖ ≤ √2
    s = np.sqrt(2.0)
    reach = (2 * s + np.sqrt(8.0 + 4 * ALPHA**2 * RADIUS**2)) / (2 * ALPHA)
    assert (dist[:-1][intervened] <= reach).all()
    assert (dist[:-1][~intervened] > reach).any(), "the episode should start away from the hazard"
    assert np.linalg.norm(states[-1] - GOAL) < 0.2, "the filtered robot should slide round the disc to the goal"
    np.testing.assert_allclose(env.barrier.h(states[:3]), dist[:3] ** 2 - RADIUS**2, rtol=1e-12)


def test_batched_numpy_callables_and_a_vector_env_give_the_one_state_actions():
    def h_batch(x):
        return np.sum((x - CENTER) ** 2, axis=1) - RADIUS**2  # axis=1: fails on one state, so batched

    def f_batch(x):
        return np.zeros_like(x)

    def g_batch(x):
        return np.broadcast_to(np.eye(2), (len(x), 2, 2))

    batched = ControlAffineCBF(h_batch, f_batch, g_batch, alpha=ALPHA)
    per_state = ControlAffineCBF(h_state, f_state, g_state, alpha=ALPHA)
    x = np.random.default_rng(0).uniform(-2, 2, (9, 2))
    u = np.zeros((9, 2))
    A, b = batched.constraints(x, u)
    assert not any(call.per_state for call in batched._calls.values())
    A2, b2 = per_state.constraints(x, u)
    assert per_state._calls["h"].per_state and not per_state._calls["h"].use_torch  # central differences
    np.testing.assert_allclose(A2, A, rtol=1e-12)
    np.testing.assert_allclose(b2, b, rtol=1e-12)

    starts = [(-2.0, 0.0), (-2.0, 0.5), (-1.5, -0.2)]
    venv = SafetyFilter(
        gym.vector.SyncVectorEnv([lambda s=s: SingleIntegrator(start=s) for s in starts]),
        ControlAffineCBF(h_state, f_state, g_state, alpha=ALPHA),  # one-state callables on a batch of 3
    )
    singles = [  # the batched callables, one env each
        SafetyFilter(SingleIntegrator(start=s), ControlAffineCBF(h_batch, f_batch, g_batch, alpha=ALPHA))
        for s in starts
    ]
    obs, _ = venv.reset(seed=0)
    single_obs = np.stack([e.reset(seed=0)[0] for e in singles])
    for _ in range(40):
        obs, _, _, _, infos = venv.step(goal_seeking(obs))
        single_obs = np.stack([e.step(goal_seeking(o))[0] for e, o in zip(singles, single_obs, strict=True)])
        np.testing.assert_allclose(obs, single_obs, atol=1e-7)
        assert infos["cost"].max() == 0.0
    assert venv.total_interventions.min() > 0


def test_torch_callables_keep_autograd_and_one_state_torch_functions_work():
    c = torch.as_tensor(CENTER)
    h_batch = lambda x: ((x - c) ** 2).sum(-1) - RADIUS**2  # noqa: E731
    h_one = lambda x: torch.sum((x - c) ** 2) - RADIUS**2  # noqa: E731  (sums the whole input)
    f = lambda x: torch.zeros_like(x)  # noqa: E731
    g = lambda x: torch.eye(2, dtype=x.dtype).expand(*x.shape[:-1], 2, 2)  # noqa: E731
    x = np.random.default_rng(1).uniform(-2, 2, (6, 2))
    want_A, want_b = analytic_rows(x, np.zeros((6, 2)), np.broadcast_to(np.eye(2), (6, 2, 2)))
    for h in (h_batch, h_one):
        cbf = ControlAffineCBF(h, f, g, alpha=ALPHA)
        A, b = cbf.constraints(x, np.zeros((6, 2)))
        assert cbf._calls["h"].use_torch  # autograd, not central differences: exact to rounding
        np.testing.assert_allclose(A, want_A, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(b, want_b, rtol=1e-14, atol=1e-14)
    assert cbf._calls["h"].per_state and not ControlAffineCBF(h_batch, f, g)._call("h", x).per_state


def test_list_and_one_d_returns_of_f_and_g():
    # one action pushing along (1, 0.5); f as a Python list
    h = lambda x: (x[0] - 1.0) ** 2 + x[1] ** 2 - 0.25  # noqa: E731  (one state only: x[1] is a row of a batch)
    f = lambda x: [0.3, -0.1 * x[0]]  # noqa: E731
    g = lambda x: np.array([1.0, 0.5])  # noqa: E731
    grad = lambda x: np.array([2.0 * (x[0] - 1.0), 2.0 * x[1]])  # noqa: E731
    x = np.random.default_rng(2).uniform(-2, 2, (5, 2))
    fx = np.stack([[0.3, -0.1 * xi[0]] for xi in x])
    gx = np.tile([[1.0], [0.5]], (5, 1, 1))
    grads = np.stack([grad(xi) for xi in x])
    hv = np.array([h(xi) for xi in x])
    want_A = np.einsum("bd,bdn->bn", grads, gx)[:, None]
    want_b = (-np.einsum("bd,bd->b", grads, fx) - ALPHA * hv)[:, None]
    for kwargs in ({}, {"grad_h": grad}):
        cbf = ControlAffineCBF(h, f, g, alpha=ALPHA, **kwargs)
        A, b = cbf.constraints(x, np.zeros((5, 1)))
        assert A.shape == (5, 1, 1) and b.shape == (5, 1)
        np.testing.assert_allclose(A, want_A, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(b, want_b, rtol=1e-8, atol=1e-10)
    # 1-d g with two actions is ambiguous: the error names the expected shape
    two = ControlAffineCBF(h, f, lambda x: np.array([1.0, 0.5]), alpha=ALPHA)
    with pytest.raises(BarrierSignatureError, match=r"g\(x\[d\]\) -> \[d, n\]"):
        two.constraints(x, np.zeros((5, 2)))


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e3])
def test_numerical_gradient_matches_the_analytic_one_on_the_quadratic_barrier(scale):
    x = np.random.default_rng(3).uniform(-2, 2, (8, 2)) * scale
    u = np.random.default_rng(4).uniform(-1, 1, (8, 2))
    grad = lambda x: 2.0 * (x - CENTER)  # noqa: E731
    for form, kwargs in (("continuous", {}), ("discrete", {"dt": DT})):
        numeric = ControlAffineCBF(h_state, f_state, g_state, alpha=ALPHA, form=form, **kwargs)
        exact = ControlAffineCBF(h_state, f_state, g_state, alpha=ALPHA, form=form, grad_h=grad, **kwargs)
        A, b = numeric.constraints(x, u)
        A_ref, b_ref = exact.constraints(x, u)
        # central differences are exact on a quadratic up to rounding: ~ε·|h|/δ
        np.testing.assert_allclose(A, A_ref, rtol=1e-7, atol=1e-7 * max(1.0, scale))
        np.testing.assert_allclose(b, b_ref, rtol=1e-7, atol=1e-7 * max(1.0, scale) ** 2)
    _, grad_fd = numeric._value_and_grad(x)
    assert not np.array_equal(grad_fd[:, 0], grad(x)), "the numerical path must really be numerical"


def test_a_callable_that_cannot_take_states_gets_a_clear_error():
    x, u = np.zeros((1, 2)), np.zeros((1, 2))
    two_args = ControlAffineCBF(lambda x, y: 0.0, f_state, g_state)
    with pytest.raises(BarrierSignatureError, match=r"cannot call h .*h\(x\[d\]\) -> float or \[k\].*h\(x\[B, d\]\)"):
        two_args.constraints(x, u)
    with pytest.raises(TypeError, match=r"f\(x\[d\]\) -> \[d\]"):  # also a TypeError for callers catching that
        ControlAffineCBF(h_state, lambda x: np.zeros(3), g_state).constraints(x, u)
    with pytest.raises(BarrierSignatureError, match="h must be a callable"):
        ControlAffineCBF(np.zeros(2), f_state, g_state)
