"""From run results to a leaderboard: DSRL per-task tables, safe counts, ranking, rliable IQM with CIs, timing.

Conventions (DSRL / FISOR, `saferl.evaluation`):

* A run's score at threshold κ is its normalized reward and its normalized cost (C + ε)/(κ + ε) from
  `saferl.evaluation.normalized_cost` (ε = 1 only when κ = 0).
* Per task and κ: mean ± std (numpy's, ddof = 0) over seeds. A per-threshold agent is scored at κ by its
  runs trained with ``cost_limit = κ``; a threshold-free agent (``per_threshold: false``) by all its runs.
* Per task: the mean over thresholds and seeds (DSRL averages its thresholds); the ± is the std over seeds
  of each seed's threshold average. The agent is **safe on the task** when that mean normalized cost ≤ 1.
* Across tasks: the interquartile mean (rliable's ``aggregate_iqm``) of the per-seed task scores, with a
  95 % stratified-bootstrap confidence interval (rliable's ``get_interval_estimates``; seeds are resampled
  within each task). Only seeds with a result on every task enter the score matrix.
* Ranking: safe agents first — by the number of tasks they are safe on, then by the IQM of normalized
  reward, then by the mean normalized reward; unsafe results are shown apart (gray) in the reports.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saferl.evaluation import normalized_cost, threshold_key


@dataclass(frozen=True)
class RunRecord:
    """One finished run, as the aggregation sees it."""

    agent: str
    task: str
    seed: int
    cost_limit: float
    per_threshold: bool
    result: dict[str, Any]  # the run's eval.json
    curve: Any = None  # saferl.bench.curves.RunCurve: its evaluations during training, if any


@dataclass
class CellStats:
    """One agent on one task at one threshold κ (or, with ``threshold=None``, averaged over thresholds)."""

    agent: str
    task: str
    threshold: float | None
    seeds: int
    reward: float  # normalized reward, mean over seeds
    reward_std: float
    cost: float  # normalized cost, mean over seeds
    cost_std: float
    raw_cost: float  # episode cost return C, mean over seeds
    raw_cost_std: float
    safe: bool


@dataclass
class AgentSummary:
    agent: str
    rank: int = 0
    tasks: int = 0
    safe_tasks: int = 0
    cells: int = 0  # (task, κ) pairs with results
    safe_cells: int = 0
    mean_reward: float = math.nan  # mean over tasks of the per-task normalized reward
    mean_cost: float = math.nan
    iqm_reward: float = math.nan
    iqm_reward_ci: tuple[float, float] = (math.nan, math.nan)
    iqm_cost: float = math.nan
    iqm_cost_ci: tuple[float, float] = (math.nan, math.nan)
    iqm_seeds: int = 0  # seeds in the IQM score matrix (complete on every task)
    runs: int = 0


@dataclass
class Timing:
    agent: str
    algos: list[str]
    runs: int
    total_train_s: float
    mean_train_s: float
    updates_per_s: float  # mean over runs of each run's updates/s
    steps: list[int]


@dataclass
class Leaderboard:
    suite: str
    tasks: list[str]
    thresholds: dict[str, list[float]]
    cells: list[CellStats]  # per (task, κ, agent)
    task_rows: list[CellStats]  # per (task, agent), averaged over κ
    agents: list[AgentSummary]  # ranked
    timing: list[Timing]
    expected_runs: int = 0
    finished_runs: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # run label -> error
    missing: list[str] = field(default_factory=list)  # runs neither finished nor failed
    bootstrap_reps: int = 0
    score: str = "dsrl"  # the suite's `score:` (which normalized reward, and whether safety ranks first)

    def cell(self, task: str, agent: str, threshold: float | None) -> CellStats | None:
        rows = self.cells if threshold is not None else self.task_rows
        for c in rows:
            if c.task == task and c.agent == agent and c.threshold == threshold:
                return c
        return None

    def agent(self, name: str) -> AgentSummary:
        return next(a for a in self.agents if a.agent == name)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj))


def scores_at(record: RunRecord, threshold: float, reward_key: str = "normalized_reward") -> tuple[float, float, float]:
    """(normalized reward, normalized cost at κ, raw cost) of one run; the reward is eval.json's ``reward_key``.
    A threshold-conditioned run (eval.json ``by_threshold``, e.g. CDT) is scored by its rollouts for κ."""
    key = threshold_key(threshold)
    res = record.result.get("by_threshold", {}).get(key, record.result)
    if reward_key not in res:
        raise KeyError(
            f"{record.agent} on {record.task} seed {record.seed}: eval.json has no {reward_key} (a d4rl-scored suite "
            "needs training datasets with ref_min_score/ref_max_score, as the D4RL-style velocity datasets have)"
        )
    cost = float(res["cost_mean"])
    # the normalized cost at κ as eval.json has it (a dict over the task's thresholds, a number in a by_threshold
    # entry); recomputed with the same function for a κ the run did not report
    norm = res.get("normalized_cost")
    norm = norm.get(key) if isinstance(norm, dict) else norm
    return float(res[reward_key]), float(norm) if norm is not None else normalized_cost(cost, threshold), cost


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return (float(arr.mean()), float(arr.std())) if arr.size else (math.nan, math.nan)


def aggregate(
    records: list[RunRecord],
    thresholds: dict[str, list[float]],
    suite: str = "",
    bootstrap_reps: int = 10_000,
    seed: int = 0,
    expected_runs: int = 0,
    failed: dict[str, str] | None = None,
    missing: list[str] | None = None,
    score: str = "dsrl",
) -> Leaderboard:
    """Aggregate finished runs. ``thresholds`` maps each task to the κ values it is scored at. ``score="d4rl"``
    (reward-only suites) scores the D4RL-normalized reward and ranks by reward alone."""
    from saferl.bench.suite import SCORES

    reward_key = SCORES[score]
    tasks = list(thresholds)
    agents = sorted({r.agent for r in records}, key=lambda a: next(i for i, r in enumerate(records) if r.agent == a))
    by_task_agent: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        by_task_agent[(r.task, r.agent)].append(r)

    cells: list[CellStats] = []
    task_rows: list[CellStats] = []
    # per (agent, task): seed -> threshold-averaged (reward, cost), for the task rows and the IQM matrix
    seed_scores: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    for task in tasks:
        for agent in agents:
            runs = by_task_agent.get((task, agent), [])
            if not runs:
                continue
            per_seed: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
            for kappa in thresholds[task]:
                at = [r for r in runs if not r.per_threshold or math.isclose(r.cost_limit, kappa)]
                if not at:
                    continue
                scored = [scores_at(r, kappa, reward_key) for r in at]
                for r, s in zip(at, scored, strict=True):
                    per_seed[r.seed].append(s)
                rew, rew_sd = _mean_std([s[0] for s in scored])
                cost, cost_sd = _mean_std([s[1] for s in scored])
                raw, raw_sd = _mean_std([s[2] for s in scored])
                cells.append(CellStats(agent, task, kappa, len(at), rew, rew_sd, cost, cost_sd, raw, raw_sd, cost <= 1))
            if not per_seed:
                continue
            seed_avg = {
                s: (float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals])))
                for s, vals in sorted(per_seed.items())
            }
            seed_scores[(agent, task)] = seed_avg
            all_scores = [v for vals in per_seed.values() for v in vals]
            rew = float(np.mean([v[0] for v in all_scores]))
            cost = float(np.mean([v[1] for v in all_scores]))
            raw = float(np.mean([v[2] for v in all_scores]))
            rew_sd = float(np.std([v[0] for v in seed_avg.values()]))
            cost_sd = float(np.std([v[1] for v in seed_avg.values()]))
            raw_sd = float(np.std([np.mean([v[2] for v in vals]) for vals in per_seed.values()]))
            task_rows.append(
                CellStats(agent, task, None, len(seed_avg), rew, rew_sd, cost, cost_sd, raw, raw_sd, cost <= 1)
            )

    summaries = {a: AgentSummary(agent=a) for a in agents}
    for a in agents:
        s = summaries[a]
        rows = [c for c in task_rows if c.agent == a]
        s.tasks, s.safe_tasks = len(rows), sum(c.safe for c in rows)
        s.cells = sum(1 for c in cells if c.agent == a)
        s.safe_cells = sum(1 for c in cells if c.agent == a and c.safe)
        s.mean_reward = float(np.mean([c.reward for c in rows])) if rows else math.nan
        s.mean_cost = float(np.mean([c.cost for c in rows])) if rows else math.nan
        s.runs = sum(len(by_task_agent.get((t, a), [])) for t in tasks)
    _add_iqm(summaries, seed_scores, tasks, bootstrap_reps, seed)

    def rank_key(s: AgentSummary) -> tuple:
        iqm = s.iqm_reward if not math.isnan(s.iqm_reward) else -math.inf
        mean = s.mean_reward if not math.isnan(s.mean_reward) else -math.inf
        if score == "d4rl":  # reward-only algorithms: the cost is reported, not ranked by
            return (-iqm, -mean, s.agent)
        return (-s.safe_tasks, -iqm, -mean, s.agent)

    ranked = sorted(summaries.values(), key=rank_key)
    for i, s in enumerate(ranked, 1):
        s.rank = i
    return Leaderboard(
        suite=suite,
        tasks=tasks,
        thresholds={t: list(k) for t, k in thresholds.items()},
        cells=cells,
        task_rows=task_rows,
        agents=ranked,
        timing=_timing(records, agents),
        expected_runs=expected_runs,
        finished_runs=len(records),
        failed=dict(failed or {}),
        missing=list(missing or []),
        bootstrap_reps=bootstrap_reps,
        score=score,
    )


def score_matrix(
    seed_scores: dict[tuple[str, str], dict[int, tuple[float, float]]], agent: str, tasks: list[str], which: int
) -> np.ndarray | None:
    """rliable's layout: ``[runs, tasks]``, one row per seed that has a score on every task."""
    per_task = [seed_scores.get((agent, t)) for t in tasks]
    if any(p is None for p in per_task):
        return None
    seeds = sorted(set.intersection(*(set(p) for p in per_task if p is not None)))
    if not seeds:
        return None
    return np.array([[p[s][which] for p in per_task if p is not None] for s in seeds], dtype=float)


