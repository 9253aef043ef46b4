"""Reading runs back: a finished run's trained algorithm (`load_run`), the offline checkpoint that
``init_from=`` starts an online phase from, and the trained policy that ``init_from=`` hands a base-policy
algorithm (`load_base`, e.g. CDSA)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from saferl.algos import AlgoConfig, AlgoContext, Algorithm, get_algorithm
from saferl.envs import TaskSpec, get_task
from saferl.runs.checkpoints import read_checkpoint
from saferl.runs.errors import SaferlError
from saferl.runs.resolve import resolve_device
from saferl.runs.rundir import CHECKPOINT, CONFIG_FILE, OFFLINE_CHECKPOINT

log = logging.getLogger("saferl")


def load_run(
    run_dir: str | Path, device: str = "cpu", label: str | None = None
) -> tuple[Algorithm, TaskSpec, dict[str, Any], int]:
    """A run directory's trained algorithm, rebuilt from its ``config.yaml`` and ``checkpoints/last.pt`` (in
    eval mode), with its task, its config and the number of updates behind the checkpoint. ``label`` names the
    option that pointed here in the messages (``init_from=…``; default ``load_run``)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, label)
    try:
        algo_opts = dict(cfg["algo"])
        algo_cls = get_algorithm(algo_opts.pop("name"))
        task = get_task(cfg["env"]["name"])
        cost_limit, seed = float(cfg["cost_limit"]), int(cfg["seed"])
        config = algo_cls.make_config(algo_opts)
        base_cls = get_algorithm(config.base_algo) if algo_cls.base_policy else None
        base_config = base_cls.make_config(dict(config.base_options)) if base_cls is not None else None
    except (KeyError, TypeError, ValueError) as err:
        raise SaferlError(
            f"{run_dir / CONFIG_FILE} is not a run config saferl.run can rebuild ({type(err).__name__}: {err}); "
            "it was edited or written by another version: restore the file, or load another run"
        ) from None
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.is_file():
        raise SaferlError(
            (f"{label}: " if label else "")
            + f"{run_dir} has no {CHECKPOINT}: the run stopped before its first checkpoint; resume it "
            f"(python -m saferl.run ... run_dir={run_dir} resume=true) or load another run"
        )
    env = gym.make(task.env_id)
    ctx = AlgoContext.for_task(task, env, cost_limit, resolve_device(device))
    env.close()
    torch.manual_seed(seed)
    # a base-policy algorithm: its base rebuilt from what config.yaml records (the weights are in its checkpoint)
    base = base_cls(base_config, ctx) if base_cls is not None else None
    algo = build_algorithm(algo_cls, config, ctx, base)
    state = read_checkpoint(checkpoint, label or f"load_run({str(run_dir)!r})")
    try:
        algo.load_state_dict(state["algo"])
    except (RuntimeError, KeyError) as err:
        raise SaferlError(
            f"{checkpoint} does not fit the {algo_cls.name} network that {run_dir / CONFIG_FILE} describes ({err}); "
            "the config or the checkpoint was replaced by another run's: restore the pair, or load another run"
        ) from None
    return algo.eval(), task, cfg, int(state["step"])


def build_algorithm(
    algo_cls: type[Algorithm], config: AlgoConfig, ctx: AlgoContext, base: Algorithm | None = None
) -> Algorithm:
    """``algo_cls(config, ctx)``; a base-policy algorithm (``base_policy``) is built around ``base``, the trained
    algorithm it adjusts."""
    if not algo_cls.base_policy:
        return algo_cls(config, ctx)
    if base is None:
        raise SaferlError(f"algo={algo_cls.name} adjusts another run's trained policy: pass init_from=<run dir>")
    return algo_cls(config, ctx, base=base)


