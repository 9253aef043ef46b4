"""Single-env steps/s of every saferl task (target: > 20,000), with MuJoCo HalfCheetah-v5 measured in the
same run as a reference point.

Usage: python benchmarks/env_speed.py [--steps 200000]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import saferl  # noqa: F401  (registers the tasks)
from saferl.envs import TASKS

TARGET = 20_000


def steps_per_second(env: gym.Env, steps: int) -> float:
    rng = np.random.default_rng(0)
    actions = rng.uniform(env.action_space.low, env.action_space.high, size=(1024, *env.action_space.shape))
    actions = actions.astype(env.action_space.dtype)
    env.reset(seed=0)
    start = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[i % 1024])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200_000)
    args = parser.parse_args()
    reference = steps_per_second(gym.make("HalfCheetah-v5"), args.steps // 4)
    print(f"{'env':<28} {'gym.make steps/s':>17} {'unwrapped steps/s':>18} {'vs target':>10} {'vs HalfCheetah':>15}")
    for task in TASKS.values():
        made = steps_per_second(gym.make(task.env_id), args.steps)
        raw = steps_per_second(gym.make(task.env_id).unwrapped, args.steps)
        print(f"{task.env_id:<28} {made:>17,.0f} {raw:>18,.0f} {made / TARGET:>9.1f}x {made / reference:>14.1f}x")
    print(f"{'HalfCheetah-v5 (reference)':<28} {reference:>17,.0f}")


if __name__ == "__main__":
    main()
