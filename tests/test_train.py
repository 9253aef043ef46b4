"""The training loop and the CLI: run directory contract, learning, resume after a kill, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_run, kill_after_first_checkpoint, run_cli

from saferl.envs import get_task
from saferl.runs import RunDirError, SaferlError, TrainingDivergedError, load_run, run_experiment

TINY = ["algo.batch_size=64", "algo.hidden=[32,32]", "eval_episodes=5", "progress=false", "tensorboard=false"]
EVAL_KEYS = {
    "algo",
    "env",
    "dataset",
    "seed",
    "steps",
    "episodes",
    "reward_mean",
    "reward_std",
    "cost_mean",
    "cost_std",
    "thresholds",
    "normalized_reward",
    "normalized_cost",
    "safe",
    "wall_time_s",
    "updates_per_s",
}


config = compose_run


def test_cli_run_writes_the_run_directory(tmp_path, point_dataset):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "saferl.run",
        "eval_every=100",
        "algo=bc_safe",
        "env=point-robot",
        "steps=300",
        "log_every=100",
        "checkpoint_every=200",
        f"run_dir={run_dir}",
        *TINY[:-1],
        "tensorboard=true",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "normalized cost" in proc.stdout and "κ = 10" in proc.stdout
    result = json.loads((run_dir / "eval.json").read_text())
    assert EVAL_KEYS <= set(result)
    assert result["algo"] == "bc_safe" and result["env"] == "point-robot" and result["steps"] == 300
    assert result["dataset"] == point_dataset and result["episodes"] == 5
    assert result["thresholds"] == [5.0, 10.0, 20.0] and set(result["safe"]) == {"5", "10", "20"}
    assert result["updates_per_s"] > 0 and result["wall_time_s"] > 0
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,actor_loss") and [ln.split(",")[0] for ln in lines[1:]] == [
        "100",
        "200",
        "300",
    ]
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "config.yaml").is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert not list(tmp_path.glob("outputs")) and not list(run_dir.glob("*.tmp*"))


def test_default_run_dir_is_fresh_per_run_and_resume_without_unfinished_run_fails(tmp_path, point_dataset):
    common = ["algo=bc_all", "steps=20", f"runs_root={tmp_path}", *TINY]
    first = run_experiment(config(*common))
    run_experiment(config(*common))
    dirs = sorted((tmp_path / "point-robot" / "bc_all").iterdir())
    assert len(dirs) == 2 and all((d / "eval.json").is_file() for d in dirs)
    assert first["steps"] == 20
    with pytest.raises(RunDirError, match="no unfinished"):
        run_experiment(config(*common, "resume=true"))


def test_explicit_run_dir_is_never_overwritten(tmp_path, point_dataset):
    run_dir = tmp_path / "r"
    common = ["algo=bc_all", "steps=20", f"run_dir={run_dir}", *TINY]
    first = run_experiment(config(*common))
    with pytest.raises(RunDirError, match="resume=true"):
        run_experiment(config(*common))
    again = run_experiment(config(*common, "resume=true"))  # finished: returns the stored result
    assert again == json.loads(json.dumps(first))


def test_load_run_rebuilds_the_trained_policy(tmp_path, point_dataset):
    import numpy as np

    from saferl.evaluation import rollout

    run_dir = tmp_path / "r"
    result = run_experiment(config("algo=bc_all", "steps=200", f"run_dir={run_dir}", *TINY))
    algo, task, cfg, step = load_run(run_dir)
    assert (type(algo).__name__, task.name, cfg["cost_limit"], step) == ("BCAll", "point-robot", 10.0, 200)
    stats = rollout(task.env_id, algo.act, 5, seed=0)  # run_experiment's final evaluation, repeated
    assert np.isclose(stats.costs.mean(), result["cost_mean"])
    assert np.isclose(stats.rewards.mean(), result["reward_mean"])
    with pytest.raises(SaferlError, match="config.yaml"):
        load_run(tmp_path)


def test_bc_safe_is_safe_and_bc_all_is_not_on_point_robot(tmp_path, point_dataset):
    """The learning test of the foundation: the dataset holds unsafe high-reward behaviour that BC-All
    copies, and BC-Safe's episode filter removes it."""
    common = [
        "steps=2000",
        "algo.batch_size=256",
        "eval_episodes=30",
        "progress=false",
        "tensorboard=false",
        f"runs_root={tmp_path}",
    ]
    bc_all = run_experiment(config("algo=bc_all", *common))
    bc_safe = run_experiment(config("algo=bc_safe", *common))
    assert bc_all["safe"]["10"] is False and bc_all["normalized_cost"]["10"] > 1.5
    assert bc_safe["safe"]["10"] is True
    assert bc_safe["normalized_reward"] > 0.2  # it still drives towards the goal


