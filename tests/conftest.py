"""Shared fixtures: every test uses a private Minari root and never touches the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    """Under pytest-xdist every worker has a core: single-threaded torch, so that workers do not oversubscribe
    the cores (the tests' networks are tiny, and several of them compare runs within one process)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def minari_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("minari")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


@pytest.fixture(scope="session")
def point_dataset(minari_root) -> str:
    """The PointRobot reference dataset (recipe defaults), built once per session."""
    from saferl.data import ensure
    from saferl.envs import get_task

    dataset_id = get_task("point-robot").dataset_id
    ensure(dataset_id, progress=False)
    return dataset_id


@pytest.fixture(scope="session")
def boat_dataset(minari_root) -> str:
    from saferl.data import ensure
    from saferl.envs import get_task

    dataset_id = get_task("boat-robot").dataset_id
    ensure(dataset_id, progress=False)
    return dataset_id


def run_cli(
    module: str, *args: str, cwd: Path, timeout: float = 300, check: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` the way a user would, with the test's Minari root."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_same_update(algo, restored, batch) -> None:
    """One update of ``algo`` and of its checkpoint copy ``restored`` on ``batch`` gives identical parameters,
    whatever torch's global RNG holds: the update's own randomness travels in the checkpoint."""
    import torch

    torch.manual_seed(123)
    algo.update(batch)
    torch.manual_seed(456)  # the global RNG does not matter
    restored.update(batch)
    for (name, p), q in zip(algo.named_parameters(), restored.parameters(), strict=True):
        assert torch.equal(p, q), name


def kill_after_first_checkpoint(args: list[str], run_dir: Path, cwd: Path, settle: float = 0.2) -> int:
    """Start ``python -m saferl.run args`` (writing ``run_dir``), SIGKILL it shortly after its first checkpoint and
    return the checkpoint's step; fails when the run finished before the kill (too fast to test resume)."""
    import signal
    import time

    import torch

    proc = subprocess.Popen(
        [sys.executable, "-m", "saferl.run", *args],
        cwd=cwd,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(settle)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (run_dir / "eval.json").exists(), "the kill came too late to test resume"
    return int(torch.load(ckpt, weights_only=False)["step"])


@pytest.fixture(scope="module")
def single_thread():
    """Single-threaded torch for a test module: tiny networks run several times slower with threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def box_ctx(
    obs_dim: int = 2,
    act_dim: int = 2,
    task=None,
    low: float = -1.0,
    high: float = 1.0,
    max_episode_steps: int = 200,
    cost_limit: float = 10.0,
):
    """An `AlgoContext` with a box action space [low, high]^act_dim on the CPU."""
    import numpy as np
    import torch

    from saferl.algos import AlgoContext

    return AlgoContext(
        obs_dim=obs_dim,
        act_dim=act_dim,
        action_low=np.full(act_dim, low, dtype=np.float32),
        action_high=np.full(act_dim, high, dtype=np.float32),
        cost_limit=cost_limit,
        max_episode_steps=max_episode_steps,
        device=torch.device("cpu"),
        task=task,
    )


def compose_run(*overrides: str):
    """The composed `saferl.run` config for these overrides (as the CLI would build it)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "saferl" / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def worst_episodes(data, quantile: float = 0.1):
    """The dataset restricted to its lowest-return episodes (a poor offline dataset for O2O tests)."""
    import torch

    return data.select_episodes(data.episode_rewards <= torch.quantile(data.episode_rewards, quantile))


def eval_score(task, act, episodes: int = 10) -> float:
    """Normalized reward of ``act`` on ``task`` over fixed evaluation seeds."""
    from saferl.evaluation import rollout

    return task.normalized_reward(float(rollout(task.env_id, act, episodes, seed=0).rewards.mean()))
