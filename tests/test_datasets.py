"""Datasets: recipes, Minari round trip of costs, checksums, the D4RL-shaped loader, reference constants."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from minari.data_collector import EpisodeBuffer

from saferl.data import DatasetCorruptError, DatasetNotFoundError, build, load, minari_io, reader
from saferl.data.coverage import hazard_coverage, reward_frontier
from saferl.envs import get_task


def _pendulum_dataset(dataset_id: str, episodes: int = 3, steps: int = 50) -> Path:
    """A D4RL-shaped dataset (no cost in infos), written with Minari's own API."""
    env = gym.make("Pendulum-v1", max_episode_steps=steps)
    rng = np.random.default_rng(0)
    buffers = []
    for i in range(episodes):
        obs, _ = env.reset(seed=i)
        o, a, r, te, tr = [obs], [], [], [], []
        while True:
            act = rng.uniform(-2, 2, size=1).astype(np.float32)
            obs, rew, terminated, truncated, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew), te.append(terminated), tr.append(truncated)
            if terminated or truncated:
                break
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=np.array(o),
                actions=np.array(a),
                rewards=r,
                terminations=te,
                truncations=tr,
            )
        )
    minari.create_dataset_from_buffers(dataset_id, buffers, env="Pendulum-v1", algorithm_name="random")
    return minari_io.dataset_dir(dataset_id)


def test_reference_constants_match_the_reference_datasets(point_dataset, boat_dataset):
    """R_min/R_max in the task table are the min/max episode returns of the rebuilt reference datasets."""
    for name, dataset_id in (("point-robot", point_dataset), ("boat-robot", boat_dataset)):
        task = get_task(name)
        data = load(dataset_id)
        assert data.metadata["reference"] is True
        assert float(data.episode_rewards.min()) == pytest.approx(task.reward_min, rel=1e-6, abs=1e-9)
        assert float(data.episode_rewards.max()) == pytest.approx(task.reward_max, rel=1e-6, abs=1e-9)


def test_mixed_dataset_spreads_over_the_cost_reward_plane(point_dataset):
    data = load(point_dataset)
    costs, rewards = data.episode_costs.numpy(), data.episode_rewards.numpy()
    limit = get_task("point-robot").default_cost_limit
    safe, unsafe = costs <= limit, costs > 2 * limit
    assert 0.25 < safe.mean() < 0.75 and unsafe.mean() > 0.25
    assert (costs[safe] > 0).sum() >= 20  # partially unsafe episodes below the limit, not only zeros
    # unsafe behaviour reaches higher reward than any safe episode: the trade-off offline safe RL is about
    assert rewards[unsafe].max() > rewards[safe].max()
    meta = data.metadata
    assert meta["recipe"] == "point-robot/mixed" and meta["seed"] == 0
    assert set(meta["behaviour_counts"]) >= {"goal-seeking", "hazard-avoiding", "waypoint", "random-uniform"}


@pytest.mark.parametrize("task_name", ["point-robot", "boat-robot"])
def test_every_hazard_is_entered_and_safe_episodes_reach_the_frontier(task_name, point_dataset, boat_dataset):
    """An offline method can only learn a hazard is unsafe if the data enters it with a cost (recipe v1 never
    entered PointRobot's two flanking hazards nor the boat's downstream one), and it can only find a good safe
    policy if safe episodes come close in reward to the best unsafe ones at every threshold."""
    task = get_task(task_name)
    data = load(point_dataset if task_name == "point-robot" else boat_dataset)
    coverage = hazard_coverage(data, task.barrier.keywords["geometry"].hazards)
    assert len(coverage) == len(task.barrier.keywords["geometry"].hazards)
    for hazard in coverage:
        assert hazard.episode_fraction >= 0.05, hazard
    # entering a hazard is what costs: every transition ending inside one carries a cost
    inside_any = torch.zeros(data.num_transitions, dtype=torch.bool)
    for (cx, cy), r in ((c.center, c.radius) for c in coverage):
        inside_any |= torch.hypot(data.next_observations[:, 0] - cx, data.next_observations[:, 1] - cy) < r
    assert bool((data.costs[inside_any] == 1).all()) and bool((data.costs[~inside_any] == 0).all())
    costs, rewards = data.episode_costs.numpy(), data.episode_rewards.numpy()
    for point in reward_frontier(costs, rewards, task.cost_thresholds, task.reward_min, task.reward_max):
        assert point.best_safe is not None and point.gap <= 0.1, point


