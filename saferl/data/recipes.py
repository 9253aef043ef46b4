"""Deterministic dataset recipes: which behaviour policies, in what mix, rolled out in the real env.

A DSRL-style dataset mixes behaviour that ignores the constraint (high reward, high cost), behaviour that
respects it with different margins and speeds, and exploratory noise, so that episodes spread over the
(cost return, reward return) plane. Every episode's policy and env seed come from one `SeedSequence`, so
the same recipe and seed give the same dataset on every machine.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from minari.data_collector import EpisodeBuffer

from saferl.console import ProgressBar
from saferl.data import behaviour, minari_io, reader
from saferl.data.offline import OfflineDataset
from saferl.data.sb3_recipe import BUDGETS, SB3Recipe, build_sb3
from saferl.envs import get_task
from saferl.envs.comb_lock import GOOD, CombinationLockEnv
from saferl.envs.hazard_nav import BOAT_ROBOT, POINT_ROBOT, NavGeometry
from saferl.envs.velocity import VELOCITY_RULES


@dataclass(frozen=True)
class Recipe:
    dataset_id: str
    task: str  # Hydra task name
    episodes: int
    seed: int
    version: int  # bump whenever the recipe would produce different data
    description: str
    make_policy: Callable[[NavGeometry, np.random.Generator], tuple[str, behaviour.Policy]]
    geometry: NavGeometry


def _nav_mix(
    geo: NavGeometry,
    rng: np.random.Generator,
    *,
    speed: tuple[float, float],
    cautious_speed: tuple[float, float],
    weights: dict[str, float],
) -> tuple[str, behaviour.Policy]:
    """Draw one behaviour for one episode (the draw itself consumes the episode's rng)."""
    names = list(weights)
    kind = names[rng.choice(len(names), p=np.array([weights[n] for n in names]))]
    if kind == "goal-seeking":  # ignores hazards: the high-reward, high-cost end of the plane
        return kind, behaviour.NavController(geo, rng, None, rng.uniform(*speed), rng.uniform(0.0, 0.3))
    if kind == "risky":
        # Cuts into hazards: inflating each disc to r·sqrt(1 − q²) − r of the largest radius makes the chord
        # through the main hazard proportional to q ~ U[0, 1], so episode costs spread evenly.
        r_main = max(r for _, _, r in geo.hazards)
        margin = r_main * (np.sqrt(1.0 - rng.uniform(0.0, 1.0) ** 2) - 1.0)
        return kind, behaviour.NavController(geo, rng, margin, rng.uniform(*speed), rng.uniform(0.0, 0.3))
    if kind == "hazard-avoiding":  # keeps 0 to 0.6 clear of every hazard
        return kind, behaviour.NavController(
            geo, rng, rng.uniform(0.0, 0.6), rng.uniform(*speed), rng.uniform(0.0, 0.3)
        )
    if kind == "cautious":  # wide berth, slow: safe and low reward
        return kind, behaviour.NavController(
            geo, rng, rng.uniform(0.3, 0.8), rng.uniform(*cautious_speed), rng.uniform(0.0, 0.2)
        )
    if kind == "waypoint":  # through a point in or near any hazard, then to the goal, avoiding or not
        goal_margin = None if rng.random() < 0.5 else rng.uniform(0.0, 0.4)
        return kind, behaviour.waypoint_controller(geo, rng, rng.uniform(*speed), rng.uniform(0.0, 0.2), goal_margin)
    if kind == "random-uniform":
        return kind, behaviour.UniformRandom(rng)
    if kind == "random-correlated":
        return kind, behaviour.OrnsteinUhlenbeck(rng)
    raise ValueError(kind)


# Version 2 adds the waypoint behaviour: in version 1 no episode entered PointRobot's two flanking hazards or
# the boat's downstream one (0 transitions), so no offline method could learn they are unsafe.
_NAV_WEIGHTS = {
    "goal-seeking": 0.22,
    "risky": 0.18,
    "hazard-avoiding": 0.15,
    "cautious": 0.10,
    "waypoint": 0.25,
    "random-uniform": 0.05,
    "random-correlated": 0.05,
}


def _point_policy(geo: NavGeometry, rng: np.random.Generator):
    return _nav_mix(geo, rng, speed=(0.6, 1.4), cautious_speed=(0.3, 0.7), weights=_NAV_WEIGHTS)


def _boat_policy(geo: NavGeometry, rng: np.random.Generator):
    return _nav_mix(geo, rng, speed=(2.0, 3.0), cautious_speed=(1.2, 2.0), weights=_NAV_WEIGHTS)


def _nav_recipe(task: str, geometry: NavGeometry, policy, episodes: int, description: str) -> Recipe:
    return Recipe(
        dataset_id=get_task(task).dataset_id,
        task=task,
        episodes=episodes,
        seed=0,
        version=2,
        description=description,
        make_policy=policy,
        geometry=geometry,
    )


@dataclass(frozen=True)
class LockRecipe:
    """The combination lock's offline data: the authors' ε-greedy expert (`collect_offline.py`).

    At every step the expert puts a one-hot on the lock's correct arm for the current latent state (the authors
    use B's arm in the bad state C too, where nothing matters); with probability ε it plays a uniformly random
    vector in [0, 1]^10 instead (``np.random.rand(action_dim)``). ε = 1/H as in the paper.
    """

    dataset_id: str
    task: str
    episodes: int
    seed: int
    version: int
    description: str
    epsilon: float | None = None  # None: 1/H


def lock_expert_action(env: CombinationLockEnv, rng: np.random.Generator, epsilon: float) -> tuple[np.ndarray, bool]:
    """One action of the ε-greedy expert (the authors' ``eps_greedy_actions``), drawn from ``rng``, and whether
    it was the random one."""
    action = np.zeros(env.action_dim, dtype=np.float32)
    action[env.opt_actions[0 if env.latent == GOOD[0] else 1, env.h]] = 1.0
    explore = bool(rng.random() < epsilon)
    if explore:
        action = rng.random(env.action_dim).astype(np.float32)
    return action, explore


RECIPES: dict[str, Recipe | LockRecipe] = {
    r.dataset_id: r
    for r in [
        _nav_recipe(
            "point-robot",
            POINT_ROBOT,
            _point_policy,
            episodes=1000,
            description="PointRobot mixed: hazard-ignoring, hazard-cutting, hazard-avoiding, cautious, hazard-visiting "
            "(waypoint) and random behaviour, 1000 episodes",
        ),
        _nav_recipe(
            "boat-robot",
            BOAT_ROBOT,
            _boat_policy,
            episodes=600,
            description="BoatRobot mixed: hazard-ignoring, hazard-cutting, hazard-avoiding, cautious, hazard-visiting "
            "(waypoint) and random behaviour, 600 episodes",
        ),
        # The authors collect 50 000 episodes, but each HNPG iteration samples only N_online / H transitions per
        # step (200 at H = 5). Minari writes every episode as its own HDF5 group (~4 ms each here), so 50 000
        # episodes take minutes to write; 1 000 give 1 000 transitions per step (~450 of them still on a good
        # chain at the last step) and build in a few seconds.
        LockRecipe(
            dataset_id=get_task("combination-lock").dataset_id,
            task="combination-lock",
            episodes=1000,
            seed=0,
            version=1,
            description="CombinationLock (H = 5) ε-greedy expert, ε = 1/H, uniformly random action when exploring "
            "(HNPG's collect_offline.py), 1000 episodes",
        ),
    ]
}


_LOCOMOTION_LAMBDAS = (0.0, 0.5, 2.0)  # λ·cost per step against a reward of about the speed per step


def _locomotion(task: str, agent: str, **budget_overrides: dict[str, Any]) -> SB3Recipe:
    # v2: the first quarter of the checkpoints noise-free only and no uniformly random episodes in the mix;
    # both fill the start pose with near-standing behaviour that BC-All copies (benchmarks/datasets.md)
    runs = f"r − λ·c for λ ∈ {_fmt(_LOCOMOTION_LAMBDAS)}"
    return SB3Recipe(
        task=task,
        lambdas=_LOCOMOTION_LAMBDAS,
        d4rl=True,
        version=2,
        noise_free_fraction=0.25,
        random_in_mix=False,
        budget_overrides=budget_overrides,
        description=f"{agent} velocity mixed: {_SAC_MIX_V2.format(runs=runs)}",
    )


# Hopper's r − λ·c runs learn to dive and fall (λ ≤ 0.5) or to hop slowly (λ = 2) within the build budget, so
# their best episodes are safe. Runs that track a speed below and one well above the 0.7402 m/s limit, with
# the env's survival bonus, give hopping episodes on both sides of the threshold: the reward–cost trade-off.
_HOPPER_TARGETS = (None, 0.5 * VELOCITY_RULES["Hopper"].threshold, 2.0 * VELOCITY_RULES["Hopper"].threshold)


def _hopper(**budget_overrides: dict[str, Any]) -> SB3Recipe:
    runs = "r (λ = 0) and on speed targets " + _fmt(tuple(t for t in _HOPPER_TARGETS if t is not None)) + " m/s"
    return replace(
        _locomotion("hopper-velocity", "Hopper", **budget_overrides),
        lambdas=(0.0, 0.0, 0.0),
        speed_targets=_HOPPER_TARGETS,
        sac_version=2,
        description=f"Hopper velocity mixed: {_SAC_MIX_V2.format(runs=runs)}",
    )


def _run_circle(task: str, lambdas: tuple[float, ...], **budget_overrides: dict[str, Any]) -> SB3Recipe:
    return SB3Recipe(
        task=task,
        lambdas=lambdas,
        description=f"{task} mixed: {_SAC_MIX.format(lambdas=_fmt(lambdas))}",
        budget_overrides=budget_overrides,
    )


_SAC_MIX = (
    "SAC (stable-baselines3) on r − λ·c for λ ∈ {lambdas}, every checkpoint rolled out with several "
    "action-noise levels, plus uniformly random episodes"
)


_SAC_MIX_V2 = (
    "SAC (stable-baselines3) on {runs}, every checkpoint rolled out noise-free "
    "and the later three quarters also with action noise"
)


def _fmt(values: tuple[float, ...]) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


# The car's episodes are 200–300 steps and it learns in a few thousand steps: fewer SAC steps, more episodes.
_CAR_BUDGETS = {
    "small": {"train_steps": 4_000, "episodes_per_unit": 4},
    "full": {"train_steps": 24_000, "learning_starts": 2_000, "episodes_per_unit": 10, "random_episodes": 30},
}


SB3_RECIPES: dict[str, SB3Recipe] = {
    r.dataset_id: r
    for r in [
        # SAC needs ~70k steps before HalfCheetah's unconstrained policy runs well past 3.2 m/s
        _locomotion("halfcheetah-velocity", "HalfCheetah", full={"train_steps": 70_000}),
        # at 50k steps the λ = 0 hopper still dives and falls after ~110 steps: give SAC time to learn to run
        _hopper(full={"train_steps": 120_000}),
        _locomotion("walker2d-velocity", "Walker2d"),
        _locomotion("swimmer-velocity", "Swimmer"),
        _locomotion("ant-velocity", "Ant"),
        _locomotion("humanoid-velocity", "Humanoid"),
        # Run: progress reward 2·speed per step against a limit of 1.5 m/s (top speed 3): λ ≥ 3 keeps it slow.
        _run_circle("car-run", (0.0, 1.0, 6.0), **_CAR_BUDGETS),
        _run_circle("car-circle", (0.0, 1.0, 4.0), **_CAR_BUDGETS),
        _run_circle("ant-run", (0.0, 1.0, 6.0)),
        _run_circle("ant-circle", (0.0, 1.0, 4.0)),
    ]
}
# the D4RL-style datasets are built by their locomotion recipe
_SB3_BY_ID: dict[str, SB3Recipe] = {i: r for r in SB3_RECIPES.values() for i in r.dataset_ids()}

# episodes of the 2-D navigation recipes per budget, as a fraction of the reference size (tiny: 20 episodes)
_NAV_BUDGET_FRACTION = {"small": 0.2, "full": 1.0}


def recipe_for(dataset_id: str) -> Recipe | LockRecipe | SB3Recipe | None:
    return RECIPES.get(dataset_id) or _SB3_BY_ID.get(dataset_id)


def collect(recipe: Recipe, seed: int, episodes: int, progress: bool = True) -> tuple[list[EpisodeBuffer], Counter]:
    """Roll the recipe's behaviour policies out in the registered env; one EpisodeBuffer per episode."""
    spec = get_task(recipe.task)
    env = gym.make(spec.env_id, disable_env_checker=True)
    children = np.random.SeedSequence([seed, recipe.version]).spawn(episodes)
    buffers: list[EpisodeBuffer] = []
    kinds: Counter = Counter()
    bar = ProgressBar(progress, episodes, f"collecting {recipe.dataset_id}")
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        kind, policy = recipe.make_policy(recipe.geometry, rng)
        kinds[kind] += 1
        env_seed = int(rng.integers(2**31 - 1))
        obs, info = env.reset(seed=env_seed)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        costs, hs = [info["cost"]], [info["h"]]
        while True:
            action = policy(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(float(reward))
            terms.append(bool(terminated))
            truncs.append(bool(truncated))
            costs.append(info["cost"])
            hs.append(info["h"])
            if terminated or truncated:
                break
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=env_seed,
                observations=np.asarray(observations, dtype=np.float32),
                actions=np.asarray(actions, dtype=np.float32),
                rewards=rewards,
                terminations=terms,
                truncations=truncs,
                infos={"cost": np.asarray(costs, dtype=np.float64), "h": np.asarray(hs, dtype=np.float64)},
            )
        )
        bar.advance()
    bar.close()
    env.close()
    return buffers, kinds


