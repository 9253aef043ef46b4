"""Can a cost signal still move a trained policy? A check of the tanh that bounds BCQ-Lag's and CPQ's actions.

    MINARI_DATASETS_PATH=<root> python benchmarks/saturation.py RUN_DIR [RUN_DIR ...] [--states 20000]

Both agents act through a tanh, and the cost reaches their policy only through that tanh's gradient:

- BCQ-Lag acts with a = clip(G(s) + φ·a_max·tanh(ξ(s, G(s)))): the VAE's decoded action plus a perturbation of at
  most φ = 5 % of the action range, trained on −Q_r + λ·Q_c. Where tanh is saturated (|tanh| ≈ 1) no λ changes
  what the agent does.
- CPQ acts with a = tanh(μ(s)), trained on −1[Q_c(s, π(s)) ≤ l]·Q_r(s, π(s)): states whose action the cost critic
  judges unsafe give the actor no gradient at all, and where tanh is saturated neither does the rest.

For each run this prints, on the first ``--states`` states of the run's own dataset: the share of saturated tanh
outputs, the cost signal (BCQ-Lag: the final λ from ``metrics.csv``; CPQ: the share of states whose action the
cost critic deems safe), the cost critic at the policy's action and at the dataset's action (with the mean gap
between its two heads there, which says whether taking their min matters) next to the data's
discounted Monte-Carlo cost-to-go (costs are ≥ 0, so a negative Q_c is an error of the critic, not a safe state),
the evaluation's episode cost, and, for runs of the same algorithm and seed at different κ, the largest
difference between their actions.
"""

from __future__ import annotations

import argparse
import csv
import json
from functools import cache
from pathlib import Path
from typing import Any


def final_metric(run_dir: Path, column: str) -> float:
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get(column)]
    return float(rows[-1][column]) if rows else float("nan")


def probe(algo: Any, obs: Any, run_dir: Path) -> tuple[Any, Any]:
    """The policy's action and its pre-clip tanh output."""
    import torch

    name = type(algo).__name__
    if name == "BCQLag":
        decoded = algo.vae.decode(obs, torch.zeros(len(obs), algo.vae.latent_dim))
        return algo.actor(obs, decoded), torch.tanh(algo.actor.net(torch.cat([obs, decoded], -1)))
    if name == "CPQ":
        return algo.policy(obs), torch.tanh(algo.actor.distribution(obs).mean)
    raise SystemExit(f"{run_dir} is a {name} run; this script reads BCQ-Lag and CPQ runs")


def cost_signal(algo: Any, qc_pi: Any, run_dir: Path) -> str:
    """What carries the cost to the actor: BCQ-Lag's final λ, or the share of states CPQ's check lets through."""
    if type(algo).__name__ == "BCQLag":
        return f"λ = {final_metric(run_dir, 'lagrangian'):.2f}"
    return f"judged safe on {(qc_pi <= algo.q_threshold).float().mean().item():.1%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--states", type=int, default=20_000)
    args = ap.parse_args()

    import torch

    from saferl.data import load
    from saferl.runs.load import load_run

    load = cache(load)  # runs of one task share their dataset: load it once

    @cache
    def cost_to_go(dataset: str, gamma: float, cost_scale: float) -> float:
        data = load(dataset)
        return data.mc_returns(gamma, data.costs * cost_scale)[: args.states].mean().item()

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    actions: dict[tuple[str, int, str], list[tuple[float, torch.Tensor]]] = {}
    columns = ["run", "algo", "κ", "updates", "\\|tanh\\| > 0.999", "cost signal", "Q_c(s, π(s))", "Q_c(s, a)"]
    columns += ["heads' gap", "MC", "eval cost"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for run_dir in args.run_dirs:
        algo, task, cfg, updates = load_run(run_dir)
        data = load(cfg["dataset"])
        obs, data_act = data.observations[: args.states], data.actions[: args.states]
        act, squashed = probe(algo, obs, run_dir)
        qc = algo.cost_critic(obs, act).amin(0)
        signal = cost_signal(algo, qc, run_dir)
        heads = algo.cost_critic(obs, data_act)  # [2, N]: the min of the two is the critic's value
        qc_data, gap = heads.amin(0).mean().item(), (heads[0] - heads[1]).abs().mean().item()
        mc = cost_to_go(cfg["dataset"], algo.config.gamma, algo.config.cost_scale)
        eval_file = run_dir / "eval.json"
        cost = f"{json.loads(eval_file.read_text())['cost_mean']:.2f}" if eval_file.is_file() else "—"
        kappa, algo_name = float(cfg["cost_limit"]), str(cfg["algo"]["name"])
        saturated = (squashed.abs() > 0.999).float().mean().item()
        print(
            f"| {run_dir.name} | {algo_name} | {kappa:g} | {updates:,} | {saturated:.1%} | {signal} | "
            f"{qc.mean().item():.2f} | {qc_data:.2f} | {gap:.2f} | {mc:.2f} | {cost} |"
        )
        actions.setdefault((algo_name, int(cfg["seed"]), str(cfg["dataset"])), []).append((kappa, act))
    for (algo_name, seed, _), runs in actions.items():
        for i, (k1, a1) in enumerate(runs):
            for k2, a2 in runs[i + 1 :]:
                diff = (a1 - a2).abs().max().item()
                print(f"{algo_name} seed {seed}: κ = {k1:g} vs κ = {k2:g}: max |Δa| = {diff:.2e}")


if __name__ == "__main__":
    main()
