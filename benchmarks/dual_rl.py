"""Dual RL benchmark (issue 18): f-DVL against XQL and IQL, ReCOIL against BC, and ReCOIL on safe experts.

Runs three suites through ``python -m saferl.bench`` (resumable: finished runs are skipped) and writes the
claims table and the result tables into ``benchmarks/dual_rl.md`` (between its ``dual_rl.py`` markers; the text
around them is hand-written) and the plots under ``benchmarks/results/dual_rl/``:

* ``offline-rl``: every reward-only algorithm on the D4RL-style HalfCheetah / Hopper medium and medium-replay
  data. Stability of XQL against f-DVL (χ², TV) is read from each run's logged value loss (``metrics.csv``) and
  its evaluations: a run is *unstable* when its value loss or its evaluations become non-finite, or when its
  final D4RL score falls more than ``DROP`` below its own best evaluation.
* ``imitation``: ReCOIL, BC on the expert episodes, BC on everything, at 1, 5 and 25 expert episodes.
* ``safe-imitation``: ReCOIL and BC on the highest-reward episodes within κ next to BC-Safe and BC-All.

    MINARI_DATASETS_PATH=<root> python benchmarks/dual_rl.py               # train what is missing, then report
    MINARI_DATASETS_PATH=<root> python benchmarks/dual_rl.py --report-only # tables and plots from existing runs
    python benchmarks/dual_rl.py --suites offline-rl --workers 2

The D4RL-style datasets come from ``python -m saferl.collect env=halfcheetah-velocity|hopper-velocity budget=full``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from _markers import write_between_markers

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "dual_rl"
SUITES = ("offline-rl", "imitation", "safe-imitation")
DROP = 0.2  # a run whose final D4RL-normalised score is this far below its own best evaluation "collapsed"
VALUE_AGENTS = ("xql", "fdvl-chi2", "fdvl-tv")


def run_suite(suite: str, runs_root: Path, workers: int | None) -> None:
    cmd = [sys.executable, "-m", "saferl.bench", f"suite={suite}", f"runs_root={runs_root / suite}", "live=false"]
    if workers:
        cmd.append(f"workers={workers}")
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=False)


def specs_of(suite: str, runs_root: Path) -> list:
    from saferl.bench import expand
    from saferl.bench.__main__ import compose_bench
    from saferl.bench.suite import parse_suite

    parsed = parse_suite(compose_bench([f"suite={suite}"]).suite)
    return expand(parsed, runs_root / suite, need_data=False)


def read_result(spec) -> dict | None:
    path = Path(spec.run_dir) / "eval.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_metrics(spec) -> list[dict[str, str]]:
    path = Path(spec.run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _float(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)


def d4rl_curve(rows: list[dict[str, str]], result: dict) -> tuple[list[int], list[float]]:
    """The run's evaluations as D4RL-normalised scores (raw eval/reward and the dataset's reference returns)."""
    lo, hi = result["d4rl_reference_returns"]
    points = {
        int(r["step"]): (float(r["eval/reward"]) - lo) / (hi - lo)
        for r in rows
        if _float(r.get("eval/reward")) is not None
    }
    points[int(result["steps"])] = float(result["d4rl_normalized_reward"])
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _series(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), v) for r in rows if (v := _float(r.get(key))) is not None]


def stability(spec, result: dict) -> dict:
    rows = read_metrics(spec)
    losses, values = _series(rows, "value_loss"), _series(rows, "v")
    _, scores = d4rl_curve(rows, result)
    finite = all(math.isfinite(v) for v in [*(x for _, x in losses + values), *scores])
    best, final = max(scores), scores[-1]
    return {
        "final": final,
        "best": best,
        "max_abs_value_loss": max((abs(v) for _, v in losses), default=float("nan")),
        "max_abs_v": max((abs(v) for _, v in values), default=float("nan")),
        "finite": finite,
        "collapsed": (not finite) or best - final > DROP,
        "losses": losses,
        "values": values,
    }


def _ms(values: list[float], scale: float = 100.0) -> str:
    arr = np.asarray(values, dtype=float) * scale
    return f"{arr.mean():.1f} ± {arr.std():.1f}" if arr.size else "—"


def offline_rl_section(specs: list) -> tuple[list[str], dict]:
    done = [(s, r) for s in specs if (r := read_result(s)) is not None]
    tasks = list(dict.fromkeys(s.task for s in specs))
    agents = list(dict.fromkeys(s.agent for s in specs))
    score = {
        (t, a): [r["d4rl_normalized_reward"] for s, r in done if s.task == t and s.agent == a]
        for t in tasks
        for a in agents
    }
    lines = [
        "## Offline RL: D4RL-normalised scores (`suite=offline-rl`)",
        "",
        f"{len(done)} of {len(specs)} runs finished. Score = 100·(R − R_random)/(R_expert − R_random), "
        "mean ± std over seeds.",
        "",
        "| agent | " + " | ".join(tasks) + " | mean |",
        "|---|" + "---|" * (len(tasks) + 1),
    ]
    for a in agents:
        means = [float(np.mean(score[(t, a)])) for t in tasks if score[(t, a)]]
        cells = [_ms(score[(t, a)]) for t in tasks]
        lines.append(
            f"| {a} | " + " | ".join(cells) + f" | {100 * np.mean(means):.1f} |"
            if means
            else f"| {a} | " + " | ".join(cells) + " | — |"
        )
    stab = {}
    for s, r in done:
        if s.agent in VALUE_AGENTS:
            stab.setdefault((s.task, s.agent), []).append(stability(s, r))
    lines += [
        "",
        "### Stability of the value loss: XQL against f-DVL",
        "",
        f"Per dataset and agent: runs whose value loss or evaluations went non-finite or whose final score fell more "
        f"than {100 * DROP:g} points below their own best evaluation (*collapsed*), the largest "
        "|value loss| and |mean V| logged (median over seeds), and the spread of final scores across seeds.",
        "",
        "| dataset | agent | collapsed runs | max abs value loss (median over seeds) | max abs V (median) "
        "| final score | best evaluation |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in tasks:
        for a in VALUE_AGENTS:
            runs = stab.get((t, a), [])
            if not runs:
                continue
            lines.append(
                f"| {t} | {a} | {sum(x['collapsed'] for x in runs)}/{len(runs)} | "
                f"{np.median([x['max_abs_value_loss'] for x in runs]):.3g} | "
                f"{np.median([x['max_abs_v'] for x in runs]):.3g} | {_ms([x['final'] for x in runs])} | "
                f"{_ms([x['best'] for x in runs])} |"
            )
    plot = plot_value_losses(stab, tasks)
    if plot:
        lines += ["", f"![value loss of XQL and f-DVL]({plot.relative_to(REPO / 'benchmarks')})"]
    return lines, {"score": score, "stability": stab, "tasks": tasks}


def _panels(tasks: list[str], width: float):
    """One panel per task, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(width * len(tasks), 3.1), squeeze=False)
    return fig, list(zip(axes[0], tasks, strict=True))


