"""Algorithm smoke tests: a few updates, finite losses, every parameter moves, save → load → same actions."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from saferl.algos import REGISTRY, AlgoContext, get_algorithm
from saferl.algos.registry import UnknownAlgorithmError
from saferl.data import load

CONF = Path(__file__).resolve().parents[1] / "saferl" / "conf" / "algo"


def _ctx(data, cost_limit: float = 10.0) -> AlgoContext:
    from saferl.envs import get_task

    return AlgoContext(
        obs_dim=data.obs_dim,
        act_dim=data.act_dim,
        action_low=np.full(data.act_dim, -1.0, dtype=np.float32),
        action_high=np.full(data.act_dim, 1.0, dtype=np.float32),
        cost_limit=cost_limit,
        max_episode_steps=200,
        device=torch.device("cpu"),
        task=get_task("point-robot"),
    )


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_smoke_update_changes_every_parameter_and_round_trips(name, point_dataset):
    data = load(point_dataset)
    cls = get_algorithm(name)
    config = cls.make_config({"batch_size": 64})
    algo = cls(config, _ctx(data))
    train_data = algo.prepare(data)
    before = {n: p.detach().clone() for n, p in algo.named_parameters()}
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        metrics = algo.update(algo.sample(train_data, config.batch_size, g))
        assert metrics and all(torch.isfinite(v).all() for v in metrics.values())
    unchanged = [n for n, p in algo.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, f"parameters that never changed: {unchanged}"

    obs = data.observations[:32].numpy()
    restored = cls(config, _ctx(data))
    restored.load_state_dict(copy.deepcopy(algo.state_dict()))
    np.testing.assert_array_equal(algo.act(obs), restored.act(obs))
    # optimizer state travels too: one more identical update (same random draws) keeps them identical
    batch = algo.sample(train_data, config.batch_size, torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    algo.update(batch)
    torch.manual_seed(1)
    restored.update(batch)
    np.testing.assert_array_equal(algo.act(obs), restored.act(obs))
    single = algo.act(obs[0])
    assert single.shape == (data.act_dim,) and np.all(np.abs(single) <= 1.0)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_cli_config_matches_dataclass_defaults(name):
    """conf/algo/<name>.yaml (after its defaults list) equals the algorithm's dataclass defaults."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF.parent), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"algo={name}"])
    opts = OmegaConf.to_container(cfg.algo)
    assert opts.pop("name") == name
    cls = get_algorithm(name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()} == defaults
    assert yaml.safe_load((CONF / f"{name}.yaml").read_text())["name"] == name


def test_unknown_algorithm_and_option_errors_list_valid_names():
    with pytest.raises(UnknownAlgorithmError, match="bc_safe"):
        get_algorithm("nope")
    with pytest.raises(ValueError, match="lr"):
        get_algorithm("bc_all").make_config({"learning_rate": 1e-3})


def test_bc_safe_keeps_only_episodes_within_the_cost_limit(point_dataset):
    data = load(point_dataset)
    cls = get_algorithm("bc_safe")
    for limit in (0.0, 10.0):
        algo = cls(cls.make_config({}), _ctx(data, cost_limit=limit))
        safe = algo.prepare(data)
        assert float(safe.episode_costs.max()) <= limit
        assert safe.num_episodes == int((data.episode_costs <= limit).sum())
    algo_all = get_algorithm("bc_all")(get_algorithm("bc_all").make_config({}), _ctx(data))
    assert algo_all.prepare(data).num_transitions == data.num_transitions
