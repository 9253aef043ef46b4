"""What the benchmark scripts that drive ``python -m saferl.run`` share: one resumable training run per directory,
its ``eval.json``, and the mean ± std cells of their tables."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _markers import write_between_markers

REPO = Path(__file__).resolve().parents[1]


def train_run(out: Path, options: list[str], what: str) -> str:
    """``python -m saferl.run <options> run_dir=<out>`` unless ``out`` already has its ``eval.json``; a run killed
    after a checkpoint resumes from it. The log goes beside the directory (``<out>.log``)."""
    if (out / "eval.json").is_file():
        return f"{what}: done before"
    cmd = [sys.executable, "-m", "saferl.run", *options, f"run_dir={out}"]
    if (out / "checkpoints" / "last.pt").is_file():
        cmd.append("resume=true")
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); see {log}")
    return f"{what}: {time.perf_counter() - t0:.0f} s"


def read_result(out: Path, name: str = "eval.json") -> dict | None:
    """A run's result file (default: its ``eval.json``), or None while it has none."""
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None


def trained_policies(run_dirs: Sequence[Path], accepts: Callable[[Any], bool], what: str) -> Iterator[tuple[str, Any]]:
    """Each run's trained policy (`saferl.load_policy`) with its label ``task/algo/run``, for the scripts that
    re-evaluate finished runs; a run of another algorithm stops the script with what it expected."""
    from saferl import load_policy

    for run_dir in run_dirs:
        policy = load_policy(run_dir)
        if not accepts(policy.algorithm):
            name = type(policy.algorithm).__name__
            raise SystemExit(f"{run_dir} is a {name} run; this script re-evaluates {what} runs")
        yield f"{run_dir.parent.parent.name}/{run_dir.parent.name}/{run_dir.name}", policy


def mean_std(values: list[float], fmt: str = "{:.2f}") -> str:
    a = np.asarray(values, float)
    return f"{fmt.format(a.mean())} ± {fmt.format(a.std())}"


def main_for(
    doc: str,
    name: str,
    tasks: Sequence[str],
    run_all: Callable[[Path, int, list[str]], None],
    section: Callable[[Path], str],
    page: Path,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    prepare: Callable[[argparse.Namespace, list[str]], None] | None = None,
) -> None:
    """The command line of such a script: train what is missing under ``--runs-root`` (``--tasks`` only), then
    write its section of ``page`` between the ``<name>.py`` markers and print it. A script adds its own options
    with ``add_arguments`` and acts on them in ``prepare`` (given the parsed options and the chosen tasks) before
    anything trains."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-root", type=Path, default=REPO / "runs" / name)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", default=",".join(tasks), help="train these tasks only (comma-separated)")
    ap.add_argument("--report-only", action="store_true")
    if add_arguments is not None:
        add_arguments(ap)
    args = ap.parse_args()
    chosen = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(chosen) - set(tasks))
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(tasks)}")
    if prepare is not None:
        prepare(args, chosen)
    if not args.report_only:
        run_all(args.runs_root, args.workers, chosen)
    text = section(args.runs_root)
    write_between_markers(page, text, f"{name}.py")
    print(text)