def _save(fig, panels, ylabel: str, name: str) -> Path:
    from saferl.bench.plots import save_figure

    panels[0][0].set_ylabel(ylabel)
    panels[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, OUT / name, dpi=110)


def plot_value_losses(stab: dict, tasks: list[str]) -> Path | None:
    """Per dataset: the value loss (top) and the mean V(s) of the batch (bottom) of every seed."""
    tasks = [t for t in tasks if any(stab.get((t, a)) for a in VALUE_AGENTS)]  # datasets with finished runs
    if not tasks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from saferl.bench.plots import save_figure

    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 5.6), squeeze=False)
    for col, t in enumerate(tasks):
        for row, key in enumerate(("losses", "values")):
            ax = axes[row][col]
            for a in VALUE_AGENTS:
                for i, run in enumerate(stab.get((t, a), [])):
                    if run[key]:
                        steps, ys = zip(*run[key], strict=True)
                        ax.plot(steps, ys, color=f"C{VALUE_AGENTS.index(a)}", alpha=0.7, label=a if i == 0 else None)
            ax.set_xlabel("gradient steps")
            if row == 0:
                ax.set_title(t, fontsize=9)
    axes[0][0].set_ylabel("value loss (each seed)")
    axes[1][0].set_ylabel("mean V(s) of the batch")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, OUT / "value_loss.png", dpi=110)


