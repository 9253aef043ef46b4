"""`python -m saferl.collect env=<name> [budget=tiny|small|full]`: build a task's datasets locally, print
their summary and save a (cost return, reward return) scatter plot next to each.

MuJoCo tasks train SAC behaviour policies first (stable-baselines3); an interrupted build resumes from its
finished SAC segments and rollouts when the same command is run again.
"""

from __future__ import annotations

import logging
import sys
import time

import hydra
import numpy as np
from omegaconf import DictConfig

from saferl.cli import setup_logging, user_errors
from saferl.console import print_table
from saferl.data import build, load, minari_io, recipe_for
from saferl.data.coverage import hazard_coverage, reward_frontier
from saferl.data.plots import scatter_plot
from saferl.data.sb3_recipe import SB3Recipe, build_sb3, safe_fractions
from saferl.envs import get_task

log = logging.getLogger("saferl")


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
    task = get_task(env)
    dataset_id = dataset or task.dataset_id
    recipe = recipe_for(dataset_id)
    start = time.perf_counter()
    if isinstance(recipe, SB3Recipe):
        if episodes is not None:
            raise ValueError("episodes= sets the size of the 2-D navigation recipes; MuJoCo recipes use budget=")
        paths = build_sb3(recipe, seed, budget, overwrite, progress, workers)
    else:
        if minari_io.dataset_dir(dataset_id).exists() and not overwrite:
            raise minari_io.DatasetError(
                f"dataset {dataset_id} already exists at {minari_io.dataset_dir(dataset_id)}; "
                "pass overwrite=true to rebuild it"
            )
        path = build(dataset_id, seed=seed, episodes=episodes, overwrite=overwrite, progress=progress, budget=budget)
        paths = {dataset_id: path}
    seconds = round(time.perf_counter() - start, 2)
    summaries = {}
    others = []
    for ds_id, path in paths.items():
        data = load(ds_id)
        costs = data.episode_costs.cpu().numpy()
        summary = data.summary() | {
            "seconds": seconds,
            "path": str(path),
            "safe_fraction": safe_fractions(costs, task.cost_thresholds),
            "reward_return_mean": float(data.episode_rewards.mean()),
            "cost_return_mean": float(costs.mean()),
        }
        plot = scatter_plot(data, path / "scatter.png", title=ds_id, thresholds=task.cost_thresholds)
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


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


@hydra.main(version_base="1.3", config_path="conf", config_name="collect")
def main(cfg: DictConfig) -> None:
    setup_logging()
    try:
        with user_errors():
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


if __name__ == "__main__":
    main()
