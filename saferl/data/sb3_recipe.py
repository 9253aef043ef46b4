"""Behaviour datasets for the MuJoCo tasks, from SAC policies trained with stable-baselines3.

DSRL covered the (cost return, reward return) plane by collecting data with many constrained agents. Here:

1. one SAC run per λ in the recipe's set (λ = 0 included) on the shaped reward r − λ·c, or, for a run with a
   speed target T, on the env's reward with its forward term v replaced by T − |v − T| (the env's reward up
   to T, less above it), each split into `segments` equal parts with a checkpoint after every part;
2. every checkpoint of every run rolled out with several action-noise levels (Gaussian, std as a fraction
   of the half action range; the early checkpoints of recipe v2 noise-free only), plus, in recipe v1,
   uniformly random episodes: the task's ``mixed-v0`` dataset;
3. for the locomotion bodies, D4RL-style reward-only datasets from the λ = 0 run: ``random`` (uniform
   actions), ``expert`` (the final policy, sampled stochastically), ``medium`` (the checkpoint whose
   deterministic return is closest to a third of the way from random to expert, sampled stochastically)
   and ``medium-replay`` (the SAC replay buffer up to that checkpoint). Costs are still in their infos.

Every segment starts by reseeding SAC and resetting the env, and loads its predecessor's checkpoint and
replay buffer from disk, so an interrupted build resumes at the last finished segment (and rollout) and
ends with the same bytes as an uninterrupted one. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from saferl.console import ProgressBar
from saferl.data import minari_io, reader
from saferl.data.sb3_episodes import episode_returns, episodes_from_npz, minari_buffers, replay_episodes
from saferl.data.sb3_jobs import (
    RolloutJob,
    SegmentJob,
    _derived_seed,
    _Runner,
    rollout_unit,
    segment_steps,
    train_segment,
)
from saferl.envs import get_task

D4RL_KINDS = ("random", "medium", "medium-replay", "expert")


@dataclass(frozen=True)
class Budget:
    name: str
    train_steps: int  # SAC env steps per λ
    segments: int  # checkpoints along each run (one after every equal part)
    learning_starts: int
    net: tuple[int, ...]
    noise: tuple[float, ...]  # action-noise std, as a fraction of the half action range
    episodes_per_unit: int  # episodes per (λ, checkpoint, noise level)
    random_episodes: int
    d4rl_episodes: int  # episodes of the random / medium / expert datasets
    max_episode_steps: int | None = None  # shorter episodes than the task's (tiny: the test suite)


BUDGETS: dict[str, Budget] = {
    "tiny": Budget("tiny", 240, 2, 80, (16, 16), (0.0, 0.5), 1, 1, 2, max_episode_steps=40),
    "small": Budget("small", 6_000, 3, 1_000, (64, 64), (0.0, 0.3), 2, 4, 10),
    "full": Budget("full", 50_000, 8, 5_000, (64, 64), (0.0, 0.25, 0.5), 4, 12, 100),
}


@dataclass(frozen=True)
class SB3Recipe:
    task: str  # Hydra task name
    lambdas: tuple[float, ...]  # Lagrangian weights of the SAC runs, 0 first
    description: str
    d4rl: bool = False  # also write random / medium / medium-replay / expert
    seed: int = 0
    version: int = 1  # bump whenever the recipe would produce different data
    budget_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per run, a speed target in m/s (None: the reward r − λ·c); empty: no run has one
    speed_targets: tuple[float | None, ...] = ()
    # the first floor(fraction · segments) checkpoints are rolled out noise-free only: noisy near-standing
    # behaviour at the start pose is what BC of the mix copies (benchmarks/datasets.md)
    noise_free_fraction: float = 0.0
    random_in_mix: bool = True  # uniformly random episodes in the mix (always in the D4RL-style random-v0)
    sac_version: int = 1  # bump whenever the SAC runs would change; `version` alone leaves them to be reused
    expensive = True  # `saferl.run` does not build these on the fly

    def __post_init__(self) -> None:
        if self.speed_targets and len(self.speed_targets) != len(self.lambdas):
            raise ValueError("speed_targets needs one entry (or None) per λ")

    def speed_target(self, run: int) -> float | None:
        return self.speed_targets[run] if self.speed_targets else None

    def noise_free_checkpoints(self, budget: Budget) -> int:
        return int(self.noise_free_fraction * budget.segments)

    def run_label(self, run: int) -> str:
        target = self.speed_target(run)
        return f"λ={self.lambdas[run]:g}" if target is None else f"target {target:g} m/s"

    @property
    def dataset_id(self) -> str:
        return get_task(self.task).dataset_id

    def d4rl_id(self, kind: str) -> str:
        return self.dataset_id.replace("/mixed-v0", f"/{kind}-v0")

    def dataset_ids(self) -> list[str]:
        return [self.dataset_id, *(self.d4rl_id(k) for k in D4RL_KINDS if self.d4rl)]

    def budget(self, name: str) -> Budget:
        if name not in BUDGETS:
            raise ValueError(f"unknown budget {name!r}; valid budgets: {', '.join(BUDGETS)}")
        return replace(BUDGETS[name], **self.budget_overrides.get(name, {}))


# -- the build ---------------------------------------------------------------------------------------------
def work_dir(recipe: SB3Recipe, budget: Budget, seed: int) -> Path:
    """Where a build keeps its SAC checkpoints and rollouts; any change of the SAC runs or the budget gets a
    fresh one (a new rollout plan alone reuses the SAC runs: see `rollout_dir`)."""
    name = recipe.dataset_id.split("/")[1]
    runs: dict[str, Any] = {"lambdas": recipe.lambdas, "budget": asdict(budget)}
    if recipe.speed_targets:
        runs["speed_targets"] = recipe.speed_targets
    digest = hashlib.sha256(json.dumps(runs, sort_keys=True).encode()).hexdigest()[:8]
    return (
        minari_io.datasets_root() / ".saferl-build" / name / f"{budget.name}-seed{seed}-v{recipe.sac_version}-{digest}"
    )


def rollout_dir(recipe: SB3Recipe, work: Path) -> Path:
    return work / f"rollouts-v{recipe.version}"


def _train_all(recipe: SB3Recipe, budget: Budget, seed: int, work: Path, runner: _Runner, progress: bool) -> None:
    env_id = get_task(recipe.task).env_id
    seg_steps = segment_steps(budget)

    def job(i: int, k: int) -> SegmentJob:
        return SegmentJob(
            run_dir=str(work / f"lambda{i}"),
            env_id=env_id,
            run=i,
            lam=recipe.lambdas[i],
            speed_target=recipe.speed_target(i),
            segment=k,
            steps=seg_steps[k],
            total_steps=budget.train_steps,
            budget=budget,
            seed=_derived_seed(seed, recipe.sac_version, i),
            segment_seed=_derived_seed(seed, recipe.sac_version, i, k + 1),
        )

    first: list[SegmentJob] = []
    finished = 0
    for i in range(len(recipe.lambdas)):
        (work / f"lambda{i}").mkdir(parents=True, exist_ok=True)
        done = [k for k in range(budget.segments) if (work / f"lambda{i}" / f"ckpt{k}.zip").is_file()]
        k = len(done)  # segments commit in order, so the done ones are 0..k-1
        finished += k
        if k < budget.segments:
            first.append(job(i, k))
    total = len(recipe.lambdas) * budget.segments
    bar = ProgressBar(progress, total, f"SAC runs ({len(recipe.lambdas)} × {budget.train_steps} steps)", finished)

    def on_done(j: SegmentJob) -> list[SegmentJob]:
        bar.advance(status=f"{recipe.run_label(j.run)} segment {j.segment + 1}/{budget.segments}")
        return [job(j.run, j.segment + 1)] if j.segment + 1 < budget.segments else []

    try:
        runner.run(train_segment, first, on_done)
    finally:
        bar.close()


def _mixed_units(recipe: SB3Recipe, budget: Budget, seed: int, work: Path) -> list[RolloutJob]:
    env_id = get_task(recipe.task).env_id
    noise_free = recipe.noise_free_checkpoints(budget)
    units = []
    for i in range(len(recipe.lambdas)):
        for k in range(budget.segments):
            for n, noise in enumerate(budget.noise[:1] if k < noise_free else budget.noise):
                units.append(
                    RolloutJob(
                        out=str(rollout_dir(recipe, work) / f"mixed-lambda{i}-ckpt{k}-noise{n}.npz"),
                        env_id=env_id,
                        max_episode_steps=budget.max_episode_steps,
                        policy=str(work / f"lambda{i}" / f"ckpt{k}.zip"),
                        noise=noise,
                        deterministic=True,
                        episodes=budget.episodes_per_unit,
                        seed=_derived_seed(seed, recipe.version, 1000 + i, k, n),
                    )
                )
    if recipe.random_in_mix:
        units.append(_random_unit(recipe, budget, seed, work, "mixed-random", budget.random_episodes))
    return units


def _random_unit(recipe: SB3Recipe, budget: Budget, seed: int, work: Path, name: str, episodes: int) -> RolloutJob:
    return RolloutJob(
        out=str(rollout_dir(recipe, work) / f"{name}.npz"),
        env_id=get_task(recipe.task).env_id,
        max_episode_steps=budget.max_episode_steps,
        policy=None,
        noise=0.0,
        deterministic=True,
        episodes=episodes,
        seed=_derived_seed(seed, recipe.version, 2000 + len(name)),
    )


def _roll_out(units: list[RolloutJob], runner: _Runner, progress: bool, label: str) -> None:
    todo = [u for u in units if not Path(u.out).is_file()]
    bar = ProgressBar(progress, len(units), label, len(units) - len(todo))
    try:
        runner.run(rollout_unit, todo, lambda _: bar.advance() or [])
    finally:
        bar.close()


def _sb3_version() -> str:
    import stable_baselines3

    return stable_baselines3.__version__


def build_sb3(
    recipe: SB3Recipe,
    seed: int | None = None,
    budget: str = "full",
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Path]:
    """Train, roll out and write the recipe's datasets; returns {dataset id: directory}."""
    b = recipe.budget(budget)
    seed = recipe.seed if seed is None else int(seed)
    workers = min(os.cpu_count() or 1, len(recipe.lambdas)) if workers is None else int(workers)
    for dataset_id in recipe.dataset_ids():
        minari_io.require_absent(dataset_id, overwrite)
    work = work_dir(recipe, b, seed)
    rollout_dir(recipe, work).mkdir(parents=True, exist_ok=True)
    timing = _load_json(work / "timing.json")  # the SAC runs' time; the rollouts' is per rollout plan
    rollout_timing = _load_json(rollout_dir(recipe, work) / "timing.json")
    runner = _Runner(workers)
    try:
        start = time.perf_counter()
        _train_all(recipe, b, seed, work, runner, progress)
        timing["train_seconds"] = timing.get("train_seconds", 0.0) + time.perf_counter() - start
        _write_json(work / "timing.json", timing)

        start = time.perf_counter()
        units = _mixed_units(recipe, b, seed, work)
        _roll_out(units, runner, progress, f"rolling out {recipe.dataset_id}")
        d4rl_units: dict[str, RolloutJob] = {}
        medium_segment = None
        if recipe.d4rl:
            d4rl_units, medium_segment = _d4rl_units(recipe, b, seed, work, units)
            _roll_out(list(d4rl_units.values()), runner, progress, "rolling out the D4RL-style datasets")
        elapsed = time.perf_counter() - start
        rollout_timing["rollout_seconds"] = rollout_timing.get("rollout_seconds", 0.0) + elapsed
        _write_json(rollout_dir(recipe, work) / "timing.json", rollout_timing)
    finally:
        runner.close()

    common = {
        "recipe_version": recipe.version,
        "seed": seed,
        "budget": b.name,
        "budget_settings": asdict(b),
        "lambdas": list(recipe.lambdas),
        "speed_targets": [recipe.speed_target(i) for i in range(len(recipe.lambdas))],
        "noise_free_checkpoints": recipe.noise_free_checkpoints(b),
        "random_in_mix": recipe.random_in_mix,
        "sac_version": recipe.sac_version,
        "stable_baselines3": _sb3_version(),
        "reference": seed == recipe.seed and b.name == "full",
        "train_seconds": round(timing["train_seconds"], 1),
        "rollout_seconds": round(rollout_timing["rollout_seconds"], 1),
    }
    env_id = get_task(recipe.task).env_id
    paths: dict[str, Path] = {}
    mixed = [ep for u in units for ep in episodes_from_npz(Path(u.out))]
    rew, cost = episode_returns(mixed)
    meta = common | {
        "recipe": f"{recipe.task}/mixed",
        "episodes": len(mixed),
        "behaviour_counts": _behaviour_counts(recipe, b),
        "reward_min": float(rew.min()),
        "reward_max": float(rew.max()),
    }
    paths[recipe.dataset_id] = _write(recipe.dataset_id, mixed, env_id, meta, recipe.description)

    if recipe.d4rl:
        kinds = {k: episodes_from_npz(Path(u.out)) for k, u in d4rl_units.items()}
        kinds["medium-replay"] = replay_episodes(work / "lambda0", medium_segment, b)
        ref_min = float(episode_returns(kinds["random"])[0].mean())
        ref_max = float(episode_returns(kinds["expert"])[0].mean())
        for kind in D4RL_KINDS:
            desc = _D4RL_DESCRIPTIONS[kind].format(task=recipe.task, segment=medium_segment + 1, of=b.segments)
            meta = common | {"recipe": f"{recipe.task}/{kind}", "episodes": len(kinds[kind])}
            if kind in ("medium", "medium-replay"):
                meta["medium_checkpoint"] = medium_segment
            paths[recipe.d4rl_id(kind)] = _write(
                recipe.d4rl_id(kind),
                kinds[kind],
                env_id,
                meta,
                desc,
                ref_min_score=ref_min,
                ref_max_score=ref_max,
            )
    return paths


