"""FISOR against BC-All and BC-Safe on PointRobot and BoatRobot: DSRL-normalised reward and cost at each
cost threshold (5, 10, 20), mean ± std over seeds, as a Markdown table and a reward–cost plot.

    python benchmarks/fisor_benchmark.py [--seeds 0 1 2] [--jobs 2] [--fisor fisor_cpu] [--fisor-steps N]

Every run goes through ``saferl.train.run_experiment`` (the CLI's code path) with ``threads=1``; ``--jobs``
runs that many in parallel (one single-threaded process per core, the suite runner's default). Runs land
in ``--runs-root`` (default ``runs/fisor-benchmark``); a run whose ``eval.json`` exists is read, not
redone, so an interrupted benchmark continues where it stopped.

Which runs: FISOR and BC-All do not use the cost limit during training (FISOR's HJ critic sees only
whether a step had a cost), so one run per seed is evaluated at every threshold. BC-Safe filters
episodes by ``cost_limit``, so it is trained once per threshold.

Writes ``benchmarks/fisor_table.md``, ``benchmarks/fisor_reward_cost.png`` and
``benchmarks/fisor_results.json`` (every run's ``eval.json``), and prints the wall time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONF = HERE.parent / "saferl" / "conf"
TASKS = ("point-robot", "boat-robot")
THRESHOLDS = (5.0, 10.0, 20.0)


def _run_one(job: dict) -> dict:
    """Worker: one training run (in its own process, one torch thread)."""
    from hydra import compose, initialize_config_dir

    from saferl.train import run_experiment

    run_dir = Path(job["run_dir"])
    done = run_dir / "eval.json"
    if done.is_file():
        return {**json.loads(done.read_text()), "reused": True, "job": job}
    overrides = [
        f"algo={job['algo']}",
        f"env={job['env']}",
        f"seed={job['seed']}",
        f"cost_limit={job['cost_limit']}",
        f"run_dir={run_dir}",
        "threads=1",
        "progress=false",
        "tensorboard=false",
        f"eval_episodes={job['eval_episodes']}",
        *job["extra"],
    ]
    t0 = time.perf_counter()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    result = run_experiment(cfg)
    return {**result, "reused": False, "job": job, "process_wall_s": time.perf_counter() - t0}


def plan(args) -> list[dict]:
    jobs = []
    root = Path(args.runs_root)
    for env in TASKS:  # FISOR first: the longest runs start first
        for seed in args.seeds:
            extra = [f"steps={args.fisor_steps}"] if args.fisor_steps else []
            jobs.append(_job(root, args.fisor, env, seed, 10.0, args, extra))
    for env in TASKS:
        for seed in args.seeds:
            jobs.append(_job(root, "bc_all", env, seed, 10.0, args, []))
            for kappa in THRESHOLDS:
                jobs.append(_job(root, "bc_safe", env, seed, kappa, args, []))
    return jobs


def _job(root: Path, algo: str, env: str, seed: int, cost_limit: float, args, extra: list[str]) -> dict:
    tag = f"k{cost_limit:g}" if algo == "bc_safe" else "all"
    return {
        "algo": algo,
        "env": env,
        "seed": seed,
        "cost_limit": cost_limit,
        "eval_episodes": args.eval_episodes,
        "extra": extra,
        "run_dir": str(root / env / algo / tag / f"seed{seed}"),
    }


def _fmt(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def summarise(results: list[dict], fisor: str) -> tuple[str, dict]:
    """Rows (task, algo, κ) → normalised reward / cost over seeds; a Markdown table."""
    rows: dict[tuple[str, str, float], dict[str, list[float]]] = {}
    for r in results:
        job = r["job"]
        kappas = [job["cost_limit"]] if job["algo"] == "bc_safe" else THRESHOLDS
        for kappa in kappas:
            key = (job["env"], job["algo"], kappa)
            row = rows.setdefault(key, {"reward": [], "cost": []})
            row["reward"].append(r["normalized_reward"])
            row["cost"].append(r["normalized_cost"][f"{kappa:g}"])
    lines = [
        "| task | algorithm | κ | normalized reward | normalized cost | safe (mean ≤ 1) | seeds safe |",
        "|---|---|---|---|---|---|---|",
    ]
    order = [fisor, "bc_all", "bc_safe"]
    for env in TASKS:
        for algo in order:
            for kappa in THRESHOLDS:
                row = rows.get((env, algo, kappa))
                if row is None:
                    continue
                mean_cost = float(np.mean(row["cost"]))
                safe = "yes" if mean_cost <= 1.0 else "**NO**"
                n_safe = sum(c <= 1.0 for c in row["cost"])
                lines.append(
                    f"| {env} | {algo} | {kappa:g} | {_fmt(row['reward'])} | {_fmt(row['cost'])} | {safe} | "
                    f"{n_safe}/{len(row['cost'])} |"
                )
    return "\n".join(lines) + "\n", rows


def plot(rows: dict, fisor: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {fisor: "tab:green", "bc_all": "tab:red", "bc_safe": "tab:blue"}
    markers = {5.0: "v", 10.0: "o", 20.0: "^"}
    fig, axes = plt.subplots(1, len(TASKS), figsize=(11, 4.3), dpi=120)
    for ax, env in zip(axes, TASKS, strict=True):
        for (task, algo, kappa), row in sorted(rows.items()):
            if task != env:
                continue
            c, r = np.asarray(row["cost"]), np.asarray(row["reward"])
            ax.errorbar(
                c.mean(),
                r.mean(),
                xerr=c.std(),
                yerr=r.std(),
                fmt=markers[kappa],
                color=colors.get(algo, "gray"),
                ms=7,
                capsize=3,
                label=f"{algo} κ={kappa:g}",
            )
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("normalized cost (≤ 1 is safe)")
        ax.set_ylabel("normalized reward")
        ax.set_title(env)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="parallel single-threaded runs")
    parser.add_argument("--fisor", default="fisor_cpu", help="fisor_cpu (CPU preset) or fisor (full size)")
    parser.add_argument("--fisor-steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--runs-root", default="runs/fisor-benchmark")
    parser.add_argument("--out", default=str(HERE), help="where the table, plot and JSON go")
    args = parser.parse_args()
    os.environ.setdefault("MINARI_DATASETS_PATH", os.path.join(tempfile.gettempdir(), "saferl-bench-minari"))

    from saferl.data import ensure
    from saferl.envs import get_task

    for env in TASKS:  # build the reference datasets once, before the workers race for them
        ensure(get_task(env).dataset_id, progress=False)

    jobs = plan(args)
    start = time.perf_counter()
    results = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs, maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(_run_one, jobs):
            results.append(r)
            job = r["job"]
            note = "reused" if r["reused"] else f"{r['process_wall_s']:.0f} s, {r['updates_per_s']:.1f} upd/s"
            kappa = f"{job['cost_limit']:g}"
            print(
                f"[{len(results)}/{len(jobs)}] {job['algo']} {job['env']} seed {job['seed']} κ={kappa}: "
                f"reward {r['normalized_reward']:.3f}, cost@κ {r['normalized_cost'][kappa]:.3f} ({note})",
                flush=True,
            )
    wall = time.perf_counter() - start

    out = Path(args.out)
    table, rows = summarise(results, args.fisor)
    fisor_steps = sorted({r["steps"] for r in results if r["job"]["algo"] == args.fisor})
    header = (
        f"<!-- written by benchmarks/fisor_benchmark.py; {args.fisor} steps {fisor_steps}, seeds {args.seeds}, "
        f"{args.eval_episodes} evaluation episodes, wall time {wall / 60:.1f} min with --jobs {args.jobs} -->\n"
    )
    (out / "fisor_table.md").write_text(header + table)
    (out / "fisor_results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(rows, args.fisor, out / "fisor_reward_cost.png")
    print("\n" + table)
    print(
        f"wall time {wall / 60:.1f} min ({len(jobs)} runs, --jobs {args.jobs}); wrote {out / 'fisor_table.md'}, "
        f"{out / 'fisor_reward_cost.png'}, {out / 'fisor_results.json'}"
    )


if __name__ == "__main__":
    main()
