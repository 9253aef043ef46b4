"""Time loading a 1M-transition Minari dataset into torch tensors (target: <= 5 s on 2 CPU cores).

Two dataset shapes, both 1,000,000 transitions with costs in infos, written with Minari's own API:
  velocity-shaped: 1,000 episodes x 1,000 steps, obs 17, act 6 (DSRL/D4RL MuJoCo layout)
  point-shaped:    5,000 episodes x   200 steps, obs 2,  act 2 (PointRobot layout, many short episodes)

For each it times, in the same process:
  minari      Minari's episode iterator + numpy concatenation (the peer baseline)
  saferl cold saferl.data.load with no cache: checksum + low-level HDF5 reader + tensors, writes the cache
  saferl warm saferl.data.load again: checksum + cached arrays + tensors

Usage: python benchmarks/load_dataset.py [--transitions 1000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def make_dataset(dataset_id: str, episodes: int, steps: int, obs_dim: int, act_dim: int, env_id: str) -> Path:
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    from saferl.data import minari_io

    rng = np.random.default_rng(0)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=rng.standard_normal((steps + 1, obs_dim)).astype(np.float32),
            actions=rng.uniform(-1, 1, (steps, act_dim)).astype(np.float32),
            rewards=rng.standard_normal(steps).tolist(),
            terminations=[False] * steps,
            truncations=[False] * (steps - 1) + [True],
            infos={"cost": (rng.random(steps + 1) < 0.1).astype(np.float64)},
        )
        for i in range(episodes)
    ]
    spec = gym.spec(env_id)
    return minari_io.write_dataset(dataset_id, buffers, spec.id, {"recipe": "benchmark"}, "load benchmark")


def time_minari(path: Path) -> float:

    from saferl.data import reader

    start = time.perf_counter()
    episodes = reader._episodes_minari(path)
    reader._flatten(path, episodes)
    return time.perf_counter() - start


def time_saferl(dataset_id: str) -> tuple[float, int]:
    from saferl.data import load

    start = time.perf_counter()
    data = load(dataset_id)
    return time.perf_counter() - start, data.num_transitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=1_000_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="saferl-loadbench-"))
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    import saferl  # noqa: F401  (registers envs)

    shapes = [
        ("velocity-shaped", "bench/velocity/load-v0", 1000, 17, 6, "HalfCheetah-v5"),
        ("point-shaped", "bench/point/load-v0", 200, 2, 2, "saferl/PointRobot-v0"),
    ]
    print(
        f"{'dataset':<16} {'episodes':>8} {'transitions':>11} {'write s':>8} {'minari s':>9} "
        f"{'cold s':>7} {'warm s':>7} {'minari/cold':>11} {'minari/warm':>11} {'target':>7}"
    )
    try:
        for label, dataset_id, steps, obs_dim, act_dim, env_id in shapes:
            episodes = args.transitions // steps
            t0 = time.perf_counter()
            path = make_dataset(dataset_id, episodes, steps, obs_dim, act_dim, env_id)
            write_s = time.perf_counter() - t0
            minari_s = time_minari(path)
            cold_s, n = time_saferl(dataset_id)
            warm_s, _ = time_saferl(dataset_id)
            verdict = "met" if max(cold_s, warm_s) <= 5.0 else ("warm met" if warm_s <= 5.0 else "MISSED")
            print(
                f"{label:<16} {episodes:>8} {n:>11} {write_s:>8.1f} {minari_s:>9.2f} {cold_s:>7.2f} "
                f"{warm_s:>7.2f} {minari_s / cold_s:>10.1f}x {minari_s / warm_s:>10.1f}x {verdict:>7}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
