"""The two phases a run's `Trainer` drives: offline updates on the dataset, then (offline→online
algorithms) online fine-tuning counted in env steps."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from saferl import evaluation
from saferl.data import OfflineDataset
from saferl.online import OnlineLoop
from saferl.runs.rundir import OFFLINE_CHECKPOINT
from saferl.runs.trainer import Due, Phase, Trainer

log = logging.getLogger("saferl")

BAR_CHUNK = 50  # updates per progress-bar refresh (a refresh per update costs more than a small update)


class OfflinePhase(Phase):
    """``steps`` updates on batches of the dataset; logs every ``log_every``, evaluates every ``eval_every``
    (the final evaluation follows the phase), checkpoints every ``checkpoint_every`` updates and at the end.
    ``stop_at`` pauses the phase at that step with the schedule of the whole phase (a K-seed member catching
    up with the others after a resume)."""

    def __init__(self, trainer: Trainer, data: OfflineDataset, stop_at: int | None = None):
        s, algo = trainer.s, trainer.algo
        self.trainer, self.data, self.s = trainer, data, s
        self.total = trainer.run.steps
        self.stop_at = self.total if stop_at is None else min(stop_at, self.total)
        self._step = trainer.start_step
        self.batch_size = algo.config.batch_size
        self.update = torch.compile(algo.update) if s.compile else algo.update
        device_type = trainer.run.device.type
        self.autocast = (
            (lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if s.amp == "bf16" else contextlib.nullcontext
        )
        self.progress = (s.progress and self.total > self._step, self.total, f"{s.algo} on {s.env}", self._step)
        self.t_log, self.since_log = time.perf_counter(), 0

    @property
    def done(self) -> bool:
        return self._step >= self.stop_at

    @property
    def step(self) -> int:
        return self._step

    def advance(self, metrics: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        trainer = self.trainer
        t0 = time.perf_counter()
        with self.autocast():
            metrics = self.update(trainer.algo.sample(self.data, self.batch_size, trainer.sampler))
        return metrics, self.count(time.perf_counter() - t0)

    def count(self, seconds: float) -> int:
        """Book one update that took ``seconds`` (made here, or by a K-seed batch for every member at once);
        returns the progress-bar units it completes."""
        self._step += 1
        self.trainer.update_time += seconds
        self.since_log += 1
        step, chunk = self._step, self._step % BAR_CHUNK
        return BAR_CHUNK if chunk == 0 else (chunk if step == self.total else 0)

    def due(self) -> Due:
        s, step = self.s, self._step
        last = step == self.total
        return Due(
            log=step % s.log_every == 0 or last,
            eval=s.eval_every > 0 and step % s.eval_every == 0 and not last,
            checkpoint=step % s.checkpoint_every == 0 or last,
        )

    def log_values(self) -> dict[str, float]:
        now = time.perf_counter()
        values = {"updates_per_s": self.since_log / max(now - self.t_log, 1e-9)}
        self.t_log, self.since_log = now, 0
        return values

    def checkpoint(self) -> tuple[int, dict[str, Any] | None]:
        return self._step, None

    def status(self, values: dict[str, float], due: Due) -> str | None:
        return " ".join(f"{k}={v:.3g}" for k, v in list(values.items())[:2])


class OnlinePhase(Phase):
    """The online half of an offline→online run: `OnlineLoop` steps, logging, evaluation and checkpoints
    counted in env steps (``log_every``, ``online_eval_every``, ``checkpoint_every``). A checkpoint falls due
    every ``checkpoint_every`` env steps and is written at the next step where no episode is under way (or
    after one more episode length), so a killed run resumes exactly where it was.

    At the switch (not on resume) the offline policy is saved to ``checkpoints/offline.pt`` (and as
    ``last.pt``: init_from runs resume there too) and evaluated: ``eval.json["offline"]``."""

    log_at_checkpoints = True

    def __init__(
        self,
        trainer: Trainer,
        data: OfflineDataset,
        state: dict[str, Any] | None,
        wrap_env: Callable[[gym.Env], gym.Env] | None,
    ):
        s, run = trainer.s, trainer.run
        self.trainer, self.s, self.offline_steps = trainer, s, run.steps
        if state is None:
            for path in (trainer.run_dir / OFFLINE_CHECKPOINT, trainer.ckpt_path):
                trainer.save(path, run.steps)
            stats = trainer.evaluate()
            self.offline_result = {
                **evaluation.dsrl_metrics(stats, run.task, run.thresholds),
                **evaluation.safety_metrics(stats),
            }
            trainer.metrics_log.write(run.steps, {"env_steps": 0.0, **trainer.eval_values(stats)})
        else:
            self.offline_result = state["offline_result"]
        self.loop = loop = OnlineLoop(trainer.algo, run.task.env_id, data, s.seed, s.online_envs, wrap_env=wrap_env)
        if state is not None:
            loop.load_state_dict(state["loop"])
            log.info("resuming the online phase at env step %d of %d", loop.env_steps, s.online_steps)
        self.every_eval = s.online_eval_every or max(s.online_steps // 10, 1)
        self.max_wait = run.task.max_episode_steps * s.online_envs  # env steps a due checkpoint may wait
        self.progress = (s.progress, s.online_steps, f"{s.algo} online", loop.env_steps)
        self.before = self.now = loop.env_steps
        self.ckpt_due: int | None = None
        self.t_log, self.updates_at_log, self.episodes_at_log = (
            time.perf_counter(),
            loop.updates,
            len(loop.episode_returns),
        )
        trainer.last_ckpt = run.steps + loop.env_steps  # the switch (offline.pt) or the checkpoint we resumed from

    @property
    def done(self) -> bool:
        return self.loop.env_steps >= self.s.online_steps

    @property
    def step(self) -> int:
        return self.offline_steps + self.now

    def advance(self, metrics: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        self.before = self.loop.env_steps
        metrics = self.loop.step() or metrics
        self.now = self.loop.env_steps
        return metrics, self.now - self.before

    def due(self) -> Due:
        s, now, before = self.s, self.now, self.before
        last = now >= s.online_steps

        def crossed(every: int) -> bool:
            return last or now // every > before // every

        if crossed(s.checkpoint_every) and self.ckpt_due is None:
            self.ckpt_due = now
        # checkpoints wait for the next episode boundary (exact resume), at most one episode per env
        ckpt_now = self.ckpt_due is not None and (
            self.loop.at_episode_boundary or last or now - self.ckpt_due >= self.max_wait
        )
        return Due(log=crossed(s.log_every), eval=crossed(self.every_eval), checkpoint=ckpt_now)

    def log_values(self) -> dict[str, float]:
        loop, t = self.loop, time.perf_counter()
        new_returns = loop.episode_returns[self.episodes_at_log :]
        new_costs = loop.episode_costs[self.episodes_at_log :]
        values = {
            "env_steps": float(self.now),
            "online/updates": float(loop.updates),
            "online/updates_per_s": (loop.updates - self.updates_at_log) / max(t - self.t_log, 1e-9),
            "online/total_cost": loop.total_cost,
            "online/interventions": float(loop.interventions),
        }
        if new_returns:
            values["online/episode_reward"] = float(np.mean(new_returns))
            values["online/episode_cost"] = float(np.mean(new_costs))
        self.t_log, self.updates_at_log, self.episodes_at_log = t, loop.updates, len(loop.episode_returns)
        return values

    def status(self, values: dict[str, float], due: Due) -> str | None:
        return f"reward={values['eval/reward']:.3g} cost={values['eval/cost']:.3g}" if due.eval else None

    def checkpoint(self) -> tuple[int, dict[str, Any] | None]:
        self.ckpt_due = None
        return self.offline_steps, {"online": {"loop": self.loop.state_dict(), "offline_result": self.offline_result}}

    def close(self) -> None:
        self.loop.close()

    def info(self) -> dict[str, Any]:
        """The online block of ``eval.json``."""
        loop = self.loop
        return {
            "offline_steps": self.offline_steps,
            "online_steps": loop.env_steps,
            "online_updates": loop.updates,
            "online_episodes": len(loop.episode_returns),
            "online_total_cost": loop.total_cost,
            "online_interventions": loop.interventions,
            "offline": self.offline_result,
        }