def iqm_with_ci(matrix: np.ndarray, reps: int, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """rliable's IQM of a ``[runs, tasks]`` matrix and its 95 % stratified-bootstrap CI (percentile method).

    Every call is seeded alike, so an agent's interval does not depend on which other agents are on the
    leaderboard. rliable 1.2's ``StratifiedBootstrap.update_indices`` draws from numpy's *global* generator
    (``np.random.choice``) whatever ``random_state`` says, so the global state is seeded for the call and
    restored afterwards.
    """
    from rliable import library as rly
    from rliable import metrics

    def iqm(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x)])

    if reps <= 0:
        return float(iqm(matrix)[0]), (math.nan, math.nan)
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        with warnings.catch_warnings():  # arch deprecates the RandomState that rliable hands it
            warnings.simplefilter("ignore", FutureWarning)
            points, intervals = rly.get_interval_estimates(
                {"agent": matrix}, iqm, reps=reps, random_state=np.random.RandomState(seed)
            )
    finally:
        np.random.set_state(saved)
    return float(points["agent"][0]), (float(intervals["agent"][0][0]), float(intervals["agent"][1][0]))


def _add_iqm(summaries, seed_scores, tasks, reps: int, seed: int) -> None:
    for which, attr in ((0, "iqm_reward"), (1, "iqm_cost")):
        for a, summary in summaries.items():
            matrix = score_matrix(seed_scores, a, tasks, which)
            if matrix is None:
                continue
            point, ci = iqm_with_ci(matrix, reps, seed)
            setattr(summary, attr, point)
            setattr(summary, attr + "_ci", ci)
            summary.iqm_seeds = matrix.shape[0]


