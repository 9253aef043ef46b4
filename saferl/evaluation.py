"""Rollouts and the DSRL metrics (Liu et al. 2023, `dsrl/offline_env.py`).

normalized reward = (R − R_min) / (R_max − R_min)
normalized cost   = (C + ε) / (κ + ε),  ε = 1 only when κ = 0
safe              ⇔ normalized cost ≤ 1

R and C are undiscounted episode sums averaged over evaluation episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from saferl.envs import TaskSpec, step_cost

BatchPolicy = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class EpisodicPolicy(Protocol):
    """A policy with per-episode context, evaluated on ``n`` episodes at a time."""

    def reset(self, num_episodes: int) -> None: ...

    def act(self, obs: np.ndarray, episode_ids: np.ndarray) -> np.ndarray: ...

    def observe(self, episode_ids: np.ndarray, rewards: np.ndarray, costs: np.ndarray) -> None: ...


EVAL_SEED_OFFSET = 1_000_003  # evaluation episodes never share env seeds with dataset collection seeds


def eval_episode_seed(seed: int, episode: int) -> int:
    """The env seed of evaluation episode ``episode`` of a run with ``seed``: scripts that re-run a trained
    policy by hand meet the start states of its ``eval.json``."""
    return EVAL_SEED_OFFSET + seed * 10_000 + episode


@dataclass
class RolloutStats:
    rewards: np.ndarray  # per-episode undiscounted reward return
    costs: np.ndarray  # per-episode undiscounted cost return
    lengths: np.ndarray
    # per-episode sums of a safety filter's per-step records (info["safety_filter"]), when the env has one
    filter: dict[str, np.ndarray] | None = None

    @property
    def episodes(self) -> int:
        return len(self.rewards)


_FILTER_SUMS = ("intervened", "infeasible", "correction_norm", "solve_time_us")


def rollout(
    env_id: str,
    policy: BatchPolicy,
    episodes: int,
    seed: int = 0,
    batch: int = 32,
    env_kwargs: dict | None = None,
    wrap_env: Callable[[gym.Env], gym.Env] | None = None,
) -> RolloutStats:
    """Run ``episodes`` episodes, ``batch`` envs in lock-step so the policy sees a batch of observations.

    ``policy`` is either a function of a batch of observations or an `EpisodicPolicy` that keeps per-episode
    context (a sequence model conditioned on returns-to-go): it is reset for every group of episodes, asked
    for actions with the indices of the live episodes, and told the rewards and costs they received.

    Episode i resets with seed ``EVAL_SEED_OFFSET + seed·10_000 + i``: the same policy and seed always
    meet the same start states. ``wrap_env`` wraps every env (e.g. in a `saferl.safety.SafetyFilter`);
    the filter's per-step records are summed per episode into ``RolloutStats.filter``.
    """
    if episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1, got {episodes}")
    rewards, costs, lengths = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    filt: dict[str, np.ndarray] | None = None
    episodic = isinstance(policy, EpisodicPolicy)
    envs = [gym.make(env_id, **(env_kwargs or {})) for _ in range(min(batch, episodes))]
    if wrap_env is not None:
        envs = [wrap_env(env) for env in envs]
    try:
        next_episode = 0
        while next_episode < episodes:
            ids = list(range(next_episode, min(next_episode + len(envs), episodes)))
            next_episode += len(ids)
            obs = [envs[j].reset(seed=eval_episode_seed(seed, i))[0] for j, i in enumerate(ids)]
            alive = list(range(len(ids)))
            if episodic:
                policy.reset(len(ids))
            while alive:
                live_obs = np.stack([obs[j] for j in alive])
                actions = policy.act(live_obs, np.array(alive)) if episodic else policy(live_obs)
                still, step_rewards, step_costs = [], [], []
                for action, j in zip(actions, alive, strict=True):
                    o, r, terminated, truncated, info = envs[j].step(action)
                    i = ids[j]
                    step_rewards.append(float(r))
                    step_costs.append(step_cost(info))
                    rewards[i] += step_rewards[-1]
                    costs[i] += step_costs[-1]
                    lengths[i] += 1
                    record = info.get("safety_filter")
                    if record is not None:
                        if filt is None:
                            filt = {key: np.zeros(episodes) for key in (*_FILTER_SUMS, "max_slack")}
                        for key in _FILTER_SUMS:
                            filt[key][i] += float(record[key])
                        filt["max_slack"][i] = max(filt["max_slack"][i], float(record["slack"]))
                    obs[j] = o
                    if not (terminated or truncated):
                        still.append(j)
                if episodic:
                    policy.observe(np.array(alive), np.array(step_rewards), np.array(step_costs))
                alive = still
    finally:
        for env in envs:
            env.close()
    return RolloutStats(rewards, costs, lengths, filt)


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
        # every episode's returns, for tail measures (the worst 10 % of episodes) and paired comparisons
        "episode_rewards": stats.rewards.tolist(),
        "episode_costs": stats.costs.tolist(),
    }


def d4rl_metrics(stats: RolloutStats, metadata: dict) -> dict:
    """D4RL's normalised score of the rollouts, (R − R_random)/(R_expert − R_random), when the training dataset
    records its reference returns (Minari's ``ref_min_score`` / ``ref_max_score``, as saferl's D4RL-style
    datasets do); empty otherwise. Kept next to the DSRL score, which normalises by the task's constants."""
    lo, hi = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if lo is None or hi is None or not float(hi) > float(lo):
        return {}
    lo, hi = float(lo), float(hi)
    return {
        "d4rl_normalized_reward": (float(stats.rewards.mean()) - lo) / (hi - lo),
        "d4rl_reference_returns": [lo, hi],
    }


