"""Learning curves of a suite's runs and whether each (agent, task) row has converged.

Every run of a suite with ``eval_every`` > 0 logs evaluations during training (``metrics.csv``: raw episode
reward and cost at each evaluated step); its ``eval.json`` adds the final one. Per (task, agent) the curve is
the mean over seeds (and, for agents trained once per threshold κ, over κ) of the normalized reward and of
the normalized cost averaged over the task's thresholds — the same averaging as the leaderboard's task rows.

A row has *plateaued* when the mean of its evaluations in the last quarter of training differs from the
mean of those in the quarter before by at most `REWARD_TOL` in normalized reward and `COST_TOL` in
normalized cost. The report prints both differences, so a reader sees how far from flat a row is.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saferl.bench.plots import save_figure
from saferl.evaluation import normalized_cost

REWARD_TOL = 0.05  # normalized reward: about the seed-to-seed noise of 20-episode evaluations on these tasks
COST_TOL = 0.2  # normalized cost (1 = at the limit)


@dataclass(frozen=True)
class RunCurve:
    """One run's evaluations: step, normalized reward and episode cost return (means over its episodes)."""

    steps: tuple[int, ...]
    rewards: tuple[float, ...]  # normalized, as the run computed it (its task's or dataset's R_min/R_max)
    costs: tuple[float, ...]  # raw episode cost returns: normalized per threshold when curves are averaged
    # a threshold-conditioned run (CDT): κ -> (rewards, costs) of its rollouts for κ, at the same steps
    # (the run's own cost limit included)
    by_threshold: dict[float, tuple[tuple[float, ...], tuple[float, ...]]] | None = None


def read_run_curve(run_dir: Path, result: dict[str, Any], score: str = "dsrl") -> RunCurve | None:
    """The periodic evaluations in ``metrics.csv`` plus the final one in ``eval.json`` (``result``). With
    ``score="d4rl"`` the rewards are D4RL-normalised by the dataset's reference returns that eval.json records.
    A threshold-conditioned run's rollouts for each κ (``eval/k<κ>/*`` columns, ``by_threshold``) are read too."""
    if score == "d4rl":
        lo, hi = result["d4rl_reference_returns"]
        normalise, final_key = (lambda raw: (raw - lo) / (hi - lo)), "d4rl_normalized_reward"
    else:
        normalise, final_key = None, "normalized_reward"

    def point(row: dict[str, str], prefix: str) -> tuple[float, float] | None:
        reward = row.get(f"{prefix}normalized_reward") if normalise is None else row.get(f"{prefix}reward")
        cost = row.get(f"{prefix}cost")
        if not (reward and cost):
            return None
        return (float(reward) if normalise is None else normalise(float(reward))), float(cost)

    by_kappa: dict[float | None, dict[int, tuple[float, float]]] = {None: {}}  # None: the run's cost limit
    path = Path(run_dir) / "metrics.csv"
    if path.is_file():
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            kappas = [m.group(1) for c in reader.fieldnames or () if (m := _CONDITIONED.match(c))]
            for row in reader:
                if row.get("env_steps"):  # online rows are counted in env steps: not on this curve
                    continue
                for kappa in (None, *kappas):
                    p = point(row, "eval/" if kappa is None else f"eval/k{kappa}/")
                    if p is not None:
                        by_kappa.setdefault(None if kappa is None else float(kappa), {})[int(row["step"])] = p
    steps = result.get("offline_steps", result.get("steps"))
    if steps is not None and final_key in result and not result.get("online_steps"):
        by_kappa[None][int(steps)] = (float(result[final_key]), float(result["cost_mean"]))
        for key, block in result.get("by_threshold", {}).items():
            by_kappa.setdefault(float(key), {})[int(steps)] = (float(block[final_key]), float(block["cost_mean"]))
    points = by_kappa.pop(None)
    if not points:
        return None
    order = sorted(points)
    by_threshold = None
    if by_kappa:
        by_kappa[float(result["cost_limit"])] = points  # the plain eval/ columns are the rollouts for it
        by_threshold = {
            kappa: (tuple(pts[s][0] for s in order), tuple(pts[s][1] for s in order))
            for kappa, pts in sorted(by_kappa.items())
            if all(s in pts for s in order)
        }
    return RunCurve(tuple(order), tuple(points[s][0] for s in order), tuple(points[s][1] for s in order), by_threshold)


_CONDITIONED = re.compile(r"^eval/k([^/]+)/cost$")


@dataclass
class Plateau:
    plateaued: bool | None  # None: too few evaluations to tell
    reward_delta: float = math.nan  # last quarter's mean − previous quarter's mean
    cost_delta: float = math.nan
    reason: str = ""  # why there is no verdict