def imitation_section(specs: list) -> tuple[list[str], dict]:
    done = [(s, r) for s in specs if (r := read_result(s)) is not None]
    tasks = list(dict.fromkeys(s.task for s in specs))
    methods = tuple(dict.fromkeys(s.agent.rsplit("-", 1)[0] for s in specs))  # recoil, recoil-t10, bc_expert, …
    counts = sorted({int(s.config["expert_episodes"]) for s in specs})
    score = {}
    for s, r in done:
        method = s.agent.rsplit("-", 1)[0]
        score.setdefault((s.task, method, int(s.config["expert_episodes"])), []).append(r["d4rl_normalized_reward"])
    lines = [
        "## Offline imitation: ReCOIL against BC (`suite=imitation`)",
        "",
        f"{len(done)} of {len(specs)} runs finished. D4RL-normalised score (the expert-v0 policy = 100) against the "
        "number of expert episodes added to the suboptimal data; mean ± std over seeds.",
        "",
        "| data | method | " + " | ".join(f"{n} expert episode{'s' if n > 1 else ''}" for n in counts) + " |",
        "|---|---|" + "---|" * len(counts),
    ]
    for t in tasks:
        for m in methods:
            lines.append(f"| {t} | {m} | " + " | ".join(_ms(score.get((t, m, n), [])) for n in counts) + " |")
    plot = plot_imitation(score, tasks, methods, counts)
    if plot:
        lines += ["", f"![score against expert episodes]({plot.relative_to(REPO / 'benchmarks')})"]
    return lines, {"score": score, "tasks": tasks, "counts": counts}


def plot_imitation(score: dict, tasks: list[str], methods, counts) -> Path | None:
    tasks = [t for t in tasks if any(k[0] == t for k in score)]  # datasets with finished runs
    if not tasks:
        return None
    fig, panels = _panels(tasks, 3.6)
    for ax, t in panels:
        for i, m in enumerate(methods):
            xs = [n for n in counts if score.get((t, m, n))]
            ys = [100 * np.mean(score[(t, m, n)]) for n in xs]
            sd = [100 * np.std(score[(t, m, n)]) for n in xs]
            ax.errorbar(xs, ys, yerr=sd, marker="o", color=f"C{i}", label=m, capsize=3)
        ax.set_xscale("log")
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("expert episodes")
    return _save(fig, panels, "D4RL score", "imitation.png")


def safe_section(specs: list) -> tuple[list[str], dict]:
    done = [(s, r) for s in specs if (r := read_result(s)) is not None]
    tasks = list(dict.fromkeys(s.task for s in specs))
    agents = list(dict.fromkeys(s.agent for s in specs))
    cells: dict = {}
    for s, r in done:
        for kappa in r["thresholds"]:
            if s.per_threshold and not math.isclose(kappa, s.cost_limit):
                continue
            key = f"{kappa:g}"
            cells.setdefault((s.task, s.agent, key), []).append((r["normalized_reward"], r["normalized_cost"][key]))
    lines = [
        "## Safe imitation: ReCOIL on the safe experts (`suite=safe-imitation`)",
        "",
        f"{len(done)} of {len(specs)} runs finished. Normalised reward / normalised cost (DSRL; ≤ 1 is safe) at "
        "each κ, mean over seeds; the experts are the 10 highest-reward episodes within κ of the training data.",
        "",
    ]
    for t in tasks:
        kappas = sorted({k for (tt, _, k) in cells if tt == t}, key=float)
        if not kappas:
            continue
        lines += [
            f"**{t}**",
            "",
            "| agent | " + " | ".join(f"κ = {k}" for k in kappas) + " |",
            "|---|" + "---|" * len(kappas),
        ]
        for a in agents:
            row = []
            for k in kappas:
                vals = cells.get((t, a, k), [])
                row.append(
                    f"{np.mean([v[0] for v in vals]):.2f} / {np.mean([v[1] for v in vals]):.2f}" if vals else "—"
                )
            lines.append(f"| {a} | " + " | ".join(row) + " |")
        lines.append("")
    return lines, {"cells": cells, "tasks": tasks}


