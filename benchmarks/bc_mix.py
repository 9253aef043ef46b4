"""Why BC-All scores below the HalfCheetah reference mix's mean return: BC on subsets of the mix.

    MINARI_DATASETS_PATH=<root> python benchmarks/bc_mix.py [--steps 10000] [--episodes 5] [--threads 1]

Needs the recipe v1 reference build (commit 3c54902; recipe v2 is the fix this study led to). The v1 mix is
3 λ × 8 SAC checkpoints × 3 action-noise levels (0, 0.25, 0.5 of the half range) × 4 episodes, then 12
uniformly random episodes, in that order (saferl/data/sb3_recipe.py `_mixed_units`), so each episode's
behaviour follows from its index. For every subset: BC-All's defaults (256-256, batch 512) for ``--steps``
updates, evaluated on ``--episodes`` episodes; next to it the subset's own mean and median return. The
D4RL-style single-policy datasets of the same build (expert-v0, medium-v0) are the pipeline's control.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

SUBSETS = {
    "whole mix": lambda lam, ck, nz: np.ones_like(lam, bool),
    "no random episodes": lambda lam, ck, nz: lam >= 0,
    "λ = 0 only (all noise levels)": lambda lam, ck, nz: lam == 0,
    "noise 0.25 only": lambda lam, ck, nz: nz == 1,
    "noise 0.5 only": lambda lam, ck, nz: nz == 2,
    "checkpoints 3–8 (with noise)": lambda lam, ck, nz: ck >= 2,
    "last checkpoint of each λ (with noise)": lambda lam, ck, nz: ck == 7,
    "noise-free only": lambda lam, ck, nz: nz == 0,
    "noise-free, λ = 0": lambda lam, ck, nz: (nz == 0) & (lam == 0),
    # the candidate rollout plans for recipe v2
    "checkpoints 1–2 noise-free, 3–8 with noise, random episodes": lambda lam, ck, nz: (
        (lam < 0) | (ck >= 2) | (nz == 0)
    ),
    "checkpoints 3–8 with noise, random episodes": lambda lam, ck, nz: (lam < 0) | (ck >= 2),
    "checkpoints 1–2 noise-free, 3–8 with noise, no random (recipe v2)": lambda lam, ck, nz: (
        (lam >= 0) & ((ck >= 2) | (nz == 0))
    ),
}


def train_and_evaluate(data, task, steps: int, episodes: int) -> tuple[float, float]:
    from saferl.algos import AlgoContext, get_algorithm
    from saferl.evaluation import rollout

    cls = get_algorithm("bc_all")
    config = cls.make_config({"steps": steps})
    ctx = AlgoContext.for_task(task, data, task.default_cost_limit)
    torch.manual_seed(0)
    algo = cls(config, ctx)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        algo.update(algo.sample(data, config.batch_size, gen))
    algo.eval()
    stats = rollout(task.env_id, algo.act, episodes, seed=0)
    return float(stats.rewards.mean()), float(stats.costs.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from saferl.data import load
    from saferl.envs import get_task

    task = get_task("halfcheetah-velocity")
    mix = load(task.dataset_id)
    if mix.metadata.get("recipe_version") != 1:
        raise SystemExit(
            "bc_mix.py studies the recipe v1 mix (300 episodes ordered λ × checkpoint × noise level, then 12 "
            f"random ones); this build is recipe v{mix.metadata.get('recipe_version')}. Build v1 at commit 3c54902 "
            "(`git worktree add /tmp/v1 3c54902`, then `python -m saferl.collect env=halfcheetah-velocity "
            "budget=full` from there) into its own MINARI_DATASETS_PATH."
        )
    index = np.arange(mix.num_episodes)
    units = index < 288  # the SAC rollouts; the 12 random episodes follow
    lam = np.where(units, index // 96, -1)
    ck = np.where(units, (index % 96) // 12, -1)
    nz = np.where(units, (index % 12) // 4, -1)
    print(f"# BC-All ({args.steps} updates) on {task.dataset_id} subsets; {args.episodes} evaluation episodes")
    print("| data | episodes | data mean return | data median | BC return | BC cost |")
    print("|---|---|---|---|---|---|")
    rows = [(name, mix.select_episodes(torch.from_numpy(rule(lam, ck, nz)))) for name, rule in SUBSETS.items()]
    rows += [
        (f"{kind} (D4RL-style, one policy)", load(f"saferl/HalfCheetahVelocity/{kind}"))
        for kind in ("expert-v0", "medium-v0")
    ]
    for name, data in rows:
        returns = data.episode_rewards.numpy()
        reward, cost = train_and_evaluate(data, task, args.steps, args.episodes)
        print(
            f"| {name} | {data.num_episodes} | {returns.mean():.0f} | {np.median(returns):.0f} "
            f"| {reward:.0f} | {cost:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
