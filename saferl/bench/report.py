"""Leaderboard reports: ``leaderboard.md``, a self-contained ``leaderboard.html`` (plots inlined as base64),
``plots/*.png`` and ``results.json`` (every number of the leaderboard, plus one row per run)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from saferl.bench.aggregate import AgentSummary, CellStats, Leaderboard, RunRecord
from saferl.bench.curves import COST_TOL, REWARD_TOL, AgentCurve, agent_curves, convergence_table, plot_curves
from saferl.bench.plots import (
    PLOTS,
    agent_colors,
    agent_order,
    curve_plot_name,
    kappa_label,
    plot_iqm,
    plot_task,
    task_plot_name,
)


def _num(x: float, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pm(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def _ci(point: float, ci: tuple[float, float]) -> str:
    if math.isnan(point):
        return "—"
    if math.isnan(ci[0]):
        return f"{point:.2f}"
    return f"{point:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def overall_table(board: Leaderboard) -> tuple[list[str], list[list[str]], list[AgentSummary]]:
    cols = [
        "rank",
        "agent",
        "safe tasks",
        "IQM normalized reward [95 % CI]",
        "IQM normalized cost [95 % CI]",
        "mean normalized reward",
        "mean normalized cost",
        "safe (task, κ)",
        "runs",
    ]
    rows = [
        [
            str(a.rank),
            a.agent,
            f"{a.safe_tasks}/{a.tasks}",
            _ci(a.iqm_reward, a.iqm_reward_ci),
            _ci(a.iqm_cost, a.iqm_cost_ci),
            _num(a.mean_reward),
            _num(a.mean_cost),
            f"{a.safe_cells}/{a.cells}",
            str(a.runs),
        ]
        for a in board.agents
    ]
    return cols, rows, board.agents


def task_table(board: Leaderboard, task: str) -> tuple[list[str], list[list[str]], list[CellStats]]:
    kappas = board.thresholds[task]
    cols = ["agent", "normalized reward", "normalized cost", "verdict"]
    cols += [f"κ={kappa_label(k)} reward / cost" for k in kappas]
    rows_stats = [c for c in board.task_rows if c.task == task]
    rows_stats.sort(key=lambda c: (not c.safe, -c.reward if not math.isnan(c.reward) else math.inf, c.agent))
    rows = []
    for c in rows_stats:
        row = [c.agent, _pm(c.reward, c.reward_std), _pm(c.cost, c.cost_std), "safe" if c.safe else "unsafe"]
        for k in kappas:
            cell = board.cell(task, c.agent, k)
            row.append(
                "—" if cell is None else f"{_num(cell.reward)} / {_num(cell.cost)}" + ("" if cell.safe else " ✗")
            )
        rows.append(row)
    return cols, rows, rows_stats


def timing_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    cols = ["agent", "algorithm", "runs", "steps per run", "updates/s (mean per run)", "train time per run", "total"]
    rows = [
        [
            t.agent,
            ", ".join(t.algos),
            str(t.runs),
            ", ".join(str(s) for s in t.steps),
            _num(t.updates_per_s, 1),
            _duration(t.mean_train_s),
            _duration(t.total_train_s),
        ]
        for t in board.timing
    ]
    return cols, rows


# ---------------------------------------------------------------------------------------------------
# Markdown


def _md_table(cols: list[str], rows: list[list[str]], styles: list[str] | None = None) -> str:
    """A Markdown table; ``styles`` ("safe", "unsafe", other) make a row's agent cell bold, italic or plain."""
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    at = cols.index("agent") if "agent" in cols else 0
    for i, row in enumerate(rows):
        cells = list(row)
        if styles is not None and styles[i] in ("safe", "unsafe"):
            cells[at] = f"**{cells[at]}**" if styles[i] == "safe" else f"_{cells[at]}_"
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def _header_lines(board: Leaderboard, meta: dict[str, Any]) -> list[str]:
    lines = []
    if meta.get("description"):
        lines.append(meta["description"].strip())
        lines.append("")
    lines.append(
        f"Generated {meta['generated']} by `{meta['command']}` from {board.finished_runs} of {board.expected_runs} "
        f"runs ({len(board.failed)} failed, {len(board.missing)} not run yet); seeds {meta.get('seeds', '?')}."
    )
    if meta.get("machine"):
        lines.append(f"Runs trained on: {meta['machine']}.")
    if meta.get("wall"):
        lines.append(f"Wall time: {meta['wall']}.")
    if meta.get("stale"):
        lines.append(meta["stale"])
    return lines


METRIC_NOTE = (
    "Normalized reward = (R − R_min)/(R_max − R_min); normalized cost = (C + ε)/(κ + ε), ε = 1 only when κ = 0 "
    "(DSRL). Per task: mean ± std over seeds, averaged over the thresholds κ; an agent is **safe** on a task when "
    "its mean normalized cost is ≤ 1. Agents are ranked by the number of tasks they are safe on, then by the "
    "interquartile mean (IQM, rliable) of the per-seed task scores, whose 95 % confidence intervals come from "
    "a stratified bootstrap over seeds ({reps} resamples). Bold: safe (overall: on every task); italic (gray in "
    "HTML): unsafe (overall: on every task)."
)


