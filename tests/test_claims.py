"""benchmarks/claims.py decides each published claim's verdict: its rules on boards whose answer is known."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("claims", Path(__file__).parents[1] / "benchmarks" / "claims.py")
claims = importlib.util.module_from_spec(_spec)
sys.modules["claims"] = claims  # dataclasses look their module up while the file executes
_spec.loader.exec_module(claims)

# agent -> (normalized reward, normalized cost) in every cell of two tasks × two thresholds
PAPER_LIKE = {
    "fisor": (0.6, 0.2),
    "bc_all": (0.8, 2.0),
    "bc_safe": (0.4, 0.5),
    "cpq": (0.2, 0.1),
    "bcq_lag": (0.5, 0.9),
    "coptidice": (0.45, 1.1),
    "cdt": (0.5, 0.8),
    "vocbf": (0.3, 0.0),
    "iql": (0.9, 0.0),  # a reward-only reference: never counts as the best safe agent
}


def _results(scores: dict[str, tuple[float, float]], violations: float = 0.0) -> dict:
    cells, runs = [], []
    for agent, (reward, cost) in scores.items():
        for task in ("point-robot", "boat-robot"):
            for threshold in (5.0, 10.0):
                cells.append(
                    {"agent": agent, "task": task, "threshold": threshold, "reward": reward, "cost": cost}
                    | {"safe": cost <= 1.0}
                )
            runs.append({"agent": agent, "task": task, "seed": 0, "episodes_with_violation": violations})
    return {"leaderboard": {"cells": cells}, "runs": runs}


def _verdicts(results: dict) -> dict[str, str]:
    board = claims.Board(results)
    return {c.key: c.judge(board).verdict for c in claims.CLAIMS}


def test_a_board_that_matches_the_papers_reproduces_every_claim():
    assert set(_verdicts(_results(PAPER_LIKE)).values()) == {"reproduced"}
    table = claims.claims_table(_results(PAPER_LIKE))
    assert table.count("**reproduced**") == len(claims.CLAIMS) and "not yet diagnosed" not in table


def test_fisor_unsafe_in_one_cell_is_not_reproduced_and_beaten_only_is_partly():
    results = _results(PAPER_LIKE)
    results["leaderboard"]["cells"][0]["cost"], results["leaderboard"]["cells"][0]["safe"] = 1.5, False
    assert _verdicts(results)["fisor"] == "not"
    beaten = _results(PAPER_LIKE | {"bc_safe": (0.7, 0.5)})
    assert _verdicts(beaten)["fisor"] == "partly"
    judged = claims.judge_fisor(claims.Board(beaten))
    assert "bc_safe 0.70 vs 0.60" in judged.measured


def test_the_other_rules_flip_when_the_board_contradicts_them():
    flipped = _verdicts(
        _results(PAPER_LIKE | {"bc_all": (0.8, 0.5), "cpq": (0.9, 3.0), "bcq_lag": (0.95, 0.1)}, violations=0.2)
    )
    assert flipped["bc_all"] == "not"  # safe everywhere
    assert flipped["cpq"] == "not"  # unsafe and high reward
    assert flipped["bcq_lag"] == "not"  # above both ends
    assert flipped["vocbf"] == "not"  # 20 % of filtered episodes violate


def test_a_missing_agent_is_not_measured_and_a_recorded_reason_is_printed(monkeypatch):
    scores = {k: v for k, v in PAPER_LIKE.items() if k != "cpq"}
    assert _verdicts(_results(scores))["cpq"] == "not measured"
    monkeypatch.setitem(claims.REASONS, "bc_all", "the data has no unsafe high-reward episodes")
    table = claims.claims_table(_results(PAPER_LIKE | {"bc_all": (0.8, 0.5)}))
    assert "the data has no unsafe high-reward episodes" in table


@pytest.mark.parametrize("path", ["benchmarks/results/quick/results.json"])
def test_the_published_quick_board_is_judged(path):
    import json

    results = json.loads((Path(__file__).parents[1] / path).read_text())
    verdicts = _verdicts(results)
    assert set(verdicts) == {c.key for c in claims.CLAIMS}
    assert all(v in {"reproduced", "partly", "not", "not measured"} for v in verdicts.values())
