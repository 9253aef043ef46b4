"""`python -m saferl.collect env=<name> [budget=tiny|small|full]`: build a task's datasets locally, print
their summary and save a (cost return, reward return) scatter plot next to each.

MuJoCo tasks train SAC behaviour policies first (stable-baselines3); an interrupted build resumes from its
finished SAC segments and rollouts when the same command is run again.

`python -m saferl.collect import=<file.hdf5> env=<task or DSRL id> [dataset_id=...] [zero_costs=true]
[check_next_observations=false] [overwrite=true]` converts a DSRL / D4RL HDF5 file instead
(`saferl.data.hdf5_import`).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from saferl.cli import setup_logging, user_errors
from saferl.console import print_table
from saferl.data import OfflineDataset, build, load, minari_io, recipe_for
from saferl.data.coverage import hazard_coverage, reward_frontier
from saferl.data.hdf5_import import DSRL_TASKS, default_dataset_id, from_hdf5, resolve_task
from saferl.data.plots import scatter_plot
from saferl.data.recipes import RECIPES, SB3_RECIPES
from saferl.data.sb3_recipe import BUDGETS, SB3Recipe, build_sb3, safe_fractions
from saferl.envs import TaskSpec
from saferl.errors import SaferlError

log = logging.getLogger("saferl")

# the keys of an import= run (declared in conf/collect.yaml); the others only apply to it
IMPORT_KEYS = ("import", "dataset_id", "zero_costs", "check_next_observations")

# `env=<DSRL id>` selects the saferl task it maps to: env group entries without a yaml file each
for _dsrl_id, _name in DSRL_TASKS.items():
    ConfigStore.instance().store(group="env", name=_dsrl_id, node={"name": _name})


class CollectError(SaferlError, ValueError):
    """A bad argument of `python -m saferl.collect` (or `collect()`)."""


def _check_int(name: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise CollectError(f"{name} must be an integer >= {minimum} (or null), got {value!r}")
    if value < minimum:
        raise CollectError(f"{name} must be >= {minimum}, got {value}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise CollectError(f"{name} must be true or false, got {value!r}")


def writable_root() -> Path:
    """The datasets root, failing before any work when it cannot be created or written."""
    try:
        root = minari_io.datasets_root()  # Minari creates it
    except OSError as err:
        raise CollectError(
            f"cannot create the datasets root {os.environ.get('MINARI_DATASETS_PATH', '~/.minari/datasets')}: "
            f"{err.strerror}. Set MINARI_DATASETS_PATH to a writable directory"
        ) from None
    check_writable(root)
    return root


def check_writable(root: Path) -> None:
    """Fail when ``root`` (or its first existing parent) is not a writable directory."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CollectError(
            f"cannot write datasets under {root}: {existing} is not a directory. Set MINARI_DATASETS_PATH to a "
            "writable directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CollectError(
            f"cannot write datasets under {root}: {existing} is not writable. Set MINARI_DATASETS_PATH to a "
            "writable directory"
        )


def _check_collect_args(
    task_name: str, dataset_id: str, seed: Any, episodes: Any, overwrite: Any, progress: Any, budget: Any, workers: Any
) -> None:
    if budget not in BUDGETS:
        raise CollectError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    _check_int("seed", seed, 0)
    _check_int("episodes", episodes, 1)
    _check_int("workers", workers, 1)
    _check_bool("overwrite", overwrite)
    _check_bool("progress", progress)
    recipe = recipe_for(dataset_id)
    own = sorted(
        [i for i, r in RECIPES.items() if r.task == task_name]
        + [i for r in SB3_RECIPES.values() if r.task == task_name for i in r.dataset_ids()]
    )
    if recipe is None:
        raise CollectError(
            f"no saferl recipe builds dataset {dataset_id!r}; task {task_name} builds: {', '.join(own) or 'none'}. "
            "To convert a DSRL / D4RL file, use import=<file.hdf5>"
        )
    if recipe.task != task_name:
        raise CollectError(
            f"dataset {dataset_id} is built by task {recipe.task}'s recipe, not {task_name}'s; run with "
            f"env={recipe.task}, or pick one of {', '.join(own) or 'none'}"
        )
    if isinstance(recipe, SB3Recipe) and episodes is not None:
        raise CollectError("episodes= sets the size of the 2-D navigation recipes; MuJoCo recipes use budget=")


