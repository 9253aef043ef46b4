"""Which of its two targets does a trained CDT follow: the reward-to-go, the cost-to-go, both or neither?

    MINARI_DATASETS_PATH=<root> python benchmarks/cdt_targets.py [RUN_DIR ...] [--tasks TASK ...]
        [--episodes 20] [--costs 0 5 10 20 40] [--returns-frac 1.0 0.5]

CDT acts for a threshold κ from two initial tokens: cost-to-go κ and a reward-to-go, by saferl's choice the best
episode return in the data among episodes with cost ≤ κ (`saferl.algos.cdt.reward_targets`). On data whose safe
episodes reach nearly the best return (the DSRL "frontier" the 2-D recipes are built to have), that reward target
is the same at every κ, so the cost token is the only thing that tells κ = 5 from κ = 20.

``--tasks``: per task, the reference dataset's best return and the reward target at each of the task's κ (no
training needed). Per RUN_DIR: the run rolled out on a grid of (reward target, cost target), the run's κ-target
scaled by each ``--returns-frac`` times each ``--costs`` value, on the run's own evaluation episodes (its seed,
hence its start states). A policy that follows its cost token costs less at lower cost targets along a row; one
that only follows its reward token changes down a column. Next to each cell, what the data's episodes of about
that return (within ±10 % of the data's return range) cost on average: a model that copies the data's behaviour
at that return costs the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NEAR = 0.1  # "about that return": within this fraction of the data's return range


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="*")
    ap.add_argument("--tasks", nargs="*", default=[], help="print the reward target per κ of these tasks' data")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--costs", type=float, nargs="+", default=[0.0, 5.0, 10.0, 20.0, 40.0])
    ap.add_argument(
        "--returns-frac",
        type=float,
        nargs="+",
        default=[1.0, 0.5],
        help="reward targets as fractions of the run's own target at its κ",
    )
    args = ap.parse_args()

    import torch
    from _subruns import trained_policies

    from saferl import evaluate
    from saferl.algos.cdt import CDT, CDTEpisodes, reward_targets
    from saferl.data import load
    from saferl.envs import get_task

    torch.set_num_threads(1)
    if args.tasks:
        print("| task | dataset | best return | reward target at each κ |")
        print("|---|---|---|---|")
    for name in args.tasks:
        task = get_task(name)
        data = load(task.dataset_id)
        ep_reward, ep_cost = data.episode_rewards.numpy(), data.episode_costs.numpy()
        kappas = list(task.cost_thresholds)
        targets = ", ".join(
            f"κ={k:g}: {r:.2f}" for k, r in zip(kappas, reward_targets(ep_reward, ep_cost, kappas), strict=True)
        )
        print(f"| {name} | {task.dataset_id} | {ep_reward.max():.2f} | {targets} |")
    if not args.run_dirs:
        return

    print(
        "| run | reward target | cost target | normalized reward | cost | data near that return: episodes, mean cost |"
    )
    print("|---|---|---|---|---|---|")
    for label, policy in trained_policies(args.run_dirs, lambda a: isinstance(a, CDT), "CDT"):
        algo = policy.algorithm
        data = load(policy.dataset or policy.task.dataset_id)
        ep_reward, ep_cost = data.episode_rewards.numpy(), data.episode_costs.numpy()
        width = NEAR * (ep_reward.max() - ep_reward.min())
        own = algo.target_return(policy.cost_limit)
        for frac in args.returns_frac:
            near = abs(ep_reward - own * frac) <= width
            data_cell = f"{near.sum()}, {ep_cost[near].mean():.1f}" if near.any() else "0, –"
            for cost in args.costs:
                # evaluate() asks the algorithm for its episodic policy; pin both targets for this cell
                algo.episodic_policy = lambda _=None, a=algo, r=own * frac, c=cost: CDTEpisodes(a, r, c)
                res = evaluate(policy, episodes=args.episodes)
                reward, cost_mean = res["normalized_reward"], res["cost_mean"]
                print(
                    f"| {label} | {own * frac:.2f} | {cost:g} | {reward:.3f} | {cost_mean:.2f} | {data_cell} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
