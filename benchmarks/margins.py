"""How well does each task's safety margin h (what V-OCBF learns its barrier from) agree with its cost?

    MINARI_DATASETS_PATH=<root> python benchmarks/margins.py [task ...]

For every transition of the task's reference dataset: cost > 0 against h(s') < 0. The 2-D and Run/Circle margins
are the cost's own rule (agreement 100 %); the velocity margins are V-OCBF's authors' (threshold − the root's
velocity read from the observation) while the cost measures displacement / dt, so they may disagree near the
threshold. Prints one markdown row per task whose dataset is built, with the data's mean episode cost (where it
lies against the task's thresholds decides whether cloning all of it can be safe).
"""

from __future__ import annotations

import argparse

DEFAULT_TASKS = ("point-robot", "boat-robot", "car-run", "halfcheetah-velocity", "hopper-velocity")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tasks", nargs="*", default=list(DEFAULT_TASKS))
    args = ap.parse_args()

    from saferl.data import DatasetNotFoundError, load
    from saferl.envs import get_task

    print("| task | transitions | mean episode cost (κ) | cost > 0 | h(s') < 0 | sign agrees with the cost |")
    print("|---|---|---|---|---|---|")
    for name in args.tasks:
        task = get_task(name)
        try:
            data = load(task.dataset_id)
        except DatasetNotFoundError:
            print(f"| {name} | dataset not built (python -m saferl.collect env={name}) | | | | |")
            continue
        unsafe = (task.barrier(data.next_observations.double()) < 0).numpy()
        cost = (data.costs > 0).numpy()
        kappas = ", ".join(f"{k:g}" for k in task.cost_thresholds)
        episode_cost = f"{float(data.episode_costs.mean()):.1f} ({kappas})"
        agree = (unsafe == cost).mean()
        print(f"| {name} | {len(cost):,} | {episode_cost} | {cost.mean():.1%} | {unsafe.mean():.1%} | {agree:.1%} |")


if __name__ == "__main__":
    main()
