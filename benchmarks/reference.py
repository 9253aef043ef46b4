"""The reference benchmark (issue 14): trains ``suite=reference`` (resumable: finished runs are skipped), publishes
its board to ``benchmarks/results/reference/`` and fills ``benchmarks/reference.md`` between its ``reference.py``
markers (the analysis around them is hand-written): how much of the suite has run, the per-task table, the
convergence verdict of every row and the claims table (`benchmarks/claims.py`).

    MINARI_DATASETS_PATH=<root> python benchmarks/reference.py --runs-root <dir>                # train, then publish
    MINARI_DATASETS_PATH=<root> python benchmarks/reference.py --runs-root <dir> --report-only  # publish what exists

The suite's datasets: ``python -m saferl.collect env=<task> budget=full`` for car-run, halfcheetah-velocity and
hopper-velocity (the 2-D tasks build on first use). A suite only partly run publishes the tasks it has; the page
says which, and the claims are judged on the cells that exist.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from _markers import write_between_markers
from claims import claims_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "reference"
PAGE = REPO / "benchmarks" / "reference.md"


def bench(command: str, runs_root: Path, workers: int | None) -> None:
    cmd = [sys.executable, "-m", "saferl.bench", *([command] if command == "report" else [])]
    cmd += ["suite=reference", f"runs_root={runs_root}", f"results_dir={RESULTS}", "live=false"]
    if workers and command != "report":
        cmd.append(f"workers={workers}")
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=command == "report")


def progress(runs_root: Path) -> tuple[list[str], list[str]]:
    """Lines saying how many runs of each task have finished, and the tasks that are complete."""
    from saferl.bench import expand
    from saferl.bench.__main__ import compose_bench
    from saferl.bench.runner import is_finished
    from saferl.bench.suite import parse_suite

    specs = expand(parse_suite(compose_bench(["suite=reference"]).suite), runs_root, need_data=False)
    total, done = Counter(s.task for s in specs), Counter(s.task for s in specs if is_finished(s))
    tasks = list(dict.fromkeys(s.task for s in specs))
    cells = ", ".join(f"{t} {done[t]}/{total[t]}" for t in tasks)
    lines = [f"**Runs finished: {sum(done.values())} of {len(specs)}** ({cells})."]
    return lines, [t for t in tasks if done[t] == total[t]]


def task_table(results: dict) -> list[str]:
    """Per agent and task: normalized reward / normalized cost averaged over the task's κ, ✓ when safe."""
    board = results["leaderboard"]
    tasks = [t for t in board["tasks"] if any(r["task"] == t for r in board["task_rows"])]
    if not tasks:
        return ["No task has all its runs in yet."]
    rows = {(r["agent"], r["task"]): r for r in board["task_rows"]}
    agents = [a["agent"] for a in board["agents"] if any(r["agent"] == a["agent"] for r in board["task_rows"])]
    out = ["| agent | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for agent in agents:
        cells = []
        for task in tasks:
            r = rows.get((agent, task))
            cells.append("—" if r is None else f"{r['reward']:.2f} / {r['cost']:.2f}{' ✓' if r['safe'] else ''}")
        out.append(f"| {agent} | " + " | ".join(cells) + " |")
    return out


def convergence_table(results: dict) -> list[str]:
    """Per agent and task: whether the seed-mean curve plateaued over the last quarter of training."""
    curves = results.get("curves", [])
    tasks = list(dict.fromkeys(c["task"] for c in curves))
    agents = list(dict.fromkeys(c["agent"] for c in curves))
    if not tasks:
        return ["No task has all its runs in yet."]
    by = {(c["agent"], c["task"]): c for c in curves}
    out = ["| agent | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for agent in agents:
        cells = []
        for task in tasks:
            c = by.get((agent, task))
            if c is None:
                cells.append("—")
                continue
            p = c["plateau"]
            verdict = {True: "yes", False: "**no**", None: "?"}[p["plateaued"]]
            deltas = "" if p["plateaued"] is None else f" (Δr {p['reward_delta']:+.2f}, Δc {p['cost_delta']:+.2f})"
            cells.append(f"{verdict}{deltas} at {c['steps'][-1]:,}")
        out.append(f"| {agent} | " + " | ".join(cells) + " |")
    return out


def only_tasks(results: dict, tasks: list[str]) -> dict:
    """The results restricted to ``tasks``: the page judges complete tasks only (a half-run task would show the
    agents that happen to run first)."""
    board = dict(results["leaderboard"])
    board["tasks"] = [t for t in board["tasks"] if t in tasks]
    for key in ("cells", "task_rows"):
        board[key] = [c for c in board[key] if c["task"] in tasks]
    return {
        **results,
        "leaderboard": board,
        "curves": [c for c in results.get("curves", []) if c["task"] in tasks],
        "runs": [r for r in results.get("runs", []) if r.get("task") in tasks],
    }


def compute_line(results: dict) -> str:
    """The training time of every finished run of the suite, in total and per task (``wall_time_s`` counts resumed
    segments, not the time lost since a killed run's last checkpoint)."""
    per_task: Counter[str] = Counter()
    for r in results.get("runs", []):
        per_task[r["task"]] += float(r.get("wall_time_s") or 0.0)
    parts = ", ".join(f"{t} {s / 3600:.1f} h" for t, s in per_task.items())
    return (
        f"Training time of the finished runs: {sum(per_task.values()) / 3600:.1f} h in total ({parts}); each run "
        "uses one thread, two or three runs at a time on the 2-core machine, so this is wall time per run summed."
    )


def page(results: dict, runs_root: Path) -> str:
    status, complete = progress(runs_root)
    compute = compute_line(results)
    results = only_tasks(results, complete)
    scope = ", ".join(complete) if complete else "none yet"
    lines = [
        *status,
        compute,
        f"Tasks complete: {scope}. This page shows complete tasks only; the leaderboard linked below has every "
        "finished run.",
        "",
        "### Per task: normalized reward / normalized cost (mean over the task's κ; ✓ = safe, cost ≤ 1)",
        "",
        *task_table(results),
        "",
        "Per-threshold cells, IQM with confidence intervals and plots: "
        "[results/reference/leaderboard.md](results/reference/leaderboard.md).",
        "",
        "### Convergence: plateaued over the last quarter of training? (Δ = last quarter − the quarter before)",
        "",
        *convergence_table(results),
        "",
        "Curves: `results/reference/plots/curves-<task>.png`.",
        "",
        "### Claims",
        "",
        f"Judged on the complete tasks only ({scope}); a verdict can change as tasks come in.",
        "",
        claims_table(results),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-root", type=Path, default=REPO / "runs" / "bench" / "reference")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        bench("run", args.runs_root, args.workers)
    bench("report", args.runs_root, None)
    text = page(json.loads((RESULTS / "results.json").read_text()), args.runs_root)
    write_between_markers(PAGE, text, "reference.py")
    print(text)


if __name__ == "__main__":
    main()
