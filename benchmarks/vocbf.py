"""V-OCBF on BoatRobot and PointRobot: violations of the CBF-filtered BC policy vs the unfiltered one.

Each (task, seed) trains ``algo=vocbf`` through the normal training loop (``saferl.runs.run_experiment``,
the same code as ``python -m saferl.run algo=vocbf env=<task>``) on the task's reference dataset, which
evaluates the BC policy through the CBF-QP filter on the learned V_c (eval.json's main metrics) and
without it (``eval.json["unfiltered"]``). The trained model is then also evaluated with the model-free
filter (Q_c linearised in u). Runs go to ``--runs`` (one directory per task and seed); the Markdown
table goes to ``--out``.

Usage: python benchmarks/vocbf.py [--steps 10000] [--seeds 0 1 2] [--episodes 20] [--jobs 2]
            [--out benchmarks/vocbf.md] [--runs runs/bench-vocbf]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "saferl" / "conf"
TASKS = ("boat-robot", "point-robot")
NOTES_MARKER = "<!-- hand-written notes below; benchmarks/vocbf.py keeps them when it rewrites the table -->"


def run_one(task: str, seed: int, steps: int, episodes: int, runs: str) -> dict:
    """Train + evaluate one (task, seed) in this process (single torch thread), then the critic filter."""
    import torch
    from hydra import compose, initialize_config_dir

    from saferl import evaluation
    from saferl.algos import AlgoContext, get_algorithm
    from saferl.envs import get_task
    from saferl.runs import run_experiment

    run_dir = Path(runs) / task / f"seed{seed}"
    overrides = [
        "algo=vocbf",
        f"env={task}",
        f"seed={seed}",
        f"steps={steps}",
        f"eval_episodes={episodes}",
        "threads=1",
        "progress=false",
        "tensorboard=false",
        f"run_dir={run_dir}",
    ]
    if (run_dir / "eval.json").exists():
        overrides.append("resume=true")  # finished: run_experiment returns the stored result
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    t0 = time.perf_counter()
    result = run_experiment(cfg)
    total = time.perf_counter() - t0

    # the model-free alternative on the same trained networks: Q_c(s, u) ≥ 0 linearised around u_nom
    import gymnasium as gym

    spec = get_task(task)
    cls = get_algorithm("vocbf")
    ctx = AlgoContext.for_task(spec, gym.make(spec.env_id), result["cost_limit"])
    algo = cls(cls.make_config({"eval_filter": "critic"}), ctx)
    algo.load_state_dict(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["algo"])
    stats = evaluation.rollout(spec.env_id, algo.act, episodes, seed, wrap_env=algo.wrap_eval_env)
    critic = {**evaluation.dsrl_metrics(stats, spec, result["thresholds"]), **evaluation.safety_metrics(stats)}
    return {"task": task, "seed": seed, "result": result, "critic": critic, "process_wall_s": total}


def _row(r: dict) -> str:
    res, plain, critic = r["result"], r["result"]["unfiltered"], r["critic"]
    ratio = plain["cost_mean"] / res["cost_mean"] if res["cost_mean"] > 0 else float("inf")
    sf = res["safety_filter"]
    cells = [
        r["task"],
        r["seed"],
        f"{plain['cost_mean']:.2f}",
        f"{res['cost_mean']:.2f}",
        "∞ (0 violations)" if ratio == float("inf") else f"{ratio:.1f}×",
        f"{plain['episodes_with_violation']:.0%} → {res['episodes_with_violation']:.0%}",
        f"{plain['normalized_reward']:.2f} → {res['normalized_reward']:.2f}",
        f"{sf['intervention_rate']:.0%}",
        sf["infeasible_steps"],
        f"{critic['cost_mean']:.2f} / {critic['normalized_reward']:.2f}",
        f"{res['wall_time_s'] / 60:.1f} ({res['updates_per_s']:.0f}/s)",
    ]
    return "| " + " | ".join(map(str, cells)) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="parallel single-threaded training processes")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--runs", default="runs/bench-vocbf")
    parser.add_argument("--out", default=str(Path(__file__).with_name("vocbf.md")))
    args = parser.parse_args()

    start = time.perf_counter()
    jobs = [(task, seed) for seed in args.seeds for task in args.tasks]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, t, s, args.steps, args.episodes, args.runs) for t, s in jobs]
        results = [f.result() for f in futures]
    wall = time.perf_counter() - start

    header = (
        "| task | seed | violations/episode, BC | with CBF filter | reduction | episodes with a violation "
        "| normalized reward | filter interventions | infeasible steps | critic filter: violations / norm. reward "
        "| training min (updates/s) |\n|" + "---|" * 11
    )
    lines = [_row(r) for r in sorted(results, key=lambda r: (r["task"], r["seed"]))]
    summary = []
    for task in args.tasks:
        rs = [r for r in results if r["task"] == task]
        plain = sum(r["result"]["unfiltered"]["cost_mean"] for r in rs) / len(rs)
        filt = sum(r["result"]["cost_mean"] for r in rs) / len(rs)
        ratio = f"{plain / filt:.1f}×" if filt > 0 else "∞"
        summary.append(
            f"- {task}: mean violations per episode {plain:.2f} (BC) → {filt:.2f} (CBF-filtered), {ratio} fewer"
        )
    text = "\n".join(
        [
            "# V-OCBF on BoatRobot and PointRobot",
            "",
            f"Produced by `python benchmarks/vocbf.py --steps {args.steps} --seeds {' '.join(map(str, args.seeds))} "
            f"--episodes {args.episodes} --jobs {args.jobs}` on {dt.date.today().isoformat()} "
            f"({platform.machine()}, {os.cpu_count()} CPU cores shared with other work, torch 1 thread per run); "
            f"total wall time {wall / 60:.1f} min.",
            "",
            f"Each run trains V-OCBF ({args.steps} updates of V_c, Q_c, the control-affine model and the BC policy, "
            "batch 256, all other hyperparameters the authors' defaults from `saferl.algos.vocbf.VOCBFConfig`) on the "
            "task's reference dataset, then evaluates the BC policy on the same "
            f"{args.episodes} start states with and without the CBF-QP filter "
            "(∇V_c·f + ∇V_c·g·u + α·V_c ≥ 0, α = 1, learned f and g, exact projection). A violation is a step "
            "with cost 1 (inside a hazard). The authors train 100k steps; this table uses "
            f"{args.steps} to fit a ~30 min CPU budget.",
            "",
            header,
            *lines,
            "",
            *summary,
            "",
            "Columns: *violations/episode* = mean cost return (steps inside a hazard); *reduction* = BC ÷ filtered; "
            "*normalized reward* = DSRL normalized reward, BC → filtered; *filter interventions* = share of steps "
            "where the QP changed the action; *critic filter* = the same networks with the model-free filter "
            "Q_c(s, u_nom) + ∇_u Q_c·(u − u_nom) ≥ 0 instead of the CBF; *training min* = wall minutes of the "
            "training loop.",
            "",
        ]
    )
    out = Path(args.out)
    if out.exists() and NOTES_MARKER in out.read_text():  # keep the hand-written reading of the numbers
        text += "\n" + NOTES_MARKER + out.read_text().split(NOTES_MARKER, 1)[1]
    out.write_text(text)
    print(text)
    with open(Path(args.runs) / "results.json", "w") as fh:
        json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
