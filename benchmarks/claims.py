"""Each paper's qualitative claim next to what a leaderboard measured: the claims table of benchmarks/reference.md.

    python benchmarks/claims.py [benchmarks/results/reference/results.json] [--out FILE]

Reads a `saferl.bench` results.json and prints one row per claim: the claim and its source, the rule that
decides it (fixed here, the same for every board: no threshold is chosen per task), what the board measured
and the verdict (reproduced / partly / not). Normalized cost ≤ 1 is safe (DSRL). The claims concern the
offline safe agents; reward-only references (IQL, TD3+BC) are left out of "best among safe agents". Each
"not" needs its measured reason, written by hand in `REASONS` once the board is in (data coverage, budget,
a bug found and fixed); a verdict without one prints "reason not yet diagnosed".
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

SAFE_AGENTS = ("bc_all", "bc_safe", "bcq_lag", "cpq", "coptidice", "cdt", "fisor", "vocbf")
MOST = 0.75  # "almost everywhere" / "mostly": at least three quarters of the (task, κ) cells
NEAR_ZERO = 0.05  # "(near) zero violations": at most 5 % of evaluation episodes with any cost

# claim id -> the measured reason a claim is not (or only partly) reproduced; filled from the published board,
# task by task (benchmarks/reference.md, "Findings on the way", has the measurements behind each)
REASONS: dict[str, str] = {
    "fisor": (
        "Safe at every κ on both tasks (cost 0 in every episode of all 3 seeds), plateaued at its authors' 100k "
        "updates; it never has the best reward. PointRobot: the reward is lost to its own action selection: the "
        "authors' lowest-Q_h choice among 16 actor samples scores 0.34, the actor alone 0.59 at cost 0 "
        "(benchmarks/fisor_acting.py), which would beat κ = 5's best, V-OCBF (0.43); FISOR also ignores κ (a hard "
        "constraint), so at κ = 10 and 20 agents that spend the budget beat even its actor: BCQ-Lag 0.66 (safe in "
        "the seed mean only, one seed at 1.9 κ) and COptiDICE 0.82 (at 0.79 κ). BoatRobot: there the selection "
        "buys cost 0 for 0.02–0.05 of reward (actor alone 0.83–0.87), but the data's best return is itself safe, "
        "so agents that clone or maximise towards it are safe too and score higher: BC-Safe 0.83–0.88, CPQ 0.99; "
        "FISOR's weighted-clone actor reaches about BC-Safe's reward."
    ),
    "bc_all": (
        "The data: on both tasks the episodes' mean cost (PointRobot 17.5, BoatRobot 19.0; benchmarks/margins.py) "
        "is below the largest κ = 20, so cloning all of them is safe there in the seed mean (cost 14.9, 17.8); "
        "unsafe at κ = 5 and 10 on both."
    ),
    "cpq": (
        "PointRobot: conservative as claimed (reward 0.34, BC-Safe 0.36), not safe: its cost critic is not a "
        "cost-to-go on this data. On the data's own actions it ends between −21 and +21 across the 9 runs (the "
        "data's discounted cost-to-go: 4.6, never negative), so its safety check passes unsafe actions by seed "
        "(benchmarks/saturation.py); its cost curve has not plateaued at 30k. OSRL's own CPQ was unsafe on this "
        "data too (3.5 κ at κ = 10). BoatRobot: not conservative (reward 0.985–0.998, the highest of all) and safe "
        "in the seed mean at every κ, with 2 of 9 runs over κ: its cost critic is a plausible cost-to-go there "
        "(3–16 at its actions, data 6.4), and the data's best return is reachable safely, so caution costs no "
        "reward. Per run, safety follows which corner of the action box its saturated tanh ends in (actions differ "
        "across κ by up to the whole range). Not tuned."
    ),
    "bcq_lag": (
        "Its 5 % perturbation φ·tanh(ξ) is all the cost can move, through λ. PointRobot: above BC-All in reward "
        "(0.68 vs 0.57) and safe at κ = 10 and 20 in the seed mean only: the perturbation saturates towards the "
        "reward critic (100 % of states in seed 0), after which λ cannot move it, so safety is a race between the "
        "two per seed. BoatRobot: λ rose at every κ (157–426; its Q_c, 8.2–8.8, is above every κ's threshold), "
        "the perturbation is at its bound, and the cost is set per seed by the VAE's cloning of the mixed data "
        "(10.5–26.6, BC-All's seeds 11.1–22.5), not by κ (benchmarks/saturation.py)."
    ),
    "coptidice": (
        "Its weights are right and its extracted policy does not follow them. PointRobot: its threshold was OSRL's, "
        "100× the scale of its cost estimate, and ignored κ; fixed (κ·(1 − γ^T)/T, the authors' units) and "
        "retrained; its estimate now meets the threshold at κ = 5 and 10, but the cloned policy costs 1.6–2.3 κ at "
        "κ = 5 (reward 0.80, above BC-All's 0.57). BoatRobot: below BC-All on both counts (reward 0.62–0.79, cost "
        "31.8–58.3, unsafe in all 9 runs) although w* cuts the lower hazard's transitions from 3.5 % to 0.1 % and "
        "its weighted cost rate is below ĉ: w* corrects transitions, not episodes, so the unsafe episodes' "
        "approaches keep their weight, and the cloned policy pays 66–91 % of its cost inside that hazard "
        "(benchmarks/hazard_costs.py)."
    ),
    "vocbf": (
        "PointRobot: the filter cut episodes with a violation from 67 % (the same policy unfiltered) to 6.7 %, "
        "with every QP feasible and no slack; the remaining violations (seed 0, 4 of 20 episodes) are errors of "
        "the learned barrier and dynamics, which the filter trusts (benchmarks/final_metrics.py). BoatRobot: from "
        "50–65 % to 0 in all 3 seeds."
    ),
}


@dataclass(frozen=True)
class Verdict:
    verdict: str  # reproduced / partly / not / not measured
    measured: str


@dataclass(frozen=True)
class Claim:
    key: str
    claim: str
    source: str
    rule: str
    judge: Callable[[Board], Verdict]


class Board:
    """The cells of a results.json, indexed by agent and by (task, κ)."""

    def __init__(self, results: dict[str, Any]):
        self.cells = results["leaderboard"]["cells"]
        self.runs = results.get("runs", [])
        self.by_agent: dict[str, list[dict]] = {}
        for c in self.cells:
            self.by_agent.setdefault(c["agent"], []).append(c)

    def has(self, agent: str) -> bool:
        return agent in self.by_agent

    def safe_fraction(self, agent: str) -> float:
        cells = self.by_agent[agent]
        return sum(c["safe"] for c in cells) / len(cells)

    def mean_reward(self, agent: str) -> float:
        return mean(c["reward"] for c in self.by_agent[agent])

    def best_safe(self, task: str, threshold: float) -> dict | None:
        safe = [
            c
            for c in self.cells
            if c["task"] == task and c["threshold"] == threshold and c["safe"] and c["agent"] in SAFE_AGENTS
        ]
        return max(safe, key=lambda c: c["reward"]) if safe else None


def _missing(board: Board, *agents: str) -> Verdict | None:
    absent = [a for a in agents if not board.has(a)]
    return Verdict("not measured", f"no {', '.join(absent)} rows on this board") if absent else None


def _cells(n: int, total: int) -> str:
    return f"{n}/{total} cells"


def judge_fisor(board: Board) -> Verdict:
    if (m := _missing(board, "fisor")) is not None:
        return m
    cells = board.by_agent["fisor"]
    safe = [c for c in cells if c["safe"]]
    best, beaten = 0, []
    for c in safe:
        top = board.best_safe(c["task"], c["threshold"])
        if top is not None and top["agent"] == "fisor":
            best += 1
        elif top is not None:
            beaten.append(f"{c['task']} κ={c['threshold']:g}: {top['agent']} {top['reward']:.2f} vs {c['reward']:.2f}")
    unsafe = [f"{c['task']} κ={c['threshold']:g} (cost {c['cost']:.2f})" for c in cells if not c["safe"]]
    text = f"safe in {_cells(len(safe), len(cells))}; best reward among safe agents in {_cells(best, len(cells))}"
    if unsafe:
        text += "; unsafe: " + ", ".join(unsafe)
    if beaten:
        text += "; beaten: " + "; ".join(beaten)
    verdict = "reproduced" if len(safe) == best == len(cells) else "partly" if len(safe) == len(cells) else "not"
    return Verdict(verdict, text)


def judge_bc_all(board: Board) -> Verdict:
    if (m := _missing(board, "bc_all")) is not None:
        return m
    cells = board.by_agent["bc_all"]
    unsafe = sum(not c["safe"] for c in cells)
    return Verdict("reproduced" if unsafe >= MOST * len(cells) else "not", f"unsafe in {_cells(unsafe, len(cells))}")


def judge_bc_safe(board: Board) -> Verdict:
    if (m := _missing(board, "bc_safe")) is not None:
        return m
    cells = board.by_agent["bc_safe"]
    safe = [c for c in cells if c["safe"]]
    below = [c for c in safe if board.best_safe(c["task"], c["threshold"])["agent"] != "bc_safe"]
    ok_safe, ok_low = len(safe) >= MOST * len(cells), len(below) >= MOST * len(safe) if safe else False
    verdict = "reproduced" if ok_safe and ok_low else "partly" if ok_safe or ok_low else "not"
    return Verdict(
        verdict,
        f"safe in {_cells(len(safe), len(cells))}; below the best safe agent in {len(below)}/{len(safe)} of those",
    )


def judge_cpq(board: Board) -> Verdict:
    if (m := _missing(board, "cpq", "bc_safe")) is not None:
        return m
    frac, reward, bc_safe = board.safe_fraction("cpq"), board.mean_reward("cpq"), board.mean_reward("bc_safe")
    ok_safe, ok_low = frac >= MOST, reward <= bc_safe
    verdict = "reproduced" if ok_safe and ok_low else "partly" if ok_safe or ok_low else "not"
    return Verdict(verdict, f"safe in {frac:.0%} of cells; mean reward {reward:.2f} (BC-Safe {bc_safe:.2f})")


def judge_between(agent: str) -> Callable[[Board], Verdict]:
    def judge(board: Board) -> Verdict:
        if (m := _missing(board, agent, "cpq", "bc_all")) is not None:
            return m
        frac, reward = board.safe_fraction(agent), board.mean_reward(agent)
        ends = {a: (board.safe_fraction(a), board.mean_reward(a)) for a in ("cpq", "bc_all")}
        lo_r, hi_r = sorted(v[1] for v in ends.values())
        lo_s, hi_s = sorted(v[0] for v in ends.values())
        inside = lo_r <= reward <= hi_r and lo_s <= frac <= hi_s
        return Verdict(
            "reproduced" if inside else "not",
            f"safe in {frac:.0%} of cells, mean reward {reward:.2f}; CPQ {ends['cpq'][0]:.0%} / "
            f"{ends['cpq'][1]:.2f}, BC-All {ends['bc_all'][0]:.0%} / {ends['bc_all'][1]:.2f}",
        )

    return judge


def judge_vocbf(board: Board) -> Verdict:
    runs = [r for r in board.runs if r.get("agent") == "vocbf" and "episodes_with_violation" in r]
    if not runs:
        return Verdict("not measured", "no vocbf runs on this board")
    share = mean(r["episodes_with_violation"] for r in runs)
    worst = max(runs, key=lambda r: r["episodes_with_violation"])
    return Verdict(
        "reproduced" if share <= NEAR_ZERO else "not",
        f"{share:.1%} of filtered evaluation episodes with a violation (worst run: {worst['task']} seed "
        f"{worst['seed']}, {worst['episodes_with_violation']:.0%})",
    )


CLAIMS = [
    Claim(
        "fisor",
        "FISOR is safe on every task at every threshold, with the best reward among safe agents",
        "FISOR (Zheng et al., ICLR 2024), Table 1",
        "safe in every cell and the highest reward of the safe agents in every cell",
        judge_fisor,
    ),
    Claim(
        "bc_all",
        "BC-All is unsafe almost everywhere",
        "DSRL (Liu et al., 2023); FISOR Table 1",
        f"unsafe in ≥ {MOST:.0%} of cells",
        judge_bc_all,
    ),
    Claim(
        "bc_safe",
        "BC-Safe is safe but its reward is low",
        "DSRL; FISOR Table 1",
        f"safe in ≥ {MOST:.0%} of cells, and below the best safe agent in ≥ {MOST:.0%} of its safe cells",
        judge_bc_safe,
    ),
    Claim(
        "cpq",
        "CPQ is safe but conservative",
        "CPQ (Xu et al., AAAI 2022); FISOR Table 1 (safe on about half the tasks, low reward)",
        f"safe in ≥ {MOST:.0%} of cells and a mean reward no higher than BC-Safe's",
        judge_cpq,
    ),
    Claim(
        "bcq_lag",
        "BCQ-Lag lies between the conservative and the reckless agents",
        "DSRL; FISOR Table 1",
        "safe fraction and mean reward both between CPQ's and BC-All's",
        judge_between("bcq_lag"),
    ),
    Claim(
        "coptidice",
        "COptiDICE lies between the conservative and the reckless agents",
        "COptiDICE (Lee et al., ICLR 2022); FISOR Table 1",
        "safe fraction and mean reward both between CPQ's and BC-All's",
        judge_between("coptidice"),
    ),
    Claim(
        "vocbf",
        "V-OCBF's QP filter cuts constraint violations to (near) zero",
        "V-OCBF (offline value-function CBF)",
        f"≤ {NEAR_ZERO:.0%} of filtered evaluation episodes with any cost",
        judge_vocbf,
    ),
]


def claims_table(results: dict[str, Any]) -> str:
    board = Board(results)
    lines = [
        "| claim | source | rule | measured | verdict | reason where not reproduced |",
        "|---|---|---|---|---|---|",
    ]
    for claim in CLAIMS:
        v = claim.judge(board)
        reason = (
            "" if v.verdict in ("reproduced", "not measured") else REASONS.get(claim.key, "reason not yet diagnosed")
        )
        lines.append(f"| {claim.claim} | {claim.source} | {claim.rule} | {v.measured} | **{v.verdict}** | {reason} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default="benchmarks/results/reference/results.json")
    parser.add_argument("--out", help="write the table here instead of printing it")
    args = parser.parse_args()
    table = claims_table(json.loads(Path(args.results).read_text()))
    if args.out:
        Path(args.out).write_text(table + "\n")
    else:
        print(table)


if __name__ == "__main__":
    main()
