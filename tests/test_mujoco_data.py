"""MuJoCo velocity tasks and the SAC behaviour-data recipes (stable-baselines3) at budget=tiny."""

from __future__ import annotations

import json

import gymnasium as gym
import minari
import numpy as np
import pytest

from saferl.data import DatasetNotFoundError, ensure, load, minari_io, sb3_jobs, sb3_recipe
from saferl.data.recipes import SB3_RECIPES, recipe_for
from saferl.envs import get_task
from tests.conftest import run_cli

# safety-gymnasium v1's velocity thresholds (safe_velocity tasks), written out here on purpose
SAFETY_GYMNASIUM_V1 = {
    "halfcheetah-velocity": (3.2096, False),
    "hopper-velocity": (0.7402, False),
    "walker2d-velocity": (2.3415, False),
    "swimmer-velocity": (0.2282, False),
    "ant-velocity": (2.6222, True),
    "humanoid-velocity": (1.4149, True),
}


def _position(unwrapped, name: str) -> np.ndarray:
    if name == "humanoid-velocity":  # gymnasium's Humanoid measures its centre of mass
        mass = unwrapped.model.body_mass[:, None]
        return (mass * unwrapped.data.xipos).sum(0)[:2] / mass.sum()
    return unwrapped.data.qpos[:2].copy()


@pytest.mark.parametrize("name", sorted(SAFETY_GYMNASIUM_V1))
def test_velocity_cost_matches_an_independent_computation(name):
    """cost = 1[v > threshold], with v recomputed from the body's positions before and after each step."""
    threshold, planar = SAFETY_GYMNASIUM_V1[name]
    env = gym.make(get_task(name).env_id)
    unwrapped = env.unwrapped
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    assert info["cost"] == 0.0
    costs, checked = [], 0
    for t in range(150):
        if t % 50 == 25:  # launch the body forwards (and sideways) so that the limit is crossed
            qvel = unwrapped.data.qvel.copy()
            qvel[0], qvel[1] = 4 * threshold + 1, (4 * threshold + 1 if planar else qvel[1])
            unwrapped.set_state(unwrapped.data.qpos.copy(), qvel)
        before = _position(unwrapped, name)
        space = env.action_space
        obs, _, terminated, truncated, info = env.step(rng.uniform(space.low, space.high).astype(space.dtype))
        delta = (_position(unwrapped, name) - before) / unwrapped.dt
        v = float(np.hypot(*delta)) if planar else float(delta[0])
        assert info["cost"] == float(info["velocity"] > threshold)
        if abs(v - threshold) > 1e-6:
            assert info["cost"] == float(v > threshold), (t, v)
            checked += 1
        costs.append(info["cost"])
        if terminated or truncated:
            obs, info = env.reset(seed=t)
    assert checked > 100 and 0 < sum(costs) < len(costs)  # both branches of the rule were exercised


@pytest.mark.parametrize("name", sorted(SAFETY_GYMNASIUM_V1))
def test_velocity_barrier_is_the_threshold_minus_the_root_velocity_in_the_observation(name):
    """h(s) = threshold − qvel[0] (planar: − ‖qvel[0:2]‖), read off the observation as V-OCBF's authors do; the
    cost measures displacement / dt instead, so the two signs agree on most steps, not all."""
    import torch

    threshold, planar = SAFETY_GYMNASIUM_V1[name]
    task = get_task(name)
    env = gym.make(task.env_id)
    unwrapped = env.unwrapped
    assert task.dt == pytest.approx(unwrapped.dt)
    rng = np.random.default_rng(1)
    obs, _ = env.reset(seed=1)
    observations, agree, unsafe = [], 0, 0
    for t in range(150):
        if t % 30 == 15:  # launch the body past the limit, as above
            qvel = unwrapped.data.qvel.copy()
            qvel[0], qvel[1] = 4 * threshold + 1, (4 * threshold + 1 if planar else qvel[1])
            unwrapped.set_state(unwrapped.data.qpos.copy(), qvel)
        space = env.action_space
        obs, _, terminated, truncated, info = env.step(rng.uniform(space.low, space.high).astype(space.dtype))
        qvel = unwrapped.data.qvel
        if name in ("hopper-velocity", "walker2d-velocity"):  # their v5 observation clips qvel to ±10
            qvel = np.clip(qvel, -10.0, 10.0)
        speed = float(np.hypot(qvel[0], qvel[1])) if planar else float(qvel[0])
        h = float(task.barrier(obs.astype(np.float64)))
        assert h == pytest.approx(threshold - speed, abs=1e-5)
        agree += (h < 0) == (info["cost"] == 1.0)
        unsafe += h < 0
        observations.append(obs)
        if terminated or truncated:
            obs, _ = env.reset(seed=t)
    assert 0 < unsafe < 150 and agree / 150 >= 0.9, (agree, unsafe)
    batch = np.stack(observations).astype(np.float64)
    x = torch.tensor(batch, requires_grad=True)
    h = task.barrier(x)
    np.testing.assert_allclose(h.detach().numpy(), task.barrier(batch))
    h.sum().backward()  # a learned CBF regresses on it; autograd must go through
    assert torch.isfinite(x.grad).all()


