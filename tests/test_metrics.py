"""The DSRL metric: normalized reward, normalized cost (ε = 1 only when κ = 0), safe ⇔ cost ≤ 1."""

from __future__ import annotations

import numpy as np
import pytest

from saferl.envs import get_task
from saferl.evaluation import RolloutStats, d4rl_metrics, dsrl_metrics, eval_thresholds, normalized_cost


def test_normalized_cost_formula_including_zero_threshold():
    assert normalized_cost(5.0, 10.0) == 0.5
    assert normalized_cost(10.0, 10.0) == 1.0
    assert normalized_cost(0.0, 0.0) == 1.0  # (0 + 1) / (0 + 1): a zero-cost agent is exactly safe at κ = 0
    assert normalized_cost(0.5, 0.0) == 1.5
    assert normalized_cost(3.0, 20.0) == pytest.approx(0.15)


def test_dsrl_metrics_block():
    task = get_task("point-robot")
    stats = RolloutStats(
        rewards=np.array([task.reward_min, task.reward_max]),
        costs=np.array([0.0, 20.0]),
        lengths=np.array([200, 200]),
    )
    out = dsrl_metrics(stats, task, [0.0, 5.0, 10.0, 20.0])
    assert out["normalized_reward"] == pytest.approx(0.5)
    assert out["cost_mean"] == 10.0 and out["cost_std"] == 10.0
    assert out["normalized_cost"] == {"0": 11.0, "5": 2.0, "10": 1.0, "20": 0.5}
    assert out["safe"] == {"0": False, "5": False, "10": True, "20": True}
    assert out["thresholds"] == [0.0, 5.0, 10.0, 20.0] and out["episodes"] == 2


def test_d4rl_score_uses_the_datasets_reference_returns_and_only_when_it_has_them():
    stats = RolloutStats(rewards=np.array([100.0, 300.0]), costs=np.zeros(2), lengths=np.array([1000, 1000]))
    out = d4rl_metrics(stats, {"ref_min_score": -100.0, "ref_max_score": 700.0})
    assert out == {"d4rl_normalized_reward": pytest.approx(0.375), "d4rl_reference_returns": [-100.0, 700.0]}
    assert d4rl_metrics(stats, {}) == {} and d4rl_metrics(stats, {"ref_min_score": 5.0, "ref_max_score": 5.0}) == {}


def test_eval_thresholds_add_the_run_cost_limit():
    task = get_task("point-robot")
    assert eval_thresholds(task, 10) == [5.0, 10.0, 20.0]
    assert eval_thresholds(task, 7.5) == [5.0, 7.5, 10.0, 20.0]
