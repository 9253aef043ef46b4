"""Cal-QL: the MC-return floor in the regulariser, `sac_ft` shares its offline phase, online improvement."""

from __future__ import annotations

import pytest
import torch
from conftest import box_ctx, eval_score, worst_episodes

from saferl.algos import get_algorithm
from saferl.data import Batch

TINY = {"hidden": (32, 32), "batch_size": 32, "cql_n_actions": 4}


pytestmark = pytest.mark.usefixtures("single_thread")


def _batch(mc: float, n: int = 32) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(
        observations=torch.randn(n, 2, generator=g),
        actions=torch.rand(n, 2, generator=g) * 2 - 1,
        rewards=torch.randn(n, generator=g),
        costs=torch.zeros(n),
        next_observations=torch.randn(n, 2, generator=g),
        terminals=torch.zeros(n),
        timeouts=torch.zeros(n),
        mc_returns=torch.full((n,), mc),
    )


def _pair(name_a: str, name_b: str, **overrides):
    """Two algorithms with identical weights."""
    a_cls, b_cls = get_algorithm(name_a), get_algorithm(name_b)
    torch.manual_seed(0)
    a = a_cls(a_cls.make_config({**TINY, **overrides}), box_ctx())
    b = b_cls(b_cls.make_config({**TINY, **overrides}), box_ctx())
    b.load_state_dict(a.state_dict())
    return a, b


def test_mc_floor_lifts_policy_values_and_is_inactive_below_them():
    calql, cql = _pair("calql", "cql", **{"max_target_backup": True, "actor_lr": 1e-4, "cql_alpha": 5.0})
    # a floor far below every Q-value changes nothing: Cal-QL's update is CQL's, to the bit
    torch.manual_seed(1)
    low = calql.update(_batch(mc=-1e4))
    torch.manual_seed(1)
    ref = cql.update(_batch(mc=-1e4))
    assert low["cql_gap"] == ref["cql_gap"] and low["critic_loss"] == ref["critic_loss"]
    # a floor above them: the policy actions' values enter the soft maximum at the floor, so the gap follows it
    high = calql.update(_batch(mc=100.0))
    assert high["cql_gap"] > 90.0 > float(low["cql_gap"])


def test_calql_needs_mc_returns():
    calql, _ = _pair("calql", "cql")
    with pytest.raises(ValueError, match="Monte-Carlo returns"):
        calql.update(_batch(mc=0.0)._replace(mc_returns=None))


def test_sac_ft_shares_the_offline_phase_and_drops_the_regulariser_online():
    calql, sac = _pair("calql", "sac_ft")
    for algo in (calql, sac):
        torch.manual_seed(3)
        algo.update(_batch(mc=0.0))
    for key, value in calql.state_dict()["modules"].items():
        torch.testing.assert_close(sac.state_dict()["modules"][key], value, rtol=0, atol=0)
    assert calql.mc_gamma == calql.config.gamma and sac.mc_gamma is None  # sac_ft's buffer needs no MC returns
    for algo in (calql, sac):
        algo.start_online(None)
    assert "cql_gap" in calql.online_update(_batch(mc=0.0))
    assert "cql_gap" not in sac.online_update(_batch(mc=0.0))


def test_calql_improves_online_over_its_offline_checkpoint(point_dataset):
    """100 offline updates on PointRobot's worst tenth of episodes, then 800 online env steps and updates.
    Small networks, γ = 0.9 and rewards ×10 as the other PointRobot learning tests (small per-step rewards)."""
    from saferl.data import load
    from saferl.envs import get_task
    from saferl.online import OnlineLoop

    task = get_task("point-robot")
    poor = worst_episodes(load(point_dataset))
    cls = get_algorithm("calql")
    config = cls.make_config(
        {"hidden": (64, 64), "batch_size": 64, "gamma": 0.9, "reward_scale": 10.0, "actor_lr": 1e-3, "cql_alpha": 1.0}
    )
    torch.manual_seed(0)
    algo = cls(config, box_ctx(task=task))
    train = algo.prepare(poor)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        algo.update(algo.sample(train, config.batch_size, g))

    offline = eval_score(task, algo.act)
    loop = OnlineLoop(algo, task.env_id, train, seed=0)
    loop.run(800)
    # updates start once the first episode is in the buffer (its MC returns are known only at its end)
    assert 400 < loop.updates < 800
    online = eval_score(task, algo.act)
    assert online > offline + 0.1, (offline, online)