def _checksum(dataset_id: str) -> str:
    meta = minari_io.read_metadata(minari_io.dataset_dir(dataset_id))
    return meta[minari_io.CHECKSUM_KEY]["checksums"]["main_data.hdf5"]


@pytest.fixture(scope="module")
def hopper_tiny(minari_root, tmp_path_factory):
    """The hopper-velocity datasets at budget=tiny, built through the CLI as a user would."""
    cwd = tmp_path_factory.mktemp("collect")
    proc = run_cli(
        "saferl.collect", "env=hopper-velocity", "budget=tiny", "workers=1", "progress=false", cwd=cwd, check=True
    )
    return proc.stdout


def test_tiny_build_writes_mixed_and_d4rl_style_datasets(hopper_tiny):
    recipe = recipe_for("saferl/HopperVelocity/mixed-v0")
    budget = recipe.budget("tiny")
    assert "safe episodes" in hopper_tiny and "medium-replay-v0" in hopper_tiny
    mixed = load(recipe.dataset_id)
    meta = mixed.metadata
    assert meta["budget"] == "tiny" and meta["seed"] == 0 and meta["reference"] is False
    # recipe v2: λ = 0 and two speed-target runs, one on each side of the 0.7402 m/s limit
    assert meta["recipe_version"] == 2 and meta["lambdas"] == [0.0, 0.0, 0.0]
    assert meta["speed_targets"][0] is None and meta["speed_targets"][1] < 0.7402 < meta["speed_targets"][2]
    import stable_baselines3

    assert meta["stable_baselines3"] == stable_baselines3.__version__
    # the mix has no uniformly random episodes (they are random-v0), early checkpoints noise-free only
    noise_free = recipe.noise_free_checkpoints(budget)
    per_run = (noise_free + (budget.segments - noise_free) * len(budget.noise)) * budget.episodes_per_unit
    assert mixed.num_episodes == 3 * per_run and "random-uniform" not in meta["behaviour_counts"]
    assert meta["reward_min"] == pytest.approx(float(mixed.episode_rewards.min()))
    assert meta["reward_max"] == pytest.approx(float(mixed.episode_rewards.max()))
    assert (minari_io.dataset_dir(recipe.dataset_id) / "scatter.png").is_file()

    for kind in sb3_recipe.D4RL_KINDS:
        dataset_id = recipe.d4rl_id(kind)
        data = load(dataset_id)
        raw = minari.load_dataset(dataset_id)
        assert raw.spec.env_spec.id == "saferl/HopperVelocity-v1"
        # D4RL's score normalisation: the random and expert datasets' mean returns
        returns = {k: float(load(recipe.d4rl_id(k)).episode_rewards.mean()) for k in ("random", "expert")}
        assert raw.storage.metadata["ref_min_score"] == pytest.approx(returns["random"])
        assert raw.storage.metadata["ref_max_score"] == pytest.approx(returns["expert"])
        # the loader hands them on, so a run on D4RL-style data also records its D4RL score (eval.json)
        assert data.metadata["ref_min_score"] == pytest.approx(returns["random"])
        assert data.metadata["ref_max_score"] == pytest.approx(returns["expert"])
        assert data.num_episodes >= 1 and bool((data.episode_starts[1:] > data.episode_starts[:-1]).all())
    # medium-replay is the λ=0 SAC replay buffer up to the medium checkpoint: every env step of those segments
    replay = load(recipe.d4rl_id("medium-replay"))
    k = replay.metadata["medium_checkpoint"]
    assert replay.num_transitions == sum(sb3_recipe.segment_steps(budget)[: k + 1])
    within = np.ones(replay.num_transitions - 1, dtype=bool)
    within[replay.episode_starts[1:-1].numpy() - 1] = False  # last transition of each episode but the final one
    np.testing.assert_array_equal(
        replay.next_observations[:-1][within].numpy(), replay.observations[1:][within].numpy()
    )
    # SB3 stores actions squashed to [−1, 1]; the dataset has them back in the env's box
    space = gym.make("saferl/HopperVelocity-v1").action_space
    low, high = space.low, space.high
    assert (replay.actions.numpy() >= low - 1e-6).all() and (replay.actions.numpy() <= high + 1e-6).all()


