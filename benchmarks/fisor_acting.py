"""How much of a FISOR run's score comes from its actor and how much from the candidate selection?

    python benchmarks/fisor_acting.py RUN_DIR [RUN_DIR ...] [--episodes 20] [--samples 16 1]

FISOR acts by drawing N candidate actions from its diffusion actor and executing the one with the lowest
feasibility value Q_h (the authors' ``extract_method="minqc"``, N = 16). This re-evaluates trained runs with
other N on the run's own evaluation episodes (its seed, hence its start states): N = 1 is the actor alone, with
no selection. A low score at N = 1 means the actor itself has not learned the task; a score that falls from
N = 1 to N = 16 is the price of the selection, a cost that falls is what it buys. Prints one markdown row per
run and N.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--samples", type=int, nargs="+", default=[16, 1], help="the candidate counts N to evaluate")
    args = ap.parse_args()

    import torch
    from _subruns import trained_policies

    from saferl import evaluate
    from saferl.algos.fisor import FISOR
    from saferl.evaluation import threshold_key

    torch.set_num_threads(1)
    print("| run | N | normalized reward | cost | normalized cost at the run's κ |")
    print("|---|---|---|---|---|")
    for label, policy in trained_policies(args.run_dirs, lambda a: isinstance(a, FISOR), "FISOR"):
        algo = policy.algorithm
        for n in args.samples:
            algo.config = dataclasses.replace(algo.config, num_samples=n)
            res = evaluate(policy, episodes=args.episodes)
            limit = res["normalized_cost"][threshold_key(res["cost_limit"])]
            print(
                f"| {label} | {n} | {res['normalized_reward']:.3f} | {res['cost_mean']:.2f} | {limit:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
