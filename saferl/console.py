"""Terminal output: progress bars and result tables (rich), silent when disabled."""

from __future__ import annotations

from typing import Any


class ProgressBar:
    """A rich progress bar that does nothing when disabled (tests, non-interactive runs)."""

    def __init__(self, enabled: bool, total: int, label: str, completed: int = 0):
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, completed=completed, status="")

    def advance(self, n: int = 1, status: str | None = None) -> None:
        if self._bar is not None:
            kwargs: dict[str, Any] = {"advance": n}
            if status is not None:
                kwargs["status"] = status
            self._bar.update(self._task, **kwargs)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col != columns[0] else "left")
    for row in rows:
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console = Console()
    if not console.is_terminal:  # logs and pipes: rich would wrap at 80 columns
        console = Console(width=140)
    console.print(table)
