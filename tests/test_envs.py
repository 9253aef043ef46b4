"""Tasks: registration, the cost convention, barrier sign = cost, known dynamics, the 6-tuple adapter."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import saferl  # registers the ids
from saferl.envs import TASKS, SixTupleToInfoCost, get_task, step_cost
from saferl.envs.tasks import UnknownTaskError

NAV_TASKS = ["point-robot", "boat-robot"]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_cost_convention_at_reset_and_every_step(name):
    task = get_task(name)
    env = gym.make(task.env_id)  # with gymnasium's passive env checker
    rng = np.random.default_rng(0)
    space = env.action_space
    for episode in range(5 if name in NAV_TASKS else 2):
        obs, info = env.reset(seed=episode)
        assert isinstance(info["cost"], float) and info["cost"] == 0.0
        assert env.observation_space.contains(obs)
        steps = 0
        while True:
            obs, reward, terminated, truncated, info = env.step(rng.uniform(space.low, space.high).astype(space.dtype))
            steps += 1
            assert isinstance(info["cost"], float) and info["cost"] >= 0.0
            assert np.isfinite(reward) and np.isfinite(obs).all()
            if terminated or truncated:
                break
        assert steps <= task.max_episode_steps
        assert truncated == (steps == task.max_episode_steps and not terminated)
    env.close()


@pytest.mark.parametrize("name", NAV_TASKS)
def test_driving_through_a_hazard_costs_and_the_barrier_sign_matches_cost(name):
    """Drive straight at the first hazard's centre: cost must switch on exactly where h < 0."""
    task = get_task(name)
    env = gym.make(task.env_id)
    geo = env.unwrapped.geometry
    cx, cy, r = geo.hazards[0]
    start = (cx - 1.5 * r - 0.3, cy)
    obs, info = env.reset(options={"state": start})
    costs, hs = [], []
    for _ in range(200):
        fx = task.f(np.asarray(obs, dtype=np.float64))[0]
        # aim at the centre, compensating the boat's drift along x
        action = np.clip(np.array([(cx - obs[0]) * 5.0 - fx, (cy - obs[1]) * 5.0]), -1, 1).astype(np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        costs.append(info["cost"])
        hs.append(float(task.barrier(obs.astype(np.float64))))
        if terminated or truncated:
            break
    costs, hs = np.array(costs), np.array(hs)
    assert costs.sum() > 0, "driving into a hazard must cost"
    np.testing.assert_array_equal(costs == 1.0, hs < 0.0)


@pytest.mark.parametrize("name", NAV_TASKS)
def test_barrier_sign_matches_cost_on_random_rollouts_and_a_grid(name):
    task = get_task(name)
    env = gym.make(task.env_id)
    rng = np.random.default_rng(1)
    n_cost = 0
    geo = env.unwrapped.geometry
    for episode in range(20):
        # start anywhere in the arena, so that random walks also begin inside and next to hazards
        obs, _ = env.reset(seed=100 + episode, options={"state": rng.uniform(geo.arena_low, geo.arena_high)})
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, size=2).astype(np.float32))
            assert (info["cost"] == 1.0) == (float(task.barrier(obs.astype(np.float64))) < 0.0)
            assert info["h"] == pytest.approx(float(task.barrier(obs.astype(np.float64))), abs=1e-5)
            n_cost += info["cost"]
            done = terminated or truncated
    assert n_cost > 0
    # On a grid over the arena, h < 0 exactly inside some hazard disc (independent distance check).
    xs = np.linspace(geo.arena_low[0], geo.arena_high[0], 61)
    ys = np.linspace(geo.arena_low[1], geo.arena_high[1], 61)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    inside = np.zeros(len(grid), dtype=bool)
    for cx, cy, r in geo.hazards:
        inside |= np.hypot(grid[:, 0] - cx, grid[:, 1] - cy) < r
    assert inside.any() and not inside.all()
    np.testing.assert_array_equal(task.barrier(grid) < 0, inside)


@pytest.mark.parametrize("name", NAV_TASKS)
def test_known_dynamics_predict_the_env_step(name):
    """p' = p + (f(p) + g(p)·u)·dt with the task table's f, g and dt."""
    task = get_task(name)
    env = gym.make(task.env_id)
    rng = np.random.default_rng(2)
    obs, _ = env.reset(seed=3)
    for _ in range(50):
        u = rng.uniform(-1, 1, size=2)
        p = obs.astype(np.float64)
        predicted = p + (task.f(p) + task.g(p) @ u) * task.dt
        obs, _, terminated, truncated, _ = env.step(u.astype(np.float32))
        np.testing.assert_allclose(obs, predicted, atol=1e-5)
        if terminated or truncated:
            break


@pytest.mark.parametrize("name", NAV_TASKS)
def test_barrier_and_dynamics_accept_numpy_and_torch_batches(name):
    task = get_task(name)
    pts = np.random.default_rng(3).uniform(-3, 3, size=(64, 2))
    h_np, h_t = task.barrier(pts), task.barrier(torch.tensor(pts))
    np.testing.assert_allclose(h_np, h_t.numpy())
    np.testing.assert_allclose(task.f(pts), task.f(torch.tensor(pts)).numpy())
    assert task.g(pts).shape == (64, 2, 2) and task.g(torch.tensor(pts)).shape == (64, 2, 2)
    # autograd through the analytic barrier (what a CBF filter needs)
    x = torch.tensor(pts, requires_grad=True)
    task.barrier(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_boat_reaches_goal_and_point_dwells():
    boat = gym.make("saferl/BoatRobot-v0")
    boat.reset(options={"state": (1.3, 0.0)})
    _, reward, terminated, _, _ = boat.step(np.array([0.0, 0.0], dtype=np.float32))
    assert terminated and reward > 1.0 - 0.1  # arrival bonus, one step of time penalty
    point = gym.make("saferl/PointRobot-v0")
    point.reset(options={"state": (2.2, 2.2)})
    for _ in range(5):
        _, reward, terminated, _, _ = point.step(np.zeros(2, dtype=np.float32))
        assert not terminated and reward == pytest.approx(0.1)


class _SixTuple(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def reset(self, *, seed=None, options=None):
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(1, dtype=np.float32), 1.0, 0.5, False, False, {"x": 1}


def test_six_tuple_adapter_moves_cost_into_info():
    env = SixTupleToInfoCost(_SixTuple())
    _, info = env.reset()
    assert info["cost"] == 0.0
    out = env.step(np.zeros(1))
    assert len(out) == 5 and out[4] == {"x": 1, "cost": 0.5}
    assert step_cost(out[4]) == 0.5


def test_step_cost_explains_missing_cost():
    with pytest.raises(KeyError, match="SixTupleToInfoCost"):
        step_cost({})


def test_unknown_task_lists_valid_names():
    with pytest.raises(UnknownTaskError, match="point-robot"):
        get_task("no-such-task")


def test_every_task_has_a_hydra_env_config():
    from pathlib import Path

    conf = Path(saferl.__file__).parent / "conf" / "env"
    assert {p.stem for p in conf.glob("*.yaml")} == set(TASKS)
