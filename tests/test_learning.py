"""Learning tests for the baselines on the PointRobot reference dataset, through the CLI's code path.

Each algorithm trains a small network for a short budget and is evaluated on 10 episodes. Every one must
clearly beat a uniformly random policy in normalized reward (random: 0.04; the margin is 0.15). COptiDICE
must also be safer than BC-All at the same cost limit κ = 10 (BC-All regresses the mean of detouring and
hazard-crossing actions and drives through the large hazard). That margin is mostly COptiDICE's weighted
tanh-Gaussian policy extraction (benchmarks/baselines.md, "Safer than BC-All? Controls at κ = 10"): its
multiplier moves 1e-4 per update from softplus(1), so κ has no effect yet at this budget. Measured 2026-12-07:
cost 19.1 against BC-All's 29.4, the same before and after COptiDICE's threshold was put in the units of its
cost estimate.

At these budgets (≤ 1,500 updates) BCQ-Lag's and CPQ's cost critics have not reached the threshold scale
yet (BCQ-Lag's λ stays 0) and CDT does not yet condition on its cost-to-go, so their costs are not reliably
below BC-All's here. The budgets are sized for the test suite, not for quality.

The `slow` tests at the end (`python -m pytest -m slow tests/test_learning.py`, ~8 minutes, not part of the
default run) train BCQ-Lag until its Lagrangian acts and CDT until it follows its cost-to-go, and assert that
each is then safer than BC-All at the same κ because of that (λ > 0.5; the same CDT model costs less at a
lower cost target). CPQ has no such test: within 30,000 updates its cost equals that of its unconstrained
control (benchmarks/baselines.md, "Safer than BC-All? Controls at κ = 10").

SAC-N and EDAC get γ = 0.9, reward_scale = 10 and a faster temperature: with the default α = 1 start and
γ = 0.99 their entropy bonus outweighs PointRobot's small dense rewards for the first few thousand updates.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from saferl.envs import get_task

CONF = Path(__file__).resolve().parents[1] / "saferl" / "conf"
SMALL = ["algo.hidden=[64,64]", "algo.batch_size=128"]
ENTROPY_SAC = ["algo.num_critics=2", "algo.gamma=0.9", "algo.reward_scale=10", "algo.alpha_lr=3e-3"]
SAFE_NETS = ["algo.actor_hidden=[64,64]", "algo.critic_hidden=[64,64]", "algo.batch_size=256"]

OFFLINE_RL = {
    "iql": ["steps=1500", *SMALL],
    "td3bc": ["steps=1500", *SMALL],
    "cql": ["steps=800", *SMALL, "algo.cql_n_actions=4", "algo.actor_lr=3e-4"],
    "sac_n": ["steps=1500", *SMALL, *ENTROPY_SAC],
    "edac": ["steps=1500", *SMALL, *ENTROPY_SAC],
}
SAFE_OFFLINE_RL = {
    "bcq_lag": ["steps=1200", *SAFE_NETS, "algo.vae_hidden=[64,64]"],
    "cpq": ["steps=1200", *SAFE_NETS, "algo.vae_hidden=[64,64]"],
    "coptidice": ["steps=1500", *SAFE_NETS],
    "cdt": [
        "steps=600",
        "algo.batch_size=128",
        "algo.embedding_dim=32",
        "algo.num_layers=1",
        "algo.num_heads=2",
        "algo.lr_warmup_steps=100",
    ],
}
MARGIN = 0.15  # normalized reward above the random policy's


def _run(tmp_path: Path, algo: str, overrides: list[str]) -> dict:
    from saferl.runs import run_experiment

    base = [
        f"algo={algo}",
        "env=point-robot",
        "cost_limit=10",
        "eval_episodes=10",
        "threads=1",
        "progress=false",
        "tensorboard=false",
        f"runs_root={tmp_path}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return run_experiment(compose(config_name="config", overrides=[*base, *overrides]))


@pytest.fixture(scope="module")
def random_reward() -> float:
    from saferl.evaluation import rollout

    task = get_task("point-robot")
    rng = np.random.default_rng(0)
    stats = rollout(task.env_id, lambda o: rng.uniform(-1, 1, size=(len(o), 2)), 10, seed=0)
    return task.normalized_reward(float(stats.rewards.mean()))


@pytest.fixture(scope="module")
def bc_all_cost(tmp_path_factory, point_dataset) -> float:
    result = _run(tmp_path_factory.mktemp("bc_all"), "bc_all", ["steps=1500", "algo.hidden=[64,64]"])
    return result["cost_mean"]


@pytest.mark.parametrize("algo", sorted(OFFLINE_RL))
def test_offline_rl_beats_a_random_policy(algo, tmp_path, point_dataset, random_reward):
    result = _run(tmp_path, algo, OFFLINE_RL[algo])
    assert result["normalized_reward"] > random_reward + MARGIN, (result["normalized_reward"], random_reward)


@pytest.mark.parametrize("algo", sorted(SAFE_OFFLINE_RL))
def test_safe_offline_rl_beats_a_random_policy(algo, tmp_path, point_dataset, random_reward, bc_all_cost):
    result = _run(tmp_path, algo, SAFE_OFFLINE_RL[algo])
    assert result["normalized_reward"] > random_reward + MARGIN, (result["normalized_reward"], random_reward)
    if algo == "coptidice":
        assert result["cost_mean"] < 0.75 * bc_all_cost, (result["cost_mean"], bc_all_cost)


# Long enough for BCQ-Lag's constraint to act (benchmarks/baselines.md, "Safer than BC-All"; rerun with
# `python benchmarks/short_runs.py --only "bcq_lag κ=10 γ=0.9 φ=0.5"`). γ = 0.9: a ~10-step cost horizon that the
# cost critic learns within a few thousand updates (threshold 0.5 at κ = 10); φ = 0.5: OSRL's φ = 0.05 lets the
# actor move the robot at most 2.5 mm per step away from the VAE's action, too little to stop or steer before a
# hazard. λ starts rising after ~2,000 updates and the policy turns safe between 6,000 and 7,000.
BCQ_LAG_SAFE = ["steps=8000", *SAFE_NETS, "algo.vae_hidden=[64,64]", "algo.gamma=0.9", "algo.phi=0.5"]


@pytest.mark.slow
def test_bcq_lag_is_safer_than_bc_all(tmp_path, point_dataset, bc_all_cost):
    result = _run(tmp_path, "bcq_lag", BCQ_LAG_SAFE)
    assert result["cost_mean"] < 0.5 * bc_all_cost, (result["cost_mean"], bc_all_cost)
    (metrics,) = tmp_path.rglob("metrics.csv")
    with metrics.open() as f:
        multiplier = [float(row["lagrangian"]) for row in csv.DictReader(f) if row.get("lagrangian")]
    assert multiplier[-1] > 0.5  # the Lagrangian did it: the multiplier is active at the end


# CDT follows its cost-to-go within 2,000 updates once that input has the scale of its return-to-go
# (cost_scale 0.1 as reward_scale 0.1: tokens 5 − 0.1·Ĉ instead of 50 − Ĉ, whose magnitude the embedding
# LayerNorm removes: with cost_scale 1 the cost is the same at every target after 8,000 updates).
CDT_CONDITIONED = [
    "steps=2000",
    "algo.batch_size=128",
    "algo.embedding_dim=64",
    "algo.num_layers=2",
    "algo.num_heads=2",
    "algo.lr_warmup_steps=100",
    "algo.learning_rate=1e-3",
    "algo.cost_scale=0.1",
]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="recipe v2 data (2026-12-04): CDT's cost 23.1 vs BC-All's 29.4 at κ = 10 after 2,000 updates (v1: 7.9 vs "
    "32.4). Measured cause (benchmarks/reference.md, benchmarks/cdt_targets.py): CDT follows its reward-to-go, not its "
    "cost-to-go, and on v2 the reward target is the same (16.4) at every κ ≤ 20; at this CPU budget and lr 1e-3 "
    "the cost token does not take hold stably",
)
def test_cdt_is_safer_than_bc_all_and_follows_its_cost_target(tmp_path, point_dataset, bc_all_cost):
    from saferl.evaluation import rollout
    from saferl.runs import load_run

    result = _run(tmp_path, "cdt", CDT_CONDITIONED)
    assert result["cost_mean"] < 0.5 * bc_all_cost, (result["cost_mean"], bc_all_cost)
    (config,) = tmp_path.rglob("config.yaml")
    algo, task, _, _ = load_run(config.parent)
    tight, loose = (rollout(task.env_id, algo.episodic_policy(k), 10, seed=0).costs.mean() for k in (5.0, 40.0))
    assert tight < 0.5 * loose, (tight, loose)  # the same model, conditioned on a lower cost-to-go