@contextmanager
def _writing(dataset_id: str, root: Path) -> Iterator[None]:
    """A write the file system refuses (permissions, read-only, full disk) becomes an error that says what to do."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
            raise
        raise CollectError(
            f"cannot write dataset {dataset_id} under {root}: {err}. Set MINARI_DATASETS_PATH to a writable "
            "directory with free space"
        ) from None


def collect(
    env: str,
    dataset: str | None = None,
    seed: int | None = None,
    episodes: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    budget: str = "full",
    workers: int | None = None,
) -> dict:
    """Build the task's datasets; returns {dataset id: summary}."""
    task = resolve_task(env)
    dataset_id = dataset or task.dataset_id
    _check_collect_args(task.name, dataset_id, seed, episodes, overwrite, progress, budget, workers)
    recipe = recipe_for(dataset_id)
    root = writable_root()
    start = time.perf_counter()
    with _writing(dataset_id, root):
        if isinstance(recipe, SB3Recipe):
            paths = build_sb3(recipe, seed, budget, overwrite, progress, workers)
        else:
            minari_io.require_absent(dataset_id, overwrite)
            path = build(
                dataset_id, seed=seed, episodes=episodes, overwrite=overwrite, progress=progress, budget=budget
            )
            paths = {dataset_id: path}
    seconds = round(time.perf_counter() - start, 2)
    summaries = {}
    others = []
    for ds_id, path in paths.items():
        data, summary, plot = _summarize(ds_id, path, task, seconds)
        costs = data.episode_costs.cpu().numpy()
        summaries[ds_id] = summary
        if ds_id != dataset_id:  # the D4RL-style datasets of the same SAC runs: one line each
            others.append(
                [
                    ds_id.split("/")[-1],
                    summary["episodes"],
                    summary["transitions"],
                    f"{summary['reward_return_mean']:.1f} ({summary['reward_return_min']:.1f} … "
                    f"{summary['reward_return_max']:.1f})",
                    f"{summary['cost_return_mean']:.1f}",
                ]
            )
            continue
        meta = data.metadata
        rewards = data.episode_rewards.cpu().numpy()
        lo, hi = (task.reward_min, task.reward_max) if task.reward_min is not None else (rewards.min(), rewards.max())
        frontier = reward_frontier(costs, rewards, task.cost_thresholds, lo, hi)
        summary["frontier"] = {p.threshold: {"best_safe": p.best_safe, "best_unsafe": p.best_unsafe} for p in frontier}
        rows = [
            ["episodes", summary["episodes"]],
            ["transitions", summary["transitions"]],
            ["reward return", f"{summary['reward_return_min']:.4f} … {summary['reward_return_max']:.4f}"],
            ["cost return", f"{summary['cost_return_min']:g} … {summary['cost_return_max']:g}"],
            [
                "safe episodes",
                ", ".join(f"{v:.0%} at κ={k}" for k, v in summary["safe_fraction"].items())
                + f"; {np.mean(costs == 0):.0%} cost-free",
            ],
            [
                "frontier (best safe / best unsafe normalized reward)",
                ", ".join(f"κ={p.threshold:g}: {_fmt(p.best_safe)} / {_fmt(p.best_unsafe)}" for p in frontier),
            ],
            ["behaviour", ", ".join(f"{k} {v}" for k, v in meta["behaviour_counts"].items())],
        ]
        if task.barrier is not None and "geometry" in getattr(task.barrier, "keywords", {}):
            coverage = hazard_coverage(data, task.barrier.keywords["geometry"].hazards)
            summary["hazard_coverage"] = [c.episode_fraction for c in coverage]
            rows.append(
                [
                    "hazards entered (share of episodes, transitions)",
                    ", ".join(
                        f"({c.center[0]:g}, {c.center[1]:g}) r={c.radius:g}: {c.episode_fraction:.1%}, {c.transitions}"
                        for c in coverage
                    ),
                ]
            )
        if "train_seconds" in meta:
            rows.append(["SAC training / rollouts", f"{meta['train_seconds']:g} s / {meta['rollout_seconds']:g} s"])
        rows += [["dataset", str(path)], ["scatter plot", str(plot)]]
        print_table(f"{ds_id} (budget {meta.get('budget', budget)}, {seconds} s in all)", ["quantity", "value"], rows)
    if others:
        columns = ["dataset", "episodes", "transitions", "reward return mean (min … max)", "cost return mean"]
        prefix = dataset_id.rsplit("/", 1)[0]
        print_table(f"D4RL-style datasets {prefix}/<dataset> of the λ=0 SAC run", columns, others)
    return summaries


