"""What a dataset covers: how many episodes enter each hazard, and DSRL's reward–cost frontier per threshold.

An offline safe-RL method can only learn that a region is unsafe if the data visits it with a cost, and it
can only find a high-reward safe policy if the data holds safe episodes close in reward to the best unsafe
ones. `saferl.collect` prints both; the recipe tests assert them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saferl.data.offline import OfflineDataset


@dataclass(frozen=True)
class HazardCoverage:
    center: tuple[float, float]
    radius: float
    transitions: int  # transitions that end inside the disc
    costly_transitions: int  # … of which carry a cost (all of them, when cost = 1 exactly inside hazards)
    episodes: int  # episodes with at least one such transition
    episode_fraction: float


def hazard_masks(data: OfflineDataset, hazards: Sequence[tuple[float, float, float]]) -> list[np.ndarray]:
    """Per disc hazard (cx, cy, r): which transitions end inside it (positions are the first two observation
    entries, as in the 2-D navigation tasks)."""
    nxt = data.next_observations[:, :2].cpu().numpy()
    return [np.hypot(nxt[:, 0] - cx, nxt[:, 1] - cy) < r for cx, cy, r in hazards]


def hazard_coverage(data: OfflineDataset, hazards: Sequence[tuple[float, float, float]]) -> list[HazardCoverage]:
    """Per disc hazard (cx, cy, r): transitions whose next observation lies inside it, and how many episodes
    enter it."""
    episode = data.episode_index.cpu().numpy()
    costs = data.costs.cpu().numpy()
    out = []
    for (cx, cy, r), inside in zip(hazards, hazard_masks(data, hazards), strict=True):
        episodes = len(np.unique(episode[inside]))
        costly = int((costs[inside] > 0).sum())
        out.append(
            HazardCoverage(
                (float(cx), float(cy)), float(r), int(inside.sum()), costly, episodes, episodes / data.num_episodes
            )
        )
    return out


@dataclass(frozen=True)
class FrontierPoint:
    threshold: float
    best_safe: float | None  # highest normalised reward among episodes with cost ≤ threshold (None: none safe)
    best_unsafe: float | None  # the same among episodes over the threshold (None: every episode is safe)

    @property
    def gap(self) -> float:
        """How far the best safe episode falls short of the best unsafe one (≤ 0: no trade-off to learn)."""
        if self.best_safe is None:
            return float("inf")
        if self.best_unsafe is None:
            return 0.0
        return self.best_unsafe - self.best_safe


def reward_frontier(
    episode_costs: np.ndarray,
    episode_rewards: np.ndarray,
    thresholds: Sequence[float],
    reward_min: float,
    reward_max: float,
) -> list[FrontierPoint]:
    """Best safe and best unsafe episode return per threshold, in DSRL's normalised reward."""
    costs, rewards = np.asarray(episode_costs, float), np.asarray(episode_rewards, float)
    norm = (rewards - reward_min) / (reward_max - reward_min)
    points = []
    for kappa in thresholds:
        safe = costs <= kappa
        points.append(
            FrontierPoint(
                float(kappa),
                float(norm[safe].max()) if safe.any() else None,
                float(norm[~safe].max()) if (~safe).any() else None,
            )
        )
    return points
