"""``seeds=[0,1,2]``: K seeds of one run trained in lock-step as one batched model, one run directory each.

Every member is the run ``seed=k`` would be: built and seeded by the same code (`start_member`), sampling its
batches from its own generator, its random draws and its global random streams its own (they are swapped in
around everything a member does outside the batched update: sampling, evaluation, checkpoints). The offline
updates of all members are one `MemberStack.update` (``torch.func.vmap`` over the algorithm's own update);
logging, evaluation and checkpoints fall due at the same steps for every member and are written into each
member's run directory by its own `Trainer`, so ``saferl.bench``, ``load_run``, ``init_from`` and ``resume``
see K ordinary runs.

Resuming: each member resumes from its own checkpoint. A kill between two members' checkpoints leaves them
at different steps; the members behind catch up alone (with the schedule of the whole phase) before the
batch continues. The online phase of offline→online algorithms runs member after member, each on its own
streams (K env sets in lock-step would be the batched extension).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from saferl import evaluation
from saferl.algos import get_algorithm
from saferl.console import ProgressBar
from saferl.nn.members import MemberStack, torch_rng_state
from saferl.runs.errors import SaferlError
from saferl.runs.experiment import Member, finish_member, finished_result, plan_run, start_member
from saferl.runs.phases import OfflinePhase, OnlinePhase
from saferl.runs.rundir import is_finished
from saferl.runs.settings import RunSettings

log = logging.getLogger("saferl")


def member_settings(s: RunSettings, seed: int) -> RunSettings:
    """The settings of the single run that member ``seed`` stands for (an explicit ``run_dir`` gets one
    sub-directory per seed)."""
    run_dir = str(Path(s.run_dir) / f"seed{seed}") if s.run_dir else None
    return dataclasses.replace(s, seed=seed, seeds=None, run_dir=run_dir)


def check_seeds(s: RunSettings) -> list[int]:
    raw = s.seeds if isinstance(s.seeds, list | tuple) else [s.seeds]
    if not all(isinstance(k, int) and not isinstance(k, bool) for k in raw):
        raise SaferlError(f"seeds={s.seeds!r} is not a list of whole numbers; use e.g. 'seeds=[0,1,2]'")
    seeds = [int(k) for k in raw]
    if not seeds:
        raise SaferlError("seeds=[] names no seed; give a list such as 'seeds=[0,1,2]', or seed=<k> for one run")
    if len(set(seeds)) != len(seeds):
        raise SaferlError(f"seeds={seeds} repeats a seed; every member must be a different run")
    if s.compile:
        raise SaferlError("compile=true cannot be combined with seeds=[…]; drop one of them")
    return seeds


class Streams:
    """One member's global random streams (torch, numpy, python); `MemberStack` keeps its torch stream."""

    def __init__(self, stack: MemberStack, k: int, numpy_state: Any, python_state: Any):
        self.stack, self.k = stack, k
        self.numpy, self.python = numpy_state, python_state

    @contextmanager
    def active(self) -> Iterator[None]:
        outer_np, outer_py = np.random.get_state(), random.getstate()
        np.random.set_state(self.numpy)
        random.setstate(self.python)
        try:
            with self.stack.member_rng(self.k):
                yield
        finally:
            self.numpy, self.python = np.random.get_state(), random.getstate()
            np.random.set_state(outer_np)
            random.setstate(outer_py)


def run_seeds(s: RunSettings, algo_opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Train and evaluate every seed of ``s.seeds``; returns their ``eval.json`` payloads in that order."""
    seeds = check_seeds(s)
    settings = [member_settings(s, k) for k in seeds]
    if s.resume and all(m.run_dir and is_finished(Path(m.run_dir)) for m in settings):
        return [finished_result(m) for m in settings]
    if not get_algorithm(s.algo).batched_seeds:  # before any data is loaded
        raise SaferlError(
            f"{s.algo} cannot train several seeds as one batched model (its update does not run under "
            "torch.func.vmap); run one process per seed (seed=<k>) instead"
        )
    plan = plan_run(settings[0], algo_opts)
    members: list[Member] = []
    rng_states, np_states, py_states = [], [], []
    for m in settings:
        members.append(start_member(plan, m))  # seeds everything, builds, resumes: exactly the single run
        rng_states.append(torch_rng_state(plan.run.device.type == "cuda"))
        np_states.append(np.random.get_state())
        py_states.append(random.getstate())
    for member in members:
        member.trainer.members = len(members)
    stack = MemberStack([m.algo for m in members], rng_states)
    streams = [Streams(stack, k, np_states[k], py_states[k]) for k in range(len(members))]
    log.info("training seeds %s as one batched model (%d members)", seeds, len(members))
    try:
        finals = train_offline(stack, members, streams)
        results = []
        for k, member in enumerate(members):
            online = None
            final = finals[k]
            with streams[k].active():
                if s.online_steps > 0:
                    trainer = member.trainer
                    online = OnlinePhase(trainer, member.train_data, trainer.online_state, plan.online_wrap)
                    final = trainer.run_phase(online)
                results.append(finish_member(plan, member, final, online))
    finally:
        for member in members:
            member.trainer.close()
    return results


def train_offline(
    stack: MemberStack, members: list[Member], streams: list[Streams]
) -> list[evaluation.RolloutStats | None]:
    """The offline phase of every member in lock-step; returns each member's evaluation at the last step."""
    lead = max(m.trainer.start_step for m in members)
    phases = [OfflinePhase(m.trainer, m.train_data, stop_at=lead) for m in members]
    finals: list[evaluation.RolloutStats | None] = [None] * len(members)
    for k, (member, phase) in enumerate(zip(members, phases, strict=True)):
        if not phase.done:  # killed between two members' checkpoints: this one catches up alone
            log.info("seed %d resumes at step %d and catches up with the others (%d)", member.s.seed, phase.step, lead)
            with streams[k].active():
                finals[k] = member.trainer.run_phase(phase)
    for phase in phases:
        phase.stop_at = phase.total
    stack.load()  # the members' state after construction, resume and catch-up
    if phases[0].done:
        return finals

    enabled, total, label, done = phases[0].progress
    bar = ProgressBar(enabled, total, f"{label}, {len(members)} seeds", done)
    for member in members:
        member.trainer.start_segment()
    lead_phase = phases[0]
    try:
        while not lead_phase.done:
            batches = []
            for k, (member, phase) in enumerate(zip(members, phases, strict=True)):
                with streams[k].active():  # an algorithm's sample() may draw from the global stream
                    batches.append(member.algo.sample(phase.data, phase.batch_size, member.trainer.sampler))
            t0 = time.perf_counter()
            with lead_phase.autocast():
                stacked = stack.update(batches)
            seconds = time.perf_counter() - t0
            progress = 0
            for phase in phases:
                progress = phase.count(seconds)
            if progress:
                bar.advance(progress)
            due = lead_phase.due()
            if not due:
                continue
            stack.sync()
            for k, (member, phase) in enumerate(zip(members, phases, strict=True)):
                metrics = {name: value[k] for name, value in stacked.items()}
                with streams[k].active():
                    finals[k] = member.trainer.handle_due(phase, due, metrics, bar if k == 0 else None)
    finally:
        bar.close()
        for member in members:
            member.trainer.end_segment()
    return finals
