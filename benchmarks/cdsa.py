"""CDSA on top of trained policies (issue 19): does its score-guided adjustment improve a base policy, make it
more risk-averse, and on the constrained tasks lower its cost — and by how much against BC-Safe?

For every task, base algorithm and seed the script trains the base policy (``python -m saferl.run``, the CPU
budget of the offline-rl board: 64-unit networks, batch 256, 5,000 updates), then CDSA on top of it
(``algo=cdsa init_from=<base run>``, ``preset=cpu``), and compares each pair on the same evaluation episodes
(the same seed, hence the same start states): mean score, the mean of the worst 10 % of episode returns (a
tail-risk measure, CVaR₁₀), and on the constrained tasks the normalized cost at each κ. BC-Safe (trained at the
task's default κ) is the safe reference. Finished runs are skipped, so it resumes.

    MINARI_DATASETS_PATH=<root> python benchmarks/cdsa.py --runs-root <dir>               # train, then report
    MINARI_DATASETS_PATH=<root> python benchmarks/cdsa.py --runs-root <dir> --report-only

Writes the CDSA section of ``benchmarks/cdsa_parl.md`` (between its ``cdsa.py`` markers). The MuJoCo datasets
come from ``python -m saferl.collect env=halfcheetah-velocity|hopper-velocity budget=full``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _subruns import REPO, main_for, mean_std, read_result, train_run

# label -> (saferl task, dataset id or None for the task's own mixed dataset, score)
TASKS = {
    "halfcheetah-medium": ("halfcheetah-velocity", "saferl/HalfCheetahVelocity/medium-v0", "d4rl"),
    "hopper-medium": ("hopper-velocity", "saferl/HopperVelocity/medium-v0", "d4rl"),
    "point-robot": ("point-robot", None, "dsrl"),
    "halfcheetah-velocity": ("halfcheetah-velocity", None, "dsrl"),
}
BASES = ("bc_all", "iql", "td3bc")
SEEDS = (0, 1, 2)
BASE_OPTIONS = ["steps=5000", "algo.hidden=[64,64]", "algo.batch_size=256"]
COMMON = ["eval_episodes=20", "eval_every=0", "threads=1", "progress=false", "tensorboard=false"]
TAIL = 0.1  # CVaR: the mean of the worst 10 % of episode returns


def run_dir(root: Path, label: str, algo: str, seed: int) -> Path:
    return root / label / algo / f"seed{seed}"


def train(root: Path, label: str, name: str, seed: int, extra: list[str], algo: str | None = None) -> str:
    """One run, ``name`` its directory's label (default algorithm: the same name)."""
    task, dataset, _ = TASKS[label]
    options = [f"algo={algo or name}", f"env={task}", f"seed={seed}"]
    options += ([f"dataset={dataset}"] if dataset else []) + COMMON + extra
    return train_run(run_dir(root, label, name, seed), options, f"{label} {name} seed {seed}")


def run_all(root: Path, workers: int, tasks: list[str]) -> None:
    jobs = [(label, base, seed) for label in tasks for base in BASES for seed in SEEDS]
    safe = [(label, seed) for label in tasks if TASKS[label][2] == "dsrl" for seed in SEEDS]

    def base_then_cdsa(job: tuple[str, str, int]) -> str:
        label, base, seed = job
        first = train(root, label, base, seed, BASE_OPTIONS)
        second = train(root, label, f"cdsa-{base}", seed, [f"init_from={run_dir(root, label, base, seed)}"], "cdsa")
        return f"{first}; {second}"

    with ThreadPoolExecutor(workers) as pool:
        for line in pool.map(base_then_cdsa, jobs):
            print(line, flush=True)
        for line in pool.map(lambda j: train(root, j[0], "bc_safe", j[1], BASE_OPTIONS), safe):
            print(line, flush=True)


# ---------------------------------------------------------------------------------------------------
# report


def result(root: Path, label: str, algo: str, seed: int) -> dict | None:
    return read_result(run_dir(root, label, algo, seed))