_D4RL_DESCRIPTIONS = {
    "random": "{task}: uniformly random actions (D4RL-style 'random'); costs in infos",
    "medium": "{task}: the λ=0 SAC checkpoint {segment}/{of}, about a third of the way from random to expert, "
    "sampled stochastically (D4RL-style 'medium'); costs in infos",
    "medium-replay": "{task}: the λ=0 SAC replay buffer up to checkpoint {segment}/{of} (D4RL-style "
    "'medium-replay'); costs in infos",
    "expert": "{task}: the final λ=0 SAC policy, sampled stochastically (D4RL-style 'expert'); costs in infos",
}


def _d4rl_units(
    recipe: SB3Recipe, b: Budget, seed: int, work: Path, mixed_units: list[RolloutJob]
) -> tuple[dict[str, RolloutJob], int]:
    """random / medium / expert rollouts; medium is picked from the λ=0 noise-free mixed rollouts."""
    last = b.segments - 1
    returns = []
    for k in range(b.segments):
        unit = next(u for u in mixed_units if u.out.endswith(f"mixed-lambda0-ckpt{k}-noise0.npz"))
        returns.append(float(episode_returns(episodes_from_npz(Path(unit.out)))[0].mean()))
    random_unit = _random_unit(recipe, b, seed, work, "d4rl-random", b.d4rl_episodes)
    if not Path(random_unit.out).is_file():
        rollout_unit(random_unit)
    random_return = float(episode_returns(episodes_from_npz(Path(random_unit.out)))[0].mean())
    target = random_return + (returns[last] - random_return) / 3.0
    medium = int(np.argmin([abs(r - target) for r in returns[:last]])) if last > 0 else 0

    def policy_unit(kind: str, k: int) -> RolloutJob:
        return RolloutJob(
            out=str(rollout_dir(recipe, work) / f"d4rl-{kind}.npz"),
            env_id=get_task(recipe.task).env_id,
            max_episode_steps=b.max_episode_steps,
            policy=str(work / "lambda0" / f"ckpt{k}.zip"),
            noise=0.0,
            deterministic=False,
            episodes=b.d4rl_episodes,
            seed=_derived_seed(seed, recipe.version, 3000 + k, len(kind)),
        )

    units = {
        "random": random_unit,
        "medium": policy_unit("medium", medium),
        "expert": policy_unit("expert", last),
    }
    return units, medium