def import_file(
    path: str | os.PathLike,
    env: str,
    dataset_id: str | None = None,
    zero_costs: bool = False,
    check_next_observations: bool = True,
    overwrite: bool = False,
) -> dict:
    """Convert a DSRL / D4RL HDF5 file (`saferl.data.from_hdf5`), print its summary; returns the summary."""
    _check_bool("zero_costs", zero_costs)
    _check_bool("check_next_observations", check_next_observations)
    _check_bool("overwrite", overwrite)
    if dataset_id is not None and not isinstance(dataset_id, str):
        raise CollectError(f"dataset_id must be a Minari id such as saferl/<Task>/imported-v0, got {dataset_id!r}")
    task = resolve_task(env)
    dataset_id = dataset_id or default_dataset_id(task)
    root = writable_root()
    start = time.perf_counter()
    with _writing(dataset_id, root):
        path = from_hdf5(
            path,
            env,
            dataset_id,
            zero_costs=zero_costs,
            check_next_observations=check_next_observations,
            overwrite=overwrite,
        )
    data, summary, plot = _summarize(dataset_id, path, task, round(time.perf_counter() - start, 2))
    meta = data.metadata
    rows = [
        ["source", meta["source"]],
        ["task", f"{task.name} ({task.env_id})"],
        ["episodes", summary["episodes"]],
        ["transitions", summary["transitions"]],
        ["reward return", f"{summary['reward_return_min']:.4f} … {summary['reward_return_max']:.4f}"],
        [
            "cost return",
            "0 (zero_costs=true)" if zero_costs else f"{summary['cost_return_min']:g} … {summary['cost_return_max']:g}",
        ],
        ["safe episodes", ", ".join(f"{v:.0%} at κ={k}" for k, v in summary["safe_fraction"].items())],
        ["last episode cut off (kept, truncated)", "yes" if meta["tail_truncated"] else "no"],
        ["next_observations checked", "yes" if meta["next_observations_checked"] else "no"],
        ["dataset", str(path)],
        ["scatter plot", str(plot)],
        ["train on it", f"python -m saferl.run algo=<algo> env={task.name} dataset={dataset_id}"],
    ]
    if meta["dropped_last_steps"]:
        rows.insert(-3, ["last steps dropped (no next_observations)", meta["dropped_last_steps"]])
    print_table(f"{dataset_id} imported in {summary['seconds']} s", ["quantity", "value"], rows)
    return summary


def _summarize(dataset_id: str, path: Path, task: TaskSpec, seconds: float) -> tuple[OfflineDataset, dict, Path]:
    """A written dataset's summary (returns, safe fractions at the task's thresholds) and its scatter plot."""
    data = load(dataset_id)
    costs = data.episode_costs.cpu().numpy()
    summary = data.summary() | {
        "seconds": seconds,
        "path": str(path),
        "safe_fraction": safe_fractions(costs, task.cost_thresholds),
        "reward_return_mean": float(data.episode_rewards.mean()),
        "cost_return_mean": float(costs.mean()),
    }
    plot = scatter_plot(data, path / "scatter.png", title=dataset_id, thresholds=task.cost_thresholds)
    return data, summary, plot


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


@hydra.main(version_base="1.3", config_path="conf", config_name="collect")
def _hydra_main(cfg: DictConfig) -> None:
    setup_logging()
    try:
        with user_errors():
            source = cfg.get("import")
            if source is not None:
                import_file(
                    str(source),
                    cfg.env.name,
                    cfg.dataset_id or cfg.dataset,
                    bool(cfg.zero_costs),
                    cfg.check_next_observations is not False,  # null: check
                    cfg.overwrite,
                )
                return
            stray = [k for k in IMPORT_KEYS[1:] if cfg.get(k) is not None]
            if stray:
                raise CollectError(f"{', '.join(stray)} only apply to import=<file.hdf5>")
            collect(
                cfg.env.name, cfg.dataset, cfg.seed, cfg.episodes, cfg.overwrite, cfg.progress, cfg.budget, cfg.workers
            )
    except KeyboardInterrupt:
        root = minari_io.datasets_root() / ".saferl-build"
        print(
            f"interrupted: finished SAC segments and rollouts are kept under {root}; run the same command "
            "again to resume",
            file=sys.stderr,
        )
        sys.exit(130)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