def test_a_speed_target_run_earns_the_env_reward_up_to_its_target_and_less_above_it():
    """The Hopper v2 runs' reward: the forward term v becomes T − |v − T|, survival and control unchanged."""
    target = 0.3
    env = sb3_jobs.LagrangianReward(gym.make("saferl/HopperVelocity-v1"), 0.0, target)
    env.reset(seed=0)
    below = above = 0
    for t in range(300):
        _, shaped, terminated, truncated, info = env.step(np.full(3, 1.0 if t % 20 < 10 else -1.0, np.float32))
        v, r = info["velocity"], env.env_rewards[-1]
        expected = r - info["reward_forward"] + target - abs(v - target)
        assert shaped == pytest.approx(expected)
        if v <= target:
            below += 1
            assert shaped == pytest.approx(r)
        else:
            above += 1
            assert shaped < r
        if terminated or truncated:
            env.reset(seed=t)
    assert below > 10 and above > 10  # both sides of the target were exercised


def test_recipe_v2_rolls_the_early_checkpoints_out_noise_free_and_keeps_random_episodes_out_of_the_mix(
    minari_root,
):
    recipe = SB3_RECIPES["saferl/HalfCheetahVelocity/mixed-v0"]
    budget = recipe.budget("full")
    work = sb3_recipe.work_dir(recipe, budget, 0)
    units = sb3_recipe._mixed_units(recipe, budget, 0, work)
    assert all(u.policy is not None for u in units)  # no uniformly random unit
    noise_by_ckpt = {}
    for u in units:
        ckpt = int(u.policy.split("ckpt")[1].split(".")[0])
        noise_by_ckpt.setdefault(ckpt, set()).add(u.noise)
    assert recipe.noise_free_checkpoints(budget) == 2
    assert noise_by_ckpt[0] == noise_by_ckpt[1] == {0.0}
    assert all(noise_by_ckpt[k] == set(budget.noise) for k in range(2, budget.segments))
    assert len(units) == sum(sb3_recipe._behaviour_counts(recipe, budget).values()) // budget.episodes_per_unit


def test_training_runs_on_a_tiny_mujoco_dataset(hopper_tiny, tmp_path):
    """End to end through the CLI; scores use the task's reference constants, not the tiny dataset's."""
    run_dir = tmp_path / "run"
    run_cli("saferl.run", *_TINY_RUN, f"run_dir={run_dir}", cwd=tmp_path, check=True)
    result = json.loads((run_dir / "eval.json").read_text())
    task = get_task("hopper-velocity")
    assert result["thresholds"] == [20.0, 40.0, 80.0]
    assert result["normalized_reward"] == pytest.approx(task.normalized_reward(result["reward_mean"]))