def test_minari_round_trip_keeps_costs(minari_root):
    """Costs written into infos come back from Minari (raw API) and from saferl.data.load."""
    from saferl.data.recipes import RECIPES, collect

    dataset_id = "saferl/PointRobot/roundtrip-v0"

    buffers, _ = collect(RECIPES["saferl/PointRobot/mixed-v0"], seed=7, episodes=30, progress=False)
    minari_io.write_dataset(dataset_id, buffers, "saferl/PointRobot-v0", {"recipe": "test"}, "round trip")
    raw = minari.load_dataset(dataset_id)
    total_cost = 0.0
    for buf, ep in zip(buffers, raw.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(ep.infos["cost"], buf.infos["cost"])
        assert len(ep.infos["cost"]) == len(ep.rewards) + 1 and ep.infos["cost"][0] == 0.0
        total_cost += ep.infos["cost"].sum()
    assert total_cost > 0
    data = load(dataset_id)
    expected = np.concatenate([b.infos["cost"][1:] for b in buffers])
    np.testing.assert_array_equal(data.costs.numpy(), expected.astype(np.float32))
    np.testing.assert_array_equal(data.episode_costs.numpy(), [b.infos["cost"][1:].sum() for b in buffers])


def test_build_refuses_ids_without_a_recipe_and_existing_datasets(point_dataset):
    with pytest.raises(DatasetNotFoundError, match="recipes"):
        build("saferl/PointRobot/no-such-recipe-v0")
    with pytest.raises(minari_io.DatasetError, match="overwrite"):
        build(point_dataset)


def test_recipe_is_deterministic():
    from saferl.data.recipes import RECIPES, collect

    recipe = RECIPES["saferl/BoatRobot/mixed-v0"]
    a, kinds_a = collect(recipe, seed=3, episodes=12, progress=False)
    b, kinds_b = collect(recipe, seed=3, episodes=12, progress=False)
    c, _ = collect(recipe, seed=4, episodes=12, progress=False)
    assert kinds_a == kinds_b
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
    assert any(
        len(x.rewards) != len(z.rewards) or not np.array_equal(x.actions, z.actions) for x, z in zip(a, c, strict=True)
    )


def test_transitions_line_up_with_episodes(point_dataset):
    data = load(point_dataset)
    starts = data.episode_starts
    assert starts[0] == 0 and starts[-1] == data.num_transitions
    # within an episode, next_obs[t] == obs[t+1]
    first, last = int(starts[0]), int(starts[1])
    torch.testing.assert_close(data.next_observations[first : last - 1], data.observations[first + 1 : last])
    # every episode ends in exactly one terminal or timeout
    done = (data.terminals + data.timeouts)[starts[1:] - 1]
    assert torch.all(done == 1)
    assert float((data.terminals + data.timeouts).sum()) == data.num_episodes


def test_fast_reader_and_cache_equal_minaris_iterator(point_dataset):
    path = minari_io.resolve(point_dataset)
    meta = minari_io.read_metadata(path)
    via_minari, has_costs = reader._flatten(path, reader._episodes_minari(path))
    via_hdf5, _ = reader.read_transitions(path, meta, use_cache=False)
    cached, _ = reader.read_transitions(path, meta, use_cache=True)  # writes then…
    cached2, _ = reader.read_transitions(path, meta, use_cache=True)  # …reads the cache
    assert has_costs
    for key in via_minari:
        np.testing.assert_array_equal(via_hdf5[key], via_minari[key])
        np.testing.assert_array_equal(cached[key], via_minari[key])
        np.testing.assert_array_equal(cached2[key], via_minari[key])
    assert list((path / reader.CACHE_DIR).glob("transitions-*.npz"))


def test_unreadable_cache_is_rebuilt(point_dataset):
    path = minari_io.resolve(point_dataset)
    load(point_dataset)
    for cache in (path / reader.CACHE_DIR).glob("transitions-*.npz"):
        cache.write_bytes(b"garbage")
    data = load(point_dataset)
    assert data.num_transitions > 0


def test_d4rl_shaped_dataset_loads_with_zero_costs(minari_root):
    dataset_id = "testns/pendulum/random-v0"
    path = _pendulum_dataset(dataset_id)
    for source in (dataset_id, path, path / "data"):
        data = load(source)
        assert data.obs_dim == 3 and data.act_dim == 1
        assert data.num_transitions == 150 and data.num_episodes == 3
        assert torch.all(data.costs == 0) and data.metadata["has_costs"] is False
        assert data.metadata["env_id"] == "Pendulum-v1"
        assert float(data.timeouts.sum()) == 3
    batch = data.sample(8)
    assert batch.observations.shape == (8, 3) and batch.costs.shape == (8,)


def test_unknown_dataset_is_a_clear_error_and_download_is_off_by_default(minari_root):
    with pytest.raises(DatasetNotFoundError, match="download=true"):
        load("mujoco/halfcheetah/medium-v0")


def test_corrupt_dataset_file_raises_checksum_error_naming_the_file(minari_root):
    from saferl.data.recipes import RECIPES, collect

    dataset_id = "saferl/PointRobot/corrupt-v0"
    buffers, _ = collect(RECIPES["saferl/PointRobot/mixed-v0"], seed=1, episodes=5, progress=False)
    path = minari_io.write_dataset(dataset_id, buffers, "saferl/PointRobot-v0", {"recipe": "test"}, "c")
    data_file = path / "data" / "main_data.hdf5"
    load(dataset_id)  # fine before the damage (and writes the cache)
    blob = bytearray(data_file.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data_file.write_bytes(bytes(blob))
    with pytest.raises(DatasetCorruptError, match="main_data.hdf5"):
        load(dataset_id)
    data_file.write_bytes(bytes(blob[: len(blob) // 3]))  # truncated
    with pytest.raises(DatasetCorruptError, match="checksum mismatch"):
        load(dataset_id)


def test_truncated_file_without_checksum_still_names_the_file(minari_root):
    dataset_id = "testns/pendulum/truncated-v0"
    path = _pendulum_dataset(dataset_id)
    data_file = path / "data" / "main_data.hdf5"
    data_file.write_bytes(data_file.read_bytes()[:2000])
    with pytest.raises(DatasetCorruptError, match="main_data.hdf5"):
        load(dataset_id, cache=False)


def test_metadata_records_recipe_seed_and_checksum(point_dataset):
    meta = json.loads((minari_io.dataset_dir(point_dataset) / "data" / "metadata.json").read_text())
    block = meta["saferl"]
    assert block["recipe"] == "point-robot/mixed" and block["seed"] == 0 and block["recipe_version"] == 2
    assert len(block["checksums"]["main_data.hdf5"]) == 64


def test_select_episodes_and_sampling(point_dataset):
    data = load(point_dataset)
    mask = data.episode_costs <= 10
    safe = data.select_episodes(mask)
    assert safe.num_episodes == int(mask.sum())
    assert float(safe.episode_costs.max()) <= 10
    assert safe.num_transitions == int(data.episode_lengths[mask].sum())
    g = torch.Generator().manual_seed(0)
    b1 = safe.sample(64, generator=g)
    g = torch.Generator().manual_seed(0)
    b2 = safe.sample(64, generator=g)
    torch.testing.assert_close(b1.observations, b2.observations)
    assert b1.observations.shape == (64, 2) and b1.actions.shape == (64, 2)