@dataclass
class AgentCurve:
    """The seed-mean curve of one agent on one task."""

    agent: str
    task: str
    runs: int
    steps: list[int]
    reward: list[float]  # normalized reward, mean over runs
    cost: list[float]  # normalized cost averaged over the task's thresholds, mean over runs
    plateau: Plateau = field(default_factory=lambda: Plateau(None))


def plateau(steps: list[int], reward: list[float], cost: list[float]) -> Plateau:
    """Compare the mean of the evaluations in the last quarter of training with the quarter before."""
    if len(steps) < 4:
        return Plateau(None, reason=f"{len(steps)} evaluation(s): too few to tell (eval_every)")
    total = steps[-1]
    s = np.asarray(steps, float)
    last = s > 0.75 * total
    prev = (s > 0.5 * total) & ~last
    if not prev.any() or not last.any():
        return Plateau(None, reason="no evaluation in one of the last two quarters of training")
    r, c = np.asarray(reward), np.asarray(cost)
    dr = float(r[last].mean() - r[prev].mean())
    dc = float(c[last].mean() - c[prev].mean())
    return Plateau(abs(dr) <= REWARD_TOL and abs(dc) <= COST_TOL, dr, dc)


def agent_curves(records: list[Any], thresholds: dict[str, list[float]]) -> list[AgentCurve]:
    """Seed-mean curves per (task, agent) from records carrying a ``curve`` (`RunCurve`).

    Steps present in every run of the row are kept (runs of one suite row share ``eval_every``).
    """
    groups: dict[tuple[str, str], list[Any]] = {}
    for rec in records:
        if rec.curve is not None:
            groups.setdefault((rec.task, rec.agent), []).append(rec)
    out = []
    for (task, agent), recs in sorted(groups.items()):
        common = sorted(set.intersection(*(set(r.curve.steps) for r in recs)))
        if not common:
            continue
        rewards, costs = [], []
        for rec in recs:
            kappas = [rec.cost_limit] if rec.per_threshold else thresholds[task]
            index = {s: i for i, s in enumerate(rec.curve.steps)}
            # (rewards, costs) the run scores at each κ: its rollouts for κ when threshold-conditioned
            at = {k: (rec.curve.by_threshold or {}).get(k, (rec.curve.rewards, rec.curve.costs)) for k in kappas}
            rewards.append([float(np.mean([at[k][0][index[s]] for k in kappas])) for s in common])
            costs.append([float(np.mean([normalized_cost(at[k][1][index[s]], k) for k in kappas])) for s in common])
        reward = np.mean(rewards, axis=0).tolist()
        cost = np.mean(costs, axis=0).tolist()
        out.append(AgentCurve(agent, task, len(recs), common, reward, cost, plateau(common, reward, cost)))
    return out


def plot_curves(curves: list[AgentCurve], task: str, path: Path, colors: dict[str, Any]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in curves if c.task == task]
    if not rows:
        return None
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    for c in rows:
        style = "-" if c.plateau.plateaued else "--"
        ax_r.plot(c.steps, c.reward, style, marker=".", label=c.agent, color=colors.get(c.agent))
        ax_c.plot(c.steps, c.cost, style, marker=".", label=c.agent, color=colors.get(c.agent))
    ax_c.axhline(1.0, color="black", lw=0.8, ls=":")
    ax_r.set(xlabel="gradient steps", ylabel="normalized reward", title=f"{task}: reward")
    ax_c.set(xlabel="gradient steps", ylabel="normalized cost (mean over κ)", title=f"{task}: cost (1 = limit)")
    ax_c.set_yscale("symlog", linthresh=1.0)
    ax_c.legend(fontsize=7, ncol=2)
    fig.text(0.5, 0.005, "dashed: not plateaued over the last quarter of training", ha="center", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def convergence_table(curves: list[AgentCurve]) -> tuple[list[str], list[list[str]]]:
    cols = [
        "task",
        "agent",
        "runs",
        "steps",
        "evaluations",
        "final normalized reward",
        "final normalized cost",
        "Δ reward (last quarter − previous)",
        "Δ cost",
        "plateaued",
    ]
    rows = []
    for c in curves:
        p = c.plateau
        rows.append(
            [
                c.task,
                c.agent,
                str(c.runs),
                f"{c.steps[-1]:,}",
                str(len(c.steps)),
                f"{c.reward[-1]:.2f}",
                f"{c.cost[-1]:.2f}",
                "—" if math.isnan(p.reward_delta) else f"{p.reward_delta:+.3f}",
                "—" if math.isnan(p.cost_delta) else f"{p.cost_delta:+.3f}",
                f"— ({p.reason})" if p.plateaued is None else ("yes" if p.plateaued else "no"),
            ]
        )
    return cols, rows
