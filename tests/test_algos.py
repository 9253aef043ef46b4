"""Algorithm smoke tests: a few updates, finite losses, every parameter moves, save → load → same actions."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from saferl.algos import REGISTRY, AlgoContext, get_algorithm
from saferl.algos.registry import UnknownAlgorithmError
from saferl.data import load

CONF = Path(__file__).resolve().parents[1] / "saferl" / "conf"
PRESETS = CONF / "algo_preset"


def _ctx(data, cost_limit: float = 10.0) -> AlgoContext:
    from saferl.envs import get_task

    return AlgoContext.for_task(get_task("point-robot"), data, cost_limit)


def _prepare(algo, data):
    """The training data as a run prepares it; imitation algorithms get a few top episodes of the same dataset
    as their expert data (``expert_dataset=safe-top expert_episodes=3``)."""
    from saferl.algos.base import ExpertData
    from saferl.runs.resolve import safe_top_episodes

    if algo.expert_data == ExpertData.REQUIRED:
        return algo.prepare_imitation(data, safe_top_episodes(data, algo.ctx.cost_limit, 3))
    return algo.prepare(data)


# Options under which every parameter must get a gradient within five updates. f-DVL's default χ² loss at λ = 1
# (the authors' locomotion command) is max(x + x²/4, 0): flat for x in [−4, 0], so a freshly initialised V that
# sits above Q̄ may rightly not move for a few updates; λ < 1 adds the −(1 − λ)·x term that always pulls V.
# PA-RL at its paper sizes takes over a minute for these 6 updates: its CPU preset's sizes exercise the same code
_PARL_SMALL = {
    "diffusion_hidden": 64,
    "diffusion_blocks": 2,
    "time_dim": 16,
    "num_base_policy_actions": 8,
    "num_actions_to_keep": 4,
    "num_steps": 5,
    "critic_hidden": (64, 64),
    "num_critics": 2,
}
SMOKE_OPTIONS = {"fdvl": {"loss_temp": 0.9}, "parl": _PARL_SMALL, "parl_safe": _PARL_SMALL}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_smoke_update_changes_every_parameter_and_round_trips(name, point_dataset):
    data = load(point_dataset)
    cls = get_algorithm(name)
    config = cls.make_config({"batch_size": 64, **SMOKE_OPTIONS.get(name, {})})
    algo = cls(config, _ctx(data))
    train_data = _prepare(algo, data)
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


def _composed_algo(name: str, preset: str) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"algo={name}", f"preset={preset}"])
    return OmegaConf.to_container(cfg.algo)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_algo_group_composes_the_dataclass_defaults(name):
    """`algo=<name> preset=paper` composes exactly the algorithm's dataclass defaults (the papers' settings,
    written once in saferl/algos/<file>.py), and they build its default config."""
    opts = _composed_algo(name, "paper")
    assert next(iter(opts)) == "name" and opts.pop("name") == name
    cls = get_algorithm(name)
    assert [f.name for f in dataclasses.fields(cls.Config)] == list(opts)  # the dataclass's fields, in order
    assert cls.make_config(opts) == cls.Config()


def test_algo_group_offers_exactly_the_registered_algorithms():
    """Hydra's `algo` options come from the registry: a new algorithm needs no YAML, and no file left in
    conf/algo shadows an algorithm's dataclass."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    assert not list((CONF / "algo").glob("*.yaml"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        options = GlobalHydra.instance().config_loader().get_group_options("algo")
    assert sorted(options) == sorted(REGISTRY)


def test_unknown_algo_key_fails_at_composition_or_names_the_options():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="algo.foo"):
            compose(config_name="config", overrides=["algo=iql", "algo.foo=1"])
        appended = compose(config_name="config", overrides=["algo=iql", "+algo.foo=1"])  # `+` gets past Hydra …
    opts = dict(appended.algo)
    with pytest.raises(ValueError, match=r"'iql' has no option\(s\) foo; its options are .*actor_lr"):
        get_algorithm(opts.pop("name")).make_config(opts)  # … and stops where every run builds its config


def test_cli_composes_algo_nodes_and_presets(tmp_path):
    """`python -m saferl.run` stores the algorithm configs before Hydra composes: a named variant, a preset
    over the defaults and an override all reach the printed config."""
    from conftest import run_cli
    from omegaconf import OmegaConf

    args = ("algo=fisor", "preset=cpu", "algo.actor_lr=1e-4", "--cfg", "job")
    proc = run_cli("saferl.run", *args, cwd=tmp_path, check=True)
    algo = OmegaConf.create(proc.stdout).algo
    cpu = OmegaConf.load(PRESETS / "cpu_fisor.yaml")
    assert algo.name == "fisor" and algo.actor_lr == 1e-4 and all(algo[k] == v for k, v in cpu.items())
    variant = OmegaConf.create(run_cli("saferl.run", "algo=fisor_cpu", "--cfg", "job", cwd=tmp_path, check=True).stdout)
    assert variant.algo.name == "fisor_cpu" and variant.algo.steps == get_algorithm("fisor_cpu").Config().steps


# Matmul FLOPs of a whole default run (one update's count × steps) that a 2-core CPU gets through in about
# twenty minutes: benchmarks/throughput.md measures ~50 GFLOP/s of useful fp32 work for 256-wide updates here.
CPU_RUN_FLOPS = 6e13


def _run_flops(name: str, preset: str, data) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    opts = _composed_algo(name, preset)
    opts.pop("name")
    cls = get_algorithm(name)
    config = cls.make_config(opts)
    torch.manual_seed(0)
    algo = cls(config, _ctx(data))
    train = _prepare(algo, data)
    gen = torch.Generator().manual_seed(0)
    algo.update(algo.sample(train, config.batch_size, gen))  # lazily built state, schedules
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(2):  # TD3+BC-style delayed actor steps alternate
            algo.update(algo.sample(train, config.batch_size, gen))
    return counter.get_total_flops() / 2 * config.steps


def test_cpu_presets_name_real_algorithms_and_fields():
    for path in sorted(PRESETS.glob("*.yaml")):
        preset, _, name = path.stem.partition("_")
        assert preset == "cpu" and name in REGISTRY, path.name
        cpu, paper = _composed_algo(name, "cpu"), _composed_algo(name, "paper")
        assert set(cpu) == set(paper) and cpu != paper, path.name  # only known fields, and it changes some


@pytest.mark.parametrize("name", sorted(n for n in REGISTRY if n != "hnpg"))  # HNPG: online only, no offline run
def test_every_default_run_fits_a_cpu(name, point_dataset):
    """`python -m saferl.run algo=<name>` (preset=cpu by default) must end on a 2-core CPU: its whole run's
    matmul FLOPs stay within what that machine does in about twenty minutes. Counted, not timed: the same on
    every machine (measured times per preset: benchmarks/presets.py)."""
    flops = _run_flops(name, "cpu", load(point_dataset))
    assert flops <= CPU_RUN_FLOPS, f"{name}: {flops:.2e} FLOPs; add or shrink conf/algo_preset/cpu_{name}.yaml"


@pytest.mark.parametrize("name", ["bcq_lag", "cpq", "fisor"])
def test_paper_presets_are_the_gpu_sized_ones(name, point_dataset):
    """Algorithms that motivated the presets really are beyond a CPU at the papers' settings (so the check
    above can fail; CDT too, but counting one of its batch-2048 updates takes a minute)."""
    assert _run_flops(name, "paper", load(point_dataset)) > 10 * CPU_RUN_FLOPS


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
