"""Run a suite: skip finished runs, submit the rest to an engine, follow them live, report failures.

Idempotent: a run is finished when its directory holds ``eval.json``; every other run is submitted with its
explicit ``run_dir`` and ``resume=true``, so a run killed earlier continues from its last checkpoint and a
run that never started starts. One failing run is recorded (``bench.json``, ``bench.log`` in its directory)
and the others go on. A run whose worker process died (killed, out of memory) is resubmitted up to
``max_attempts`` times in all, resuming from its checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saferl.bench.progress import ProgressView, RunningRun
from saferl.bench.suite import RunSpec, Suite, SuiteError
from saferl.bench.worker import STATE_FILE, execute_run
from saferl.runs.rundir import EVAL_FILE, write_json_atomic

LOCK_FILE = ".bench.lock"


@dataclass
class SuiteOutcome:
    suite: str
    total: int
    skipped: int = 0
    finished: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # run label -> error
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def is_finished(spec: RunSpec) -> bool:
    return (spec.run_dir / EVAL_FILE).is_file()


def read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def last_logged_step(run_dir: Path) -> int | None:
    """The step of the last ``metrics.csv`` row (cheap: reads the file's tail)."""
    path = run_dir / "metrics.csv"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            lines = fh.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        head = line.split(",", 1)[0]
        if head.isdigit():
            return int(head)
    return None


def total_steps(spec: RunSpec) -> int | None:
    steps = spec.config.get("steps")
    if steps is None:
        steps = (spec.config.get("algo") or {}).get("steps")
    return int(steps) if steps is not None else None


@contextlib.contextmanager
def suite_lock(runs_root: Path, suite: str) -> Iterator[None]:
    """One runner per runs root: a second `saferl.bench` on the same runs would train them twice."""
    runs_root.mkdir(parents=True, exist_ok=True)
    with open(runs_root / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise SuiteError(
                f"{runs_root} is in use by {holder}; wait for it to finish or use another runs_root"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"saferl.bench suite={suite} (pid {os.getpid()})")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_datasets(specs: list[RunSpec]) -> None:
    """Build missing saferl datasets once, here, before the workers start (they would wait on each other)."""
    from saferl.data import ensure
    from saferl.envs import get_task

    for dataset in sorted({s.config.get("dataset") or get_task(s.config["env"]["name"]).dataset_id for s in specs}):
        ensure(dataset, progress=False)


class _Estimator:
    """ETA from this session's runs: per agent, the mean duration of finished runs, else the projection of
    running ones (elapsed / fraction of steps done)."""

    def __init__(self) -> None:
        self.durations: dict[str, list[float]] = {}

    def add(self, agent: str, seconds: float) -> None:
        self.durations.setdefault(agent, []).append(seconds)

    def estimate(self, agent: str, projections: dict[str, list[float]]) -> float | None:
        for source in (self.durations, projections):
            if source.get(agent):
                return sum(source[agent]) / len(source[agent])
        pooled = [d for v in self.durations.values() for d in v] or [d for v in projections.values() for d in v]
        return sum(pooled) / len(pooled) if pooled else None


def run_suite(
    suite: Suite,
    specs: list[RunSpec],
    engine: Any,
    runs_root: Path,
    *,
    max_attempts: int = 2,
    live: bool | None = None,
    poll_s: float = 1.0,
) -> SuiteOutcome:
    """Run every unfinished run of ``specs`` on ``engine``; never raises for a failing run."""
    start = time.time()
    outcome = SuiteOutcome(suite=suite.name, total=len(specs))
    with suite_lock(runs_root, suite.name):
        todo = [s for s in specs if not is_finished(s)]
        outcome.skipped = len(specs) - len(todo)
        if todo:
            prepare_datasets(todo)
        attempts = dict.fromkeys((s.key for s in todo), 0)
        lost: dict[str, int] = {}
        futures: dict[Future, tuple[RunSpec, float]] = {}
        estimator = _Estimator()
        threads = getattr(engine, "threads", 1)

        def submit(spec: RunSpec) -> None:
            attempts[spec.key] += 1
            job = {
                "key": spec.key,
                "run_dir": str(spec.run_dir),
                "config": spec.config,
                "threads": threads,
                "attempt": attempts[spec.key],
                "command": spec.command(),
            }
            futures[engine.submit(execute_run, job)] = (spec, time.time())

        title = f"suite {suite.name} on {engine.describe()}"
        with ProgressView(title, len(specs), outcome.skipped, enabled=live) as view:
            if outcome.skipped:
                view.event(f"{outcome.skipped} of {len(specs)} runs already finished (eval.json): skipped")
            if todo:
                view.event(f"{len(todo)} run(s) to train on {engine.describe()}")
            try:
                for spec in todo:
                    submit(spec)
                while futures:
                    done, _ = wait(list(futures), timeout=poll_s, return_when=FIRST_COMPLETED)
                    crashed: list[tuple[RunSpec, float]] = []
                    for fut in done:
                        spec, submitted = futures.pop(fut)
                        try:
                            result = fut.result()
                        except Exception as err:  # the engine lost the run (worker died) or could not run it
                            if engine.is_crash(err):
                                crashed.append((spec, submitted))
                                continue
                            result = {"status": "failed", "error": f"{type(err).__name__}: {err}", "wall_s": 0.0}
                        _record(view, outcome, estimator, spec, result)
                    if crashed:
                        engine.restart()
                        _resubmit_crashed(view, outcome, crashed, attempts, lost, max_attempts, submit)
                    running, pending, eta = _snapshot(futures, estimator, engine)
                    view.update(running, pending, eta)
            except KeyboardInterrupt:
                view.event("interrupted: finished runs are kept; rerun the same command to resume the others")
                engine.shutdown(cancel=True)
                raise
    outcome.wall_s = time.time() - start
    return outcome


def _record(view: ProgressView, outcome: SuiteOutcome, estimator: _Estimator, spec: RunSpec, result: dict) -> None:
    if result.get("status") == "finished":
        outcome.finished += 1
        view.finished += 1
        estimator.add(spec.agent, float(result.get("wall_s") or 0.0))
        res = result.get("result") or {}
        view.event(
            f"[green]done[/]  {spec.label}: normalized reward {res.get('normalized_reward', float('nan')):.3f}, "
            f"cost {res.get('cost_mean', float('nan')):.2f} in {result.get('wall_s', 0.0):.0f} s"
        )
        if not is_finished(spec) and res:  # worker on another node without a shared filesystem
            spec.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(spec.run_dir / EVAL_FILE, res)
    else:
        outcome.failed[spec.label] = str(result.get("error"))
        view.failed += 1
        view.event(f"[red]FAILED[/] {spec.label}: {result.get('error')} (log: {spec.run_dir / 'bench.log'})")


def _resubmit_crashed(view, outcome, crashed, attempts, lost, max_attempts, submit) -> None:
    """Runs lost with a dead worker. A run that had started is charged an attempt; a queued one is resubmitted
    for free, up to a limit (workers that die before any run starts mean the engine itself is broken)."""
    for spec, submitted in crashed:
        state = read_state(spec.run_dir) or {}
        was_running = state.get("started", 0) >= submitted and state.get("attempt") == attempts[spec.key]
        if not was_running:
            attempts[spec.key] -= 1
            lost[spec.key] = lost.get(spec.key, 0) + 1
        if attempts[spec.key] >= max_attempts or lost.get(spec.key, 0) > 3:
            why = "its worker process died" if was_running else "the worker process died before the run started"
            error = f"{why} ({attempts[spec.key] + lost.get(spec.key, 0)} time(s); killed, or out of memory?)"
            outcome.failed[spec.label] = error
            view.failed += 1
            view.event(f"[red]FAILED[/] {spec.label}: {error}")
            spec.run_dir.mkdir(parents=True, exist_ok=True)  # the dead worker could not record it
            write_json_atomic(spec.run_dir / STATE_FILE, {**state, "state": "failed", "error": error})
            continue
        if was_running:
            view.event(f"[yellow]retry[/] {spec.label}: its worker process died; resuming from its checkpoint")
        submit(spec)


def _snapshot(futures: dict[Future, tuple[RunSpec, float]], estimator: _Estimator, engine: Any):
    """Running runs (their worker wrote ``bench.json`` after this submission), the pending count, and the ETA."""
    now = time.time()
    running: list[tuple[RunSpec, RunningRun]] = []
    pending: list[RunSpec] = []
    projections: dict[str, list[float]] = {}
    for spec, submitted in futures.values():
        state = read_state(spec.run_dir) or {}
        if state.get("state") == "running" and float(state.get("started", 0)) >= submitted:
            step, steps = last_logged_step(spec.run_dir), total_steps(spec)
            elapsed = now - float(state["started"])
            running.append((spec, RunningRun(spec.label, step, steps, elapsed, int(state.get("attempt", 1)))))
            if step and steps:
                projections.setdefault(spec.agent, []).append(elapsed * steps / step)
        else:
            pending.append(spec)
    left = [(estimator.estimate(spec.agent, projections), run.elapsed_s) for spec, run in running]
    left += [(estimator.estimate(spec.agent, projections), 0.0) for spec in pending]
    eta: float | None = None
    if all(est is not None for est, _ in left):
        eta = sum(max(est - elapsed, 0.0) for est, elapsed in left if est is not None) / max(1, engine.workers)
    return sorted((run for _, run in running), key=lambda r: r.label), len(pending), eta