def conditioned_metrics(by_threshold: dict[float, RolloutStats], task: TaskSpec, metadata: dict) -> dict:
    """``eval.json["by_threshold"]`` of a threshold-conditioned algorithm (one model for every κ, told κ when it
    acts, as CDT): per κ, the rollouts conditioned on κ, scored at κ."""
    out = {}
    for kappa, stats in sorted(by_threshold.items()):
        key, block = threshold_key(kappa), dsrl_metrics(stats, task, [kappa])
        out[key] = {
            "episodes": block["episodes"],
            "reward_mean": block["reward_mean"],
            "cost_mean": block["cost_mean"],
            "normalized_reward": block["normalized_reward"],
            "normalized_cost": block["normalized_cost"][key],
            "safe": block["safe"][key],
            **d4rl_metrics(stats, metadata),
        }
    return out


def safety_metrics(stats: RolloutStats) -> dict:
    """Per-episode violation fraction and, for filtered rollouts, the safety filter's statistics."""
    out: dict = {"episodes_with_violation": float(np.mean(stats.costs > 0))}
    f = stats.filter
    if f is not None:
        steps = max(int(stats.lengths.sum()), 1)
        interventions = float(f["intervened"].sum())
        out["safety_filter"] = {
            "steps": int(stats.lengths.sum()),
            "interventions": int(interventions),
            "intervention_rate": interventions / steps,
            "interventions_per_episode": float(f["intervened"].mean()),
            "infeasible_steps": int(f["infeasible"].sum()),
            "episodes_with_infeasible_step": float(np.mean(f["infeasible"] > 0)),
            "mean_correction_norm": float(f["correction_norm"].sum() / max(interventions, 1.0)),
            "max_slack": float(f["max_slack"].max()),
            "mean_solve_time_us": float(f["solve_time_us"].sum() / steps),
        }
    return out


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


def print_conditioned_table(by_threshold: dict, title: str) -> None:
    from saferl.console import print_table

    rows = [
        [f"κ = {k}", m["normalized_reward"], m["normalized_cost"], "yes" if m["safe"] else "NO"]
        for k, m in by_threshold.items()
    ]
    print_table(title, ["threshold", "normalized reward", "normalized cost", "safe"], rows)