D4RL_NOTE = (
    "Normalized reward here is D4RL's: (R − R_random)/(R_expert − R_random) with the training dataset's own "
    "reference returns (ref_min_score / ref_max_score: the uniformly random policy and the expert of its build); "
    "×100 is the D4RL score. These algorithms ignore the cost: agents are ranked by the IQM of the reward alone, "
    "and the cost columns (the velocity limit's violations) are reported, not ranked by."
)


def metric_note(board: Leaderboard) -> str:
    note = METRIC_NOTE.format(reps=board.bootstrap_reps)
    return f"{note}\n\n{D4RL_NOTE}" if board.score == "d4rl" else note


CONVERGENCE_NOTE = (
    "Curves: normalized reward and normalized cost (averaged over the task's thresholds) against gradient "
    "steps, mean over seeds, from the runs' periodic evaluations (`eval_every`) and their final one. A row has "
    "plateaued when the mean of its evaluations in the last quarter of training is within {r:g} (reward) and "
    "{c:g} (cost) of the mean of those in the quarter before (saferl/bench/curves.py)."
)


def render_markdown(board: Leaderboard, meta: dict[str, Any], curves: list[AgentCurve] | None = None) -> str:
    out = [f"# Leaderboard: suite `{board.suite}`", "", *_header_lines(board, meta), ""]
    out += [metric_note(board), ""]
    cols, rows, agents = overall_table(board)
    out += ["## Overall", "", _md_table(cols, rows, [_safety_class(a) for a in agents]), ""]
    out += [f"![IQM of normalized reward and cost]({PLOTS}/iqm.png)", ""]
    out += ["## Per task", ""]
    for task in board.tasks:
        kappas = ", ".join(kappa_label(k) for k in board.thresholds[task])
        cols, rows, stats = task_table(board, task)
        out += [f"### {task} (κ = {kappas})", ""]
        styles = ["safe" if c.safe else "unsafe" for c in stats]
        out += [_md_table(cols, rows, styles) if rows else "_no finished runs_", ""]
        out += [f"![{task}: reward against cost]({PLOTS}/{task_plot_name(task)})", ""]
    if curves:
        out += ["## Convergence", "", CONVERGENCE_NOTE.format(r=REWARD_TOL, c=COST_TOL), ""]
        out += [_md_table(*convergence_table(curves)), ""]
        for task in board.tasks:
            if any(c.task == task for c in curves):
                out += [f"![{task}: learning curves]({PLOTS}/{curve_plot_name(task)})", ""]
    cols, rows = timing_table(board)
    out += ["## Training time", "", _md_table(cols, rows), ""]
    out += [
        "Train time is the training loop's wall time (without the final evaluation); updates/s is each run's "
        "gradient steps over its time inside the update, averaged over runs.",
        "",
    ]
    if board.failed:
        out += ["## Failed runs", ""]
        out += [f"- {label}: `{err}`" for label, err in sorted(board.failed.items())]
        out += [""]
    if board.missing:
        out += ["## Not run yet", ""]
        out += [f"- {label}" for label in board.missing]
        out += [""]
    out += ["## Reproduce", "", "```bash", meta["rerun"], "```", ""]
    if meta.get("example_run"):
        out += ["One run on its own (the suite passes these overrides):", "", "```bash", meta["example_run"], "```"]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1d1d1f; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #d0d0d0; padding: .3rem .6rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f5; white-space: normal; vertical-align: bottom; } .text { text-align: left; }