def _behaviour_counts(recipe: SB3Recipe, b: Budget) -> dict[str, int]:
    noise_free = recipe.noise_free_checkpoints(b)
    per_run = (noise_free + (b.segments - noise_free) * len(b.noise)) * b.episodes_per_unit
    counts = {f"sac {recipe.run_label(i)}": per_run for i in range(len(recipe.lambdas))}
    if recipe.random_in_mix:
        counts["random-uniform"] = b.random_episodes
    return counts


def _write(
    dataset_id: str,
    episodes: list[dict[str, np.ndarray]],
    env_id: str,
    meta: dict[str, Any],
    description: str,
    **minari_kwargs: Any,
) -> Path:
    buffers = minari_buffers(episodes)
    path = minari_io.write_dataset(dataset_id, buffers, env_id, meta, description, overwrite=True, **minari_kwargs)
    reader.write_cache_from_buffers(path, buffers)
    return path


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def safe_fractions(episode_costs: np.ndarray, thresholds: Iterable[float]) -> dict[str, float]:
    """Fraction of episodes whose cost return is within each threshold."""
    return {f"{t:g}": float(np.mean(episode_costs <= t)) for t in thresholds}


def expected_minutes(recipe: SB3Recipe, budget: str) -> float:
    """A rough duration for messages (SB3 SAC at ~60 env steps/s per worker on this class of CPU)."""
    b = recipe.budget(budget)
    workers = min(os.cpu_count() or 1, len(recipe.lambdas))
    return math.ceil(len(recipe.lambdas) * b.train_steps / (60.0 * workers) / 60.0)
