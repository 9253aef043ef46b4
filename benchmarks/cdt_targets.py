"""Which of its two targets does a trained CDT follow: the reward-to-go, the cost-to-go, both or neither?

    python benchmarks/cdt_targets.py RUN_DIR [RUN_DIR ...] [--episodes 20] [--costs 0 5 10 20 40]
                                     [--returns-frac 1.0 0.5]

CDT acts for a threshold κ from two initial tokens: cost-to-go κ and a reward-to-go, by saferl's choice the best
episode return in the data among episodes with cost ≤ κ. On data whose safe episodes reach nearly the best return
(the DSRL "frontier" the 2-D recipes are built to have), that reward target is the same at every κ, so the cost
token is the only thing that tells κ = 5 from κ = 20. This rolls a run out on a grid of (reward target, cost
target): the run's κ-targets scaled by each ``--returns-frac``, times each ``--costs`` value, on the run's own
evaluation episodes (its seed, hence its start states). A policy that follows its cost token costs less at lower
cost targets along a row; one that only follows its reward token changes down a column. Prints one markdown row
per run and grid cell.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
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
    from saferl.algos.cdt import CDT, CDTEpisodes

    torch.set_num_threads(1)
    print("| run | reward target | cost target | normalized reward | cost |")
    print("|---|---|---|---|---|")
    for label, policy in trained_policies(args.run_dirs, lambda a: isinstance(a, CDT), "CDT"):
        algo = policy.algorithm
        own = algo.target_return(policy.cost_limit)
        per_kappa = dict(zip(algo.target_thresholds.tolist(), algo.target_returns.tolist(), strict=True))
        print(f"<!-- {label}: reward target per κ {per_kappa} -->")
        for frac in args.returns_frac:
            for cost in args.costs:
                # evaluate() asks the algorithm for its episodic policy; pin both targets for this cell
                algo.episodic_policy = lambda _=None, a=algo, r=own * frac, c=cost: CDTEpisodes(a, r, c)
                res = evaluate(policy, episodes=args.episodes)
                reward, cost_mean = res["normalized_reward"], res["cost_mean"]
                print(f"| {label} | {own * frac:.2f} | {cost:g} | {reward:.3f} | {cost_mean:.2f} |", flush=True)


if __name__ == "__main__":
    main()
