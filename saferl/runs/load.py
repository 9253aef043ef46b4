"""Reading runs back: a finished run's trained algorithm (`load_run`) and the offline checkpoint that
``init_from=`` starts an online phase from."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from saferl.algos import AlgoContext, Algorithm, get_algorithm
from saferl.envs import TaskSpec, get_task
from saferl.runs.checkpoints import read_checkpoint
from saferl.runs.errors import SaferlError
from saferl.runs.resolve import resolve_device
from saferl.runs.rundir import CHECKPOINT, CONFIG_FILE, OFFLINE_CHECKPOINT

log = logging.getLogger("saferl")


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Algorithm, TaskSpec, dict[str, Any], int]:
    """A run directory's trained algorithm, rebuilt from its ``config.yaml`` and ``checkpoints/last.pt`` (in
    eval mode), with its task, its config and the number of updates behind the checkpoint."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    try:
        algo_opts = dict(cfg["algo"])
        algo_cls = get_algorithm(algo_opts.pop("name"))
        task = get_task(cfg["env"]["name"])
        cost_limit, seed = float(cfg["cost_limit"]), int(cfg["seed"])
        config = algo_cls.make_config(algo_opts)
    except (KeyError, TypeError, ValueError) as err:
        raise SaferlError(
            f"{run_dir / CONFIG_FILE} is not a run config saferl.run can rebuild ({type(err).__name__}: {err}); "
            "it was edited or written by another version: restore the file, or load another run"
        ) from None
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.is_file():
        raise SaferlError(
            f"{run_dir} has no {CHECKPOINT}: the run stopped before its first checkpoint; resume it "
            f"(python -m saferl.run ... run_dir={run_dir} resume=true) or load another run"
        )
    env = gym.make(task.env_id)
    ctx = AlgoContext.for_task(task, env, cost_limit, resolve_device(device))
    env.close()
    torch.manual_seed(seed)
    algo = algo_cls(config, ctx)
    state = read_checkpoint(checkpoint, f"load_run({str(run_dir)!r})")
    try:
        algo.load_state_dict(state["algo"])
    except (RuntimeError, KeyError) as err:
        raise SaferlError(
            f"{checkpoint} does not fit the {algo_cls.name} network that {run_dir / CONFIG_FILE} describes ({err}); "
            "the config or the checkpoint was replaced by another run's: restore the pair, or load another run"
        ) from None
    return algo.eval(), task, cfg, int(state["step"])


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run directory's ``config.yaml`` (a `SaferlError` naming what is missing or unreadable)."""
    import yaml

    if not run_dir.exists():
        raise SaferlError(
            f"load_run: {run_dir} does not exist; pass a run directory that saferl.run wrote (it prints it when "
            "it starts; by default runs/<env>/<algo>/seed<k>-<time>)"
        )
    if not run_dir.is_dir():
        raise SaferlError(f"load_run: {run_dir} is a file, not a run directory; pass the directory that holds it")
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise SaferlError(
            f"load_run: {run_dir} has no {CONFIG_FILE}, so it is not a saferl run directory; pass a directory "
            "that saferl.run wrote (it prints it when it starts)"
        )
    try:
        cfg = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as err:
        raise SaferlError(f"{config_path} is not valid YAML ({err}); restore the file, or load another run") from None
    if not isinstance(cfg, dict):
        raise SaferlError(f"{config_path} holds no run config; restore the file, or load another run")
    return cfg


def load_init(path_str: str) -> dict[str, Any]:
    """The offline checkpoint that ``init_from`` names (a run directory or a ``.pt`` file)."""
    path = Path(path_str)
    if path.is_dir():
        path = path / OFFLINE_CHECKPOINT if (path / OFFLINE_CHECKPOINT).exists() else path / CHECKPOINT
    if not path.is_file():
        where = "the path does not exist" if not Path(path_str).exists() else f"{path} is missing"
        raise SaferlError(
            f"init_from={path_str}: no checkpoint found there ({where}); pass a run directory (with "
            f"{OFFLINE_CHECKPOINT} or {CHECKPOINT}) or a .pt checkpoint file"
        )
    state = read_checkpoint(path, f"init_from={path_str}")
    if state.get("online") is not None:
        raise SaferlError(f"init_from={path} was written during an online phase; use that run's {OFFLINE_CHECKPOINT}")
    log.info("starting from %s (written by %s after %d updates)", path, state["settings"]["algo"], state["step"])
    return state


def check_init(state: dict[str, Any], init_from: str, algo: str, env: str, allow_env_mismatch: bool = False) -> None:
    """The ``init_from`` checkpoint was written by this algorithm on this task (before any data is loaded)."""
    saved = state["settings"]
    if saved.get("algo") != algo:
        raise SaferlError(
            f"init_from={init_from} was written by algo={saved.get('algo')}, this run is algo={algo}; start from "
            f"a {algo} run (or run algo={saved.get('algo')} online_steps=...)"
        )
    if saved.get("env") != env and not allow_env_mismatch:
        raise SaferlError(
            f"init_from={init_from} was trained on env={saved.get('env')}, this run is env={env}; start from a run "
            f"on {env}, use env={saved.get('env')}, or pass allow_env_mismatch=true to fine-tune it on {env}"
        )
