"""FISOR speed on this machine: updates/s and action-selection latency, against BC-All measured in the same run.

    python benchmarks/fisor_speed.py [--seconds 5] [--threads 1]

Prints, for the CPU preset (``fisor_cpu``) and the authors' full-size configuration (``fisor``):

* updates/s of ``update`` on PointRobot batches (full size: batch 2048, i.e. 2 actor steps on 1024 rows +
  4 critic steps on 256 rows; CPU preset: batch 512), and the ratio to BC-All's updates/s;
* action-selection latency per env step at batch 1 (N = 16 candidates, T = 5 denoising steps, + one
  Q_h evaluation and the argmin), median over many calls, and the ratio to BC-All's ``act`` latency;
* the same latency per state at batch 32 (what the evaluation rollout uses).

The target for the CPU preset is ≤ 2 ms per env step at batch 1. Timings on a shared machine are noisy:
every number is the median of repeated windows, the BC-All baseline is re-measured alongside, and the
machine's load average is printed before and after (another process on the cores slows the tiny kernels).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch


def _ctx(data, task):
    from saferl.algos import AlgoContext

    return AlgoContext.for_task(task, data, task.default_cost_limit)


def _load() -> str:
    """The 1/5/15-minute load averages, to tell a busy machine's timings from an idle one's."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def updates_per_s(algo, data, batch_size: int, seconds: float, windows: int = 3) -> float:
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # warm-up (allocator, first-call overheads)
        algo.update(data.sample(batch_size, generator=g))
    rates = []
    for _ in range(windows):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / windows:
            algo.update(data.sample(batch_size, generator=g))
            n += 1
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def act_latency_ms(algo, obs: np.ndarray, calls: int = 200) -> float:
    algo.eval()  # as in evaluation rollouts (act() in train mode also switches every module's mode per call)
    for _ in range(10):
        algo.act(obs)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        algo.act(obs)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="timing window per update measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one process per core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start_load = _load()
    os.environ.setdefault("MINARI_DATASETS_PATH", os.path.join(tempfile.gettempdir(), "saferl-bench-minari"))

    from saferl.algos import get_algorithm
    from saferl.data import ensure, load
    from saferl.envs import get_task

    task = get_task("point-robot")
    ensure(task.dataset_id, progress=False)
    data = load(task.dataset_id)
    ctx = _ctx(data, task)
    torch.manual_seed(0)

    def build(name: str):
        cls = get_algorithm(name)
        cfg = cls.make_config({})
        algo = cls(cfg, ctx)
        return algo, algo.prepare(data), cfg.batch_size

    bc, bc_data, bc_batch = build("bc_all")
    bc_ups = updates_per_s(bc, bc_data, bc_batch, args.seconds)
    obs1, obs32 = data.observations[:1].numpy(), data.observations[:32].numpy()
    bc_lat1 = act_latency_ms(bc, obs1)

    print(f"torch {torch.__version__}, {args.threads} thread(s), PointRobot (obs 2, act 2), {start_load} at start")
    print(f"baseline bc_all: {bc_ups:.1f} updates/s (batch {bc_batch}), act {bc_lat1:.3f} ms at batch 1\n")
    header = f"{'config':<10} {'batch':>5} {'updates/s':>10} {'× bc_all':>9} {'act ms (b=1)':>13} {'× bc_all':>9}"
    print(header + f" {'act ms/state (b=32)':>20}")
    print("-" * (len(header) + 21))
    for name in ("fisor_cpu", "fisor"):
        algo, train, batch = build(name)
        ups = updates_per_s(algo, train, batch, args.seconds)
        lat1 = act_latency_ms(algo, obs1)
        lat32 = act_latency_ms(algo, obs32, calls=50) / 32
        cfg = algo.config
        print(
            f"{name:<10} {batch:>5} {ups:>10.2f} {ups / bc_ups:>9.3f} {lat1:>13.2f} {lat1 / bc_lat1:>9.1f}"
            f" {lat32:>20.3f}"
        )
        shape = f"actor {cfg.actor_hidden}×{cfg.actor_blocks} blocks, N={cfg.num_samples}, T={cfg.diffusion_steps}"
        print(f"{'':<10} ({shape})")
    print(f"\ntarget: fisor_cpu act latency ≤ 2 ms per env step at batch 1 ({_load()} at the end)")


if __name__ == "__main__":
    main()
