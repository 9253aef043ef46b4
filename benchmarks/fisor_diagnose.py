"""Why is a FISOR run unsafe? Data coverage of every hazard, the learned feasible region, and where the
evaluation episodes first pick up cost.

    python benchmarks/fisor_diagnose.py RUN_DIR [--episodes 20]

RUN_DIR is a finished (or checkpointed) ``fisor``/``fisor_cpu`` run on a 2-D navigation task. Prints

1. per hazard: dataset transitions that end inside it and how many of them carry a cost (an offline
   method can only learn about hazards that the data visits);
2. a map of the arena: ``#`` hazard, ``+`` V_h > 0 (infeasible), ``.`` V_h ≤ 0 (feasible), ``G`` goal, with
   the dataset's state density beside it;
3. for each evaluation episode (the run's seed, same start states as ``eval.json``): return, cost, the
   first step with a cost, the position just before it, the hazard it entered, V_h there, and how many
   dataset states lie within 0.15 of that position.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()

    import gymnasium as gym

    from saferl.data import load
    from saferl.data.coverage import hazard_coverage
    from saferl.evaluation import eval_episode_seed
    from saferl.runs import load_run

    algo, task, cfg, step = load_run(args.run_dir)
    geo = task.barrier.keywords["geometry"]
    data = load(cfg["dataset"])
    obs = data.observations.numpy()
    print(f"{cfg['algo']['name']} on {task.name}, seed {cfg['seed']}, checkpoint at step {step}")
    print(f"dataset {cfg['dataset']}: {data.num_transitions} transitions, {data.num_episodes} episodes\n")

    print("1. data coverage of each hazard (transitions ending inside / with cost > 0 / share of episodes)")
    for k, cov in enumerate(hazard_coverage(data, geo.hazards)):
        (cx, cy), r = cov.center, cov.radius
        print(
            f"   hazard {k} at ({cx:g}, {cy:g}), r={r:g}: {cov.transitions} / {cov.costly_transitions}"
            f" / {cov.episode_fraction:.1%}"
        )

    print("\n2. learned feasibility (left: # hazard, + V_h>0, . V_h<=0, G goal) | dataset density (right)")
    (lx, ly), (hx, hy) = geo.arena_low, geo.arena_high
    nx, ny = 41, 21
    xs, ys = np.linspace(lx, hx, nx), np.linspace(hy, ly, ny)
    dx, dy = (hx - lx) / (nx - 1), (hy - ly) / (ny - 1)
    grid = torch.tensor([[x, y] for y in ys for x in xs], dtype=torch.float32)
    with torch.no_grad():
        vh = algo.safe_value(grid).view(ny, nx).numpy()
    hist, _, _ = np.histogram2d(
        obs[:, 0],
        obs[:, 1],
        bins=[np.append(xs - dx / 2, xs[-1] + dx / 2), np.append(ys[::-1] - dy / 2, ys[0] + dy / 2)],
    )
    for j, y in enumerate(ys):
        left, right = "", ""
        for i, x in enumerate(xs):
            hazard = any(np.hypot(x - cx, y - cy) < r for cx, cy, r in geo.hazards)
            goal = np.hypot(x - geo.goal[0], y - geo.goal[1]) < geo.goal_radius
            left += "G" if goal else "#" if hazard else "+" if vh[j, i] > 0 else "."
            n = hist[i, ny - 1 - j]
            right += " " if n == 0 else "." if n < 10 else ":" if n < 100 else "#"
        print(f"   {left}   {right}")

    print(f"\n3. evaluation episodes (seed {cfg['seed']}): first cost")
    env = gym.make(task.env_id)
    rewards, ep_costs = [], []
    for i in range(args.episodes):
        o, _ = env.reset(seed=eval_episode_seed(int(cfg["seed"]), i))
        total_r, total_c, first = 0.0, 0.0, None
        for t in range(task.max_episode_steps):
            before = o
            o, r, terminated, truncated, info = env.step(algo.act(o))
            total_r += float(r)
            total_c += float(info["cost"])
            if info["cost"] > 0 and first is None:
                with torch.no_grad():
                    v = float(algo.safe_value(torch.as_tensor(before[None])))
                hz = int(np.argmin([np.hypot(o[0] - cx, o[1] - cy) - r for cx, cy, r in geo.hazards]))
                near = int((np.hypot(obs[:, 0] - before[0], obs[:, 1] - before[1]) < 0.15).sum())
                first = (
                    f"t={t} at ({before[0]:.2f}, {before[1]:.2f}) → hazard {hz}, V_h={v:.2f}, {near} data states near"
                )
            if terminated or truncated:
                break
        rewards.append(total_r)
        ep_costs.append(total_c)
        print(f"   ep {i:2d}: return {total_r:6.2f}, cost {total_c:4.0f}" + (f", first cost {first}" if first else ""))
    print(f"   mean return {np.mean(rewards):.2f}, mean cost {np.mean(ep_costs):.2f}")


if __name__ == "__main__":
    main()