tr.safe td { font-weight: 600; } tr.unsafe td { color: #8a8a8a; font-style: italic; }
td.verdict-safe { color: #1a7f37; } td.verdict-unsafe { color: #b42318; }
img { max-width: 100%; border: 1px solid #eee; margin: .5rem 0; }
.note { color: #555; font-size: .9rem; } code, pre { background: #f6f8fa; border-radius: 4px; }
pre { padding: .6rem; white-space: pre-wrap; word-break: break-all; } .failed { color: #b42318; }
"""


TEXT_COLUMNS = ("agent", "algorithm")


def _html_table(cols: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    def cls_of(col: str) -> str:
        return ' class="text"' if col in TEXT_COLUMNS else ""

    head = "".join(f"<th{cls_of(c)}>{html.escape(c)}</th>" for c in cols)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        tds = []
        for col, cell in zip(cols, row, strict=True):
            extra = f' class="verdict-{cell}"' if col == "verdict" else cls_of(col)
            tds.append(f"<td{extra}>{html.escape(cell)}</td>")
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _safety_class(a: AgentSummary) -> str:
    """Overall rows: bold when safe on every task, gray when safe on none, plain in between."""
    if a.tasks > 0 and a.safe_tasks == a.tasks:
        return "safe"
    return "unsafe" if a.safe_tasks == 0 else "partial"


def render_html(
    board: Leaderboard, meta: dict[str, Any], plots: dict[str, Path], curves: list[AgentCurve] | None = None
) -> str:
    def md_inline(text: str) -> str:
        text = html.escape(text)
        parts = text.split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts)).replace("`", "")

    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>saferl leaderboard: {html.escape(board.suite)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{CSS}</style></head><body>",
        f"<h1>Leaderboard: suite <code>{html.escape(board.suite)}</code></h1>",
    ]
    out += [f'<p class="note">{md_inline(line)}</p>' for line in _header_lines(board, meta) if line]
    out.append(f'<p class="note">{md_inline(metric_note(board))}</p>')
    cols, rows, agents = overall_table(board)
    classes = [_safety_class(a) for a in agents]
    out += ["<h2>Overall</h2>", _html_table(cols, rows, classes), _img(plots["iqm"], "IQM of normalized reward")]
    out.append("<h2>Per task</h2>")
    for task in board.tasks:
        kappas = ", ".join(kappa_label(k) for k in board.thresholds[task])
        cols, rows, stats = task_table(board, task)
        out.append(f"<h3>{html.escape(task)} (κ = {kappas})</h3>")
        out.append(
            _html_table(cols, rows, ["safe" if c.safe else "unsafe" for c in stats]) if rows else "<p>no runs</p>"
        )
        if task in plots:
            out.append(_img(plots[task], f"{task}: reward against cost"))
    if curves:
        out += [
            "<h2>Convergence</h2>",
            f'<p class="note">{md_inline(CONVERGENCE_NOTE.format(r=REWARD_TOL, c=COST_TOL))}</p>',
        ]
        out.append(_html_table(*convergence_table(curves)))
        out += [_img(plots[f"curves:{t}"], f"{t}: learning curves") for t in board.tasks if f"curves:{t}" in plots]
    cols, rows = timing_table(board)
    out += ["<h2>Training time</h2>", _html_table(cols, rows)]
    if board.failed:
        out.append("<h2>Failed runs</h2><ul>")
        out += [
            f'<li class="failed">{html.escape(label)}: <code>{html.escape(err)}</code></li>'
            for label, err in sorted(board.failed.items())
        ]
        out.append("</ul>")
    if board.missing:
        out.append("<h2>Not run yet</h2><ul>")
        out += [f"<li>{html.escape(label)}</li>" for label in board.missing]
        out.append("</ul>")
    out += ["<h2>Reproduce</h2>", f"<pre>{html.escape(meta['rerun'])}</pre>"]
    if meta.get("example_run"):
        out += ["<p>One run on its own:</p>", f"<pre>{html.escape(meta['example_run'])}</pre>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_reports(
    board: Leaderboard, out_dir: Path, meta: dict[str, Any], records: list[RunRecord] | None = None
) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.html, plots/ and results.json into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PLOTS).mkdir(exist_ok=True)
    meta = {"generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), **meta}
    plots: dict[str, Path] = {}
    agents = agent_order(board)
    if board.agents:
        plots["iqm"] = plot_iqm(board, out_dir / PLOTS / "iqm.png")
    for task in board.tasks:
        if any(c.task == task for c in board.cells):
            plots[task] = plot_task(board, task, agents, out_dir / PLOTS / task_plot_name(task))
    curves = agent_curves(records or [], board.thresholds)
    colors = agent_colors(agents)
    for task in board.tasks:
        plot = plot_curves(curves, task, out_dir / PLOTS / curve_plot_name(task), colors)
        if plot is not None:
            plots[f"curves:{task}"] = plot
    paths = {"markdown": out_dir / "leaderboard.md", "html": out_dir / "leaderboard.html"}
    _write_text(paths["markdown"], render_markdown(board, meta, curves))
    html_text = render_html(board, meta, plots, curves) if "iqm" in plots else render_html_empty(board)
    _write_text(paths["html"], html_text)
    payload = {"meta": meta, "leaderboard": board.to_dict()}
    if curves:
        payload["curves"] = [dataclasses.asdict(c) for c in curves]
    if records is not None:
        payload["runs"] = [
            {"agent": r.agent, "task": r.task, "seed": r.seed, "cost_limit": r.cost_limit, **r.result} for r in records
        ]
    _write_text(out_dir / "results.json", json.dumps(payload, indent=1, default=str) + "\n")
    paths["results"] = out_dir / "results.json"
    paths.update({f"plot:{k}": v for k, v in plots.items()})
    return paths


def render_html_empty(board: Leaderboard) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(board.suite)}</title></head>"
        f"<body><h1>Leaderboard: suite {html.escape(board.suite)}</h1><p>No finished runs yet.</p></body></html>\n"
    )