def cvar(values: list[float], tail: float = TAIL) -> float:
    """The mean of the lowest ``tail`` share of ``values`` (at least one)."""
    v = np.sort(np.asarray(values, float))
    return float(v[: max(1, int(round(tail * len(v))))].mean())


def score(label: str, res: dict, raw: float) -> float:
    """A raw episode return on the board's scale: D4RL's ×100 score, or DSRL's normalized reward (both linear)."""
    if TASKS[label][2] == "d4rl":
        lo, hi = res["d4rl_reference_returns"]
        return 100.0 * (raw - lo) / (hi - lo)
    from saferl.envs import get_task

    return get_task(TASKS[label][0]).normalized_reward(raw)


def pair_rows(root: Path, label: str, base: str) -> list[dict] | None:
    """Per seed: the base's and CDSA's (score, CVaR₁₀, cost) on the same evaluation episodes; None until all ran."""
    rows = []
    for seed in SEEDS:
        b, c = result(root, label, base, seed), result(root, label, f"cdsa-{base}", seed)
        if b is None or c is None or "episode_rewards" not in b or "episode_rewards" not in c:
            return None
        rows.append(
            {
                "score": [score(label, b, float(np.mean(r["episode_rewards"]))) for r in (b, c)],
                "cvar": [score(label, b, cvar(r["episode_rewards"])) for r in (b, c)],
                "cost": [float(r["cost_mean"]) for r in (b, c)],
            }
        )
    return rows


def section(root: Path) -> str:
    lines = ["## CDSA on top of trained policies (`benchmarks/cdsa.py`)", ""]
    verdicts: dict[str, list[bool]] = {"score": [], "cvar": [], "cost": []}
    for label, (_, _, kind) in TASKS.items():
        unit, fmt = ("D4RL score", "{:.1f}") if kind == "d4rl" else ("normalized reward", "{:.2f}")
        lines += [f"### {label} ({unit}; cost = mean episode cost return)", ""]
        lines += [
            f"| base | base {unit} | + CDSA | base CVaR₁₀ | + CDSA | base cost | + CDSA | Δ {unit} per seed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for base in BASES:
            rows = pair_rows(root, label, base)
            if rows is None:
                lines.append(f"| {base} | not run yet | | | | | | |")
                continue
            cells = [mean_std([r[key][i] for r in rows], fmt) for key in ("score", "cvar", "cost") for i in (0, 1)]
            per_seed = ", ".join(fmt.replace("{:", "{:+").format(r["score"][1] - r["score"][0]) for r in rows)
            lines.append(f"| {base} | " + " | ".join(cells) + f" | {per_seed} |")
            for key in ("score", "cvar") + (("cost",) if kind == "dsrl" else ()):
                delta = float(np.mean([r[key][1] - r[key][0] for r in rows]))
                verdicts[key].append(delta < 0 if key == "cost" else delta > 0)
        if kind == "dsrl":
            safe = [result(root, label, "bc_safe", s) for s in SEEDS]
            if all(r is not None for r in safe):
                reward, cost = (
                    mean_std([r["normalized_reward"] for r in safe]),
                    mean_std([r["cost_mean"] for r in safe]),
                )
                lines.append(f"| bc_safe (κ = {safe[0]['cost_limit']:g}) | {reward} | | | | {cost} | | |")
        lines.append("")
    lines += ["### Claims", "", "| claim | measured (rows where it holds) | verdict |", "|---|---|---|"]
    for claim, key in (
        ("CDSA improves the base policy's score (plug-and-play, several bases)", "score"),
        ("CDSA makes behaviour more risk-averse (higher mean of the worst 10 % of returns)", "cvar"),
        ("On the constrained tasks CDSA lowers the base policy's cost", "cost"),
    ):
        v = verdicts[key]
        verdict = "not measured" if not v else "reproduced" if all(v) else "partly" if any(v) else "not reproduced"
        lines.append(f"| {claim} | {sum(v)}/{len(v)} (task, base) rows | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    main_for(__doc__, "cdsa", list(TASKS), run_all, section, REPO / "benchmarks" / "cdsa_parl.md")


if __name__ == "__main__":
    main()
