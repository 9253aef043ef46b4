"""K seeds as one batched model (``seeds=[…]``) against K single-seed models, in the same run.

For every algorithm: its default run's configuration (``preset=cpu``, composed as `python -m saferl.run`
composes it) on the PointRobot reference data, K members. Two ways to do the same K × n updates, each in a
fresh process, one after the other, single-threaded (as the suite runner runs its workers):

* ``single``: K models built with seeds 0…K−1, each trained for n updates as a plain run trains (sample +
  update), one after the other;
* ``stacked``: the same K models as one `MemberStack` (`saferl.nn.members`), n batched updates.

Printed per algorithm: updates/s of one model alone, seed-updates/s of the stack (K × its updates/s), and their
ratio (> 1: the batched model trains the K seeds faster than K single runs in one process).

With ``--hidden W`` every network width is W instead of the preset's (where the per-call overhead that
batching can save is a larger share of an update).

``--baseline DIR`` answers another question: is a plain single-seed update as fast as before the member-stack
hooks (`saferl.nn.draws`, the stack checks in `optimize`/`soft_update`) went in? It times the plain update with
saferl imported from DIR (a checkout of an earlier commit: ``git worktree add /tmp/before <commit>``) and from
this checkout, alternately, three processes each, and prints the ratio of the medians.

``--profile ALGO`` prints where the time goes: torch profiler self CPU time per op group over 10 updates of the
K single models against 10 updates of the stack, and the cost of one evaluation (20 PointRobot episodes) and
the share of it spent in the policy's calls (what a batched evaluation of the K policies could merge).

Usage: python benchmarks/seeds.py --profile cql [--k 5]
       python benchmarks/seeds.py [--k 5] [--seconds 6] [--algos iql,td3bc] [--hidden 64] [--device cpu]
                                  [--threads 1] [--baseline /tmp/before]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OFFLINE = "bc_all,bc_safe,iql,td3bc,cql,sac_n,edac,bcq_lag,cpq,coptidice,cdt,fisor,vocbf"


def worker(name: str, mode: str, k: int, seconds: float, device: str, threads: int, hidden: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    from presets import compose_algo

    from saferl.algos import AlgoContext, get_algorithm
    from saferl.data import ensure, load
    from saferl.envs import get_task
    from saferl.runs.trainer import seed_everything

    task = get_task("point-robot")
    ensure(task.dataset_id, progress=False)
    data = load(task.dataset_id, device=device)
    opts = compose_algo(name, "cpu")
    opts.pop("name")
    if hidden:
        for key in [key for key in opts if key.endswith("hidden")]:
            opts[key] = hidden if isinstance(opts[key], int) else [hidden] * len(opts[key])
        if "embedding_dim" in opts:  # CDT
            opts["embedding_dim"] = hidden
    cls = get_algorithm(name)
    config = cls.make_config(opts)
    ctx = AlgoContext.for_task(task, data, task.default_cost_limit, device)
    algos, train, gens, states = [], [], [], []
    for seed in range(k):
        seed_everything(seed)
        algos.append(cls(config, ctx))
        train.append(algos[-1].prepare(data))
        gens.append(torch.Generator(device=device).manual_seed(seed))
        states.append((torch.get_rng_state(), torch.cuda.get_rng_state() if "cuda" in device else None))

    def sync(metrics: dict) -> None:
        float(next(iter(metrics.values())).sum())

    def timed(step, min_seconds: float) -> tuple[int, float]:
        for _ in range(3):  # warm-up
            metrics = step()
        sync(metrics)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            metrics = step()
            count += 1
        sync(metrics)
        return count, time.perf_counter() - start

    if mode == "profile":
        return profile(algos, train, gens, states, config.batch_size, task)
    if mode == "plain":  # one model, the plain update (for --baseline)
        algo, data_k, gen = algos[0], train[0], gens[0]
        count, spent = timed(lambda: algo.update(algo.sample(data_k, config.batch_size, gen)), seconds)
        return {"seed_updates_per_s": count / spent}
    if mode == "single":
        count, spent = 0, 0.0
        for algo, data_k, gen in zip(algos, train, gens, strict=True):
            c, s = timed(lambda a=algo, d=data_k, g=gen: a.update(a.sample(d, config.batch_size, g)), seconds / k)
            count, spent = count + c, spent + s
        return {"seed_updates_per_s": count / spent}
    from saferl.nn.members import MemberStack  # not in a --baseline checkout: the plain mode never gets here

    stack = MemberStack(algos, states)
    count, spent = timed(
        lambda: stack.update([a.sample(d, config.batch_size, g) for a, d, g in zip(algos, train, gens, strict=True)]),
        seconds,
    )
    return {"seed_updates_per_s": k * count / spent}


GROUPS = {
    "GEMMs (bmm, baddbmm, addmm, mm)": ("aten::bmm", "aten::baddbmm", "aten::addmm", "aten::mm"),
    "ReLU backward (threshold_backward)": ("aten::threshold_backward",),
    "ReLU (clamp_min)": ("aten::clamp_min",),
    "add": ("aten::add",),
}


def profile(algos: list, train: list, gens: list, states: list, batch_size: int, task) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from saferl.evaluation import rollout
    from saferl.nn.members import MemberStack

    stack = MemberStack(algos, states)

    def singles() -> None:  # as K runs train: each model its 10 updates, one model after the other
        for a, d, g in zip(algos, train, gens, strict=True):
            for _ in range(10):
                a.update(a.sample(d, batch_size, g))

    def stacked() -> None:
        for _ in range(10):
            stack.update([a.sample(d, batch_size, g) for a, d, g in zip(algos, train, gens, strict=True)])

    out: dict = {}
    for label, fn in (("singles", singles), ("stack", stacked)):
        fn()  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        out[label] = {name: sum(self_us.get(op, 0.0) for op in ops) / 1e6 for name, ops in GROUPS.items()}
        out[label]["total"] = sum(self_us.values()) / 1e6
    policy, spent = algos[0], [0.0]

    def timed_act(obs):
        t0 = time.perf_counter()
        actions = policy.act(obs)
        spent[0] += time.perf_counter() - t0
        return actions

    t0 = time.perf_counter()
    rollout(task.env_id, timed_act, 20, seed=0)
    out["eval"] = {"seconds": time.perf_counter() - t0, "policy_seconds": spent[0]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--algos", default=OFFLINE)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=0)
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--profile", default=None, metavar="ALGO")
    parser.add_argument("--worker", nargs=2, metavar=("ALGO", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.k, args.seconds, args.device, args.threads, args.hidden)))
        return

    import torch

    def run_worker(name: str, mode: str, k: int, pythonpath: Path | None = None) -> dict | None:
        cmd = [sys.executable, __file__, "--worker", name, mode, "--k", str(k), "--seconds", str(args.seconds)]
        cmd += ["--device", args.device, "--threads", str(args.threads), "--hidden", str(args.hidden)]
        env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"<!-- {name} {mode} failed: {proc.stderr.strip().splitlines()[-1]} -->")
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def measure(name: str, mode: str, k: int, pythonpath: Path | None = None) -> float | None:
        out = run_worker(name, mode, k, pythonpath)
        return None if out is None else out["seed_updates_per_s"]

    if args.profile:
        out = run_worker(args.profile, "profile", args.k)
        if out is None:
            return
        print(f"{args.profile}, preset=cpu, K = {args.k}, 10 updates, torch profiler, self CPU time\n")
        print(f"| op | K single models | one {args.k}-member stack |")
        print("|---|---|---|")
        for name in [*GROUPS, "total"]:
            print(f"| {name} | {out['singles'][name]:.2f} s | {out['stack'][name]:.2f} s |")
        ev = out["eval"]
        print(
            f"\none evaluation, 20 PointRobot episodes: {ev['seconds']:.2f} s, of which policy calls "
            f"{ev['policy_seconds']:.2f} s ({ev['policy_seconds'] / ev['seconds']:.0%})"
        )
        return

    if args.baseline:
        print(f"plain single-seed updates/s, preset=cpu sizes, {args.threads} thread(s); baseline: saferl from")
        print(f"{args.baseline}; median of 3 fresh processes each, run alternately\n")
        print("| algorithm | baseline updates/s | this checkout | ratio |")
        print("|---|---|---|---|")
        for name in args.algos.split(","):
            runs: dict[str, list[float]] = {"base": [], "this": []}
            for _ in range(3):
                for side, path in (("base", args.baseline), ("this", HERE.parent)):
                    value = measure(name, "plain", 1, path)
                    if value is not None:
                        runs[side].append(value)
            base, this = (statistics.median(v) if v else float("nan") for v in runs.values())
            print(f"| {name} | {base:.1f} | {this:.1f} | {this / base:.2f}× |", flush=True)
        return

    sizes = f"every width {args.hidden}" if args.hidden else "preset=cpu sizes"
    print(f"K = {args.k} seeds, {sizes}, PointRobot data, {args.threads} thread(s), device {args.device}, ")
    print(f"torch {torch.__version__}; each cell a fresh process of ~{args.seconds:.0f} s\n")
    print("| algorithm | single: updates/s (one model) | stacked: seed-updates/s (K × updates/s) | ratio |")
    print("|---|---|---|---|")
    for name in args.algos.split(","):
        single, stacked = measure(name, "single", args.k), measure(name, "stacked", args.k)
        ratio = f"{stacked / single:.2f}×" if single and stacked else "—"
        cells = [f"{v:.1f}" if v else "failed" for v in (single, stacked)]
        print(f"| {name} | {cells[0]} | {cells[1]} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
