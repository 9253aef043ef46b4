"""DSRL / D4RL HDF5 import: episodes, costs, round trip through saferl.data.load, bad inputs, collect's CLI."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from conftest import run_cli

from saferl.collect import CollectError, collect
from saferl.data import DSRL_TASKS, HDF5ImportError, from_hdf5, load, minari_io
from saferl.envs import UnknownTaskError, get_task
from saferl.runs.resolve import check_compatible

KEYS = ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")


def _rollouts(env_id: str, lengths: list[int], policy, seed: int = 0) -> dict[str, np.ndarray]:
    """DSRL's flat layout from real rollouts: episode i runs lengths[i] steps and ends with a timeout."""
    env = gym.make(env_id, disable_env_checker=True)
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in KEYS}
    for i, length in enumerate(lengths):
        obs, _ = env.reset(seed=seed + i)
        for t in range(length):
            act = policy(obs, rng).astype(np.float32)
            nxt, rew, term, _, info = env.step(act)
            last = term or t == length - 1
            for key, value in zip(KEYS, (obs, act, rew, info["cost"], nxt, term, last and not term), strict=True):
                rows[key].append(value)
            obs = nxt
            if last:
                break
    env.close()
    return {k: np.asarray(v, dtype=np.float32) for k, v in rows.items()}


