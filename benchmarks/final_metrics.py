"""The last logged training metrics and the evaluation of finished runs, one markdown row per run.

    python benchmarks/final_metrics.py RUN_DIR [RUN_DIR ...] [--columns lmbda cost_estimate ...]

Reads each run's ``metrics.csv`` (the last row that has each column) and ``eval.json`` (episode cost, normalized
reward, the share of episodes with a violation, and for filtered agents such as V-OCBF the same policy evaluated
unfiltered). The numbers behind benchmarks/reference.md's COptiDICE table (``lmbda``, ``cost_estimate``), CPQ's
α (``alpha``) and V-OCBF's filtered-against-unfiltered violations.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def last_values(run_dir: Path, columns: list[str]) -> list[str]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    out = []
    for column in columns:
        logged = [r[column] for r in rows if r.get(column)]
        out.append(f"{float(logged[-1]):.4g}" if logged else "—")
    return out


def evaluation(run_dir: Path) -> list[str]:
    path = run_dir / "eval.json"
    if not path.is_file():
        return ["—"] * 4
    e = json.loads(path.read_text())
    unfiltered = e.get("unfiltered")
    return [
        f"{e['normalized_reward']:.3f}",
        f"{e['cost_mean']:.2f}",
        f"{e['episodes_with_violation']:.0%}",
        "—" if unfiltered is None else f"{unfiltered['cost_mean']:.2f} / {unfiltered['episodes_with_violation']:.0%}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--columns", nargs="*", default=[])
    args = ap.parse_args()
    evaluated = ["reward", "episode cost", "episodes with a violation", "unfiltered: cost / violations"]
    head = ["run", *args.columns, *evaluated]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for run_dir in args.run_dirs:
        name = f"{run_dir.parent.name}/{run_dir.name}"
        print("| " + " | ".join([name, *last_values(run_dir, args.columns), *evaluation(run_dir)]) + " |")


if __name__ == "__main__":
    main()
