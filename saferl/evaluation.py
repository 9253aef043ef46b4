"""Rollouts and the DSRL metrics (Liu et al. 2023, `dsrl/offline_env.py`).

normalized reward = (R − R_min) / (R_max − R_min)
normalized cost   = (C + ε) / (κ + ε),  ε = 1 only when κ = 0
safe              ⇔ normalized cost ≤ 1

R and C are undiscounted episode sums averaged over evaluation episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from saferl.envs import TaskSpec, step_cost

BatchPolicy = Callable[[np.ndarray], np.ndarray]
EVAL_SEED_OFFSET = 1_000_003  # evaluation episodes never share env seeds with dataset collection seeds


@dataclass
class RolloutStats:
    rewards: np.ndarray  # per-episode undiscounted reward return
    costs: np.ndarray  # per-episode undiscounted cost return
    lengths: np.ndarray

    @property
    def episodes(self) -> int:
        return len(self.rewards)


def rollout(
    env_id: str,
    policy: BatchPolicy,
    episodes: int,
    seed: int = 0,
    batch: int = 32,
    env_kwargs: dict | None = None,
) -> RolloutStats:
    """Run ``episodes`` episodes, ``batch`` envs in lock-step so the policy sees a batch of observations.

    Episode i resets with seed ``EVAL_SEED_OFFSET + seed·10_000 + i``: the same policy and seed always
    meet the same start states.
    """
    if episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1, got {episodes}")
    rewards, costs, lengths = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    envs = [gym.make(env_id, **(env_kwargs or {})) for _ in range(min(batch, episodes))]
    try:
        next_episode = 0
        while next_episode < episodes:
            ids = list(range(next_episode, min(next_episode + len(envs), episodes)))
            next_episode += len(ids)
            obs = [envs[j].reset(seed=EVAL_SEED_OFFSET + seed * 10_000 + i)[0] for j, i in enumerate(ids)]
            alive = list(range(len(ids)))
            while alive:
                actions = policy(np.stack([obs[j] for j in alive]))
                still = []
                for action, j in zip(actions, alive, strict=True):
                    o, r, terminated, truncated, info = envs[j].step(action)
                    i = ids[j]
                    rewards[i] += float(r)
                    costs[i] += step_cost(info)
                    lengths[i] += 1
                    obs[j] = o
                    if not (terminated or truncated):
                        still.append(j)
                alive = still
    finally:
        for env in envs:
            env.close()
    return RolloutStats(rewards, costs, lengths)


def normalized_cost(cost: float, threshold: float) -> float:
    eps = 1.0 if threshold == 0 else 0.0
    return (cost + eps) / (threshold + eps)


def threshold_key(threshold: float) -> str:
    return f"{threshold:g}"


def dsrl_metrics(stats: RolloutStats, task: TaskSpec, thresholds: Sequence[float]) -> dict:
    """The metric block of ``eval.json`` for a set of cost thresholds."""
    reward_mean, cost_mean = float(stats.rewards.mean()), float(stats.costs.mean())
    norm_cost = {threshold_key(t): normalized_cost(cost_mean, t) for t in thresholds}
    return {
        "episodes": stats.episodes,
        "reward_mean": reward_mean,
        "reward_std": float(stats.rewards.std()),
        "cost_mean": cost_mean,
        "cost_std": float(stats.costs.std()),
        "thresholds": [float(t) for t in thresholds],
        "normalized_reward": task.normalized_reward(reward_mean),
        "normalized_cost": norm_cost,
        "safe": {k: v <= 1.0 for k, v in norm_cost.items()},
    }


def eval_thresholds(task: TaskSpec, cost_limit: float) -> list[float]:
    """The task's thresholds plus the run's cost limit, sorted."""
    return sorted({*task.cost_thresholds, float(cost_limit)})


def print_eval_table(result: dict, title: str) -> None:
    from saferl.console import print_table

    rows = [
        [f"κ = {k}", result["normalized_reward"], v, "yes" if result["safe"][k] else "NO"]
        for k, v in result["normalized_cost"].items()
    ]
    print_table(
        f"{title}  (reward {result['reward_mean']:.2f} ± {result['reward_std']:.2f}, "
        f"cost {result['cost_mean']:.2f} ± {result['cost_std']:.2f}, {result['episodes']} episodes)",
        ["threshold", "normalized reward", "normalized cost", "safe"],
        rows,
    )
