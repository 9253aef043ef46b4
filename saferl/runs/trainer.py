"""The one training loop skeleton, run by both phases of a run (`saferl.runs.phases`).

Each iteration the phase advances (one update offline, one `OnlineLoop` step online); at the points the
phase says are due the `Trainer` reads the metrics (one host sync) and stops a diverged run, writes the log
row, evaluates and checkpoints. Resuming restores the algorithm and every random stream from
``checkpoints/last.pt``, so a resumed run ends with the parameters of an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import random
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saferl import evaluation
from saferl.algos import Algorithm
from saferl.console import ProgressBar
from saferl.runs.checkpoints import check_same_run, read_checkpoint, restore, save_checkpoint
from saferl.runs.errors import TrainingDivergedError
from saferl.runs.metrics import MetricsLog, conditioned_values, eval_values
from saferl.runs.resolve import ResolvedRun
from saferl.runs.rundir import CHECKPOINT
from saferl.runs.settings import RunSettings

log = logging.getLogger("saferl")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Due:
    """What falls due after one iteration of a phase."""

    log: bool = False
    eval: bool = False
    checkpoint: bool = False

    def __bool__(self) -> bool:
        return self.log or self.eval or self.checkpoint


class Phase(ABC):
    """One phase's schedule: how it advances, when logging, evaluation and checkpoints fall due."""

    log_at_checkpoints = False  # also write a log row where only a checkpoint is due
    progress: tuple[bool, int, str, int]  # the progress bar: enabled, total, label, completed

    @property
    @abstractmethod
    def done(self) -> bool: ...

    @property
    @abstractmethod
    def step(self) -> int:
        """The run's step for log rows and checkpoints (offline updates, plus env steps online)."""

    @abstractmethod
    def advance(self, metrics: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        """One iteration; returns the latest update's metrics and the progress made (bar units)."""

    @abstractmethod
    def due(self) -> Due: ...

    @abstractmethod
    def log_values(self) -> dict[str, float]:
        """The phase's own columns of a log row (rates over the interval since the last one)."""

    @abstractmethod
    def checkpoint(self) -> tuple[int, dict[str, Any] | None]:
        """The checkpoint's ``step`` and the phase's extra state."""

    def status(self, values: dict[str, float], due: Due) -> str | None:
        return None

    def close(self) -> None:  # noqa: B027  (optional hook: most phases hold nothing to release)
        """Release what the phase holds (envs)."""


class Trainer:
    """The loop state shared by the phases of one run: the algorithm, the sampler, the metrics log, the
    clocks and the last checkpoint."""

    def __init__(self, s: RunSettings, run: ResolvedRun, algo: Algorithm, run_dir: Path, from_init: bool):
        self.s, self.run, self.algo, self.run_dir = s, run, algo, run_dir
        self.sampler = torch.Generator(device=run.device)
        self.sampler.manual_seed(s.seed)
        self.start_step = run.steps if from_init else 0  # init_from: the offline phase happened elsewhere
        self.elapsed = self.update_time = 0.0
        self._seg_start: float | None = None
        resumed = self._resume()
        self.online_state: dict[str, Any] | None = resumed.get("online") if resumed else None
        log_resume = self.start_step + (self.online_state["loop"]["env_steps"] if self.online_state else 0)
        self.metrics_log = MetricsLog(run_dir, log_resume if s.resume else None, s.tensorboard)
        self.last_ckpt: int | None = self.start_step if self.start_step else None
        self.policy = algo.episodic_policy()
        self.wrap_eval = algo.wrap_eval_env if algo.wraps_eval_env else None
        self.members = 1  # > 1: this run is one member of a K-seed batch (saferl.runs.seeds)
        self.final_others: dict[float, evaluation.RolloutStats] | None = None  # the last step's, at other κ

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def _resume(self) -> dict[str, Any] | None:
        if not (self.s.resume and self.ckpt_path.exists()):
            return None
        state = read_checkpoint(self.ckpt_path)
        check_same_run(state, self.s, self.run.steps)
        restore(state, self.algo, self.sampler)
        self.start_step, self.elapsed, self.update_time = state["step"], state["elapsed"], state["update_time"]
        log.info("resuming from step %d of %d", self.start_step, self.run.steps)
        return state

    def evaluate(self, cost_target: float | None = None) -> evaluation.RolloutStats:
        """Rollouts of the policy; ``cost_target``: a threshold-conditioned algorithm acting for that κ."""
        policy = self.policy if cost_target is None else self.algo.episodic_policy(cost_target)
        self.algo.eval()  # once per evaluation, not once per act() call
        stats = evaluation.rollout(
            self.run.task.env_id, policy, self.s.eval_episodes, self.s.seed, wrap_env=self.wrap_eval
        )
        self.algo.train()
        return stats

    @property
    def other_thresholds(self) -> list[float]:
        """The thresholds besides the run's cost limit that a threshold-conditioned algorithm is evaluated
        for, each in rollouts of its own (one trained model, scored at every κ as its paper's protocol does)."""
        if not self.algo.threshold_conditioned:
            return []
        return [k for k in self.run.thresholds if k != self.run.cost_limit]

    def evaluate_others(self) -> dict[float, evaluation.RolloutStats]:
        return {kappa: self.evaluate(kappa) for kappa in self.other_thresholds}

    def eval_values(self, stats: evaluation.RolloutStats) -> dict[str, float]:
        return eval_values(stats, self.run.task, self.run.cost_limit)

    def save(self, path: Path, step: int, extra: dict[str, Any] | None = None) -> None:
        elapsed = self.elapsed + (time.perf_counter() - self._seg_start if self._seg_start is not None else 0.0)
        save_checkpoint(path, self.algo, self.sampler, step, elapsed, self.update_time, self.s, self.run.steps, extra)

    def run_phase(self, phase: Phase) -> evaluation.RolloutStats | None:
        """Run a phase to its end; returns its evaluation at the last step, if it made one there."""
        bar = ProgressBar(*phase.progress)
        self.start_segment()
        metrics: dict[str, torch.Tensor] = {}
        final = None
        try:
            while not phase.done:
                metrics, progress = phase.advance(metrics)
                if progress:
                    bar.advance(progress)
                due = phase.due()
                if due:
                    final = self.handle_due(phase, due, metrics, bar)
        finally:
            bar.close()
            phase.close()
        self.end_segment()
        return final

    def start_segment(self) -> None:
        self._seg_start = time.perf_counter()

    def end_segment(self) -> None:
        self.elapsed += time.perf_counter() - self._seg_start
        self._seg_start = None

    def handle_due(
        self, phase: Phase, due: Due, metrics: dict[str, torch.Tensor], bar: ProgressBar | None
    ) -> evaluation.RolloutStats | None:
        """What falls due after an iteration: NaN check, log row, evaluation, checkpoint. Returns the
        evaluation when the phase ended with one."""
        step = phase.step
        values = check_finite(metrics, self.algo, step, self.last_ckpt, self.run_dir)
        values.update(phase.log_values())
        final = None
        if due.eval:
            stats = self.evaluate()
            values.update(self.eval_values(stats))
            others = self.evaluate_others()
            values.update(conditioned_values(others, self.run.task))
            final = stats if phase.done else None
            self.final_others = others if phase.done else None
        if due.log or due.eval or phase.log_at_checkpoints:
            self.metrics_log.write(step, values)
            status = phase.status(values, due)
            if status is not None and bar is not None:
                bar.advance(0, status=status)
        if due.checkpoint:
            ckpt_step, extra = phase.checkpoint()
            self.save(self.ckpt_path, ckpt_step, extra)
            self.last_ckpt = step
        return final

    def close(self) -> None:
        self.metrics_log.close()


def check_finite(
    metrics: dict[str, torch.Tensor], algo: Algorithm, step: int, last_ckpt: int | None, run_dir: Path
) -> dict[str, float]:
    """Read the step's metrics (one host sync) and stop the run if a loss or a parameter is NaN/inf."""
    names = list(metrics)
    flat = torch.stack([metrics[n].detach().float().reshape(()) for n in names]).cpu().tolist() if names else []
    values = dict(zip(names, flat, strict=True))
    bad = [n for n, v in values.items() if not math.isfinite(v)]
    if not bad:
        bad = [f"parameter {n}" for n, p in algo.named_parameters() if not bool(p.isfinite().all())][:1]
    if bad:
        kept = (
            f"the last good checkpoint (step {last_ckpt}) is kept at {run_dir / CHECKPOINT}"
            if last_ckpt is not None
            else "no checkpoint had been written yet"
        )
        raise TrainingDivergedError(
            f"training diverged: {', '.join(bad)} became NaN/inf by step {step}; the run stopped and {kept}. "
            "Lower the learning rate or check the dataset, then resume or start again."
        )
    return values