def _resume_args(run_dir: Path) -> list[str]:
    return ["algo=bc_all", "steps=6000", "log_every=250", "checkpoint_every=250", f"run_dir={run_dir}", *TINY]


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, point_dataset):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    killed_at = kill_after_first_checkpoint(_resume_args(killed_dir), killed_dir, tmp_path, settle=0.3)
    assert 0 < killed_at < 6000

    resumed = run_cli("saferl.run", *_resume_args(killed_dir), "resume=true", cwd=tmp_path, check=True)
    assert f"resuming from step {killed_at}" in resumed.stdout + resumed.stderr
    run_cli("saferl.run", *_resume_args(clean_dir), cwd=tmp_path, check=True)

    a = torch.load(killed_dir / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(clean_dir / "checkpoints" / "last.pt", weights_only=False)
    for key, value in b["algo"]["modules"].items():
        torch.testing.assert_close(a["algo"]["modules"][key], value, rtol=0, atol=0)
    ra, rb = (json.loads((d / "eval.json").read_text()) for d in (killed_dir, clean_dir))
    assert ra["reward_mean"] == rb["reward_mean"] and ra["cost_mean"] == rb["cost_mean"]
    steps = [int(ln.split(",")[0]) for ln in (killed_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == list(range(250, 6001, 250))  # no duplicated or missing rows around the kill


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, point_dataset, monkeypatch):
    from saferl.algos.bc import BCAll

    original = BCAll.update
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        metrics = original(self, batch)
        if calls["n"] > 130:
            with torch.no_grad():
                next(self.actor.parameters()).fill_(float("nan"))
            metrics["actor_loss"] = metrics["actor_loss"] * float("nan")
        return metrics

    monkeypatch.setattr(BCAll, "update", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(TrainingDivergedError, match=r"actor_loss.*step 150.*step 100"):
        run_experiment(
            config(
                "algo=bc_all",
                "steps=400",
                "log_every=50",
                "checkpoint_every=100",
                f"run_dir={run_dir}",
                *TINY,
            )
        )
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 100
    assert all(torch.isfinite(v).all() for v in state["algo"]["modules"].values() if v.is_floating_point())
    assert not (run_dir / "eval.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["algo=nope"], "bc_safe"),  # Hydra lists the algorithms
        (["env=nope"], "point-robot"),  # … and the envs
        (["dataset=saferl/PointRobot/nope-v0"], "Local datasets"),
        (["device=cuda"], "no CUDA device"),
        (["algo.learning_rate=0.1"], "Could not override"),
        (["algo=bc_safe", "cost_limit=-1"], "cost_limit=-1 is not allowed"),
    ],
)
def test_bad_input_exits_non_zero_with_a_clear_message(tmp_path, point_dataset, args, message):
    if args == ["device=cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_cli("saferl.run", *args, "steps=5", f"runs_root={tmp_path}", *TINY, cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("config.yaml")), "bad input must not leave a run directory behind"


def test_dataset_that_does_not_match_the_env_names_both_shapes(tmp_path, minari_root):
    from test_datasets import _pendulum_dataset

    path = _pendulum_dataset("testns/pendulum/mismatch-v0")
    proc = run_cli(
        "saferl.run",
        "env=point-robot",
        f"dataset={path}",
        "steps=5",
        f"runs_root={tmp_path}",
        *TINY,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "(3,)" in out and "(1,)" in out and "(2,)" in out and "does not match env saferl/PointRobot-v0" in out


def test_dataset_of_another_task_with_the_same_shapes_is_refused_unless_allowed(tmp_path, point_dataset):
    """PointRobot data has BoatRobot's shapes (2-d observations and actions) but another goal, hazards and
    dynamics: training on it must be a deliberate choice."""
    args = ("env=boat-robot", f"dataset={point_dataset}", "steps=5", f"runs_root={tmp_path}", *TINY)
    proc = run_cli("saferl.run", *args, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out
    assert "recorded on saferl/PointRobot-v0, not on saferl/BoatRobot-v0" in out and "allow_env_mismatch=true" in out
    assert not list(tmp_path.rglob("config.yaml"))
    proc = run_cli("saferl.run", *args, "allow_env_mismatch=true", cwd=tmp_path, check=True)
    result = json.loads(next(tmp_path.rglob("eval.json")).read_text())
    assert result["env"] == "boat-robot" and result["dataset"] == point_dataset


def test_velocity_task_accepts_data_recorded_on_its_gymnasium_env():
    task = get_task("halfcheetah-velocity")
    assert task.records_on("saferl/HalfCheetahVelocity-v1") and task.records_on("HalfCheetah-v5")
    assert task.records_on(None)  # a dataset that names no env cannot be checked
    assert not task.records_on("Hopper-v5") and not get_task("boat-robot").records_on("saferl/PointRobot-v0")


def test_corrupt_dataset_stops_before_training(tmp_path, minari_root):
    from saferl.data import minari_io
    from saferl.data.recipes import RECIPES, collect

    buffers, _ = collect(RECIPES["saferl/BoatRobot/mixed-v0"], seed=2, episodes=4, progress=False)
    path = minari_io.write_dataset("saferl/BoatRobot/broken-v0", buffers, "saferl/BoatRobot-v0", {"recipe": "t"}, "b")
    data_file = path / "data" / "main_data.hdf5"
    data_file.write_bytes(data_file.read_bytes()[:-100])
    proc = run_cli(
        "saferl.run",
        "env=boat-robot",
        "dataset=saferl/BoatRobot/broken-v0",
        "steps=5",
        f"runs_root={tmp_path}",
        *TINY,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "checksum mismatch" in proc.stdout + proc.stderr and "main_data.hdf5" in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("last.pt"))


def test_collect_cli_prints_summary_and_saves_scatter_plot(tmp_path, minari_root):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "minari")}
    proc = subprocess.run(
        [sys.executable, "-m", "saferl.collect", "env=boat-robot", "episodes=40", "seed=5", "progress=false"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "episodes" in out and "40" in out and "cost return" in out and "reward return" in out
    png = tmp_path / "minari" / "saferl" / "BoatRobot" / "mixed-v0" / "scatter.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run(
        [sys.executable, "-m", "saferl.collect", "env=boat-robot", "episodes=40"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 1 and "overwrite=true" in again.stdout + again.stderr


def test_cost_limit_zero_is_a_limit_in_the_run_and_in_the_suite(tmp_path, point_dataset):
    """κ = 0 is a valid limit, never "unset": the run records it and scores against it (ε = 1), and the
    benchmark suite passes it on instead of the task's default."""
    import yaml

    from saferl.bench import expand, parse_suite
    from saferl.bench.__main__ import compose_bench

    run_dir = tmp_path / "zero"
    result = run_experiment(config("algo=bc_all", "steps=50", "cost_limit=0", f"run_dir={run_dir}", *TINY))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["cost_limit"] == 0
    written = json.loads((run_dir / "eval.json").read_text())
    assert written["cost_limit"] == result["cost_limit"] == 0
    assert 0.0 in written["thresholds"] and written["normalized_cost"]["0"] == result["cost_mean"] + 1.0
    assert load_run(run_dir)[0].ctx.cost_limit == 0

    smoke = parse_suite(compose_bench(["suite=smoke", "suite.cost_limits=[0]"]).suite)
    specs = expand(smoke, tmp_path / "suite", ("cost_limit=0",), need_data=False)
    assert specs and all(s.cost_limit == 0 and "cost_limit=0" in s.overrides for s in specs)
    assert {s.per_threshold for s in specs} == {True, False}  # bc_all (one run per seed) keeps κ = 0 too


def test_a_threshold_conditioned_algorithm_is_evaluated_for_each_threshold(tmp_path, point_dataset):
    """CDT is trained once and told κ when it acts: eval.json's ``by_threshold`` holds, per κ, rollouts of the
    policy conditioned on κ (equal to a fresh rollout of the reloaded model for that κ), metrics.csv logs them at
    each periodic evaluation, and algorithms that do not take κ write neither."""
    import csv

    import numpy as np

    from saferl.evaluation import rollout

    run_dir = tmp_path / "cdt"
    opts = ["eval_every=20", "eval_episodes=3", "progress=false", "tensorboard=false", "threads=1"]
    result = run_experiment(config("algo=cdt", "steps=40", f"run_dir={run_dir}", *opts))
    assert sorted(result["by_threshold"], key=float) == ["5", "10", "20"]  # PointRobot's κ, cost_limit 10 among them
    algo, task, _, _ = load_run(run_dir)
    algo.eval()
    for key, block in result["by_threshold"].items():
        stats = rollout(task.env_id, algo.episodic_policy(float(key)), 3, seed=0)
        assert np.isclose(stats.rewards.mean(), block["reward_mean"]) and np.isclose(
            stats.costs.mean(), block["cost_mean"]
        )
        assert block["normalized_cost"] == pytest.approx(block["cost_mean"] / float(key))
        assert block["safe"] == (block["normalized_cost"] <= 1)
    assert (
        np.mean(result["episode_rewards"]) == pytest.approx(result["reward_mean"]) and len(result["episode_costs"]) == 3
    )
    at_limit = result["by_threshold"]["10"]
    assert (at_limit["reward_mean"], at_limit["cost_mean"]) == (result["reward_mean"], result["cost_mean"])
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    logged = next(r for r in rows if r["step"] == "20")
    for kappa in ("5", "20"):
        assert (
            logged[f"eval/k{kappa}/reward"]
            and logged[f"eval/k{kappa}/cost"]
            and logged[f"eval/k{kappa}/normalized_reward"]
        )
    assert "eval/k10/reward" not in logged  # the run's own κ is the plain eval/ columns

    plain = run_experiment(config("algo=bc_all", "steps=20", f"run_dir={tmp_path / 'bc'}", *opts))
    assert "by_threshold" not in plain
    assert not any("/k" in c for c in (tmp_path / "bc" / "metrics.csv").read_text().splitlines()[0].split(","))
