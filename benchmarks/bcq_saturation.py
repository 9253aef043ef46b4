"""Can BCQ-Lag's Lagrange multiplier still move its policy? A check of the perturbation actor's tanh.

    MINARI_DATASETS_PATH=<root> python benchmarks/bcq_saturation.py RUN_DIR [RUN_DIR ...] [--states 20000]

BCQ-Lag acts with a = clip(G(s) + φ·a_max·tanh(ξ(s, G(s)))): the VAE's decoded action plus a perturbation of at
most φ = 5 % of the action range. The cost enters only through the actor's loss −Q_r + λ·Q_c, so the multiplier
λ reaches the policy only through tanh's gradient. Where tanh is saturated (|tanh| ≈ 1) that gradient is ~0 and
no λ changes what the agent does. For each run this prints, on the first ``--states`` states of the run's own
dataset: the share of saturated perturbation outputs, the final λ (``metrics.csv``), the cost critic at the
policy's action, and, for runs of the same seed at different κ, the largest difference between their actions.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def final_multiplier(run_dir: Path) -> float:
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("lagrangian")]
    return float(rows[-1]["lagrangian"]) if rows else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--states", type=int, default=20_000)
    args = ap.parse_args()

    import json

    import torch

    from saferl.data import load
    from saferl.runs.load import load_run

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    actions: dict[tuple[int, str], list[tuple[float, torch.Tensor]]] = {}
    print("| run | κ | updates | share of |tanh| > 0.999 | final λ | Q_c(s, π(s)) | episode cost (eval) |")
    print("|---|---|---|---|---|---|---|")
    for run_dir in args.run_dirs:
        algo, task, cfg, updates = load_run(run_dir)
        if not hasattr(algo, "vae") or not hasattr(algo.actor, "phi"):
            raise SystemExit(f"{run_dir} is a {type(algo).__name__} run; this script reads BCQ-Lag runs")
        obs = load(cfg["dataset"]).observations[: args.states]
        decoded = algo.vae.decode(obs, torch.zeros(len(obs), algo.vae.latent_dim))
        squashed = torch.tanh(algo.actor.net(torch.cat([obs, decoded], -1)))
        act = algo.actor(obs, decoded)
        qc = algo.cost_critic(obs, act).amin(0).mean().item()
        eval_file = run_dir / "eval.json"
        cost = "—"
        if eval_file.is_file():
            cost = f"{json.loads(eval_file.read_text())['cost_mean']:.2f}"
        kappa = float(cfg["cost_limit"])
        saturated = (squashed.abs() > 0.999).float().mean().item()
        print(
            f"| {run_dir.name} | {kappa:g} | {updates:,} | {saturated:.1%} | {final_multiplier(run_dir):.2f} | "
            f"{qc:.2f} | {cost} |"
        )
        actions.setdefault((int(cfg["seed"]), str(cfg["dataset"])), []).append((kappa, act))
    for (seed, _), runs in actions.items():
        for i, (k1, a1) in enumerate(runs):
            for k2, a2 in runs[i + 1 :]:
                print(f"seed {seed}: κ = {k1:g} vs κ = {k2:g}: max |Δa| = {(a1 - a2).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