def _scripted_swimmer_dataset(episodes: int) -> tuple[str, np.ndarray, np.ndarray]:
    """A Minari dataset of one deterministic state-feedback behaviour, a = tanh(K·obs), on SwimmerVelocity
    (its viscous dynamics keep the behaviour's returns steady across start states)."""
    from minari.data_collector import EpisodeBuffer

    task = get_task("swimmer-velocity")
    gain = np.random.default_rng(0).normal(0.0, 1.0, (2, 8))
    env = gym.make(task.env_id)
    buffers, returns = [], []
    for i in range(episodes):
        obs, info = env.reset(seed=i)
        o, a, r, te, tr, c = [obs], [], [], [], [], [info["cost"]]
        while True:
            act = np.tanh(gain @ obs).astype(np.float32)
            obs, rew, terminated, truncated, info = env.step(act)
            o.append(obs), a.append(act), r.append(float(rew)), te.append(terminated), tr.append(truncated)
            c.append(info["cost"])
            if terminated or truncated:
                break
        returns.append(sum(r))
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=np.asarray(o, dtype=np.float32),
                actions=np.asarray(a),
                rewards=r,
                terminations=te,
                truncations=tr,
                infos={"cost": np.asarray(c)},
            )
        )
    env.close()
    dataset_id = "testns/swimmer-scripted/linear-v0"
    minari_io.write_dataset(dataset_id, buffers, task.env_id, {"recipe": "test"}, "scripted swimmer")
    return dataset_id, np.asarray(returns), gain


def test_bc_reproduces_a_mujoco_behaviour_policy_through_the_whole_pipeline(minari_root, tmp_path):
    """Minari file → loader → BC → evaluation on the MuJoCo env: BC of a single behaviour reaches the data's
    median return and acts like it. (BC-All on the HalfCheetah reference mix stays far below the mix's mean
    return: that is the mix of 24 SAC policies with action noise, not the pipeline; benchmarks/datasets.md.)"""
    dataset_id, returns, gain = _scripted_swimmer_dataset(episodes=10)
    run_dir = tmp_path / "run"
    run_cli(
        "saferl.run",
        "algo=bc_all",
        "env=swimmer-velocity",
        f"dataset={dataset_id}",
        "steps=2000",
        "algo.hidden=[64,64]",
        "algo.batch_size=256",
        "eval_episodes=10",
        "progress=false",
        "tensorboard=false",
        f"run_dir={run_dir}",
        cwd=tmp_path,
        check=True,
    )
    result = json.loads((run_dir / "eval.json").read_text())
    from saferl.evaluation import rollout
    from saferl.runs import load_run

    # The behaviour itself on the evaluation's start states (its returns vary by ~15 % with the start state, so
    # the comparison is paired); the data's own returns bracket them. BC's action error below is the tight check:
    # measured 0.009 RMSE, and a return within 7 % of the behaviour's (a small action error still moves a
    # swimmer's return by a few %).
    behaviour = rollout("saferl/SwimmerVelocity-v1", lambda obs: np.tanh(obs @ gain.T).astype(np.float32), 10, seed=0)
    median = float(np.median(behaviour.rewards))
    assert returns.min() - 10 < median < returns.max() + 10
    assert result["reward_mean"] >= median - 0.1 * abs(median), (result["reward_mean"], behaviour.rewards)
    # and it acts like the behaviour on the states its own evaluation visits
    algo, task, _, _ = load_run(run_dir)
    seen = []

    def act(obs):
        seen.append(obs)
        return algo.act(obs)

    rollout(task.env_id, act, 2, seed=0)
    states = np.concatenate(seen)
    rmse = float(np.sqrt(np.mean((algo.act(states) - np.tanh(states @ gain.T)) ** 2)))
    assert rmse < 0.05, rmse
    assert rmse < 0.1, rmse


_TINY_RUN = (
    "algo=bc_all",
    "env=hopper-velocity",
    "steps=50",
    "algo.hidden=[32,32]",
    "eval_episodes=2",
    "progress=false",
    "tensorboard=false",
)


def test_a_task_without_reference_constants_normalises_with_its_datasets(hopper_tiny, tmp_path, monkeypatch, caplog):
    import logging
    from dataclasses import replace

    from saferl.envs import TASKS
    from saferl.runs import run_experiment
    from tests.conftest import compose_run

    monkeypatch.setitem(TASKS, "hopper-velocity", replace(TASKS["hopper-velocity"], reward_min=None, reward_max=None))
    cfg = compose_run(*_TINY_RUN, f"run_dir={tmp_path / 'run'}")
    with caplog.at_level(logging.WARNING):
        result = run_experiment(cfg)
    assert "no reference reward constants" in caplog.text
    meta = load("saferl/HopperVelocity/mixed-v0").metadata
    expected = (result["reward_mean"] - meta["reward_min"]) / (meta["reward_max"] - meta["reward_min"])
    assert result["normalized_reward"] == pytest.approx(expected)


