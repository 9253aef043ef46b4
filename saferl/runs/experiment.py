"""`run_experiment`: one (algorithm, task, seed) from a composed config to ``eval.json``.

The order is the contract: every check on the user's input runs before a run directory exists; then the
config is written, the phases train (`saferl.runs.phases` under the `Trainer`), and the final evaluation
writes ``eval.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from saferl import evaluation
from saferl.algos import AlgoConfig, Algorithm, get_algorithm
from saferl.data import OfflineDataset
from saferl.envs import get_task
from saferl.runs.errors import SaferlError
from saferl.runs.load import build_algorithm, check_base_fits, check_init, load_base, load_init, with_base_record
from saferl.runs.phases import OfflinePhase, OnlinePhase
from saferl.runs.resolve import ResolvedRun, online_filter, resolve_expert, resolve_run
from saferl.runs.rundir import EVAL_FILE, is_finished, resolve_run_dir, write_config, write_json_atomic
from saferl.runs.settings import (
    RunSettings,
    check_settings,
    describe_length,
    make_algo_config,
    offline_steps,
    settings_from,
)
from saferl.runs.trainer import Trainer, seed_everything

log = logging.getLogger("saferl")


@dataclass
class RunPlan:
    """What a run (or every member of a K-seed run) resolved from its settings before any seed is built."""

    algo_cls: type[Algorithm]
    algo_cfg: AlgoConfig
    init_state: dict[str, Any] | None
    online_wrap: Callable[[gym.Env], gym.Env] | None
    run: ResolvedRun
    data: OfflineDataset
    expert: OfflineDataset | None = None  # the expert episodes of an imitation run (expert_dataset=)
    base: Algorithm | None = None  # the frozen trained policy a base-policy algorithm adjusts (init_from=)


@dataclass
class Member:
    """One seed of a plan, built and ready to train in its own run directory."""

    s: RunSettings
    algo: Algorithm
    train_data: OfflineDataset
    trainer: Trainer


def run_experiment(cfg: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """Train and evaluate one (algorithm, task, seed); returns the ``eval.json`` payload. With ``seeds=[…]``
    the seeds train as one batched model (`saferl.runs.seeds`) and the payloads come back as a list.

    With ``online_steps > 0`` the offline phase is followed by online fine-tuning (`saferl.online`): the
    offline policy is saved to ``checkpoints/offline.pt`` and evaluated (``eval.json["offline"]``), then
    ``online_steps`` env steps of interaction and updates, evaluated every ``online_eval_every`` env steps.
    """
    s, algo_opts = settings_from(cfg)
    if s.seeds is not None:
        from saferl.runs.seeds import run_seeds

        return run_seeds(s, algo_opts)
    if s.resume and s.run_dir and is_finished(Path(s.run_dir)):
        return finished_result(s)
    return train_member(plan_run(s, algo_opts), s)[0]


def train_member(plan: RunPlan, s: RunSettings) -> tuple[dict[str, Any], Member]:
    """One seed's run, as the CLI and `saferl.api` both train it: its member, the offline phase, the online one
    if asked, the final evaluation; returns the ``eval.json`` payload and the member."""
    member = start_member(plan, s)
    trainer = member.trainer
    online: OnlinePhase | None = None
    try:
        final = trainer.run_phase(OfflinePhase(trainer, member.train_data))
        if s.online_steps > 0:
            online = OnlinePhase(trainer, member.train_data, trainer.online_state, plan.online_wrap)
            final = trainer.run_phase(online)
    finally:
        trainer.close()
    return finish_member(plan, member, final, online), member


def finished_result(s: RunSettings) -> dict[str, Any]:
    """The ``eval.json`` of a finished run that ``resume=true`` was asked to continue."""
    result = json.loads((Path(s.run_dir) / EVAL_FILE).read_text())
    log.info("%s is already finished; nothing to do", s.run_dir)
    evaluation.print_eval_table(result, f"{s.algo} on {s.env} (seed {s.seed})")
    return result


def plan_run(s: RunSettings, algo_opts: dict[str, Any]) -> RunPlan:
    """Check everything the user gave us and load the data, before a run directory exists."""
    task = get_task(s.env)
    algo_cls = get_algorithm(s.algo)
    algo_cfg = make_algo_config(algo_cls, algo_opts)
    steps = offline_steps(s, algo_cfg.steps)
    check_settings(s, algo_cls, steps)
    init_state, base = None, None
    if algo_cls.base_policy:  # init_from names the trained policy this algorithm adjusts; it trains its own steps
        base, base_cfg = load_base(s.init_from, s.algo, s.env, s.allow_env_mismatch, s.device)
        algo_cfg = with_base_record(algo_cfg, s.init_from, base_cfg)
    elif s.init_from:  # the offline phase happened in another run
        init_state = load_init(s.init_from)
        check_init(init_state, s.init_from, s.algo, s.env, s.allow_env_mismatch)
        steps = int(init_state["step"])
    algo_cfg = dataclasses.replace(algo_cfg, steps=steps)  # schedules see the run's real length
    online_wrap = online_filter(s.safety_filter, task) if s.online_steps > 0 else None
    run, data = resolve_run(s, task, steps)
    if base is not None:
        check_base_fits(base, run.ctx, s.init_from)
    run, expert = resolve_expert(s, run, data)
    return RunPlan(algo_cls, algo_cfg, init_state, online_wrap, run, data, expert, base)


def start_member(plan: RunPlan, s: RunSettings) -> Member:
    """Seed ``s.seed``: seeded and built, its run directory and config written, its `Trainer` (resumed)."""
    algo, train_data = _build(
        plan.algo_cls, plan.algo_cfg, plan.run, plan.data, s, plan.init_state, plan.expert, plan.base
    )
    run_dir = resolve_run_dir(s)
    expert = plan.run.expert
    write_config(
        run_dir,
        s,
        plan.algo_cfg,
        plan.run.steps,
        plan.run.cost_limit,
        plan.run.dataset,
        expert_episodes=expert.episodes if expert is not None else None,
    )
    log.info("run directory: %s", run_dir)
    trainer = Trainer(s, plan.run, algo, run_dir, from_init=plan.init_state is not None)
    return Member(s, algo, train_data, trainer)


def finish_member(
    plan: RunPlan, member: Member, final: evaluation.RolloutStats | None, online: OnlinePhase | None
) -> dict[str, Any]:
    """The final evaluation (unless the last step made one) and ``eval.json``."""
    s, run, trainer = member.s, plan.run, member.trainer
    steps = run.steps
    member.algo.eval()
    others = trainer.final_others
    if final is None:
        final = evaluation.rollout(run.task.env_id, trainer.policy, s.eval_episodes, s.seed, wrap_env=trainer.wrap_eval)
        others = None
    if trainer.other_thresholds and others is None:
        others = trainer.evaluate_others()
        member.algo.eval()
    result = {
        "algo": s.algo,
        "env": s.env,
        "dataset": run.dataset_id,
        "seed": s.seed,
        "steps": steps,
        "cost_limit": run.cost_limit,
        **(run.expert.record() if run.expert is not None else {}),
        **_metrics(final, run),
        **evaluation.d4rl_metrics(final, plan.data.metadata),  # D4RL-style datasets: their own score too
        "wall_time_s": trainer.elapsed,
        "updates_per_s": steps / trainer.update_time if trainer.update_time > 0 else float("nan"),
    }
    if others:  # a threshold-conditioned algorithm: its rollouts for each κ, scored at that κ
        result["by_threshold"] = evaluation.conditioned_metrics(
            {run.cost_limit: final, **others}, run.task, plan.data.metadata
        )
    if trainer.members > 1:  # trained in a K-seed batch: updates_per_s is this member's, the process did K×
        result["batched_seeds"] = trainer.members
    if online is not None:
        result.update(online.info())
    if trainer.wrap_eval is not None:  # the same policy without the wrapper, for comparison
        plain = evaluation.rollout(run.task.env_id, trainer.policy, s.eval_episodes, s.seed)
        result["unfiltered"] = _metrics(plain, run)
        evaluation.print_eval_table(result["unfiltered"], f"{s.algo} on {s.env} without its evaluation wrapper")
    write_json_atomic(trainer.run_dir / EVAL_FILE, result)
    if online is not None:
        evaluation.print_eval_table(result["offline"], f"{s.algo} on {s.env}: the offline policy")
    evaluation.print_eval_table(result, f"{s.algo} on {s.env} (seed {s.seed}, {describe_length(s, steps)})")
    if others:
        evaluation.print_conditioned_table(result["by_threshold"], f"{s.algo} on {s.env}: conditioned on each κ")
    log.info("results written to %s", trainer.run_dir / EVAL_FILE)
    return result


def _build(
    algo_cls: type[Algorithm],
    algo_cfg: AlgoConfig,
    run: ResolvedRun,
    data: OfflineDataset,
    s: RunSettings,
    init_state: dict[str, Any] | None,
    expert: OfflineDataset | None = None,
    base: Algorithm | None = None,
) -> tuple[Algorithm, OfflineDataset]:
    """The seeded algorithm, checked for this task, with its prepared training data (``prepare_imitation``
    with the run's expert episodes, else ``prepare``) and init_from's weights (a base-policy algorithm: built
    around ``base``, init_from's trained policy)."""
    seed_everything(s.seed)
    try:
        algo = build_algorithm(algo_cls, algo_cfg, run.ctx, base)
        if s.online_steps > 0:
            algo.check_online()
    except ValueError as err:  # an algorithm that cannot run on this task says why
        raise SaferlError(str(err)) from None
    train_data = algo.prepare(data) if expert is None else algo.prepare_imitation(data, expert)
    if init_state is not None:
        try:
            algo.load_state_dict(init_state["algo"])
        except (RuntimeError, KeyError) as err:
            raise SaferlError(
                f"init_from={s.init_from}: the checkpoint does not fit {s.algo} with these options ({err}); "
                "use the algorithm and network sizes of the run that wrote it"
            ) from None
    return algo, train_data


def _metrics(stats: evaluation.RolloutStats, run: ResolvedRun) -> dict[str, Any]:
    return {**evaluation.dsrl_metrics(stats, run.task, run.thresholds), **evaluation.safety_metrics(stats)}