MATCH = 0.05  # "matches": within 5 D4RL points of the other's mean


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def claims(data: dict) -> list[str]:
    """Each claim of issue 18 next to what the runs measured, by fixed rules (stated in each row)."""
    rows = []
    off = data["offline-rl"]
    stab, score, tasks = off["stability"], off["score"], off["tasks"]
    runs = {a: [x for t in tasks for x in stab.get((t, a), [])] for a in VALUE_AGENTS}
    collapsed = {a: sum(x["collapsed"] for x in r) for a, r in runs.items()}
    if all(runs.values()):
        measured = ", ".join(f"{a} {collapsed[a]}/{len(runs[a])}" for a in VALUE_AGENTS)
        if collapsed["xql"] > 0 and collapsed["fdvl-chi2"] == collapsed["fdvl-tv"] == 0:
            verdict = "reproduced"
        elif collapsed["xql"] == 0:
            verdict = "not observed: XQL did not collapse either at this budget"
        else:
            verdict = "not reproduced: f-DVL collapsed too"
        rows.append(("f-DVL (χ², TV) is stable where XQL is not", f"collapsed runs: {measured}", verdict))
    for f in ("fdvl-chi2", "fdvl-tv"):
        pairs = [
            (t, _mean(score[(t, f)]), _mean(score[(t, "iql")])) for t in tasks if score[(t, f)] and score[(t, "iql")]
        ]
        if not pairs:
            continue
        worse = [t for t, a, b in pairs if a < b - MATCH]
        measured = "; ".join(f"{t}: {100 * a:.1f} vs {100 * b:.1f}" for t, a, b in pairs)
        verdict = "reproduced" if not worse else f"not reproduced on {', '.join(worse)}"
        rows.append((f"{f} matches or beats IQL (within {100 * MATCH:g} points)", measured, verdict))
    imi = data["imitation"]
    variants = [m for m in ("recoil", "recoil-t10") if any(k[1] == m for k in imi["score"])]
    for t in imi["tasks"]:
        for variant in variants:
            cells = []
            for n in imi["counts"]:
                r, e, a = (_mean(imi["score"].get((t, m, n), [])) for m in (variant, "bc_expert", "bc_all"))
                if not any(math.isnan(v) for v in (r, e, a)):
                    cells.append((n, r, e, a))
            if not cells:
                continue
            beaten = [n for n, r, e, a in cells if r > max(e, a)]
            measured = "; ".join(f"{n} ep.: {100 * r:.1f} vs {100 * e:.1f} / {100 * a:.1f}" for n, r, e, a in cells)
            if len(beaten) == len(cells):
                verdict = "reproduced"
            elif beaten:
                verdict = f"at {', '.join(map(str, beaten))} expert episodes only"
            else:
                verdict = "not reproduced"
            claim = f"{t}: {variant} beats BC-expert and BC-all ({variant} vs BC-expert / BC-all)"
            rows.append((claim, measured, verdict))
    lines = [
        "## Claims, side by side",
        "",
        "| claim | measured | verdict (fixed rule) |",
        "|---|---|---|",
        *(f"| {c} | {m} | {v} |" for c, m, v in rows),
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-root", type=Path, default=REPO / "runs" / "bench")
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    suites = [s for s in args.suites.split(",") if s]
    if not args.report_only:
        for suite in suites:
            run_suite(suite, args.runs_root, args.workers)
    sections: list[str] = []
    data = {}
    for suite, build in (
        ("offline-rl", offline_rl_section),
        ("imitation", imitation_section),
        ("safe-imitation", safe_section),
    ):
        lines, data[suite] = build(specs_of(suite, args.runs_root))
        sections += [*lines, ""]
    sections = [*claims(data), "", *sections]
    text = "\n".join(sections)
    write_between_markers(REPO / "benchmarks" / "dual_rl.md", text, "dual_rl.py")
    print(text)


if __name__ == "__main__":
    main()
