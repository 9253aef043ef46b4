"""`python -m saferl.collect env=<name>`: build a task's dataset locally, print its summary and save a
(cost return, reward return) scatter plot next to it."""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig

from saferl.cli import setup_logging, user_errors
from saferl.console import print_table
from saferl.data import build, load, minari_io
from saferl.data.plots import scatter_plot
from saferl.envs import get_task

log = logging.getLogger("saferl")


def collect(
    env: str,
    dataset: str | None = None,
    seed: int | None = None,
    episodes: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    task = get_task(env)
    dataset_id = dataset or task.dataset_id
    if minari_io.dataset_dir(dataset_id).exists() and not overwrite:
        raise minari_io.DatasetError(
            f"dataset {dataset_id} already exists at {minari_io.dataset_dir(dataset_id)}; "
            "pass overwrite=true to rebuild it"
        )
    start = time.perf_counter()
    path = build(dataset_id, seed=seed, episodes=episodes, overwrite=overwrite, progress=progress)
    data = load(dataset_id)
    summary = data.summary() | {"seconds": round(time.perf_counter() - start, 2), "path": str(path)}
    plot = scatter_plot(data, path / "scatter.png", title=dataset_id, thresholds=task.cost_thresholds)
    print_table(
        f"{dataset_id} ({summary['seconds']} s)",
        ["quantity", "value"],
        [
            ["episodes", summary["episodes"]],
            ["transitions", summary["transitions"]],
            ["reward return", f"{summary['reward_return_min']:.4f} … {summary['reward_return_max']:.4f}"],
            ["cost return", f"{summary['cost_return_min']:g} … {summary['cost_return_max']:g}"],
            ["behaviour", ", ".join(f"{k} {v}" for k, v in data.metadata["behaviour_counts"].items())],
            ["dataset", str(path)],
            ["scatter plot", str(plot)],
        ],
    )
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="collect")
def main(cfg: DictConfig) -> None:
    setup_logging()
    with user_errors():
        collect(cfg.env.name, cfg.dataset, cfg.seed, cfg.episodes, cfg.overwrite, cfg.progress)


if __name__ == "__main__":
    main()
