"""The live view of a suite: finished / running / failed / pending runs, each running run's step, and an ETA.

On a terminal it is a rich ``Live`` panel; elsewhere (CI logs, tests, Ray job logs) one line per event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class RunningRun:
    label: str
    step: int | None
    steps: int | None
    elapsed_s: float
    attempt: int = 1


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:  # None or NaN
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressView:
    def __init__(self, title: str, total: int, skipped: int, enabled: bool | None = None):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.title = title
        self.total, self.skipped = total, skipped
        self.finished = self.failed = 0
        self.started = time.time()
        self.live_mode = self.console.is_terminal if enabled is None else enabled
        self._live: Any = None
        self._last: dict[str, Any] = {}

    def __enter__(self) -> ProgressView:
        if self.live_mode:
            from rich.live import Live

            self._live = Live(self._render([], 0, None), console=self.console, refresh_per_second=2)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def event(self, message: str) -> None:
        """A finished, failed or retried run: printed above the live panel (or as a log line)."""
        if self._live is not None:
            self._live.console.print(message)
        else:  # log lines: never wrapped, so they stay greppable
            self.console.print(message, highlight=False, soft_wrap=True)

    def update(self, running: list[RunningRun], pending: int, eta_s: float | None) -> None:
        if self._live is not None:
            self._live.update(self._render(running, pending, eta_s))

    def _render(self, running: list[RunningRun], pending: int, eta_s: float | None) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        done = self.finished + self.skipped
        head = Text.assemble(
            (f"{self.title}  ", "bold"),
            (f"{done}/{self.total} done", "green"),
            f" ({self.skipped} already there)  ",
            (f"{len(running)} running", "cyan"),
            f"  {pending} pending  ",
            (f"{self.failed} failed", "red" if self.failed else ""),
            f"  elapsed {format_duration(time.time() - self.started)}  ETA {format_duration(eta_s)}",
        )
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("running", "step", "elapsed"):
            table.add_column(col, justify="left" if col == "running" else "right")
        for run in running:
            step = f"{run.step}/{run.steps}" if run.step is not None and run.steps else "starting"
            label = run.label + (f" (attempt {run.attempt})" if run.attempt > 1 else "")
            table.add_row(label, step, format_duration(run.elapsed_s))
        return Group(head, table) if running else head
