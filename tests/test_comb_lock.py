"""HNPG's continuous combination lock: the lock's rules, its observations, seeding, and its offline dataset."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import saferl  # noqa: F401  (registers the ids)
from saferl.envs import comb_lock, get_task

ENV_ID = "saferl/CombinationLock-v0"


def _arm(env, arm: int) -> np.ndarray:
    """An action that pulls ``arm`` with probability 1 − 9e-44 (softmax(a / 0.1) of a 100-spike)."""
    action = np.zeros(env.action_dim, dtype=np.float32)
    action[arm] = 100.0
    return action


def _correct(env) -> int:
    return int(env.opt_actions[env.latent, env.h])


def test_the_right_arm_at_every_step_always_opens_the_lock():
    env = gym.make(ENV_ID)
    lock = env.unwrapped
    assert lock.horizon == comb_lock.DEFAULT_HORIZON == get_task("combination-lock").max_episode_steps
    for seed in range(40):
        _, info = env.reset(seed=seed)
        assert info == {"cost": 0.0, "latent": lock.latent, "timestep": 0} and lock.latent in (0, 1)
        rewards = []
        for h in range(lock.horizon):
            obs, reward, terminated, truncated, info = env.step(_arm(lock, _correct(lock)))
            rewards.append(reward)
            assert info["latent"] in (0, 1) and info["cost"] == 0.0
            assert terminated == (h == lock.horizon - 1) and not truncated
        assert rewards == [0.0] * (lock.horizon - 1) + [1.0]


@pytest.mark.parametrize("wrong_step", range(comb_lock.DEFAULT_HORIZON))
def test_one_wrong_arm_sends_the_agent_to_the_bad_state_for_good(wrong_step):
    env = gym.make(ENV_ID)
    lock = env.unwrapped
    finals = set()
    for seed in range(30):
        env.reset(seed=seed)
        for h in range(lock.horizon):
            if h < wrong_step:
                arm = _correct(lock)
            elif h == wrong_step:
                arm = (_correct(lock) + 1) % lock.action_dim
            else:
                arm = int(lock.opt_actions[1, h])  # a good chain's arm does not help in C
            _, reward, terminated, _, info = env.step(_arm(lock, arm))
            if h >= wrong_step:
                assert info["latent"] == comb_lock.BAD
            if h < lock.horizon - 1:
                assert reward == 0.0  # no reward, and no anti-reward, before the last step
        assert terminated
        finals.add(reward)
    # the last step pays only the anti-reward, 0.1 with probability 1/2
    assert finals == {0.0, 0.1}


def test_random_actions_almost_never_open_a_short_lock():
    env = gym.make(ENV_ID, horizon=2)
    rng = np.random.default_rng(0)
    returns = []
    for seed in range(2000):
        env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            _, r, done, _, _ = env.step(rng.uniform(0, 1, 10).astype(np.float32))
            total += r
        returns.append(total)
    assert 0 < np.mean(np.asarray(returns) == 1.0) < 0.03  # 1/100 per episode


@pytest.mark.parametrize(("horizon", "dim"), [(1, 8), (4, 8), (5, 16), (12, 16), (13, 32)])
def test_observation_is_a_rotated_noisy_one_hot_code(horizon, dim):
    env = gym.make(ENV_ID, horizon=horizon)
    assert env.observation_space.shape == (dim,) == (comb_lock.observation_dim(horizon),)
    w = comb_lock.hadamard(dim)
    np.testing.assert_array_equal(w @ w, dim * np.eye(dim))
    codes, clean = [], []
    for seed in range(200):
        obs, info = env.reset(seed=seed)
        done = False
        while True:
            assert obs.dtype == np.float32 and obs.shape == (dim,) and env.observation_space.contains(obs)
            code = w @ obs.astype(np.float64) / dim  # undo the rotation
            target = np.zeros(dim)
            target[info["latent"]] += 1.0
            target[3 + info["timestep"]] += 1.0
            codes.append(code)
            clean.append(target)
            assert comb_lock.timestep(obs) == info["timestep"] and comb_lock.latent(obs) == info["latent"]
            if done:
                break
            obs, _, done, _, info = env.step(np.ones(10, dtype=np.float32))
    noise = np.asarray(codes) - np.asarray(clean)
    # N(0, 0.1) on the first H + 3 coordinates, none on the padding
    assert np.std(noise[:, : horizon + 3]) == pytest.approx(0.1, rel=0.1)
    assert np.abs(noise[:, horizon + 3 :]).max() < 1e-5
    # the rotation spreads the two-hot code over every coordinate: x_j = ±1 ± 1 (+ noise), half of them ±2
    raw = np.asarray(codes) @ w  # = the observations
    assert np.mean(np.abs(raw) > 1.0) == pytest.approx(0.5, abs=0.05)


def test_decoders_accept_torch_batches():
    env = gym.make(ENV_ID)
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    t = comb_lock.timestep(torch.as_tensor(obs))
    assert t.dtype == torch.int64 and t.tolist() == [0] * 8
    assert comb_lock.latent(torch.as_tensor(obs)).tolist() == comb_lock.latent(obs).tolist()


def test_same_seed_same_episode_and_the_lock_is_fixed():
    def episode(seed: int, lock_seed: int = 0):
        env = gym.make(ENV_ID, lock_seed=lock_seed)
        obs, _ = env.reset(seed=seed)
        out, rewards = [obs], []
        rng = np.random.default_rng(123)
        for _ in range(env.unwrapped.horizon):
            obs, r, *_ = env.step(rng.uniform(0, 1, 10).astype(np.float32))
            out.append(obs)
            rewards.append(r)
        return np.stack(out), rewards, env.unwrapped.opt_actions.copy()

    a, b, c = episode(7), episode(7), episode(8)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[2], c[2])  # the episode seed never changes the lock
    assert not np.array_equal(a[2], episode(7, lock_seed=1)[2])


def test_task_entry_is_cost_free_with_unit_reward_range():
    task = get_task("combination-lock")
    assert task.env_id == ENV_ID and task.cost_thresholds == (0.0,) and task.default_cost_limit == 0.0
    assert (task.reward_min, task.reward_max) == (0.0, 1.0)
    assert task.normalized_reward(1.0) == 1.0
    env = gym.make(ENV_ID, horizon=8)  # no TimeLimit: other horizons need no max_episode_steps override
    env.reset(seed=0)
    steps = 0
    while not env.step(np.zeros(10, dtype=np.float32))[2]:
        steps += 1
    assert steps + 1 == 8


def test_expert_dataset_builds_deterministically_and_loads(minari_root):
    from saferl.data import build, load
    from saferl.data.recipes import RECIPES, collect_lock, lock_dataset

    dataset_id = get_task("combination-lock").dataset_id
    recipe = RECIPES[dataset_id]
    assert recipe.episodes == 1000 and recipe.epsilon is None  # ε = 1/H
    build(dataset_id, episodes=60, progress=False)
    data = load(dataset_id)
    assert data.num_episodes == 60 and data.num_transitions == 300 and data.obs_dim == 16 and data.act_dim == 10
    assert data.metadata["recipe"] == "combination-lock/eps-greedy" and not data.metadata["reference"]
    assert float(data.costs.abs().max()) == 0.0
    assert data.terminals.reshape(60, 5)[:, -1].eq(1).all() and data.terminals.reshape(60, 5)[:, :-1].eq(0).all()
    returns = data.episode_rewards.numpy()
    assert np.isin(np.round(returns, 4), [0.0, 0.1, 1.0]).all()
    # the expert stays on a good chain w.p. (1 − ε·9/10)^5 ≈ 0.37 (random vectors rarely pick its arm)
    assert 0.2 < np.mean(returns == 1.0) < 0.6
    # actions: one-hot on the right arm, or uniform in [0, 1]^10 with probability ε = 1/5
    actions = data.actions.numpy()
    one_hot = (np.sort(actions, axis=1)[:, -1] == 1.0) & (np.sort(actions, axis=1)[:, -2] == 0.0)
    assert 0.1 < 1.0 - one_hot.mean() < 0.3

    a, _ = collect_lock(recipe, seed=3, episodes=5, progress=False)
    b, _ = collect_lock(recipe, seed=3, episodes=5, progress=False)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)

    short = lock_dataset(horizon=3, episodes=20)
    assert short.num_transitions == 60 and short.obs_dim == 8
