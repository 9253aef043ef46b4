"""Issue 17 (part 4): bad input is refused with a `SaferlError` that names the value and the fix, before any
data is built, any run directory is written or any training starts."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from saferl.errors import SaferlError
from tests.conftest import compose_run, run_cli

BASE = ("algo=bc_all", "env=point-robot", "progress=false", "tensorboard=false")


@pytest.fixture(autouse=True)
def no_data(monkeypatch):
    """Every bad input here must be refused before the dataset is built or loaded."""
    import saferl.runs.resolve as resolve

    def refuse(*_args, **_kwargs):
        raise AssertionError("a bad input reached the dataset")

    monkeypatch.setattr(resolve, "ensure", refuse)
    monkeypatch.setattr(resolve, "load", refuse)


def refused(tmp_path: Path, *overrides: str) -> str:
    from saferl.runs import run_experiment

    run_dir = tmp_path / "run"
    with pytest.raises(SaferlError) as info:
        run_experiment(compose_run(*BASE, f"run_dir={run_dir}", *overrides))
    assert not run_dir.exists()  # refused before a run directory exists
    return str(info.value)


@pytest.mark.parametrize(
    ("overrides", "names", "fix"),
    [
        (["steps=-5"], "steps=-5", "steps=10000"),
        (["steps=0"], "steps=0", "steps=<N> > 0"),
        (["steps=1.5"], "steps=1.5", "steps=10000"),
        (["offline_steps=-3"], "offline_steps=-3", "offline_steps=10000"),
        (["algo=iql", "steps=100", "online_steps=-1"], "online_steps=-1", "online_steps=0"),
        (["algo=hnpg"], "steps=0 with online_steps=0", "online_steps=<N>"),
        (["eval_episodes=0"], "eval_episodes=0", "eval_episodes=20"),
        (["eval_episodes=-2"], "eval_episodes=-2", "eval_episodes=20"),
        (["eval_every=-1"], "eval_every=-1", "eval_every=0"),
        (["log_every=0"], "log_every=0", "log_every=500"),
        (["checkpoint_every=0"], "checkpoint_every=0", "checkpoint_every=2000"),
        (["checkpoint_every=-10"], "checkpoint_every=-10", "checkpoint_every=2000"),
        (["algo=iql", "online_steps=10", "online_eval_every=-1"], "online_eval_every=-1", "online_eval_every=0"),
        (["algo=iql", "online_steps=10", "online_envs=0"], "online_envs=0", "online_envs=1"),
        (["cost_limit=-1"], "cost_limit=-1", "cost_limit=10"),
        (["cost_limit=nan"], "cost_limit=nan", "cost_limit=null"),
        (["threads=-1"], "threads=-1", "threads=null"),
        (["device=gpu0"], "device='gpu0'", "device=cpu"),
        (["safety_filter=qp"], "safety_filter='qp'", "safety_filter=cbf"),
        (["algo.batch_size=0"], "algo.batch_size=0", "algo.batch_size=256"),
        (["algo.batch_size=-64"], "algo.batch_size=-64", "algo.batch_size=256"),
        (["algo.lr=-0.001"], "algo.lr=-0.001", "algo.lr=3e-4"),
        (["algo.hidden=[64,0]"], "algo.hidden=(64, 0)", "algo.hidden=[256,256]"),
        (["algo=iql", "algo.critic_lr=-1"], "algo.critic_lr=-1", "algo.critic_lr=3e-4"),
        (["algo=coptidice", "algo.gamma=1.5"], "algo.gamma=1.5", "algo.gamma=0.99"),
        (["algo=sac_n", "algo.num_critics=0"], "algo.num_critics=0", "algo.num_critics=2"),
        (["seeds=[0,a]"], "seeds=[0, 'a']", "seeds=[0,1,2]"),
    ],
)
def test_bad_run_options_are_refused_before_any_work(tmp_path, overrides, names, fix):
    message = refused(tmp_path, *overrides)
    assert names in message and fix in message, message


def test_steps_zero_with_an_online_phase_still_runs_the_checks_through(tmp_path):
    """steps=0 is legitimate with online_steps > 0 (online from scratch): it passes the value checks."""
    from saferl.algos import get_algorithm
    from saferl.runs.settings import check_settings, settings_from

    s, _ = settings_from(compose_run("algo=hnpg", "online_steps=100"))
    check_settings(s, get_algorithm("hnpg"), 0)  # no error
    s, _ = settings_from(compose_run("algo=iql", "steps=0", "online_steps=100"))
    check_settings(s, get_algorithm("iql"), 0)


# ---------------------------------------------------------------------------------------------------
# init_from= and load_run


def fake_checkpoint(path: Path, algo: str = "bc_all", env: str = "point-robot", online=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 10, "algo": {}, "settings": {"algo": algo, "env": env}, "online": online}, path)
    return path


@pytest.mark.parametrize(
    ("make", "names", "fix"),
    [
        (lambda d: d / "nowhere", "init_from=", "pass a run directory"),
        (lambda d: d, "init_from=", "pass a run directory"),  # a directory without checkpoints
        (lambda d: fake_checkpoint(d / "cql.pt", algo="cql"), "algo=cql", "start from a iql run"),
        (lambda d: fake_checkpoint(d / "boat.pt", algo="iql", env="boat-robot"), "env=boat-robot", "allow_env"),
        (lambda d: _truncated(d / "cut.pt"), "corrupt or truncated", "copy it again"),
        (lambda d: _write(d / "junk.pt", b"not a checkpoint"), "corrupt or truncated", "copy it again"),
        (lambda d: _save(d / "dict.pt", {"weights": 1}), "not a saferl checkpoint", "checkpoints/last.pt"),
    ],
)
def test_bad_init_from_is_refused_before_any_work(tmp_path, make, names, fix):
    src = tmp_path / "src"
    src.mkdir()
    path = make(src)
    message = refused(tmp_path, "algo=iql", "steps=10", "online_steps=10", f"init_from={path}")
    assert names in message and fix in message, message
    assert str(path) in message or "init_from=" in message


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _truncated(path: Path) -> Path:
    fake_checkpoint(path, algo="iql")
    data = path.read_bytes()
    return _write(path, data[: len(data) // 2])


def _run_dir_with(tmp_path: Path, config: str | None, checkpoint=None) -> Path:
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    if config is not None:
        (run_dir / "config.yaml").write_text(config)
    if checkpoint is not None:
        checkpoint(run_dir / "checkpoints" / "last.pt")
    return run_dir


GOOD_CONFIG = "algo: {name: bc_all}\nenv: {name: point-robot}\ncost_limit: 10.0\nseed: 0\n"


@pytest.mark.parametrize(
    ("make", "names", "fix"),
    [
        (lambda t: t / "missing", "does not exist", "pass a run directory"),
        (lambda t: _write(t / "file.txt", b"x"), "is a file", "pass the directory"),
        (lambda t: _run_dir_with(t, None), "has no config.yaml", "pass a directory that saferl.run wrote"),
        (lambda t: _run_dir_with(t, "algo: [unclosed"), "not valid YAML", "restore the file"),
        (lambda t: _run_dir_with(t, "algo: {name: bc_all}\n"), "not a run config", "restore the file"),
        (lambda t: _run_dir_with(t, GOOD_CONFIG), "has no checkpoints/last.pt", "resume=true"),
        (lambda t: _run_dir_with(t, GOOD_CONFIG, _truncated), "corrupt or truncated", "copy it again"),
        (lambda t: _run_dir_with(t, GOOD_CONFIG, fake_checkpoint), "does not fit", "restore the pair"),
    ],
)
def test_bad_load_run_inputs(tmp_path, make, names, fix):
    from saferl.runs import load_run

    path = make(tmp_path)
    with pytest.raises(SaferlError) as info:
        load_run(path)
    message = str(info.value)
    assert str(path) in message and names in message and fix in message, message


# ---------------------------------------------------------------------------------------------------
# SafetyFilter


class _Barrier:
    def constraints(self, obs, u_nom):
        n = len(obs)
        return np.ones((n, 1, 2)), np.zeros((n, 1))


def _box_env():
    return gym.make("saferl/PointRobot-v0")


@pytest.mark.parametrize(
    ("env", "kwargs", "kind", "names", "fix"),
    [
        (lambda: gym.make("CartPole-v1"), {}, TypeError, "Discrete(2)", "1-D gymnasium.spaces.Box"),
        (_box_env, {"solver": "gurobi"}, ValueError, "'gurobi'", "use solver= one of auto"),
        (_box_env, {"on_infeasible": "ignore"}, ValueError, "'ignore'", "on_infeasible='slack'"),
        (_box_env, {"barrier": object()}, TypeError, "barrier=object", "ControlAffineCBF"),
        (_box_env, {"solver_options": [1]}, ValueError, "solver_options=[1]", "as a dict"),
        (
            _box_env,
            {"action_low": np.array([1.0, 1.0]), "action_high": np.array([0.0, 0.0])},
            ValueError,
            "low > high",
            "SafetyFilter",
        ),
    ],
)
def test_bad_safety_filter_arguments(env, kwargs, kind, names, fix):
    from saferl.safety import SafetyFilter

    kwargs = {"barrier": _Barrier(), **kwargs}
    e = env()
    try:
        with pytest.raises(SaferlError) as info:
            SafetyFilter(e, **kwargs)
    finally:
        e.close()
    assert isinstance(info.value, kind)  # still the ValueError / TypeError it was before
    assert names in str(info.value) and fix in str(info.value), str(info.value)


# ---------------------------------------------------------------------------------------------------
# saferl.bench


@pytest.mark.parametrize(
    ("args", "names", "fix"),
    [
        (["suite=nope"], "suite/nope", "suites: "),
        (["suite=smoke", "suite.seeds=[0,x]"], "seeds must be a non-empty list of distinct integers", "[0, 'x']"),
        (["suite=smoke", "suite.seeds=[]"], "seeds must be a non-empty list", "[]"),
        (["suite=smoke", "workers=0"], "workers=0", "workers=null"),
        (["suite=smoke", "threads=0"], "threads=0", "threads=1"),
        (["suite=smoke", "max_attempts=0"], "max_attempts=0", "max_attempts=2"),
        (["suite=smoke", "bootstrap_reps=-1"], "bootstrap_reps=-1", "bootstrap_reps=10000"),
        (["suite=smoke", "launcher=slurm"], "launcher='slurm'", "launcher=local"),
        (["suite=smoke", 'overrides=["eval_episodes=0"]'], "eval_episodes=0", "eval_episodes=20"),
        (["suite=smoke", 'overrides=["steps=-5"]'], "steps=-5", "steps=10000"),
        (["suite=smoke", 'overrides=["algo.batch_size=0"]'], "algo.batch_size=0", "algo.batch_size=256"),
        (["suite=smoke", "suite.cost_limits=[-1]"], "cost_limits must be finite and >= 0", "[-1.0]"),
    ],
)
def test_bad_bench_inputs_fail_before_any_run(tmp_path, args, names, fix, capsys):
    from saferl.bench.__main__ import main

    argv = [*args, f"runs_root={tmp_path / 'runs'}", f"results_dir={tmp_path / 'res'}", "dry_run=true"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert names in err and fix in err, err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------
# Hydra's output directories


def test_hydra_run_dir_is_the_run_directory(tmp_path, point_dataset):
    from saferl.runs.resolve import load as real_load  # noqa: F401  (the autouse fixture patched the module)

    out = tmp_path / "hydra-out"
    proc = run_cli("saferl.run", *BASE, "steps=5", "eval_episodes=1", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "eval.json").is_file() and (out / "config.yaml").is_file()
    assert not (tmp_path / "runs").exists()


def test_hydra_run_dir_and_a_different_run_dir_are_refused(tmp_path):
    proc = run_cli(
        "saferl.run", *BASE, "steps=5", f"hydra.run.dir={tmp_path / 'a'}", f"run_dir={tmp_path / 'b'}", cwd=tmp_path
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "disagree" in out and "give one of them" in out, out
    assert not (tmp_path / "b").exists()
