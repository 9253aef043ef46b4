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
    import yaml

    run_dir = Path(run_dir)
    config_path, checkpoint = run_dir / CONFIG_FILE, run_dir / CHECKPOINT
    if not config_path.is_file() or not checkpoint.is_file():
        raise SaferlError(
            f"{run_dir} has no {CONFIG_FILE} and {CHECKPOINT}; pass a run directory that saferl.run wrote "
            "(it prints it when it starts)"
        )
    cfg = yaml.safe_load(config_path.read_text())
    algo_opts = dict(cfg["algo"])
    algo_cls = get_algorithm(algo_opts.pop("name"))
    task = get_task(cfg["env"]["name"])
    env = gym.make(task.env_id)
    ctx = AlgoContext.for_task(task, env, float(cfg["cost_limit"]), resolve_device(device))
    env.close()
    torch.manual_seed(int(cfg["seed"]))
    algo = algo_cls(algo_cls.make_config(algo_opts), ctx)
    state = read_checkpoint(checkpoint)
    algo.load_state_dict(state["algo"])
    return algo.eval(), task, cfg, int(state["step"])


def load_init(path_str: str) -> dict[str, Any]:
    """The offline checkpoint that ``init_from`` names (a run directory or a ``.pt`` file)."""
    path = Path(path_str)
    if path.is_dir():
        path = path / OFFLINE_CHECKPOINT if (path / OFFLINE_CHECKPOINT).exists() else path / CHECKPOINT
    if not path.is_file():
        raise SaferlError(
            f"init_from={path_str}: no checkpoint found there; pass a run directory (with "
            f"{OFFLINE_CHECKPOINT} or {CHECKPOINT}) or a .pt checkpoint file"
        )
    state = read_checkpoint(path, f"init_from={path}")
    if state.get("online") is not None:
        raise SaferlError(f"init_from={path} was written during an online phase; use that run's {OFFLINE_CHECKPOINT}")
    log.info("starting from %s (written by %s after %d updates)", path, state["settings"]["algo"], state["step"])
    return state
