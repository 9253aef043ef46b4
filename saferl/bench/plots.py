"""Leaderboard plots: the IQM bars of every agent and one reward–cost scatter per task, in stable colours,
written atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from saferl.bench.aggregate import Leaderboard

PLOTS = "plots"


def kappa_label(k: float) -> str:
    return f"{k:g}"


def task_plot_name(task: str) -> str:
    return f"task-{task}.png"


def curve_plot_name(task: str) -> str:
    return f"curves-{task}.png"


def agent_colors(agents: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(agents) <= 10 else "tab20"]
    return {a: cmap(i % cmap.N) for i, a in enumerate(agents)}


def save_figure(fig: Any, path: Path, dpi: float | None = None) -> Path:
    """Save and close ``fig``, replacing ``path`` atomically (a reader never sees half a PNG)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.png")
    fig.savefig(tmp, **({} if dpi is None else {"dpi": dpi}))
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_task(board: Leaderboard, task: str, agents: list[str], path: Path) -> Path:
    """Reward–cost scatter of one task: one panel per κ, x = episode cost return (threshold line at κ,
    unsafe side shaded), y = normalized reward; each point is an agent's mean over seeds with ±1 std bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kappas = board.thresholds[task]
    colors = agent_colors(agents)
    fig, axes = plt.subplots(1, len(kappas), figsize=(4.2 * len(kappas), 3.9), dpi=110, squeeze=False, sharey=True)
    for ax, kappa in zip(axes[0], kappas, strict=True):
        cells = [c for a in agents if (c := board.cell(task, a, kappa)) is not None]
        xmax = max([kappa * 1.5 + 1] + [c.raw_cost + c.raw_cost_std for c in cells]) * 1.08
        ax.axvspan(kappa, xmax, color="crimson", alpha=0.07, lw=0)
        ax.axvline(kappa, color="crimson", ls="--", lw=1.2, label=f"threshold κ = {kappa_label(kappa)}")
        for c in cells:
            ax.errorbar(
                c.raw_cost,
                c.reward,
                xerr=c.raw_cost_std,
                yerr=c.reward_std,
                fmt="o" if c.safe else "X",
                ms=8,
                color=colors[c.agent],
                mec="black" if c.safe else colors[c.agent],
                capsize=3,
                label=c.agent,
            )
        ax.set_xlim(0 - xmax * 0.03, xmax)
        ax.set_title(f"κ = {kappa_label(kappa)}", fontsize=11)
        ax.set_xlabel("episode cost return (mean ± std over seeds)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalized reward")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="crimson", ls="--", lw=1.2, label="cost threshold κ")]
    handles += [
        Line2D([], [], color=colors[a], marker="o", ls="", ms=8, label=a) for a in agents if _has(board, task, a)
    ]
    handles += [
        Line2D([], [], color="gray", marker="o", mec="black", ls="", ms=8, label="safe at κ"),
        Line2D([], [], color="gray", marker="X", ls="", ms=8, label="unsafe at κ"),
    ]
    ncol = min(len(handles), 8)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(f"{task}: normalized reward against episode cost return, per threshold", fontsize=11)
    rows = (len(handles) + ncol - 1) // ncol
    fig.tight_layout(rect=(0, 0.06 + 0.05 * rows, 1, 1))
    return save_figure(fig, path)


def _has(board: Leaderboard, task: str, agent: str) -> bool:
    return any(c.task == task and c.agent == agent for c in board.cells)


def plot_iqm(board: Leaderboard, path: Path) -> Path:
    """IQM of normalized reward and of normalized cost per agent (95 % CIs), in leaderboard order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = board.agents
    colors = agent_colors(agent_order(board))
    n = len(ranked)
    fig, axes = plt.subplots(1, 2, figsize=(10, 1.2 + 0.45 * n), dpi=110, sharey=True)
    ys = list(range(n))[::-1]
    labels = [f"{a.agent}  (safe {a.safe_tasks}/{a.tasks})" for a in ranked]
    for ax, attr, title in (
        (axes[0], "iqm_reward", "IQM normalized reward (higher is better)"),
        (axes[1], "iqm_cost", "IQM normalized cost (≤ 1 is safe)"),
    ):
        for y, a in zip(ys, ranked, strict=True):
            point, ci = getattr(a, attr), getattr(a, attr + "_ci")
            if math.isnan(point):
                ax.text(0, y, " no complete score matrix", va="center", fontsize=8, color="dimgray")
                continue
            fully_safe = a.tasks > 0 and a.safe_tasks == a.tasks
            err = None if math.isnan(ci[0]) else [[point - ci[0]], [ci[1] - point]]
            ax.barh(y, point, color=colors[a.agent], alpha=1.0 if fully_safe else 0.4, height=0.6)
            if err is not None:
                ax.errorbar(point, y, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[1].axvline(1.0, color="crimson", ls="--", lw=1.2)
    axes[0].set_yticks(ys, labels, fontsize=9)
    fig.suptitle(f"suite {board.suite}: 95 % stratified-bootstrap CIs, faded = unsafe on some task", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def agent_order(board: Leaderboard) -> list[str]:
    """Agents in suite order (stable colours across plots, whatever the ranking)."""
    seen: list[str] = []
    for c in board.task_rows:
        if c.agent not in seen:
            seen.append(c.agent)
    for a in board.agents:
        if a.agent not in seen:
            seen.append(a.agent)
    return seen


# ---------------------------------------------------------------------------------------------------
# tables (shared by Markdown and HTML)
