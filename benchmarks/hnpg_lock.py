"""HNPG against its on-policy baseline (NPG/TRPO without offline data) on the continuous combination lock.

    python benchmarks/hnpg_lock.py [--horizons 5] [--seeds 0 1 2] [--iterations 40] [--rollout-steps 1000]
    python benchmarks/hnpg_lock.py --horizons 10 --iterations 70     # the longer lock, ~7 min

The paper's experiment (Zhou et al., ICLR 2024, Fig. 2), cut to a CPU budget: for every horizon and seed, HNPG
(``hybrid=true``, with the lock's ε-greedy expert data, ε = 1/H, 1 000 episodes built by the task's recipe for
that horizon and seed) and NPG (``hybrid=false``, no offline data) run through `saferl.online.OnlineLoop` with
the authors' defaults (1 000 env steps per iteration). After every iteration the sampled policy plays 30
evaluation episodes (the authors' ``evaluate``); success = the episode opened the lock (return 1). The paper's
stopping rule counts the env steps until the moving average of the success probability exceeds 0.5; here the
moving average is over the last 5 evaluations (150 episodes). A run that never gets there within
``--iterations`` is reported as "not reached". Also printed: the final moving-average success and the success
of the mean action over 100 episodes.

Prints one Markdown table (per run) and a summary per method; writes the learning curves to
``benchmarks/results/o2o/hnpg_lock_H<horizons>.png`` and the raw curves to a ``.json`` of the same name. One
torch thread; the default command (H = 5, 3 seeds, 40 iterations, both methods) takes about 2.5 minutes on one
core, the H = 10 one about 7. A random policy opens the lock with probability 10^-H.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from saferl.algos import AlgoContext, get_algorithm
from saferl.data.recipes import lock_dataset
from saferl.envs import get_task
from saferl.envs.comb_lock import observation_dim
from saferl.evaluation import rollout
from saferl.online import OnlineLoop

LOCK = "saferl/CombinationLock-v0"
OUT = Path(__file__).resolve().parent / "results" / "o2o"
METHODS = {"HNPG": True, "NPG (no offline data)": False}
WINDOW = 5  # evaluations in the moving average of the stopping rule


def lock_context(horizon: int) -> AlgoContext:
    env = gym.make(LOCK, horizon=horizon)
    ctx = AlgoContext.for_task(get_task("combination-lock"), env, cost_limit=0.0)
    env.close()
    assert ctx.obs_dim == observation_dim(horizon)
    return dataclasses.replace(ctx, max_episode_steps=horizon)  # the lock's horizon, not the registered default


def run(horizon: int, hybrid: bool, seed: int, iterations: int, rollout_steps: int, eval_episodes: int) -> dict:
    torch.manual_seed(seed)
    env_kwargs = {"horizon": horizon}
    cls = get_algorithm("hnpg")
    algo = cls(cls.make_config({"hybrid": hybrid, "rollout_steps": rollout_steps}), lock_context(horizon))
    offline = lock_dataset(horizon, episodes=1000, seed=seed) if hybrid else None
    loop = OnlineLoop(algo, LOCK, offline, seed=seed, num_envs=16, env_kwargs=env_kwargs)
    steps, success, reached = [], [], None
    start = time.perf_counter()
    for it in range(iterations):
        loop.step()
        stats = rollout(LOCK, algo.episodic_policy(deterministic=False), eval_episodes, seed=it, env_kwargs=env_kwargs)
        steps.append(loop.env_steps)
        success.append(float(np.mean(stats.rewards >= 1.0)))
        if reached is None and np.mean(success[-WINDOW:]) > 0.5:
            reached = loop.env_steps
    wall = time.perf_counter() - start
    final_mean = rollout(LOCK, algo.episodic_policy(deterministic=True), 100, seed=10_000, env_kwargs=env_kwargs)
    return {
        "horizon": horizon,
        "hybrid": hybrid,
        "seed": seed,
        "env_steps": steps,
        "success": success,
        "reached": reached,
        "final_success": float(np.mean(success[-WINDOW:])),
        "final_success_mean_action": float(np.mean(final_mean.rewards >= 1.0)),
        "wall_s": wall,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizons = sorted({r["horizon"] for r in results})
    fig, axes = plt.subplots(1, len(horizons), figsize=(5.5 * len(horizons), 4), dpi=120, squeeze=False)
    colors = dict(zip(METHODS, ("tab:blue", "tab:gray"), strict=True))
    for ax, horizon in zip(axes[0], horizons, strict=True):
        for name, hybrid in METHODS.items():
            runs = [r for r in results if r["horizon"] == horizon and r["hybrid"] == hybrid]
            if not runs:
                continue
            for i, r in enumerate(runs):
                smooth = [np.mean(r["success"][max(0, k - WINDOW + 1) : k + 1]) for k in range(len(r["success"]))]
                ax.plot(r["env_steps"], smooth, color=colors[name], alpha=0.8, label=name if i == 0 else None)
        ax.axhline(0.5, color="crimson", lw=0.8, ls="--")
        seeds = len({r["seed"] for r in results if r["horizon"] == horizon})
        ax.set_title(f"combination lock, H = {horizon} ({seeds} seeds)", fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"success (moving average of {WINDOW} evaluations)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizons", type=int, nargs="+", default=[5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--rollout-steps", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)

    results = []
    print(
        "| H | method | seed | env steps to success > 0.5 | final success (sampled) "
        "| final success (mean action) | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for horizon in args.horizons:
        for name, hybrid in METHODS.items():
            for seed in args.seeds:
                r = run(horizon, hybrid, seed, args.iterations, args.rollout_steps, args.eval_episodes)
                results.append(r)
                reached = f"{r['reached']:,}" if r["reached"] is not None else f"not reached in {r['env_steps'][-1]:,}"
                print(
                    f"| {horizon} | {name} | {seed} | {reached} | {r['final_success']:.2f} | "
                    f"{r['final_success_mean_action']:.2f} | {r['wall_s']:.0f} |",
                    flush=True,
                )

    print("\n| H | method | runs reaching success > 0.5 | median env steps (reached runs) | final success (mean) |")
    print("|---|---|---|---|---|")
    for horizon in args.horizons:
        for name, hybrid in METHODS.items():
            runs = [r for r in results if r["horizon"] == horizon and r["hybrid"] == hybrid]
            hit = [r["reached"] for r in runs if r["reached"] is not None]
            median = f"{int(np.median(hit)):,}" if hit else "not reached within budget"
            final = np.mean([r["final_success"] for r in runs])
            print(f"| {horizon} | {name} | {len(hit)}/{len(runs)} | {median} | {final:.2f} |")

    stem = "hnpg_lock_H" + "-".join(str(h) for h in args.horizons)
    png = args.out / f"{stem}.png"
    plot(results, png)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    print(f"\nlearning curves: {png}")


if __name__ == "__main__":
    main()
