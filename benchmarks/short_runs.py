"""Short single runs behind the budget statements in benchmarks/baselines.md, each through the CLI's code path.

    python benchmarks/short_runs.py [--only NAME ...]

Every run is `saferl.runs.run_experiment` on PointRobot with 10 evaluation episodes, seed 0, one torch thread,
in a temporary runs root. Printed per run: normalized reward, cost return, wall time, and the last logged
value of the Lagrange multiplier and of the policy's cost value where the algorithm logs them; runs with
`eval_every` also print their evaluation curve (updates: normalized reward / cost [/ λ]). The first row is a
uniformly random policy (no training).

The "long" runs (κ = 10, minutes each) are the settings of the slow tests in tests/test_learning.py and the
unconstrained controls next to them (κ = 1000: the constraint never binds).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

NETS_64 = ["algo.actor_hidden=[64,64]", "algo.critic_hidden=[64,64]", "algo.vae_hidden=[64,64]", "algo.batch_size=256"]
SAFE_NETS = [*NETS_64, "algo.gamma=0.9"]
CDT_2X64 = [
    "algo=cdt",
    "cost_limit=10",
    "algo.batch_size=128",
    "algo.embedding_dim=64",
    "algo.num_layers=2",
    "algo.num_heads=2",
    "algo.lr_warmup_steps=100",
    "algo.learning_rate=3e-4",
]
DICE_64 = [
    "algo=coptidice",
    "steps=1500",
    "algo.actor_hidden=[64,64]",
    "algo.critic_hidden=[64,64]",
    "algo.batch_size=256",
]
RUNS: dict[str, list[str]] = {
    # SAC-N / EDAC with their CORL defaults, small nets: the entropy bonus dominates for thousands of updates
    "sac_n defaults": ["algo=sac_n", "steps=1500", "algo.hidden=[64,64]", "algo.batch_size=128", "algo.num_critics=2"],
    "edac defaults": ["algo=edac", "steps=1500", "algo.hidden=[64,64]", "algo.batch_size=128", "algo.num_critics=2"],
    # the safe baselines' constraint mechanisms at κ = 5 with a short horizon (γ = 0.9)
    "bc_all κ=5": ["algo=bc_all", "cost_limit=5", "steps=1500", "algo.hidden=[64,64]"],
    "bcq_lag κ=5 γ=0.9": ["algo=bcq_lag", "cost_limit=5", "steps=1200", *SAFE_NETS],
    "cpq κ=5 γ=0.9": ["algo=cpq", "cost_limit=5", "steps=1200", *SAFE_NETS],
    "cdt κ=5 1500 upd, 2×64": [*CDT_2X64, "cost_limit=5", "steps=1500"],
    # κ = 10: is each safe baseline safer than BC-All, and is it its cost signal that makes it so? Each is run
    # next to a control with the constraint off (κ = 1000 never binds) or the cost signal removed
    "bc_all κ=10": ["algo=bc_all", "cost_limit=10", "steps=1500", "algo.hidden=[64,64]"],
    "bcq_lag κ=10 γ=0.9 φ=0.5": [
        "algo=bcq_lag",
        "cost_limit=10",
        "steps=8000",
        "eval_every=1000",
        *SAFE_NETS,
        "algo.phi=0.5",
    ],
    "bcq_lag κ=10 γ=0.9 φ=0.05": [
        "algo=bcq_lag",
        "cost_limit=10",
        "steps=8000",
        "eval_every=1000",
        *SAFE_NETS,
    ],
    "cpq κ=10 16k": ["algo=cpq", "cost_limit=10", "steps=16000", "eval_every=2000", *NETS_64],
    "cpq κ=10 30k": ["algo=cpq", "cost_limit=10", "steps=30000", "eval_every=10000", *NETS_64],
    "cpq κ=20 6k": ["algo=cpq", "cost_limit=20", "steps=6000", "eval_every=2000", *NETS_64],
    "cpq κ=10 OSRL nets 300 upd": ["algo=cpq", "cost_limit=10", "steps=300"],  # speed of the 300/400-unit default
    "cpq κ=1000 6k": ["algo=cpq", "cost_limit=1000", "steps=6000", "eval_every=2000", *NETS_64],
    "cdt κ=10 2000 upd, 2×64": [*CDT_2X64, "steps=2000", "eval_every=500"],
    "cdt κ=10 4000 upd, 2×64, lr 1e-3": [*CDT_2X64, "steps=4000", "eval_every=1000", "algo.learning_rate=1e-3"],
    "cdt κ=10 8000 upd, 2×64": [*CDT_2X64, "steps=8000", "eval_every=2000"],
    # the cost-to-go at the return-to-go's scale (cost_scale 0.1): the slow test's setting is the lr 1e-3 one
    "cdt κ=10 2000 upd, 2×64, cost_scale 0.1": [*CDT_2X64, "steps=2000", "eval_every=1000", "algo.cost_scale=0.1"],
    "cdt κ=10 2000 upd, 2×64, cost_scale 0.1, lr 1e-3": [
        *CDT_2X64,
        "steps=2000",
        "eval_every=1000",
        "algo.cost_scale=0.1",
        "algo.learning_rate=1e-3",
    ],
    "cdt κ=10 1000 upd, no cost sampling": [*CDT_2X64, "steps=1000", "algo.cost_sample=false"],
    "coptidice κ=10": [*DICE_64, "cost_limit=10"],
    "coptidice κ=1000": [*DICE_64, "cost_limit=1000"],
    "coptidice costs ignored": [*DICE_64, "cost_limit=10", "algo.cost_scale=0"],
}
CDT_COST_TARGETS = (0.0, 5.0, 10.0, 20.0, 40.0)  # after a CDT run: its cost when conditioned on each


def _curve(metrics: Path) -> str:
    """Evaluation rows of a run: 'updates: normalized reward / cost [/ λ]'."""
    out = []
    for row in csv.DictReader(metrics.open()):
        if row.get("eval/cost"):
            lam = f" / λ {float(row['lagrangian']):.2f}" if row.get("lagrangian") else ""
            out.append(
                f"{row['step']}: {float(row['eval/normalized_reward']):.2f} / {float(row['eval/cost']):.1f}{lam}"
            )
    return "; ".join(out)


def _cdt_target_costs(run_dir: Path) -> str:
    """Evaluate a finished CDT run's checkpoint conditioned on each of CDT_COST_TARGETS (10 episodes each):
    equal costs mean the actions do not depend on the cost-to-go."""
    from saferl.evaluation import rollout
    from saferl.runs import load_run

    algo, task, _, _ = load_run(run_dir)
    costs = []
    for target in CDT_COST_TARGETS:
        stats = rollout(task.env_id, algo.episodic_policy(target), 10, seed=0)
        costs.append(f"{target:g} → {stats.costs.mean():.1f}")
    return ", ".join(costs)


def _cpq_cost_values(run_dir: Path) -> str:
    """CPQ's actor learns only where Q_c(s, π(s)) ≤ threshold: the cost value along the first evaluation
    episode (seed 0) up to its first cost, against that threshold."""
    import gymnasium as gym
    import torch

    from saferl.runs import load_run

    algo, task, _, _ = load_run(run_dir)
    env = gym.make(task.env_id)
    obs, _ = env.reset(seed=0)
    values = []
    for _ in range(task.max_episode_steps):
        o = torch.as_tensor(obs, dtype=torch.float32)[None]
        with torch.no_grad():
            action = algo.policy(o)
            values.append(float(algo.cost_critic(o, action).amin(0)))
        obs, _, terminated, truncated, info = env.step(action[0].numpy())
        if info["cost"] > 0 or terminated or truncated:
            break
    env.close()
    return (
        f"{len(values)} steps before the first cost: min {min(values):.2f}, max {max(values):.2f} "
        f"(threshold {algo.q_threshold:.2f})"
    )


def _last(metrics: Path, column: str) -> str:
    rows = [r for r in csv.DictReader(metrics.open()) if r.get(column)]
    return f"{float(rows[-1][column]):.3g}" if rows else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="run only these names (default: all)")
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    import saferl  # noqa: F401
    from saferl.envs import get_task
    from saferl.evaluation import rollout
    from saferl.runs import run_experiment

    task = get_task("point-robot")
    rng = np.random.default_rng(0)
    stats = rollout(task.env_id, lambda o: rng.uniform(-1, 1, size=(len(o), 2)), 10, seed=0)
    print(f"{'run':<26} {'norm. reward':>12} {'cost':>7} {'seconds':>8} {'λ (last)':>9} {'Q_c(s,π) (last)':>15}")
    random_reward = task.normalized_reward(float(stats.rewards.mean()))
    print(f"{'random policy':<26} {random_reward:>12.3f} {stats.costs.mean():>7.2f}")
    conf = str(Path(__file__).resolve().parents[1] / "saferl" / "conf")
    root = Path(tempfile.mkdtemp(prefix="saferl-short-runs-"))
    for name, overrides in RUNS.items():
        if args.only and name not in args.only:
            continue
        base = ["env=point-robot", "eval_episodes=10", "threads=1", "progress=false", "tensorboard=false"]
        t0 = time.perf_counter()
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*base, f"runs_root={root}", *overrides])
            result = run_experiment(cfg)
        wall = time.perf_counter() - t0
        metrics = max(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime, default=None)  # this run's
        lam = _last(metrics, "lagrangian") if metrics else ""
        qc = _last(metrics, "qc_policy") if metrics else ""
        reward, cost = result["normalized_reward"], result["cost_mean"]
        print(f"{name:<26} {reward:>12.3f} {cost:>7.2f} {wall:>8.0f} {lam:>9} {qc:>15}", flush=True)
        curve = _curve(metrics) if metrics else ""
        if curve:
            print(f"    curve: {curve}", flush=True)
        if "algo=cdt" in overrides and metrics:
            print(f"    cost at cost-to-go targets: {_cdt_target_costs(metrics.parent)}", flush=True)
        if "algo=cpq" in overrides and metrics:
            print(f"    Q_c(s, π(s)) on episode 1: {_cpq_cost_values(metrics.parent)}", flush=True)


if __name__ == "__main__":
    main()
