"""PA-RL offline (issue 19): does its action optimisation beat the policy it starts from, for more than one policy
class, and does the safe variant keep the cost under κ next to FISOR?

For every task and seed the script trains, through ``python -m saferl.run`` (one single-threaded process per
worker):

* ``parl`` with the DDPM diffusion policy and with the tanh-Gaussian policy (``preset=cpu``: 2,000 BC updates of
  the policy, then the distributional Cal-QL critic to 6,000; the policy stays frozen offline, as in the authors'
  offline phase, and acts through the critic);
* ``parl_safe`` (diffusion) at the task's default κ, whose action optimisation keeps to candidates its cost critic
  deems feasible;
* ``fisor`` at the reference suite's setting (``fisor_cpu``, ``preset=cpu``, 100,000 updates: at 10,000 its actor
  has not learned these tasks yet, benchmarks/fisor.md).

Each PA-RL run's base policy (the BC policy its first 2,000 updates trained, ``act_base``) is then rolled out on
the same evaluation episodes as the run's own evaluation (the same seed, hence the same start states) and stored
as ``base_eval.json`` beside the run's ``eval.json``. Finished runs and evaluations are skipped, so it resumes.

    MINARI_DATASETS_PATH=<root> python benchmarks/parl.py --runs-root <dir>               # train, then report
    MINARI_DATASETS_PATH=<root> python benchmarks/parl.py --runs-root <dir> --report-only
    ... --fisor-from <reference suite runs_root>   # FISOR's rows from the reference suite's finished runs

FISOR here is exactly the reference suite's FISOR run (same algorithm options, seed and κ; only the suite's
periodic evaluations differ), so ``--fisor-from`` links the suite's finished runs into ``<dir>/<task>/fisor/``
instead of training them again (about 45 single-thread minutes per seed).

Writes the PA-RL section of ``benchmarks/cdsa_parl.md`` (between its ``parl.py`` markers). The MuJoCo dataset
comes from ``python -m saferl.collect env=halfcheetah-velocity budget=full``.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _subruns import REPO, main_for, mean_std, read_result, train_run

TASKS = ("point-robot", "halfcheetah-velocity")  # the task's own mixed dataset, scored by DSRL's metric
SEEDS = (0, 1, 2)
# directory label -> (algorithm, options)
AGENTS = {
    "parl-diffusion": ("parl", ["preset=cpu"]),
    "parl-gaussian": ("parl", ["preset=cpu", "algo.policy_class=gaussian"]),
    "parl_safe": ("parl_safe", ["preset=cpu"]),
    "fisor": ("fisor_cpu", ["preset=cpu", "steps=100000"]),
}
CLASSES = ("parl-diffusion", "parl-gaussian")
COMMON = ["eval_episodes=20", "eval_every=0", "threads=1", "progress=false", "tensorboard=false"]


def run_dir(root: Path, task: str, agent: str, seed: int) -> Path:
    return root / task / agent / f"seed{seed}"


def train(root: Path, task: str, agent: str, seed: int) -> str:
    algo, options = AGENTS[agent]
    out = run_dir(root, task, agent, seed)
    line = train_run(out, [f"algo={algo}", f"env={task}", f"seed={seed}", *COMMON, *options], f"{task} {agent} {seed}")
    if agent in CLASSES:
        evaluate_base(out)
    return line


def evaluate_base(out: Path) -> None:
    """The run's base policy alone, on the run's evaluation episodes and metric: ``base_eval.json``."""
    path = out / "base_eval.json"
    if path.is_file():
        return
    import torch

    from saferl import evaluate, load_policy
    from saferl.runs.rundir import write_json_atomic

    torch.set_num_threads(1)
    policy = load_policy(out)
    algo = policy.algorithm
    algo.episodic_policy = lambda cost_target=None: algo.act_base  # roll out the base instead of PA-RL
    episodes = len(read_result(out)["episode_rewards"])
    write_json_atomic(path, evaluate(policy, episodes=episodes))


def link_reference_fisor(args: argparse.Namespace, tasks: list[str]) -> None:
    """``--fisor-from``: link each finished FISOR run of ``suite=reference`` under ``args.fisor_from`` into this
    script's runs root, where `train_run` then finds its ``eval.json`` and skips it."""
    if args.fisor_from is None:
        return
    from saferl.bench import expand
    from saferl.bench.__main__ import compose_bench
    from saferl.bench.runner import is_finished
    from saferl.bench.suite import parse_suite

    algo, options = AGENTS["fisor"]
    expected = int(next(o.split("=", 1)[1] for o in options if o.startswith("steps=")))
    specs = expand(parse_suite(compose_bench(["suite=reference"]).suite), args.fisor_from, need_data=False)
    for task in tasks:
        for seed in SEEDS:
            (spec,) = [s for s in specs if s.agent == "fisor" and s.task == task and s.seed == seed]
            found, steps = spec.config["algo"]["name"], int(spec.config["steps"])
            if (found, steps) != (algo, expected):
                raise SystemExit(
                    f"the reference suite's FISOR is {found} at {steps} steps, not this script's {algo} at "
                    f"{expected}: train it here instead"
                )
            link = run_dir(args.runs_root, task, "fisor", seed)
            if not is_finished(spec) or link.exists() or link.is_symlink():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(spec.run_dir.resolve(), target_is_directory=True)
            print(f"{task} fisor {seed}: linked {spec.run_dir}", flush=True)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--fisor-from", type=Path, help="runs_root of suite=reference: reuse its finished FISOR runs")