def test_missing_mujoco_dataset_names_the_command_that_builds_it(minari_root):
    with pytest.raises(DatasetNotFoundError, match="python -m saferl.collect env=walker2d-velocity budget=full"):
        ensure("saferl/Walker2dVelocity/mixed-v0")


@pytest.mark.parametrize(
    "dataset_id",
    [i for i in sorted(SB3_RECIPES) if i not in ("saferl/HopperVelocity/mixed-v0", "saferl/CarRun/mixed-v0")],
)
def test_every_recipe_builds_at_tiny(dataset_id, tmp_path):
    recipe = SB3_RECIPES[dataset_id]
    with minari_io._minari_root(tmp_path):
        paths = sb3_recipe.build_sb3(recipe, budget="tiny", progress=False, workers=1)
        assert set(paths) == set(recipe.dataset_ids())
        data = load(dataset_id)
        env = gym.make(get_task(recipe.task).env_id)
        assert data.obs_dim == env.observation_space.shape[0] and data.act_dim == env.action_space.shape[0]
        assert bool(data.costs.isfinite().all()) and float(data.costs.min()) >= 0.0


def _fail_on(monkeypatch, name: str, should_fail):
    real = getattr(sb3_recipe, name)

    def wrapped(job):
        if should_fail(job):
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C here
        return real(job)

    monkeypatch.setattr(sb3_recipe, name, wrapped)


def test_same_seed_same_checksum_and_an_interrupted_build_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    recipe = SB3_RECIPES["saferl/CarRun/mixed-v0"]
    with minari_io._minari_root(tmp_path / "a"):
        sb3_recipe.build_sb3(recipe, budget="tiny", progress=False, workers=1)
        reference = _checksum(recipe.dataset_id)
        sb3_recipe.build_sb3(recipe, seed=1, budget="tiny", progress=False, workers=1, overwrite=True)
        assert _checksum(recipe.dataset_id) != reference
    with minari_io._minari_root(tmp_path / "b"):
        # killed in the middle of the last SAC run, then again in the middle of the rollouts
        with monkeypatch.context() as m:
            _fail_on(m, "train_segment", lambda job: job.lam == recipe.lambdas[-1] and job.segment == 1)
            with pytest.raises(KeyboardInterrupt):
                sb3_recipe.build_sb3(recipe, budget="tiny", progress=False, workers=1)
        work = sb3_recipe.work_dir(recipe, recipe.budget("tiny"), 0)
        assert (work / "lambda2" / "ckpt0.zip").is_file() and not (work / "lambda2" / "ckpt1.zip").exists()
        assert not minari_io.dataset_dir(recipe.dataset_id).exists()
        calls = []
        with monkeypatch.context() as m:
            _fail_on(m, "rollout_unit", lambda job: calls.append(job) or len(calls) > 4)
            with pytest.raises(KeyboardInterrupt):
                sb3_recipe.build_sb3(recipe, budget="tiny", progress=False, workers=1)
        assert len(list(sb3_recipe.rollout_dir(recipe, work).glob("*.npz"))) == 4
        sb3_recipe.build_sb3(recipe, budget="tiny", progress=False, workers=1)
        assert _checksum(recipe.dataset_id) == reference


def test_reference_constants_are_the_published_reference_builds():
    """R_min/R_max fixed in the task table are the mixed-dataset return ranges in benchmarks/datasets.md."""
    from pathlib import Path

    from saferl.envs import TASKS

    report = (Path(__file__).parents[1] / "benchmarks" / "datasets.md").read_text()
    fixed = [t for t in TASKS.values() if t.dataset_id in SB3_RECIPES and t.reward_min is not None]
    assert fixed, "at least one MuJoCo task has reference constants"
    for task in fixed:
        row = next(line for line in report.splitlines() if line.startswith(f"| `{task.dataset_id}` |"))
        assert f"({task.reward_min:.1f} … {task.reward_max:.1f})" in row
