"""Gradient updates/s of saferl against d3rlpy (IQL, TD3+BC, CQL, EDAC, SAC-N) and OSRL (BCQ-Lag, CPQ, CDT),
in the same run.

Settings: d3rlpy peers at 256-256 networks, batch 256; OSRL peers at OSRL's example-config sizes and batch
(benchmarks/_osrl_worker.py lists them; they are saferl's defaults for these algorithms). Obs 17, act 6, a
synthetic 100k-transition dataset (episodes of 1,000 steps, 10 % costly steps) already in memory, CPU. Every
configuration runs in a fresh process, one after the other (never two at once), so that they do not share
cores. saferl is timed as its training loop runs it (batch sampling + update); d3rlpy is timed both with its
own batch sampler and on pre-sampled batches ("update only"); OSRL on pre-sampled batches only (its loop
draws from a multi-process DataLoader), which can only favour it. Also printed: samples/s, matmul FLOPs per
update (torch's FlopCounterMode) and the fraction of the machine's measured fp32 GEMM peak that this reaches.
Optional saferl variants: `amp=bf16` (bf16 autocast) and `compile=true` (torch.compile of the update).

d3rlpy has no EDAC; its SAC with 10 critics (SAC-N) is the nearest peer and is labelled so.

Usage: python benchmarks/throughput.py [--seconds 8] [--threads 2] [--algos iql,...] [--variants fp32,bf16,compile]
           [--d3rlpy-python /tmp/d3rlpy-venv/bin/python] [--osrl-python /tmp/osrl-venv/bin/python]
   d3rlpy's venv: python3 -m venv /tmp/d3rlpy-venv && /tmp/d3rlpy-venv/bin/pip install torch==2.13.0 d3rlpy==2.8.1
   OSRL's venv:   python3 -m venv /tmp/osrl-venv && /tmp/osrl-venv/bin/pip install torch==2.13.0 "numpy<2"
                  gymnasium==0.29.1 pyyaml tqdm pyrallis scipy tensorboard
                  && /tmp/osrl-venv/bin/pip install --no-deps osrl-lib==0.1.0 dsrl==0.1.0 fast-safe-rl==0.1.0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Setting:
    library: str  # the peer's library: "d3rlpy" or "osrl"
    peer: str  # the peer's algorithm, as its worker names it
    batch: int
    fields: dict = field(default_factory=dict)  # saferl config fields (beyond the batch size)


# d3rlpy peers at the 256-256 / batch 256; OSRL peers at OSRL's example-config sizes, which are
# saferl's defaults for these algorithms (benchmarks/_osrl_worker.py lists them)
SETTINGS = {
    "iql": Setting("d3rlpy", "iql", 256, {"hidden": [256, 256]}),
    "td3bc": Setting("d3rlpy", "td3bc", 256, {"hidden": [256, 256]}),
    "cql": Setting("d3rlpy", "cql", 256, {"hidden": [256, 256]}),
    "edac": Setting("d3rlpy", "sac10", 256, {"hidden": [256, 256]}),
    "sac_n": Setting("d3rlpy", "sac10", 256, {"hidden": [256, 256]}),
    "bcq_lag": Setting("osrl", "bcq_lag", 512),
    "cpq": Setting("osrl", "cpq", 512),
    "cdt": Setting("osrl", "cdt", 2048),
}


def saferl_worker(algo: str, seconds: float, threads: int, amp: str, compile_: bool, extra: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from saferl.algos import AlgoContext, get_algorithm
    from saferl.data.offline import OfflineDataset

    n, obs_dim, act_dim = 100_000, 17, 6
    g = torch.Generator().manual_seed(0)
    data = OfflineDataset(
        observations=torch.randn(n, obs_dim, generator=g),
        actions=torch.rand(n, act_dim, generator=g) * 2 - 1,
        rewards=torch.randn(n, generator=g),
        costs=(torch.rand(n, generator=g) < 0.1).float(),  # CDT's cost head needs both labels
        next_observations=torch.randn(n, obs_dim, generator=g),
        terminals=torch.zeros(n),
        timeouts=torch.zeros(n),
        episode_starts=torch.arange(0, n + 1, 1000),
    )
    box = np.ones(act_dim, np.float32)  # synthetic data, no task: the context is spelled out
    ctx = AlgoContext(
        obs_dim=obs_dim,
        act_dim=act_dim,
        action_low=-box,
        action_high=box,
        cost_limit=10.0,
        max_episode_steps=1000,
        device=torch.device("cpu"),
    )
    cls = get_algorithm(algo)
    setting = SETTINGS[algo]
    agent = cls(cls.make_config({"batch_size": setting.batch, **setting.fields, **extra}), ctx)
    data = agent.prepare(data)
    update = torch.compile(agent.update) if compile_ else agent.update

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            return update(agent.sample(data, setting.batch, g))

    for _ in range(5):
        step()
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
        step()  # TD3+BC alternates critic-only and critic+actor steps
    flops = counter.get_total_flops() / 2
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        metrics = step()
        count += 1
    float(next(iter(metrics.values())))  # one sync at the end
    return {"updates_per_s": count / (time.perf_counter() - start), "flops_per_update": flops}


def gemm_peak(threads: int, seconds: float = 1.5) -> dict:
    import torch

    torch.set_num_threads(threads)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(256, 256, dtype=dtype), torch.randn(256, 256, dtype=dtype)
        for _ in range(20):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        out[str(dtype).split(".")[1]] = 2 * 256**3 * count / (time.perf_counter() - start) / 1e9
    return out


def run_json(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--d3rlpy-python", default="/tmp/d3rlpy-venv/bin/python")
    parser.add_argument("--osrl-python", default="/tmp/osrl-venv/bin/python")
    parser.add_argument("--algos", default=",".join(SETTINGS))
    parser.add_argument("--variants", default="fp32,bf16,compile")
    parser.add_argument("--worker", choices=["saferl", "peak"])
    parser.add_argument("--algo")
    parser.add_argument("--amp", default="none")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a saferl config field for every saferl row, e.g. --set micro_batch=2048 (CDT in one pass)",
    )
    args = parser.parse_args()
    if args.worker == "saferl":
        extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        print(json.dumps(saferl_worker(args.algo, args.seconds, args.threads, args.amp, args.compile, extra)))
        return
    if args.worker == "peak":
        print(json.dumps(gemm_peak(args.threads)))
        return

    me = [sys.executable, str(Path(__file__).resolve())]
    peak = run_json([*me, "--worker", "peak", "--threads", str(args.threads)])
    print(
        f"GEMM 256x256x256 peak with {args.threads} thread(s): fp32 {peak['float32']:.0f} GFLOP/s, "
        f"bf16 {peak['bfloat16']:.0f} GFLOP/s"
    )
    variants = args.variants.split(",")
    header = f"{'algo':<7} {'peer':<14} {'peer loop':>11} {'peer upd':>10}"
    for v in variants:
        header += f" {'saferl ' + v:>15} {'ratio':>6}"
    header += f" {'MFLOP/upd':>9} {'samples/s (fp32)':>16} {'% fp32 peak':>11}"
    print(header)
    results = {}
    for algo in args.algos.split(","):
        setting = SETTINGS[algo]
        if setting.library == "d3rlpy":
            worker = [args.d3rlpy_python, str(HERE / "_d3rlpy_worker.py"), setting.peer]
        else:
            worker = [args.osrl_python, str(HERE / "_osrl_worker.py"), setting.peer]
        peer = run_json([*worker, str(args.seconds), str(args.threads), str(setting.batch)])
        # OSRL has no sampler of its own in the timed loop (its DataLoader runs worker processes): it is
        # timed on pre-sampled batches only, which can only favour it; saferl includes its sampling
        peer_loop = peer.get("with_sampling", peer["update_only"])
        label = f"{setting.library} {setting.peer}"
        row = f"{algo:<7} {label:<14} {peer_loop:>11.3g} {peer['update_only']:>10.3g}"
        results[algo] = {setting.library: peer}
        for v in variants:
            cmd = [
                *me,
                "--worker",
                "saferl",
                "--algo",
                algo,
                "--seconds",
                str(args.seconds),
                "--threads",
                str(args.threads),
            ]
            if v == "bf16":
                cmd += ["--amp", "bf16"]
            if v == "compile":
                cmd += ["--compile"]
            cmd += [f"--set={item}" for item in args.set]
            try:
                r = run_json(cmd)
            except RuntimeError as err:  # e.g. torch.compile cannot trace an update: report it, go on
                results[algo][v] = {"error": str(err).splitlines()[-1]}
                row += f" {'failed':>15} {'':>6}"
                continue
            results[algo][v] = r
            row += f" {r['updates_per_s']:>15.3g} {r['updates_per_s'] / peer_loop:>5.2f}x"
        fp32 = results[algo].get("fp32")
        if fp32 is None or "error" in fp32:
            print(row, flush=True)
            continue
        gflops = fp32["flops_per_update"] * fp32["updates_per_s"] / 1e9
        mflop, samples = fp32["flops_per_update"] / 1e6, setting.batch * fp32["updates_per_s"]
        row += f" {mflop:>9.0f} {samples:>16,.0f} {100 * gflops / peak['float32']:>10.0f}%"
        print(row, flush=True)
    print("ratio = saferl updates/s (sampling + update) / peer updates/s")
    print("        (d3rlpy: its sampler + update; OSRL: update only, on batches sampled before the clock starts)")
    print(json.dumps({"peak": peak, "results": results}))


if __name__ == "__main__":
    main()
