"""Summarise the locally built MuJoCo datasets for benchmarks/datasets.md.

    MINARI_DATASETS_PATH=<root> python benchmarks/datasets.py halfcheetah-velocity hopper-velocity car-run

reads every dataset the tasks' recipes wrote under the Minari root (built before with
`python -m saferl.collect env=<task> budget=full`), prints a Markdown table per task (episodes, transitions,
return and cost ranges, safe fractions at the task's thresholds, build times, checksum), the best safe and
unsafe episode at each threshold, the noise-free return and cost of every SAC checkpoint (from the build's
work directory, when it is still there), and copies each mixed dataset's scatter plot to
benchmarks/results/datasets/<task>.png.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from saferl.data import load, minari_io, recipe_for, sb3_episodes, sb3_recipe
from saferl.data.sb3_recipe import safe_fractions
from saferl.envs import get_task

PLOTS = Path(__file__).parent / "results" / "datasets"


def task_section(name: str) -> str:
    task = get_task(name)
    recipe = recipe_for(task.dataset_id)
    lines = [f"### {name} (`{task.env_id}`)", ""]
    mixed = load(task.dataset_id)
    meta = mixed.metadata
    b = meta["budget_settings"]
    runs = ", ".join(recipe.run_label(i) for i in range(len(recipe.lambdas)))
    noise_free = meta.get("noise_free_checkpoints", 0)
    plan = f"{b['segments']} checkpoints × noise {b['noise']} × {b['episodes_per_unit']} episodes"
    if noise_free:
        plan += f" (the first {noise_free} checkpoints noise-free only)"
    random = meta.get("random_in_mix", True)
    plan += f", plus {b['random_episodes']} random episodes" if random else ", no random episodes"
    lines += [
        f"Built with `python -m saferl.collect env={name} budget={meta['budget']}` (seed {meta['seed']}, recipe "
        f"v{meta['recipe_version']}, stable-baselines3 {meta['stable_baselines3']}): SAC runs {runs}, "
        f"{b['train_steps']:,} env steps each, net {b['net']}, {plan}. SAC training "
        f"{meta['train_seconds'] / 60:.1f} min, rollouts {meta['rollout_seconds'] / 60:.1f} min "
        "(2 workers on 2 cores).",
        "",
        "| dataset | episodes | transitions | reward return mean (min … max) | cost return mean (min … max) | "
        + " | ".join(f"safe at κ={t:g}" for t in task.cost_thresholds)
        + " | sha256 |",
        "|---|---|---|---|---|" + "---|" * len(task.cost_thresholds) + "---|",
    ]
    for ds_id in recipe.dataset_ids():
        data = mixed if ds_id == task.dataset_id else load(ds_id)
        rew, cost = data.episode_rewards.numpy(), data.episode_costs.numpy()
        fractions = safe_fractions(cost, task.cost_thresholds)
        digest = minari_io.read_metadata(minari_io.dataset_dir(ds_id))[minari_io.CHECKSUM_KEY]["checksums"]
        lines.append(
            f"| `{ds_id}` | {data.num_episodes} | {data.num_transitions:,} | {rew.mean():.1f} ({rew.min():.1f} … "
            f"{rew.max():.1f}) | {cost.mean():.1f} ({cost.min():g} … {cost.max():g}) | "
            + " | ".join(f"{v:.0%}" for v in fractions.values())
            + f" | `{digest['main_data.hdf5'][:12]}` |"
        )
    rew, cost = mixed.episode_rewards.numpy(), mixed.episode_costs.numpy()
    lines += ["", "Best episode of the mixed dataset within / over each threshold (reward return):", ""]
    for t in task.cost_thresholds:
        unsafe = rew[cost > t].max() if (cost > t).any() else float("nan")
        lines.append(f"* κ = {t:g}: safe {rew[cost <= t].max():.1f}, unsafe {unsafe:.1f}")
    lines += _checkpoint_table(recipe, meta)
    if task.reward_min is None:
        lines += ["", f"R_min / R_max of the mixed dataset: {meta['reward_min']:.4f} / {meta['reward_max']:.4f}."]
    PLOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(minari_io.dataset_dir(task.dataset_id) / "scatter.png", PLOTS / f"{name}.png")
    lines += ["", f"![{name}](results/datasets/{name}.png)", ""]
    return "\n".join(lines)


def _checkpoint_table(recipe, meta: dict) -> list[str]:
    """Mean noise-free episode return / cost of every SAC checkpoint, read from the build's rollouts."""
    work = sb3_recipe.rollout_dir(recipe, sb3_recipe.work_dir(recipe, recipe.budget(meta["budget"]), meta["seed"]))
    segments = meta["budget_settings"]["segments"]
    if not work.is_dir():
        return ["", f"(work directory {work} is gone: no per-checkpoint table)"]
    lines = [
        "",
        "Noise-free rollouts of each SAC checkpoint, mean reward return / cost return:",
        "",
        "| SAC run | " + " | ".join(f"ckpt {k + 1}" for k in range(segments)) + " |",
        "|---|" + "---|" * segments,
    ]
    for i in range(len(meta["lambdas"])):
        cells = []
        for k in range(segments):
            episodes = sb3_episodes.episodes_from_npz(work / f"mixed-lambda{i}-ckpt{k}-noise0.npz")
            r, c = sb3_episodes.episode_returns(episodes)
            cells.append(f"{r.mean():.0f} / {c.mean():.0f}")
        lines.append(f"| {recipe.run_label(i)} | " + " | ".join(cells) + " |")
    return lines


def main(names: list[str]) -> None:
    for name in names:
        print(task_section(name))


if __name__ == "__main__":
    main(sys.argv[1:] or ["halfcheetah-velocity", "hopper-velocity", "car-run"])
