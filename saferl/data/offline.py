"""`OfflineDataset`: a Minari dataset as torch tensors on the training device, sampled by indexing."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from saferl.data import minari_io, reader


class Batch(NamedTuple):
    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    costs: torch.Tensor
    next_observations: torch.Tensor
    terminals: torch.Tensor
    timeouts: torch.Tensor
    # discounted Monte-Carlo return-to-go of each transition (Cal-QL); only batches that ask for it carry one
    mc_returns: torch.Tensor | None = None


# Field layout of the packed transition table (one gather per batch instead of seven).
_FIELDS = ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")


@dataclass
class OfflineDataset:
    """Transitions of whole episodes, stored contiguously episode after episode.

    ``episode_starts[i]:episode_starts[i+1]`` are the transitions of episode i; ``episode_rewards`` and
    ``episode_costs`` are its undiscounted returns.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    costs: torch.Tensor
    next_observations: torch.Tensor
    terminals: torch.Tensor
    timeouts: torch.Tensor
    episode_starts: torch.Tensor  # int64 [E+1]
    metadata: dict[str, Any] = field(default_factory=dict)
    _packed: torch.Tensor | None = field(default=None, repr=False)

    # -- shapes -----------------------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def num_transitions(self) -> int:
        return self.observations.shape[0]

    @property
    def num_episodes(self) -> int:
        return self.episode_starts.shape[0] - 1

    @property
    def device(self) -> torch.device:
        return self.observations.device

    @property
    def episode_lengths(self) -> torch.Tensor:
        return self.episode_starts[1:] - self.episode_starts[:-1]

    @property
    def episode_index(self) -> torch.Tensor:
        """Episode number of every transition, int64 [N]."""
        return torch.repeat_interleave(
            torch.arange(self.num_episodes, device=self.device), self.episode_lengths.to(self.device)
        )

    @property
    def episode_rewards(self) -> torch.Tensor:
        return self._episode_sum(self.rewards)

    @property
    def episode_costs(self) -> torch.Tensor:
        return self._episode_sum(self.costs)

    def _episode_sum(self, values: torch.Tensor) -> torch.Tensor:
        # float64 cumulative sums keep long-episode returns exact to the last digit that matters
        csum = torch.cat([values.new_zeros(1, dtype=torch.float64), values.double().cumsum(0)])
        starts = self.episode_starts.to(values.device)
        return csum[starts[1:]] - csum[starts[:-1]]

    # -- sampling ---------------------------------------------------------------------------------
    def _table(self) -> torch.Tensor:
        if self._packed is None:
            cols = [getattr(self, name) for name in _FIELDS]
            self._packed = torch.cat([c.reshape(c.shape[0], -1).float() for c in cols], dim=1)
        return self._packed

    def _split(self, rows: torch.Tensor) -> Batch:
        return unpack_rows(rows, self.obs_dim, self.act_dim)

    def sample_indices(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform transition indices, drawn on the dataset's device."""
        return torch.randint(0, self.num_transitions, (batch_size,), device=self.device, generator=generator)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """A uniform batch of transitions; indices are drawn on the dataset's device (no host copies)."""
        return self.batch(self.sample_indices(batch_size, generator))

    def batch(self, indices: torch.Tensor) -> Batch:
        """The transitions at ``indices`` (one gather from the packed table)."""
        return self._split(self._table().index_select(0, indices.to(self.device)))

    def mc_returns(self, gamma: float, signal: torch.Tensor | None = None) -> torch.Tensor:
        """Discounted return-to-go of every transition within its episode, float32 [N]:
        G_t = r_t + γ·(1 − terminal_t)·G_{t+1}, with G = r at an episode's last transition (no bootstrap).
        ``signal`` replaces the rewards (``dataset.costs``: the Monte-Carlo cost-to-go)."""
        values = (self.rewards if signal is None else signal).double().cpu().numpy()
        cont = gamma * (1.0 - self.terminals.double().cpu().numpy())
        out = np.empty_like(values)
        starts = self.episode_starts.cpu().numpy()
        for begin, end in zip(starts[:-1], starts[1:], strict=True):
            acc = 0.0
            for t in range(end - 1, begin - 1, -1):
                acc = values[t] + cont[t] * acc
                out[t] = acc
        return torch.as_tensor(out, dtype=torch.float32, device=self.device)

    @property
    def is_initial(self) -> torch.Tensor:
        """1.0 for the first transition of every episode, float32 [N]."""
        flags = torch.zeros(self.num_transitions, device=self.device)
        flags[self.episode_starts[:-1].to(self.device)] = 1.0
        return flags

    # -- views ------------------------------------------------------------------------------------
    def select_episodes(self, mask: torch.Tensor | np.ndarray) -> OfflineDataset:
        """A new dataset with only the episodes where ``mask`` is true."""
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.device)
        if mask.shape != (self.num_episodes,):
            raise ValueError(f"episode mask has shape {tuple(mask.shape)}, expected ({self.num_episodes},)")
        keep = mask[self.episode_index]
        lengths = self.episode_lengths.to(self.device)[mask]
        starts = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        tensors = {name: getattr(self, name)[keep] for name in _FIELDS}
        meta = dict(self.metadata, selected_episodes=int(mask.sum()))
        return OfflineDataset(**tensors, episode_starts=starts, metadata=meta)

    def take_episodes(self, indices: torch.Tensor | np.ndarray | list[int]) -> OfflineDataset:
        """A new dataset with the episodes ``indices``, in that order (``select_episodes`` keeps stored order)."""
        idx = torch.as_tensor(indices, dtype=torch.int64, device=self.device).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_episodes):
            raise ValueError(f"episode indices must lie in [0, {self.num_episodes}); got {idx.tolist()}")
        lengths = self.episode_lengths.to(self.device)[idx]
        starts = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        total = int(starts[-1])
        # row r of episode k (its j-th step) comes from episode_starts[idx[k]] + j
        shift = torch.repeat_interleave(self.episode_starts.to(self.device)[idx] - starts[:-1], lengths)
        rows = torch.arange(total, device=self.device) + shift
        tensors = {name: getattr(self, name)[rows] for name in _FIELDS}
        meta = dict(self.metadata, selected_episodes=int(idx.numel()))
        return OfflineDataset(**tensors, episode_starts=starts, metadata=meta)

    def concat(self, other: OfflineDataset) -> OfflineDataset:
        """This dataset's episodes followed by ``other``'s (same shapes; ``other`` is moved to this device).
        The metadata is this dataset's, with ``appended_episodes`` counting the episodes added."""
        if (other.obs_dim, other.act_dim) != (self.obs_dim, self.act_dim):
            raise ValueError(
                f"cannot append episodes with observations ({other.obs_dim},) and actions ({other.act_dim},) to a "
                f"dataset with ({self.obs_dim},) and ({self.act_dim},)"
            )
        other = other.to(self.device)
        tensors = {name: torch.cat([getattr(self, name), getattr(other, name)]) for name in _FIELDS}
        starts = torch.cat([self.episode_starts, other.episode_starts[1:] + self.num_transitions])
        appended = int(self.metadata.get("appended_episodes", 0)) + other.num_episodes
        meta = dict(self.metadata, appended_episodes=appended)
        return OfflineDataset(**tensors, episode_starts=starts, metadata=meta)

    def to(self, device: str | torch.device) -> OfflineDataset:
        tensors = {name: getattr(self, name).to(device) for name in _FIELDS}
        return OfflineDataset(**tensors, episode_starts=self.episode_starts.to(device), metadata=self.metadata)

    def summary(self) -> dict[str, Any]:
        rew, cost = self.episode_rewards, self.episode_costs
        return {
            "episodes": self.num_episodes,
            "transitions": self.num_transitions,
            "reward_return_min": float(rew.min()),
            "reward_return_max": float(rew.max()),
            "cost_return_min": float(cost.min()),
            "cost_return_max": float(cost.max()),
        }


