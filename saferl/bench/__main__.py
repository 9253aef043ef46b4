"""`python -m saferl.bench [run|report] suite=<name> [option=value ...]`

    python -m saferl.bench suite=quick                       # train what is missing, then write the reports
    python -m saferl.bench suite=quick launcher=ray          # the same on Ray (RAY_ADDRESS or a local Ray)
    python -m saferl.bench report suite=quick                # rebuild the reports from existing runs only
    python -m saferl.bench suite=quick dry_run=true          # list the runs and their state, train nothing
    python -m saferl.bench suite=quick suite.seeds=[0,1] 'overrides=["device=cuda"]'

Options (Hydra overrides; ``suite.<key>=`` changes the suite itself):

    launcher=local|ray   workers=<n> (default: cores // threads)   threads=1 (torch threads per run)
    runs_root=runs/bench/<suite>   results_dir=benchmarks/results/<suite>   ray_address=<addr> (or RAY_ADDRESS)
    overrides=[...] (extra `saferl.run` overrides for every run)   max_attempts=2   bootstrap_reps=10000
    report=true   dry_run=false   live=null (rich live view on a terminal, one line per run elsewhere)
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

COMMANDS = ("run", "report")


@dataclass
class BenchConfig:
    defaults: list[Any] = field(default_factory=lambda: [{"suite": MISSING}, "_self_"])
    suite: Any = MISSING
    launcher: str = "local"
    workers: int | None = None
    threads: int = 1
    runs_root: str = "runs/bench/${suite.name}"
    results_dir: str = "benchmarks/results/${suite.name}"
    ray_address: str | None = None
    overrides: list[str] = field(default_factory=list)
    max_attempts: int = 2
    bootstrap_reps: int = 10_000
    report: bool = True
    dry_run: bool = False
    live: bool | None = None


def compose_bench(argv: list[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import saferl.algos  # noqa: F401  (the algo group, which each suite run's config is composed from)
    from saferl.bench.suite import CONF_DIR, SuiteError, available_suites

    ConfigStore.instance().store(name="saferl_bench", node=BenchConfig)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="saferl_bench", overrides=argv)
    except (HydraException, OmegaConfBaseException) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SuiteError(
            f"{msg}\n  suites: {', '.join(available_suites())}; usage: python -m saferl.bench suite=<name>"
        ) from None


def check_options(cfg: Any) -> None:
    """The bench's own options, before a suite is expanded or a worker started."""
    from saferl.bench.suite import SuiteError

    def whole(name: str, least: int, fix: str, allow_none: bool = False) -> None:
        value = cfg[name]
        if value is None and allow_none:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise SuiteError(f"{name}={value!r} is not allowed: {name} must be >= {least} (a whole number); {fix}")

    if cfg.launcher not in ("local", "ray"):
        raise SuiteError(f"launcher={cfg.launcher!r} is not known; use launcher=local or launcher=ray")
    whole("workers", 1, "use workers=null (one per core) or a number of worker processes", allow_none=True)
    whole("threads", 1, "use threads=1 (one single-threaded process per core is the fastest on CPUs)")
    whole("max_attempts", 1, "use max_attempts=2 (a run is retried once), or 1 for no retry")
    whole("bootstrap_reps", 1, "use bootstrap_reps=10000 (the default), or fewer for a quick look")


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _split_command(argv: list[str]) -> tuple[str, list[str]]:
    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    if argv and "=" not in argv[0] and not argv[0].startswith("-"):
        from saferl.bench.suite import SuiteError

        raise SuiteError(f"unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)} (default run)")
    return "run", argv


