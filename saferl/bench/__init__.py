"""Benchmark suites: `python -m saferl.bench suite=<name>` trains algorithms × tasks × seeds × cost thresholds
on a local process pool or on Ray, then writes a DSRL-style leaderboard with rliable statistics.

Layers: `suite` (what to run) → `engines` + `runner` + `worker` (running it, idempotently) → `aggregate`
(numbers) → `report` (Markdown, HTML, plots). The Hydra launchers of ``python -m saferl.run -m`` reuse the
same engines (``hydra_plugins/saferl_launcher``).
"""

from saferl.bench.aggregate import Leaderboard, RunRecord, aggregate, collect, iqm_with_ci
from saferl.bench.engines import LocalEngine, RayEngine, make_engine
from saferl.bench.report import write_reports
from saferl.bench.runner import SuiteOutcome, run_suite
from saferl.bench.suite import RunSpec, Suite, SuiteError, available_suites, expand, parse_suite

__all__ = [
    "Leaderboard",
    "LocalEngine",
    "RayEngine",
    "RunRecord",
    "RunSpec",
    "Suite",
    "SuiteError",
    "SuiteOutcome",
    "aggregate",
    "available_suites",
    "collect",
    "expand",
    "iqm_with_ci",
    "make_engine",
    "parse_suite",
    "run_suite",
    "write_reports",
]