def read_run_config(run_dir: Path, label: str | None = None) -> dict[str, Any]:
    """A run directory's ``config.yaml`` (a `SaferlError` naming what is missing or unreadable; ``label``: the
    option that named the directory, default ``load_run``)."""
    import yaml

    label = label or "load_run"
    if not run_dir.exists():
        raise SaferlError(
            f"{label}: {run_dir} does not exist; pass a run directory that saferl.run wrote (it prints it when "
            "it starts; by default runs/<env>/<algo>/seed<k>-<time>)"
        )
    if not run_dir.is_dir():
        raise SaferlError(f"{label}: {run_dir} is a file, not a run directory; pass the directory that holds it")
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise SaferlError(
            f"{label}: {run_dir} has no {CONFIG_FILE}, so it is not a saferl run directory; pass a directory "
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


def load_base(
    init_from: str, algo: str, env: str, allow_env_mismatch: bool = False, device: str = "cpu"
) -> tuple[Algorithm, dict[str, Any]]:
    """The trained policy that the base-policy algorithm ``algo`` adjusts: the run directory ``init_from`` names (a
    checkpoint inside one stands for its run), rebuilt with `load_run` from its last checkpoint, frozen, and that
    run's config. Refused before anything is built: no run there, a run of a base-policy algorithm itself, a run
    on another task (unless ``allow_env_mismatch``: the shapes are checked by `check_base_fits`), a policy that
    keeps per-episode context or acts through an evaluation wrapper; a damaged checkpoint is `load_run`'s."""
    path = Path(init_from)
    if path.is_file() and path.parent.name == CHECKPOINT.parent.name:
        path = path.parent.parent  # checkpoints/last.pt of a run: that run
    label = f"init_from={init_from}"
    cfg = read_run_config(path, label)
    base_name = (cfg.get("algo") or {}).get("name") if isinstance(cfg.get("algo"), dict) else None
    base_env = (cfg.get("env") or {}).get("name") if isinstance(cfg.get("env"), dict) else None
    if base_name == algo or (base_name is not None and _is_base_policy(base_name)):
        below = cfg.get("init_from")
        raise SaferlError(
            f"{label} is a {base_name} run, which itself adjusts another run's policy; algo={algo} adjusts a trained "
            f"policy of another algorithm: pass its base run"
            + (f" (init_from={below})" if below else "")
            + " or another run (iql, td3bc, cql, bc_safe, ...)"
        )
    if base_env != env and not allow_env_mismatch:
        raise SaferlError(
            f"{label} was trained on env={base_env}, this run is env={env}: algo={algo} adjusts a policy of the task "
            f"it runs on; pass a run on {env}, use env={base_env}, or pass allow_env_mismatch=true to adjust the "
            f"{base_env} policy on {env} (observation and action shapes must match)"
        )
    base, _, cfg, _ = load_run(path, device, label)
    base_cls = type(base)
    if base_cls.episodic_policy is not Algorithm.episodic_policy or base_cls.threshold_conditioned:
        raise SaferlError(
            f"{label} is a {base_cls.name} run, whose policy keeps per-episode context; algo={algo} adjusts "
            "per-step policies: pass a run of iql, td3bc, cql, bc_safe, fisor, ..."
        )
    if base_cls.wraps_eval_env:
        raise SaferlError(
            f"{label} is a {base_cls.name} run, which acts through an evaluation wrapper (a safety filter) that "
            f"algo={algo} would drop; pass a run of an algorithm that acts on its own"
        )
    base.requires_grad_(False)
    return base, cfg


def check_base_fits(base: Algorithm, ctx: AlgoContext, init_from: str) -> None:
    """The base policy acts on this run's observations and actions (runs on another task: allow_env_mismatch)."""
    if (base.ctx.obs_dim, base.ctx.act_dim) != (ctx.obs_dim, ctx.act_dim):
        raise SaferlError(
            f"init_from={init_from} acts on observations ({base.ctx.obs_dim},) with actions ({base.ctx.act_dim},); "
            f"this run's task has observations ({ctx.obs_dim},) and actions ({ctx.act_dim},): pass a run on this task"
        )


def with_base_record(config: AlgoConfig, init_from: str, base_cfg: dict[str, Any]) -> AlgoConfig:
    """``config`` (a `BasePolicyConfig`) recording the base run ``init_from`` (its absolute directory, algorithm and
    options), so that config.yaml names it and `load_run` rebuilds it; values given by hand must agree."""
    path = Path(init_from)
    if path.is_file():
        path = path.parent.parent
    options = dict(base_cfg["algo"])
    record = {"base_run": str(path.resolve()), "base_algo": options.pop("name"), "base_options": options}
    for key, value in record.items():
        given = getattr(config, key)
        if given and given != value and not (key == "base_run" and Path(given).resolve() == Path(value)):
            raise SaferlError(
                f"algo.{key}={given!r} disagrees with init_from={init_from} ({value!r}); algo.{key} records the base "
                f"run that init_from names: drop algo.{key}"
            )
    return dataclasses.replace(config, **record)


def _is_base_policy(name: str) -> bool:
    try:
        return get_algorithm(name).base_policy
    except KeyError:
        return False
