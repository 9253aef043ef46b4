"""Where does a 2-D run's evaluation cost come from? Per hazard, and, for COptiDICE, where its weights put the data.

    MINARI_DATASETS_PATH=<root> python benchmarks/hazard_costs.py RUN_DIR [RUN_DIR ...] [--episodes 20]

RUN_DIR is a finished run of any algorithm on a hazard-navigation task (point-robot, boat-robot). For each run
this rolls its policy out on the run's own evaluation episodes (its seed, hence the start states of its
``eval.json``) and prints the mean episode cost split by the hazard it is paid in, the mean episode length and
how many episodes ended at the goal. Beside it, the share of the run's dataset transitions that end inside each
hazard; for a COptiDICE run also that share under its learned weights w* (its trained ν and final λ on every
transition), the w*-weighted cost rate next to its threshold ĉ, and the share of w* on the transitions outside
every hazard of the episodes that cost more than κ (their approach to a hazard, which carries no cost itself;
BC-Safe gives these episodes no weight at all). Where w* takes the weight off a hazard and the policy still goes
there, the policy extraction fails, not the weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def shares(values: np.ndarray, masks: list[np.ndarray]) -> str:
    return " / ".join(f"{values[m].sum() / values.sum():.2%}" for m in masks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--episodes", type=int, default=20)
    args = ap.parse_args()

    import gymnasium as gym
    import torch
    import torch.nn.functional as F

    from saferl.algos.coptidice import COptiDICE
    from saferl.data import load
    from saferl.data.coverage import hazard_masks
    from saferl.evaluation import eval_episode_seed
    from saferl.runs import load_run

    print(
        "| run | eval cost per hazard | episode length | at goal | data in each hazard | w*-weighted "
        "| w*-weighted cost rate (ĉ) | w* on unsafe episodes outside the hazards (unweighted) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run_dir in args.run_dirs:
        algo, task, cfg, _ = load_run(run_dir)
        geometry = task.barrier.keywords.get("geometry") if task.barrier is not None else None
        if geometry is None:
            raise SystemExit(f"{run_dir} is a run on {task.name}, which has no hazards; use a 2-D navigation run")
        hazards = geometry.hazards

        env = gym.make(task.env_id)
        per_hazard, lengths, at_goal = np.zeros(len(hazards)), [], 0
        for i in range(args.episodes):
            obs, _ = env.reset(seed=eval_episode_seed(int(cfg["seed"]), i))
            steps = 0
            for _ in range(task.max_episode_steps):
                obs, _, terminated, truncated, info = env.step(algo.act(obs))
                steps += 1
                if info["cost"] > 0:  # charged to the hazard the agent is deepest inside
                    per_hazard[np.argmin([np.hypot(obs[0] - x, obs[1] - y) - r for x, y, r in hazards])] += info["cost"]
                if terminated or truncated:
                    break
            lengths.append(steps)
            at_goal += int(terminated)
        costs = " / ".join(f"{c / args.episodes:.2f}" for c in per_hazard)

        data = load(cfg["dataset"])
        inside = hazard_masks(data, hazards)
        ones = np.ones(data.num_transitions)
        weighted, rate, approach = "—", "—", "—"
        if isinstance(algo, COptiDICE):
            with torch.no_grad():
                _, _, w = algo._w(data.batch(torch.arange(data.num_transitions)), F.softplus(algo.lmbda_raw))
            w = w.cpu().numpy()
            weighted = shares(w, inside)
            c = data.costs.numpy() * algo.config.cost_scale
            rate = f"{(w * c).mean():.4f} ({algo.cost_threshold:.4f}; unweighted {c.mean():.4f})"
            unsafe = (data.episode_costs > float(cfg["cost_limit"])).numpy()[data.episode_index.numpy()]
            outside = unsafe & ~np.logical_or.reduce(inside)
            approach = f"{w[outside].sum() / w.sum():.1%} ({outside.mean():.1%})"
        label = f"{run_dir.parent.parent.name}/{run_dir.parent.name}/{run_dir.name}"
        print(
            f"| {label} | {costs} | {np.mean(lengths):.0f} | {at_goal}/{args.episodes} | {shares(ones, inside)} "
            f"| {weighted} | {rate} | {approach} |"
        )


if __name__ == "__main__":
    main()
