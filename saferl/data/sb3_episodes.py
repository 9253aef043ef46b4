"""A MuJoCo build's rollouts and SAC replay buffer as episodes, and episodes as Minari buffers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from minari.data_collector import EpisodeBuffer

from saferl.data.sb3_jobs import segment_steps

if TYPE_CHECKING:
    from saferl.data.sb3_recipe import Budget


def episodes_from_npz(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    episodes, o, t = [], 0, 0
    for length in arrays["lengths"]:
        length = int(length)
        episodes.append(
            {
                "observations": arrays["observations"][o : o + length + 1],
                "actions": arrays["actions"][t : t + length],
                "rewards": arrays["rewards"][t : t + length],
                "terminations": arrays["terminations"][t : t + length],
                "truncations": arrays["truncations"][t : t + length],
                "costs": arrays["costs"][o : o + length + 1],
            }
        )
        o += length + 1
        t += length
    return episodes


def replay_episodes(run_dir: Path, upto_segment: int, budget: Budget) -> list[dict[str, np.ndarray]]:
    """The SAC replay buffer of segments 0..upto_segment, cut into episodes (env rewards, real costs)."""
    import pickle

    with open(run_dir / f"replay{budget.segments - 1}.pkl", "rb") as fh:
        buf = pickle.load(fh)
    seg_steps = segment_steps(budget)
    end = sum(seg_steps[: upto_segment + 1])
    logs = [np.load(run_dir / f"log{k}.npz") for k in range(upto_segment + 1)]
    rewards = np.concatenate([z["rewards"] for z in logs])
    costs = np.concatenate([z["costs"] for z in logs])
    seg_ends = {int(x) for x in np.cumsum(seg_steps[: upto_segment + 1]) - 1}
    obs, next_obs = buf.observations[:end, 0], buf.next_observations[:end, 0]
    actions = _unscale(buf.actions[:end, 0], run_dir, budget)
    dones, timeouts = buf.dones[:end, 0].astype(bool), buf.timeouts[:end, 0].astype(bool)
    episodes, start = [], 0
    for t in range(end):
        cut = t in seg_ends  # every segment resets the env: its last transition ends an episode
        if not (dones[t] or cut):
            continue
        truncated = bool(timeouts[t]) or (cut and not dones[t])
        sl = slice(start, t + 1)
        terms = np.zeros(t + 1 - start, dtype=bool)
        truncs = np.zeros(t + 1 - start, dtype=bool)
        terms[-1], truncs[-1] = not truncated, truncated
        episodes.append(
            {
                "observations": np.concatenate([obs[sl], next_obs[t : t + 1]]).astype(np.float32),
                "actions": actions[sl].astype(np.float32),
                "rewards": rewards[sl],
                "terminations": terms,
                "truncations": truncs,
                "costs": np.concatenate([[0.0], costs[sl]]),
            }
        )
        start = t + 1
    return episodes


def _unscale(buffer_actions: np.ndarray, run_dir: Path, budget: Budget) -> np.ndarray:
    """SAC stores actions rescaled to [−1, 1]; map them back to the env's box."""
    from stable_baselines3 import SAC

    model = SAC.load(run_dir / f"ckpt{budget.segments - 1}.zip", device="cpu")
    return model.policy.unscale_action(buffer_actions)


def minari_buffers(episodes: list[dict[str, np.ndarray]]) -> list[EpisodeBuffer]:
    return [
        EpisodeBuffer(
            id=i,
            observations=ep["observations"],
            actions=ep["actions"],
            rewards=list(ep["rewards"]),
            terminations=list(ep["terminations"]),
            truncations=list(ep["truncations"]),
            infos={"cost": np.asarray(ep["costs"], dtype=np.float64)},
        )
        for i, ep in enumerate(episodes)
    ]


def episode_returns(episodes: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    rewards = np.array([float(np.sum(ep["rewards"])) for ep in episodes])
    costs = np.array([float(np.sum(ep["costs"][1:])) for ep in episodes])
    return rewards, costs