def unpack_rows(rows: torch.Tensor, obs_dim: int, act_dim: int) -> Batch:
    """Split packed transition rows (the `_FIELDS` layout, optionally + one MC-return column) into a `Batch`."""
    o, a = obs_dim, act_dim
    sizes = [o, a, 1, 1, o, 1, 1]
    extra = rows.shape[1] - sum(sizes)
    parts = torch.split(rows, sizes + ([extra] if extra else []), dim=1)
    return Batch(
        observations=parts[0],
        actions=parts[1],
        rewards=parts[2].squeeze(1),
        costs=parts[3].squeeze(1),
        next_observations=parts[4],
        terminals=parts[5].squeeze(1),
        timeouts=parts[6].squeeze(1),
        mc_returns=parts[7].squeeze(1) if extra else None,
    )


def packed_width(obs_dim: int, act_dim: int) -> int:
    """Columns of one packed transition row (without an MC-return column)."""
    return 2 * obs_dim + act_dim + 4


def load(
    id_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    download: bool = False,
    verify: bool = True,
    cache: bool = True,
) -> OfflineDataset:
    """Load a Minari dataset (id or directory) into an `OfflineDataset` on ``device``.

    Costs come from ``infos["cost"]`` (entry t+1 is the cost of transition t); datasets without one
    (D4RL-style reward-only data) get zero costs. saferl datasets are checked against the checksums
    recorded when they were built.
    """
    path = minari_io.resolve(id_or_path, download=download)
    meta = minari_io.read_metadata(path)
    if verify:
        minari_io.verify_checksums(path, meta)
    arrays, has_costs = reader.read_transitions(path, meta, use_cache=cache)
    starts = torch.from_numpy(arrays.pop("episode_starts")).to(device)
    tensors = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
    info = {
        "dataset_id": meta.get("dataset_id", str(id_or_path)),
        "path": str(path),
        "env_id": _env_id(meta.get("env_spec")),
        "has_costs": has_costs,
        **{k: v for k, v in meta.get(minari_io.CHECKSUM_KEY, {}).items() if k != "checksums"},
        # D4RL-style datasets: the random and expert returns their scores are normalised by
        **{k: float(meta[k]) for k in ("ref_min_score", "ref_max_score") if meta.get(k) is not None},
    }
    return OfflineDataset(**tensors, episode_starts=starts, metadata=info)


def _env_id(env_spec: Any) -> str | None:
    """The gymnasium id inside Minari's serialised env spec (a JSON string), if any."""
    try:
        spec = json.loads(env_spec) if isinstance(env_spec, str) else env_spec
        return spec.get("id") if isinstance(spec, dict) else None
    except ValueError:
        return None