def collect_lock(
    recipe: LockRecipe, seed: int, episodes: int, progress: bool = True, **env_kwargs: Any
) -> tuple[list[EpisodeBuffer], Counter]:
    """Roll the ε-greedy expert out in the lock (``env_kwargs`` override the task's, e.g. ``horizon``)."""
    spec = get_task(recipe.task)
    env = gym.make(spec.env_id, disable_env_checker=True, **env_kwargs).unwrapped
    epsilon = 1.0 / env.horizon if recipe.epsilon is None else recipe.epsilon
    rng = np.random.default_rng(np.random.SeedSequence([seed, recipe.version]))
    buffers: list[EpisodeBuffer] = []
    kinds: Counter = Counter()
    bar = ProgressBar(progress, episodes, f"collecting {recipe.dataset_id}")
    for i in range(episodes):
        env_seed = int(rng.integers(2**31 - 1))
        obs, _ = env.reset(seed=env_seed)
        observations, actions, rewards = [obs], [], []
        for _ in range(env.horizon):
            action, explore = lock_expert_action(env, rng, epsilon)
            kinds["random-action" if explore else "greedy-action"] += 1
            obs, reward, _, _, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(float(reward))
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=env_seed,
                observations=np.asarray(observations, dtype=np.float32),
                actions=np.asarray(actions, dtype=np.float32),
                rewards=rewards,
                terminations=[False] * (env.horizon - 1) + [True],
                truncations=[False] * env.horizon,
                infos={"cost": np.zeros(env.horizon + 1)},
            )
        )
        bar.advance()
    bar.close()
    env.close()
    return buffers, kinds


