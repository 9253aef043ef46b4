"""V-OCBF: the backup, the learned barrier and model, and the filtered BC policy through the training loop."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from conftest import box_ctx
from hydra import compose, initialize_config_dir

from saferl import evaluation
from saferl.algos import AlgoContext, get_algorithm
from saferl.algos.vocbf import hj_target
from saferl.data import DatasetError
from saferl.envs import get_task
from saferl.runs import run_experiment
from saferl.safety import SafetyFilter

CONF = Path(__file__).resolve().parents[1] / "saferl" / "conf"
SMALL = ["algo.hidden=[64,64]", "algo.bc_hidden=[64,64]", "algo.dyn_hidden=[32,32]"]


def test_hj_target_is_the_discounted_reach_avoid_backup():
    h = torch.tensor([1.0, 1.0, -0.5, 2.0])
    next_v = torch.tensor([3.0, 0.2, 1.0, -1.0])
    terminal = torch.tensor([0.0, 0.0, 0.0, 1.0])
    y = hj_target(h, next_v, terminal, discount=0.9)
    # (1 − γ)h + γ·min(h, V(s')) and h itself at the terminal
    expected = torch.tensor([0.1 + 0.9 * 1.0, 0.1 + 0.9 * 0.2, -0.05 + 0.9 * -0.5, 2.0])
    torch.testing.assert_close(y, expected)


def _ctx(task_name: str | None = "point-robot") -> AlgoContext:
    if task_name is None:  # no task: no safety margin h to learn from
        return box_ctx()
    return AlgoContext.for_task(get_task(task_name), gym.make(get_task(task_name).env_id), cost_limit=10.0)


def test_vocbf_needs_a_safety_margin():
    cls = get_algorithm("vocbf")
    with pytest.raises(DatasetError, match="safety margin h"):
        cls(cls.make_config({}), _ctx(None))
    with pytest.raises(ValueError, match="eval_filter"):
        cls(cls.make_config({"eval_filter": "magic"}), _ctx())


def test_vocbf_learns_a_barrier_that_makes_the_bc_policy_safe(tmp_path, point_dataset):
    """2000 small updates on PointRobot's mixed data: the BC policy copies the hazard-crossing behaviour,
    the CBF-QP on the learned V_c (with the learned f, g) removes most of its violations and keeps it within
    κ = 10. On recipe v1 data it removed nearly all (≥ 10×); on v2 (every hazard entered) the filtered cost is
    4.0 / 6.7 / 0.0 / 5.8 at 2k / 4k / 6k / 8k updates against 22–26 unfiltered (seed 0, 10 episodes): 3.3–6.4×
    fewer, not yet "near zero" — an open finding of issue 14 (the claims table), asserted as measured."""
    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "algo=vocbf",
                "env=point-robot",
                "steps=2000",
                *SMALL,
                "eval_episodes=10",
                "progress=false",
                "tensorboard=false",
                f"run_dir={run_dir}",
            ],
        )
    result = run_experiment(cfg)
    assert result == json.loads((run_dir / "eval.json").read_text())
    plain = result["unfiltered"]
    assert plain["cost_mean"] >= 5.0 and plain["episodes_with_violation"] >= 0.5, "BC should copy unsafe behaviour"
    assert result["cost_mean"] * 3 <= plain["cost_mean"]  # ≥ 3× fewer violations with the filter
    assert result["safe"]["10"]
    assert result["episodes_with_violation"] < plain["episodes_with_violation"]
    stats = result["safety_filter"]
    assert stats["interventions"] > 0 and stats["steps"] == 10 * 200 and 0 < stats["intervention_rate"] < 1
    assert result["normalized_reward"] > 0.1  # the filtered policy still drives towards the goal

    # the learned pieces: control-affine model and barrier
    cls = get_algorithm("vocbf")
    config = cls.make_config({"hidden": (64, 64), "bc_hidden": (64, 64), "dyn_hidden": (32, 32)})
    algo = cls(config, _ctx())
    algo.load_state_dict(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["algo"])
    task = get_task("point-robot")
    grid = torch.cartesian_prod(torch.linspace(-2.5, 2.5, 41), torch.linspace(-2.5, 2.5, 41))
    with torch.no_grad():
        f_err = (algo.dynamics.f(grid) - task.f(grid)).abs().mean()
        g_err = (algo.dynamics.g(grid) - task.g(grid)).abs().mean()
        v, h = algo.value(grid), task.barrier(grid)
    assert f_err < 0.1 and g_err < 0.1
    deep_inside = h < -0.3  # well inside a hazard
    assert (v[deep_inside] < 0).float().mean() > 0.9
    start = torch.tensor([[-2.5, -2.5], [2.2, 2.2]])  # start region and goal are safe
    assert (algo.value(start) > 0).all()


def test_critic_filter_and_rollout_hook(tmp_path, point_dataset):
    """The model-free Q_c linearisation runs through the same hook and records the filter's statistics."""
    cls = get_algorithm("vocbf")
    algo = cls(cls.make_config({"hidden": (32, 32), "bc_hidden": (32, 32), "eval_filter": "critic"}), _ctx())
    env = algo.wrap_eval_env(gym.make(get_task("point-robot").env_id))
    assert isinstance(env, SafetyFilter) and type(env.barrier).__name__ == "CostCriticBarrier"
    stats = evaluation.rollout("saferl/PointRobot-v0", algo.act, 2, seed=0, wrap_env=algo.wrap_eval_env)
    assert stats.filter is not None and stats.filter["solve_time_us"].sum() > 0
    metrics = evaluation.safety_metrics(stats)
    assert metrics["safety_filter"]["steps"] == int(stats.lengths.sum())
    assert "safety_filter" not in evaluation.safety_metrics(evaluation.rollout("saferl/PointRobot-v0", algo.act, 2))