def _toward_hazard(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drive the point robot into its first hazard (costs > 0), with noise."""
    cx, cy, _ = get_task("point-robot").barrier.keywords["geometry"].hazards[0]
    direction = np.array([cx, cy]) - obs[:2]
    return np.clip(direction / (np.linalg.norm(direction) + 1e-6) + rng.normal(0, 0.3, 2), -1, 1)


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as fh:
        for key, value in arrays.items():
            fh.create_dataset(key, data=value)
    return path


@pytest.fixture(scope="module")
def point_arrays() -> dict[str, np.ndarray]:
    """Four episodes (one ended by a terminal flag) plus a tail cut off without terminal or timeout."""
    arrays = _rollouts("saferl/PointRobot-v0", [80, 60, 90, 50, 7], _toward_hazard)
    # episode 2 (steps 140..229) ends with terminals instead of timeouts: both kinds of boundary occur
    arrays["terminals"][229], arrays["timeouts"][229] = 1.0, 0.0
    arrays["timeouts"][-1] = 0.0  # the tail: neither flag on its last step
    return arrays


def test_python_import_round_trips_every_array(tmp_path, point_arrays):
    source = _write(tmp_path / "point.hdf5", point_arrays)
    path = from_hdf5(source, env="point-robot", dataset_id="saferl/PointRobot/dsrl-v0")
    data = load("saferl/PointRobot/dsrl-v0")
    assert path == minari_io.dataset_dir("saferl/PointRobot/dsrl-v0")
    assert data.episode_lengths.tolist() == [80, 60, 90, 50, 7]
    expected = dict(point_arrays, timeouts=point_arrays["timeouts"].copy())
    expected["timeouts"][-1] = 1.0  # the cut-off tail is recorded as truncated
    for key in KEYS:
        assert np.allclose(getattr(data, key).numpy(), expected[key]), key
    # the tail is kept and marked truncated; the terminal episode ends terminated, not truncated
    assert data.timeouts[-1] == 1 and data.terminals[-1] == 0
    assert data.terminals[229] == 1 and data.timeouts[229] == 0
    assert data.costs.sum() > 0  # the rollouts entered a hazard: costs really travel through infos
    expected = [point_arrays["costs"][a:b].sum() for a, b in [(0, 80), (80, 140), (140, 230), (230, 280), (280, 287)]]
    assert np.allclose(data.episode_costs.numpy(), expected)
    meta = data.metadata
    assert meta["env_id"] == "saferl/PointRobot-v0" and meta["has_costs"] and meta["recipe"] == "hdf5-import"
    assert meta["tail_truncated"] is True and meta["next_observations_checked"] is True
    # the recorded env spec drives saferl's "recorded on another task" check
    env = gym.make("saferl/PointRobot-v0")
    check_compatible(data, env, "saferl/PointRobot/dsrl-v0", get_task("point-robot"))
    boat = gym.make("saferl/BoatRobot-v0")
    with pytest.raises(minari_io.DatasetError, match="recorded on saferl/PointRobot-v0"):
        check_compatible(data, boat, "saferl/PointRobot/dsrl-v0", get_task("boat-robot"))


def test_existing_dataset_needs_overwrite(tmp_path, point_arrays):
    source = _write(tmp_path / "point.hdf5", point_arrays)
    from_hdf5(source, env="point-robot")
    with pytest.raises(minari_io.DatasetError, match="already exists.*overwrite"):
        from_hdf5(source, env="point-robot")
    from_hdf5(source, env="point-robot", overwrite=True)
    assert load("saferl/PointRobot/imported-v0").num_transitions == len(point_arrays["rewards"])


def test_file_without_next_observations_drops_each_episodes_last_step(tmp_path, point_arrays):
    arrays = {k: v for k, v in point_arrays.items() if k != "next_observations"}
    from_hdf5(_write(tmp_path / "d4rl.hdf5", arrays), env="point-robot", dataset_id="saferl/PointRobot/nonext-v0")
    data = load("saferl/PointRobot/nonext-v0")
    assert data.episode_lengths.tolist() == [79, 59, 89, 49, 6]
    first = data.episode_starts[1].item()
    assert np.allclose(data.next_observations[:first].numpy(), point_arrays["observations"][1:80])
    assert data.timeouts[first - 1] == 1 and data.metadata["dropped_last_steps"] == 5


def test_costs_are_required_unless_zero_costs(tmp_path, point_arrays):
    source = _write(tmp_path / "d4rl.hdf5", {k: v for k, v in point_arrays.items() if k != "costs"})
    with pytest.raises(HDF5ImportError, match="lacks the top-level array.*costs.*zero_costs=true"):
        from_hdf5(source, env="point-robot", dataset_id="saferl/PointRobot/nocost-v0")
    from_hdf5(source, env="point-robot", dataset_id="saferl/PointRobot/nocost-v0", zero_costs=True)
    data = load("saferl/PointRobot/nocost-v0")
    assert data.costs.abs().sum() == 0 and data.metadata["zero_costs"] is True


def _bad(arrays: dict[str, np.ndarray], case: str) -> dict[str, np.ndarray]:
    arrays = dict(arrays)
    if case == "observation shape":
        arrays["observations"] = np.zeros((len(arrays["rewards"]), 3), np.float32)
    elif case == "action shape":
        arrays["actions"] = np.zeros((len(arrays["rewards"]), 5), np.float32)
    elif case == "next_observations":
        arrays["next_observations"] = arrays["next_observations"].copy()
        arrays["next_observations"][12] += 0.5
    elif case == "missing key":
        del arrays["timeouts"]
    elif case == "row counts":
        arrays["rewards"] = arrays["rewards"][:-1]
    elif case == "negative cost":
        arrays["costs"] = arrays["costs"] - 1.0
    return arrays


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("observation shape", r"observations rows have shape \(3,\) but task point-robot .* shape \(2,\)"),
        ("action shape", r"actions rows have shape \(5,\) but task point-robot .* shape \(2,\)"),
        ("next_observations", r"next_observations\[12\] differs from observations\[13\].*check_next_observations"),
        ("missing key", r"lacks the top-level array\(s\) timeouts \(it has: actions, costs"),
        ("row counts", r"rewards has 286 rows but observations has 287"),
        ("negative cost", r"costs must be >= 0.*costs\[0\]"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, point_arrays, case, message):
    source = _write(tmp_path / "bad.hdf5", _bad(point_arrays, case))
    with pytest.raises(HDF5ImportError, match=message):
        from_hdf5(source, env="point-robot", dataset_id="saferl/PointRobot/bad-v0")
    assert not minari_io.dataset_dir("saferl/PointRobot/bad-v0").exists()


def test_mismatch_check_can_be_skipped(tmp_path, point_arrays):
    source = _write(tmp_path / "bad.hdf5", _bad(point_arrays, "next_observations"))
    from_hdf5(source, env="point-robot", dataset_id="saferl/PointRobot/skip-v0", check_next_observations=False)
    data = load("saferl/PointRobot/skip-v0")
    # Minari keeps one observation sequence per episode: inside an episode the next observation is the
    # following step's observation, whatever the file's next_observations said
    assert np.allclose(data.next_observations[12].numpy(), point_arrays["observations"][13])
    assert data.metadata["next_observations_checked"] is False


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(HDF5ImportError, match="no such file: .*nope.hdf5"):
        from_hdf5(tmp_path / "nope.hdf5", env="point-robot")
    text = tmp_path / "notes.hdf5"
    text.write_text("observations,actions\n1,2\n")
    with pytest.raises(HDF5ImportError, match="notes.hdf5 is not an HDF5 file"):
        from_hdf5(text, env="point-robot")
    with pytest.raises(HDF5ImportError, match="invalid dataset id 'no version'"):
        from_hdf5(text, env="point-robot", dataset_id="no version")
    with pytest.raises(UnknownTaskError, match="unknown task 'OfflineCarRun-v0'.*DSRL"):
        from_hdf5(text, env="OfflineCarRun-v0")


def test_cli_import_with_a_dsrl_task_id(tmp_path):
    """A HalfCheetah file imported by DSRL's task id through `python -m saferl.collect import=...`."""
    arrays = _rollouts("saferl/HalfCheetahVelocity-v1", [15, 10], lambda o, rng: rng.uniform(-1, 1, 6))
    source = _write(tmp_path / "OfflineHalfCheetahVelocityGymnasium-v1.hdf5", arrays)
    proc = run_cli(
        "saferl.collect",
        f"import={source}",
        "env=OfflineHalfCheetahVelocityGymnasium-v1",
        "dataset_id=saferl/HalfCheetahVelocity/dsrl-v0",
        "progress=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "dataset=saferl/HalfCheetahVelocity/dsrl-v0" in proc.stdout.replace("\n", "")
    data = load("saferl/HalfCheetahVelocity/dsrl-v0")
    assert data.episode_lengths.tolist() == [15, 10]
    assert data.metadata["env_id"] == "saferl/HalfCheetahVelocity-v1"
    for key in KEYS:
        assert np.allclose(getattr(data, key).numpy(), arrays[key]), key
    assert DSRL_TASKS["OfflineHalfCheetahVelocityGymnasium-v1"] == "halfcheetah-velocity"


def test_cli_import_trains_with_saferl_run(tmp_path, point_arrays):
    source = _write(tmp_path / "point.hdf5", point_arrays)
    proc = run_cli(
        "saferl.collect", f"import={source}", "env=point-robot", "dataset_id=saferl/PointRobot/cli-v0", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run_dir = tmp_path / "run"
    args = ["algo=bc_all", "env=point-robot", "dataset=saferl/PointRobot/cli-v0", "steps=20", "eval_every=20"]
    tiny = ["algo.batch_size=16", "algo.hidden=[8,8]", "eval_episodes=1", "progress=false", "tensorboard=false"]
    proc = run_cli("saferl.run", *args, *tiny, "log_every=10", f"run_dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert json.loads((run_dir / "eval.json").read_text())["dataset"] == "saferl/PointRobot/cli-v0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env=nosuch"], "Could not find 'env/nosuch'"),
        (["env=point-robot", "zero_costs=true"], "error: zero_costs only apply to import=<file.hdf5>"),
        (["import=missing.hdf5", "env=point-robot"], "error: no such file: .*missing.hdf5"),
    ],
)
def test_collect_cli_bad_arguments(tmp_path, args, message):
    proc = run_cli("saferl.collect", *args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert re.search(message, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"episodes": -3}, "episodes must be >= 1, got -3"),
        ({"budget": "huge"}, "unknown budget 'huge'; valid budgets: tiny, small, full"),
        ({"episodes": "ten"}, "episodes must be an integer >= 1 \\(or null\\), got 'ten'"),
        ({"workers": 0}, "workers must be >= 1, got 0"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"overwrite": "yes"}, "overwrite must be true or false, got 'yes'"),
        ({"dataset": "saferl/BoatRobot/mixed-v0"}, "built by task boat-robot's recipe, not point-robot's"),
        ({"dataset": "saferl/PointRobot/other-v0"}, "no saferl recipe builds .*builds: saferl/PointRobot/mixed-v0"),
        ({"env": "halfcheetah-velocity", "episodes": 5}, "MuJoCo recipes use budget="),
    ],
)
def test_collect_rejects_bad_arguments_before_any_work(kwargs, message):
    kwargs = {"env": "point-robot", "progress": False} | kwargs
    with pytest.raises(CollectError, match=message):
        collect(**kwargs)


def test_collect_under_a_file_is_a_clear_error(tmp_path, monkeypatch, point_arrays):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(blocker / "minari"))
    message = "cannot create the datasets root .*a-file/minari: Not a directory. Set MINARI_DATASETS_PATH"
    with pytest.raises(CollectError, match=message):
        collect("point-robot", budget="tiny", progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_collect_into_an_unwritable_root_is_a_clear_error(tmp_path, monkeypatch, point_arrays):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(locked / "minari"))
    try:
        message = "cannot create the datasets root .*locked/minari: Permission denied. Set MINARI_DATASETS_PATH"
        with pytest.raises(CollectError, match=message):
            collect("point-robot", budget="tiny", progress=False)
        from saferl.collect import import_file

        with pytest.raises(CollectError, match="Permission denied"):
            import_file(_write(tmp_path / "p.hdf5", point_arrays), "point-robot")
    finally:
        locked.chmod(stat.S_IRWXU)