def run_all(root: Path, workers: int, tasks: list[str]) -> None:
    jobs = [(task, agent, seed) for task in tasks for agent in AGENTS for seed in SEEDS]
    with ThreadPoolExecutor(workers) as pool:
        for line in pool.map(lambda job: train(root, *job), jobs):
            print(line, flush=True)


# ---------------------------------------------------------------------------------------------------
# report


def results(root: Path, task: str, agent: str, name: str = "eval.json") -> list[dict] | None:
    """Every seed's result file, or None until all are in."""
    found = [read_result(run_dir(root, task, agent, seed), name) for seed in SEEDS]
    return None if any(r is None for r in found) else found


def at_limit(res: dict) -> float:
    """The normalized cost at the run's own κ (the task's default for all of these runs)."""
    from saferl.evaluation import threshold_key

    return float(res["normalized_cost"][threshold_key(res["cost_limit"])])


def class_rows(root: Path, task: str, verdicts: dict[str, list[bool]]) -> list[str]:
    lines = [
        "| policy class | its BC policy | PA-RL | BC cost | PA-RL cost | Δ normalized reward per seed |",
        "|---|---|---|---|---|---|",
    ]
    for agent in CLASSES:
        runs, bases = results(root, task, agent), results(root, task, agent, "base_eval.json")
        label = agent.removeprefix("parl-")
        if runs is None or bases is None:
            lines.append(f"| {label} | not run yet | | | | |")
            continue
        deltas = [r["normalized_reward"] - b["normalized_reward"] for r, b in zip(runs, bases, strict=True)]
        cells = [
            mean_std([b["normalized_reward"] for b in bases]),
            mean_std([r["normalized_reward"] for r in runs]),
            mean_std([b["cost_mean"] for b in bases], "{:.1f}"),
            mean_std([r["cost_mean"] for r in runs], "{:.1f}"),
            ", ".join(f"{d:+.2f}" for d in deltas),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        verdicts[agent].append(float(np.mean(deltas)) > 0)
    return lines


def safe_rows(root: Path, task: str, verdicts: dict[str, list[bool]]) -> list[str]:
    lines = [
        "| agent | normalized reward | cost | normalized cost at κ | seeds safe |",
        "|---|---|---|---|---|",
    ]
    found = {}
    for agent in ("parl-diffusion", "parl_safe", "fisor"):
        runs = results(root, task, agent)
        if runs is None:
            lines.append(f"| {agent} | not run yet | | | |")
            continue
        costs = [at_limit(r) for r in runs]
        found[agent] = (float(np.mean([r["normalized_reward"] for r in runs])), float(np.mean(costs)))
        cells = [
            mean_std([r["normalized_reward"] for r in runs]),
            mean_std([r["cost_mean"] for r in runs], "{:.1f}"),
            mean_std(costs),
            f"{sum(c <= 1.0 for c in costs)}/{len(costs)}",
        ]
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    if "parl_safe" in found:
        verdicts["safe"].append(found["parl_safe"][1] <= 1.0)
        if "fisor" in found and found["fisor"][1] <= 1.0 and found["parl_safe"][1] <= 1.0:
            verdicts["vs_fisor"].append(found["parl_safe"][0] > found["fisor"][0])
    return lines


def verdict(v: list[bool]) -> str:
    return "not measured" if not v else "holds" if all(v) else "partly" if any(v) else "does not hold"


def section(root: Path) -> str:
    from saferl.envs import get_task

    verdicts: dict[str, list[bool]] = {"parl-diffusion": [], "parl-gaussian": [], "safe": [], "vs_fisor": []}
    lines = ["## PA-RL offline (`benchmarks/parl.py`)", ""]
    for task in TASKS:
        kappa = get_task(task).default_cost_limit
        lines += [f"### {task}: the policy PA-RL starts from → PA-RL (normalized reward; cost per episode)", ""]
        lines += class_rows(root, task, verdicts) + [""]
        lines += [f"### {task}: safe PA-RL next to FISOR at κ = {kappa:g}", ""]
        lines += safe_rows(root, task, verdicts) + [""]
    lines += ["### Claims", "", "| claim | tasks where it holds | verdict |", "|---|---|---|"]
    for claim, key in (
        ("PA-RL beats the diffusion BC policy it starts from, offline (mean over seeds)", "parl-diffusion"),
        ("PA-RL beats its BC policy for another class too: the tanh-Gaussian policy", "parl-gaussian"),
        ("`parl_safe` is safe at κ (mean normalized cost ≤ 1)", "safe"),
        (
            "`parl_safe` has a higher reward than FISOR where both are safe (a question, not a paper's claim)",
            "vs_fisor",
        ),
    ):
        v = verdicts[key]
        lines.append(f"| {claim} | {sum(v)}/{len(v)} | {verdict(v)} |")
    return "\n".join(lines)


def main() -> None:
    main_for(
        __doc__,
        "parl",
        list(TASKS),
        run_all,
        section,
        REPO / "benchmarks" / "cdsa_parl.md",
        add_arguments=add_arguments,
        prepare=link_reference_fisor,
    )


if __name__ == "__main__":
    main()
