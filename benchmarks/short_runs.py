"""Short single runs behind the budget statements in benchmarks/baselines.md, each through the CLI's code path.

    python benchmarks/short_runs.py [--only NAME ...]

Every run is `saferl.train.run_experiment` on PointRobot with 10 evaluation episodes, seed 0, one torch thread,
in a temporary runs root. Printed per run: normalized reward, cost return, wall time, and the last logged
value of the Lagrange multiplier and of the policy's cost value where the algorithm logs them. The first row
is a uniformly random policy (no training).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

SAFE_NETS = [
    "algo.actor_hidden=[64,64]",
    "algo.critic_hidden=[64,64]",
    "algo.vae_hidden=[64,64]",
    "algo.batch_size=256",
    "algo.gamma=0.9",
]
RUNS: dict[str, list[str]] = {
    # SAC-N / EDAC with their CORL defaults, small nets: the entropy bonus dominates for thousands of updates
    "sac_n defaults": ["algo=sac_n", "steps=1500", "algo.hidden=[64,64]", "algo.batch_size=128", "algo.num_critics=2"],
    "edac defaults": ["algo=edac", "steps=1500", "algo.hidden=[64,64]", "algo.batch_size=128", "algo.num_critics=2"],
    # the safe baselines' constraint mechanisms at κ = 5 with a short horizon (γ = 0.9)
    "bc_all κ=5": ["algo=bc_all", "cost_limit=5", "steps=1500", "algo.hidden=[64,64]"],
    "bcq_lag κ=5 γ=0.9": ["algo=bcq_lag", "cost_limit=5", "steps=1200", *SAFE_NETS],
    "cpq κ=5 γ=0.9": ["algo=cpq", "cost_limit=5", "steps=1200", *SAFE_NETS],
    "cdt κ=5 1500 upd, 2×64": [
        "algo=cdt",
        "cost_limit=5",
        "steps=1500",
        "algo.batch_size=128",
        "algo.embedding_dim=64",
        "algo.num_layers=2",
        "algo.num_heads=2",
        "algo.lr_warmup_steps=100",
        "algo.learning_rate=3e-4",
    ],
}


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
    from saferl.train import run_experiment

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


if __name__ == "__main__":
    main()