def lock_dataset(
    horizon: int, episodes: int, seed: int = 0, device: str | torch.device = "cpu", **env_kwargs: Any
) -> OfflineDataset:
    """The lock recipe's data for any horizon, in memory (no Minari files): for tests and benchmarks on
    locks other than the registered H = 5 one."""
    recipe = RECIPES[get_task("combination-lock").dataset_id]
    buffers, _ = collect_lock(recipe, seed, episodes, progress=False, horizon=horizon, **env_kwargs)
    arrays, _ = reader.flatten_buffers(buffers)
    starts = torch.from_numpy(arrays.pop("episode_starts")).to(device)
    tensors = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
    meta = {"dataset_id": f"combination-lock-H{horizon}/eps-greedy (in memory)", "env_id": recipe.task}
    return OfflineDataset(**tensors, episode_starts=starts, metadata=meta)


def build(
    dataset_id: str,
    seed: int | None = None,
    episodes: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    budget: str = "full",
    workers: int | None = None,
) -> Path:
    """Build a recipe's dataset under ``MINARI_DATASETS_PATH`` and return its directory.

    MuJoCo recipes also write the other datasets of the same SAC runs (the D4RL-style ones).
    """
    recipe = recipe_for(dataset_id)
    if recipe is None:
        raise minari_io.DatasetNotFoundError(
            f"no saferl recipe builds {dataset_id!r}; recipes: {', '.join(sorted([*RECIPES, *_SB3_BY_ID]))}"
        )
    if isinstance(recipe, SB3Recipe):
        if episodes is not None:
            raise ValueError("episodes= sets the size of the 2-D navigation recipes; MuJoCo recipes use budget=")
        return build_sb3(recipe, seed, budget, overwrite, progress, workers)[dataset_id]
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    seed = recipe.seed if seed is None else int(seed)
    if episodes is None:
        episodes = 20 if budget == "tiny" else max(1, round(recipe.episodes * _NAV_BUDGET_FRACTION[budget]))
    episodes = int(episodes)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    start = time.perf_counter()
    if isinstance(recipe, LockRecipe):
        buffers, kinds = collect_lock(recipe, seed, episodes, progress)
    else:
        buffers, kinds = collect(recipe, seed, episodes, progress)
    meta = {
        "recipe": f"{recipe.task}/{dataset_id.rsplit('/', 1)[-1].rsplit('-v', 1)[0]}",
        "recipe_version": recipe.version,
        "seed": seed,
        "episodes": episodes,
        "budget": budget,
        "behaviour_counts": dict(sorted(kinds.items())),
        "reference": seed == recipe.seed and episodes == recipe.episodes,
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    path = minari_io.write_dataset(
        dataset_id, buffers, get_task(recipe.task).env_id, meta, recipe.description, overwrite=overwrite
    )
    reader.write_cache_from_buffers(path, buffers)
    return path