def _meta(cfg: Any, suite: Any, specs: list[Any], command: str, rerun: str) -> dict[str, Any]:
    from saferl.bench.engines import cpu_count
    from saferl.bench.runner import read_state

    states = [s for spec in specs if (s := read_state(spec.run_dir))]
    hosts = sorted({s["host"] for s in states if s.get("host")})
    spans = sorted((s["started"], s["finished"]) for s in states if s.get("started") and s.get("finished"))
    wall = ""
    if spans:  # time during which some run was training: the union of the runs' intervals (gaps between
        # invocations, e.g. a later rerun of a few runs, do not count)
        busy, (lo, hi) = 0.0, spans[0]
        for a, b in spans[1:]:
            if a > hi:
                busy, lo = busy + hi - lo, a
            hi = max(hi, b)
        busy += hi - lo
        first, last = (time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) for t in (spans[0][0], max(b for _, b in spans)))
        wall = f"{busy / 60:.1f} min with runs in progress, between {first} and {last} UTC"
    example = next((s.command() for s in specs), "")
    machine = ""
    if hosts:
        machine = f"{', '.join(hosts)}; {cfg.threads} torch thread(s) per run"
        if hosts == [socket.gethostname()]:  # the reports are built where the runs trained: say on what
            machine += f"; {_cpu_model()}, {cpu_count()} CPU(s) available, torch {_torch_version()}"
    current = {Path(spec.run_dir).resolve() for spec in specs}
    runs_root = Path(cfg.runs_root)
    stale = [p for p in runs_root.rglob("eval.json") if p.parent.resolve() not in current] if runs_root.is_dir() else []
    return {
        "stale": f"{len(stale)} finished run(s) under {runs_root} belong to other settings (an earlier definition of "
        "this suite, or other overrides) and are not shown."
        if stale
        else "",
        "description": suite.description,
        "command": command,
        "rerun": rerun,
        "example_run": example,
        "seeds": ", ".join(str(s) for s in suite.seeds),
        "machine": machine,
        "wall": wall,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _torch_version() -> str:
    import torch

    return torch.__version__


def write_leaderboard(cfg: Any, suite: Any, specs: list[Any], command: str, rerun: str) -> dict[str, Path]:
    from saferl.bench.aggregate import aggregate, collect
    from saferl.bench.report import write_reports

    records, failed, missing = collect(specs, suite.score)
    thresholds = {t.name: list(suite.thresholds(t.name)) for t in suite.tasks}
    board = aggregate(
        records,
        thresholds,
        suite=suite.name,
        bootstrap_reps=int(cfg.bootstrap_reps),
        expected_runs=len(specs),
        failed=failed,
        missing=missing,
        score=suite.score,
    )
    paths = write_reports(board, Path(cfg.results_dir), _meta(cfg, suite, specs, command, rerun), records)
    _print_overall(board)
    return paths


def _print_overall(board: Any) -> None:
    from saferl.bench.report import overall_table
    from saferl.console import print_table

    cols, rows, _ = overall_table(board)
    print_table(f"suite {board.suite}: {board.finished_runs}/{board.expected_runs} runs", cols, rows)


def _print_plan(specs: list[Any]) -> None:
    from collections import Counter

    from saferl.bench.runner import is_finished, read_state

    states = Counter()
    for s in specs:
        state = "finished" if is_finished(s) else (read_state(s.run_dir) or {}).get("state", "pending")
        state = "interrupted (resumes)" if state == "running" else state
        states[state] += 1
        kappa = f"κ={s.cost_limit:g}" if s.per_threshold else "κ=all"
        print(f"{state:>22}  {s.agent:<12} {s.task:<14} {kappa:<7} seed={s.seed:<3} {s.run_dir}")
    print(f"{len(specs)} runs: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))


def main(argv: list[str] | None = None) -> int:
    from saferl.bench.engines import make_engine
    from saferl.bench.runner import run_suite
    from saferl.bench.suite import expand, parse_suite
    from saferl.cli import setup_logging, user_errors

    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    with user_errors():
        command, overrides = _split_command(argv)
        cfg = compose_bench(overrides)
        check_options(cfg)
        suite = parse_suite(cfg.suite)
        runs_root = Path(cfg.runs_root)
        extra = tuple(cfg.overrides)
        specs = expand(suite, runs_root, extra, need_data=command == "run")
        cli = "python -m saferl.bench " + " ".join(_quote(a) for a in argv)
        rerun = "python -m saferl.bench " + " ".join(_quote(a) for a in overrides)
        if command == "report":
            paths = write_leaderboard(cfg, suite, specs, cli, rerun)
            print(f"reports written to {paths['markdown'].parent} ({paths['markdown'].name}, {paths['html'].name})")
            return 0
        if cfg.dry_run:
            _print_plan(specs)
            return 0
        engine = make_engine(cfg.launcher, workers=cfg.workers, threads=cfg.threads, ray_address=cfg.ray_address)
        try:
            outcome = run_suite(suite, specs, engine, runs_root, max_attempts=int(cfg.max_attempts), live=cfg.live)
        finally:
            engine.shutdown()
        print(
            f"suite {suite.name}: {outcome.finished} trained, {outcome.skipped} already finished, "
            f"{len(outcome.failed)} failed, in {outcome.wall_s:.0f} s on {socket.gethostname()}"
        )
        if cfg.report:
            paths = write_leaderboard(cfg, suite, specs, cli, rerun)
            print(f"reports written to {paths['markdown'].parent} ({paths['markdown'].name}, {paths['html'].name})")
        if outcome.failed:
            print(
                f"error: {len(outcome.failed)} run(s) failed (see bench.log in their run directories); "
                "rerun the same command to retry them",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
