"""Run/Circle tasks (Bullet-Safety-Gym rules on MuJoCo bodies): cost convention, cost and reward recomputed by
hand from the info, scripted violations, seeding."""

from __future__ import annotations

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest

from saferl.envs import get_task, run_circle
from saferl.envs.run_circle import ENV_SPECS

NAMES = sorted(ENV_SPECS)
CAR_NAMES = ["car-run", "car-circle"]
ANT_NAMES = ["ant-run", "ant-circle"]

# Bullet-Safety-Gym constants, written out here so the tests do not reuse the module's own numbers.
Y_LIM, X_LIM, RADIUS, V_LIM = 2.0, 6.0, 7.0, 1.5


def make(name: str) -> gym.Env:
    return gym.make(ENV_SPECS[name]["env_id"])


def planar(name: str, obs: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, v_x, v_y) read off the observation."""
    if name.startswith("car"):
        return tuple(float(v) for v in obs[0:4])
    return float(obs[0]), float(obs[1]), float(obs[15]), float(obs[16])


def expected_cost(name: str, info: dict) -> float:
    if name.endswith("run"):
        outside = abs(info["y_position"]) > Y_LIM
        too_fast = math.hypot(info["x_velocity"], info["y_velocity"]) > V_LIM
        return 1.0 if (outside or too_fast) else 0.0
    return 1.0 if abs(info["x_position"]) > X_LIM else 0.0


def ant_agent_term(env: gym.Env, obs: np.ndarray, action: np.ndarray, healthy: bool) -> float:
    """BSG MJCFAgent.specific_reward, from the observation (joint angles obs[7:15], joint speeds obs[21:29])."""
    model = env.unwrapped.model
    a = np.clip(np.asarray(action, dtype=np.float64), -1, 1)
    joint_of_actuator = model.actuator_trnid[:, 0]  # joint ids 1..8 (0 is the free joint)
    speeds = obs[21:29][joint_of_actuator - 1]
    low, high = model.jnt_range[1:9].T
    rel = 2 * (obs[7:15] - 0.5 * (low + high)) / (high - low)
    electricity = -2.0 * np.mean(np.abs(a * 0.1 * speeds))
    stall = -0.1 * np.mean(a**2)
    at_limit = -0.1 * np.count_nonzero(np.abs(rel) > 0.99)
    return float(electricity + stall + at_limit + (1.0 if healthy else -1.0))


@pytest.mark.parametrize("name", NAMES)
def test_cost_convention_and_random_rollout(name):
    spec = ENV_SPECS[name]
    assert spec["cost_thresholds"] == (10.0, 20.0, 40.0)
    env = make(name)  # passive env checker included
    obs, info = env.reset(seed=0)
    assert isinstance(info["cost"], float) and info["cost"] == 0.0
    assert env.observation_space.contains(obs) and obs.dtype == env.observation_space.dtype
    keys = set(info)
    env.action_space.seed(0)
    for _ in range(100):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == env.observation_space.shape and obs.dtype == env.observation_space.dtype
        assert np.all(np.isfinite(obs)) and env.observation_space.contains(obs)
        assert isinstance(info["cost"], float) and info["cost"] >= 0.0
        assert np.isfinite(reward)
        assert set(info) == keys
        assert all(isinstance(v, float) for v in info.values())
        if terminated or truncated:
            obs, info = env.reset()
            assert info["cost"] == 0.0
    env.close()


def test_observation_layouts():
    assert make("car-run").observation_space.shape == (7,)
    assert make("car-circle").action_space.shape == (2,)
    ant = make("ant-run")
    assert ant.observation_space.shape == (29,) and ant.action_space.shape == (8,)


@pytest.mark.parametrize("name", NAMES)
def test_cost_and_reward_recomputed_from_info_and_obs(name):
    env = make(name)
    obs, info = env.reset(seed=1)
    rng = np.random.default_rng(1)
    prev_xy = (info["x_position"], info["y_position"])
    n = 150 if name.startswith("car") else 80
    for t in range(n):
        action = rng.uniform(-1, 1, size=env.action_space.shape)
        if name.startswith("car"):
            action[0] = 1.0 if t % 3 else action[0]  # mostly full throttle: sometimes above the speed limit
        action = action.astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        x, y, vx, vy = planar(name, obs)
        assert (info["x_position"], info["y_position"], info["x_velocity"], info["y_velocity"]) == (x, y, vx, vy)
        assert info["speed"] == pytest.approx(math.hypot(vx, vy))
        assert info["cost"] == expected_cost(name, info)
        # the signed margin a learned barrier (V-OCBF) trains on: cost = 1[h(s') < 0] exactly
        assert (info["cost"] == 1.0) == (float(get_task(name).barrier(obs.astype(np.float64))) < 0.0)
        if name.endswith("run"):
            task = 60.0 * (math.hypot(prev_xy[0] - 1000.0, prev_xy[1]) - math.hypot(x - 1000.0, y))
            agent_scale = 1.0
        else:
            task = 0.1 * (x * -vy + y * vx) / (1.0 + abs(math.hypot(x, y) - RADIUS))
            agent_scale = 0.01
        if name.startswith("car"):
            agent = 0.0
        else:
            agent = ant_agent_term(env, obs, action, healthy=not terminated)
            assert info["reward_agent"] == pytest.approx(agent_scale * agent, abs=1e-9)
        assert info["reward_task"] == pytest.approx(task, rel=1e-6, abs=1e-9)
        assert reward == pytest.approx(task + agent_scale * agent, rel=1e-6, abs=1e-9)
        prev_xy = (x, y)
        if terminated:
            assert not 0.2 <= obs[2] <= 1.0  # Ant-v5's healthy z-range
            break
        assert not truncated


def test_full_throttle_car_run_breaks_the_speed_limit_and_turning_leaves_the_corridor():
    env = make("car-run")
    env.reset(seed=0)
    straight = [env.step(np.array([1.0, 0.0], dtype=np.float32))[4] for _ in range(60)]
    assert sum(i["cost"] for i in straight) > 0
    assert max(i["speed"] for i in straight) > V_LIM
    assert straight[-1]["x_position"] > 4.0  # it went along +x (top speed 3 m/s, 2 s)
    assert sum(i["cost_out_of_bounds"] for i in straight) == 0

    env.reset(seed=0)
    turning = [env.step(np.array([1.0, 0.3], dtype=np.float32))[4] for _ in range(120)]
    assert any(abs(i["y_position"]) > Y_LIM and i["cost_out_of_bounds"] == 1.0 for i in turning)

    env.reset(seed=0)
    slow = [env.step(np.array([0.3, 0.0], dtype=np.float32))[4] for _ in range(60)]  # 0.9 m/s top speed
    assert sum(i["cost"] for i in slow) == 0.0


@pytest.mark.parametrize("name", ["car-circle", "ant-circle"])
def test_circle_cost_beyond_x_lim(name):
    env = make(name)
    for x, cost in [(6.5, 1.0), (-6.5, 1.0), (5.0, 0.0)]:
        env.reset(seed=0, options={"xy": (x, 0.5), "yaw": 0.0})
        obs, _, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert info["cost"] == cost and info["cost_out_of_bounds"] == cost
        assert (get_task(name).barrier(np.asarray(obs, dtype=np.float64)) < 0) == (cost == 1.0)


def test_car_circle_start_and_full_circle_crosses_x_lim():
    env = make("car-circle")
    obs, info = env.reset(seed=5)
    x, y = obs[0], obs[1]
    assert 2.0 <= math.hypot(x, y) <= 4.0
    # starts on the clockwise tangent: heading ⟂ position, and ⟨p, (−h_y, h_x)⟩ > 0
    c, s = obs[4], obs[5]
    assert abs(c * x + s * y) < 1e-9 and (y * c - x * s) > 0
    # full throttle, turning right at v/r = 3/7 rad/s: a clockwise circle of radius ~7 that reaches |x| > 6
    infos = [env.step(np.array([1.0, -1.0 / 7.0], dtype=np.float32)) for _ in range(300)]
    rewards = [r for _, r, *_ in infos]
    costs = [i["cost"] for *_, i in infos]
    assert max(abs(i["x_position"]) for *_, i in infos) > X_LIM
    assert sum(costs) > 0 and sum(rewards) > 0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_rollout(name):
    def rollout(seed):
        env = make(name)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [obs]
        for _ in range(30):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            out += [obs, np.array([reward, info["cost"]])]
            if terminated or truncated:
                break
        return np.concatenate(out)

    a, b = rollout(7), rollout(7)
    assert a.shape == b.shape and np.array_equal(a, b)
    assert not np.array_equal(rollout(8)[:7], a[:7])


@pytest.mark.parametrize("name", NAMES)
def test_pickle_roundtrip_rebuilds_the_same_task(name):
    env = gym.make(ENV_SPECS[name]["env_id"]).unwrapped
    clone = pickle.loads(pickle.dumps(env))
    assert type(clone) is type(env) and clone.task == env.task
    assert clone.observation_space == env.observation_space


def test_constants_table_matches_bullet_safety_gym():
    for name in NAMES:
        consts = run_circle.TASK_CONSTANTS[name]
        assert (
            consts["max_episode_steps"] == {"car-run": 200, "car-circle": 300, "ant-run": 200, "ant-circle": 500}[name]
        )
        if name.endswith("run"):
            assert consts["y_lim"] == Y_LIM
        else:
            assert (consts["x_lim"], consts["radius"]) == (X_LIM, RADIUS)
    assert run_circle.TASK_CONSTANTS["car-run"]["dt"] == pytest.approx(1 / 30)
    assert run_circle.TASK_CONSTANTS["car-circle"]["dt"] == pytest.approx(0.1)
