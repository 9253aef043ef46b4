"""Finite-horizon layout: transitions grouped by their step h within the episode, as ``[H, n]`` tensors.

Algorithms with one network per step (HNPG) run every step at once on this layout: row h holds step h's
transitions, padded to the largest step count, with a mask and per-step mean weights. `StepIndex` draws
``k`` transitions of every step from a dataset (stratified sampling), `group_by_step` scatters a flat batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from saferl.data.offline import OfflineDataset


def episode_timesteps(data: OfflineDataset) -> torch.Tensor:
    """Step index of every transition within its episode, int64 [N] (from ``episode_starts``)."""
    starts = data.episode_starts.to(data.device)
    return torch.arange(data.num_transitions, device=data.device) - starts[:-1][data.episode_index]


class StepGroups(NamedTuple):
    """Transitions laid out ``[H, n]`` by step (padded): tensors, a validity mask, per-step mean weights."""

    observations: torch.Tensor
    actions: torch.Tensor
    targets: torch.Tensor  # on-policy: MC return-to-go; offline: reward
    next_observations: torch.Tensor
    not_done: torch.Tensor
    mask: torch.Tensor  # 1.0 where a slot holds a transition
    slots: tuple[torch.Tensor, torch.Tensor]  # (step, column) of every source transition

    @property
    def weights(self) -> torch.Tensor:
        """mask / count per step: a weighted sum over a row is the mean over that step's transitions."""
        return self.mask / self.mask.sum(1, keepdim=True).clamp(min=1.0)


def group_by_step(
    timesteps: torch.Tensor,
    horizon: int,
    observations: torch.Tensor,
    actions: torch.Tensor,
    targets: torch.Tensor,
    next_observations: torch.Tensor,
    not_done: torch.Tensor,
) -> StepGroups:
    """Scatter a flat batch (timesteps < horizon) into the ``[H, n]`` layout, n = the largest step count."""
    counts = torch.bincount(timesteps, minlength=horizon)
    order = torch.argsort(timesteps, stable=True)
    first = counts.cumsum(0) - counts
    cols = torch.empty_like(timesteps)
    cols[order] = torch.arange(len(timesteps), device=timesteps.device) - first[timesteps[order]]
    width = max(int(counts.max()), 1)

    def pad(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(horizon, width, *x.shape[1:])
        out[timesteps, cols] = x
        return out

    mask = pad(torch.ones_like(targets))
    return StepGroups(
        pad(observations),
        pad(actions),
        pad(targets),
        pad(next_observations),
        pad(not_done),
        mask,
        (timesteps, cols),
    )


class StepIndex:
    """Offline transitions sorted by step, for drawing ``k`` transitions of every step at once."""

    def __init__(self, data: OfflineDataset, horizon: int):
        t = episode_timesteps(data)
        keep = torch.nonzero(t < horizon).squeeze(1)  # transitions past the horizon have no network
        t = t[keep]
        self.order = keep[torch.argsort(t, stable=True)]
        self.counts = torch.bincount(t, minlength=horizon)
        self.first = self.counts.cumsum(0) - self.counts
        self.horizon = horizon

    def sample(self, k: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices ``[H, k]`` (uniform with replacement within each step, as the authors' per-step buffers)
        and a mask ``[H, k]`` that is 0 for steps without offline data."""
        u = torch.rand(self.horizon, k, device=self.order.device, generator=generator)
        pos = self.first[:, None] + (u * self.counts[:, None]).long()
        pos = pos.clamp(max=max(len(self.order) - 1, 0))
        mask = (self.counts > 0).float()[:, None].expand(self.horizon, k)
        return self.order[pos], mask.contiguous()


def offline_groups(data: OfflineDataset, index: torch.Tensor, mask: torch.Tensor) -> StepGroups:
    """The ``[H, k]`` transitions at ``index`` (from `StepIndex.sample`) as `StepGroups`."""
    horizon, k = index.shape
    batch = data.batch(index.reshape(-1))

    def shaped(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(horizon, k, *x.shape[1:])

    rows = torch.arange(horizon, device=index.device)[:, None].expand(horizon, k)
    cols = torch.arange(k, device=index.device)[None].expand(horizon, k)
    return StepGroups(
        shaped(batch.observations),
        shaped(batch.actions),
        shaped(batch.rewards),
        shaped(batch.next_observations),
        shaped(1.0 - batch.terminals),
        mask,
        (rows.reshape(-1), cols.reshape(-1)),
    )


def concat_groups(a: StepGroups, b: StepGroups) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Observations, actions and mask of two layouts side by side (``[H, n_a + n_b]``)."""
    return (
        torch.cat([a.observations, b.observations], 1),
        torch.cat([a.actions, b.actions], 1),
        torch.cat([a.mask, b.mask], 1),
    )
