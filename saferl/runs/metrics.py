"""``metrics.csv`` (one row per log interval) and, when tensorboard is installed, TensorBoard events."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from saferl import evaluation
from saferl.envs import TaskSpec
from saferl.runs.rundir import atomic_path

log = logging.getLogger("saferl")

EVAL_KEYS = ("eval/reward", "eval/cost", "eval/normalized_reward", "eval/normalized_cost")


class MetricsLog:
    """``metrics.csv`` (one row per log interval) and, when tensorboard is installed, TensorBoard events."""

    EVAL_KEYS = EVAL_KEYS

    def __init__(self, run_dir: Path, resume_step: int | None, tensorboard: bool):
        self.path = run_dir / "metrics.csv"
        self.header: list[str] | None = None
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        elif self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
            except ImportError:
                log.debug("tensorboard is not installed; logging to metrics.csv only")

    def _rewrite(self, rows: list[list[str]]) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(rows)

    def _truncate_after(self, step: int) -> None:
        """Drop rows logged after the checkpoint we resume from (and a torn last line)."""
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        self.header, kept = rows[0], [rows[0]]
        for row in rows[1:]:
            if len(row) == len(self.header) and row[0].isdigit() and int(row[0]) <= step:
                kept.append(row)
        self._rewrite(kept)

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.header is None:
            train_keys = sorted(k for k in values if not k.startswith("eval/"))
            conditioned = sorted(k for k in values if k.startswith("eval/") and k not in EVAL_KEYS)
            self.header = ["step", *train_keys, *EVAL_KEYS, *conditioned]
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.header)
        elif set(values) - set(self.header):  # the online phase logs new columns: widen the file once
            self._widen(sorted(set(values) - set(self.header)))
        row = [step] + [_fmt(values.get(k)) for k in self.header[1:]]
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(row)
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)

    def _widen(self, new_keys: list[str]) -> None:
        assert self.header is not None
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        self.header = [*self.header, *new_keys]
        self._rewrite([self.header, *(row + [""] * len(new_keys) for row in rows)])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def eval_values(stats: evaluation.RolloutStats, task: TaskSpec, cost_limit: float) -> dict[str, float]:
    """The ``eval/*`` columns of one evaluation."""
    reward, cost = float(stats.rewards.mean()), float(stats.costs.mean())
    return {
        "eval/reward": reward,
        "eval/cost": cost,
        "eval/normalized_reward": task.normalized_reward(reward),
        "eval/normalized_cost": evaluation.normalized_cost(cost, cost_limit),
    }


def conditioned_key(threshold: float, what: str) -> str:
    """The ``metrics.csv`` column of a threshold-conditioned evaluation at κ (``what``: reward or cost)."""
    return f"eval/k{evaluation.threshold_key(threshold)}/{what}"


def conditioned_values(others: dict[float, evaluation.RolloutStats], task: TaskSpec) -> dict[str, float]:
    """The episode reward (raw and normalized) and cost of each threshold-conditioned evaluation, per κ."""
    values = {}
    for kappa, stats in others.items():
        reward = float(stats.rewards.mean())
        values[conditioned_key(kappa, "reward")] = reward
        values[conditioned_key(kappa, "normalized_reward")] = task.normalized_reward(reward)
        values[conditioned_key(kappa, "cost")] = float(stats.costs.mean())
    return values