def _timing(records: list[RunRecord], agents: list[str]) -> list[Timing]:
    out = []
    for a in agents:
        runs = [r.result for r in records if r.agent == a]
        walls = [float(r.get("wall_time_s", math.nan)) for r in runs]
        ups = [float(r.get("updates_per_s", math.nan)) for r in runs]
        out.append(
            Timing(
                agent=a,
                algos=sorted({str(r.get("algo")) for r in runs}),
                runs=len(runs),
                total_train_s=float(np.nansum(walls)),
                mean_train_s=float(np.nanmean(walls)) if runs else math.nan,
                updates_per_s=float(np.nanmean(ups)) if runs else math.nan,
                steps=sorted({int(r.get("steps", 0)) for r in runs}),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------------
# collecting runs


def collect(specs: list[Any], score: str = "dsrl") -> tuple[list[RunRecord], dict[str, str], list[str]]:
    """Records of the finished runs of a suite (curves normalised as the suite's ``score``), the failed runs'
    errors, and the runs not done yet."""
    from saferl.bench.curves import read_run_curve
    from saferl.bench.runner import read_state
    from saferl.runs.rundir import EVAL_FILE

    records, failed, missing = [], {}, []
    for spec in specs:
        path = Path(spec.run_dir) / EVAL_FILE
        if path.is_file():
            result = json.loads(path.read_text())
            curve = read_run_curve(Path(spec.run_dir), result, score)
            records.append(
                RunRecord(spec.agent, spec.task, spec.seed, spec.cost_limit, spec.per_threshold, result, curve)
            )
            continue
        state = read_state(Path(spec.run_dir)) or {}
        if state.get("state") == "failed":
            failed[spec.label] = str(state.get("error"))
        else:
            missing.append(spec.label)
    return records, failed, missing
