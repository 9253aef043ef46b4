"""The online phase of offline→online algorithms: env interaction, a replay buffer, and the update schedule.

`OnlineLoop` drives one algorithm on ``num_envs`` copies of a task stepped in lock-step (one batched
``explore`` call per step). Off-policy algorithms get a `ReplayBuffer` (online data only, a fixed share of
offline data per batch, or offline and online data in one uniformly sampled pool, per the algorithm's
``online_offline_ratio``) and ``updates_per_step`` calls of ``online_update(batch)`` per env step after
``online_warmup`` steps. On-policy algorithms get whole episodes, at least ``rollout_steps`` transitions, as
an `OfflineDataset` per ``online_update(rollout)``. Costs are recorded for every online episode.

The loop's ``state_dict`` holds the buffer, counters and sampler state. Envs are not checkpointed: a
resumed loop restarts episodes that had not begun at the checkpoint with their own seeds (a checkpoint at
episode boundaries resumes exactly) and starts fresh ones where an episode was under way (its transitions so
far are kept; with MC returns, uncommitted ones are dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from saferl.algos import Algorithm
from saferl.algos.base import OnlineMode
from saferl.data import Batch, OfflineDataset
from saferl.data.offline import packed_width, unpack_rows
from saferl.envs import step_cost
from saferl.safety.filter import CorrectsActions

ONLINE_SEED_OFFSET = 2_000_003  # online episodes never share env seeds with evaluation or dataset episodes


class ReplayBuffer:
    """A FIFO of online transitions stored as packed rows on the training device, optionally mixed with
    an offline dataset.

    ``offline_ratio``: 0 samples online data only; r in (0, 1) draws round(r·B) rows of every batch from the
    offline data; −1 samples uniformly from the union of both (the offline data never leaves). With
    ``mc_gamma`` every row also carries its discounted Monte-Carlo return-to-go (Cal-QL); online rows are
    then added a whole episode at a time, once the episode has ended and its returns are known.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        capacity: int,
        device: torch.device | str = "cpu",
        offline: OfflineDataset | None = None,
        offline_ratio: float = 0.0,
        mc_gamma: float | None = None,
    ):
        if capacity < 1:
            raise ValueError(f"online_buffer_size must be >= 1, got {capacity}")
        if not (offline_ratio == -1.0 or 0.0 <= offline_ratio < 1.0):
            raise ValueError(
                f"online_offline_ratio must be -1 (one pool), 0 (online data only) or in (0, 1), got {offline_ratio}"
            )
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.capacity, self.device = int(capacity), torch.device(device)
        self.offline_ratio, self.mc_gamma = float(offline_ratio), mc_gamma
        self.width = packed_width(obs_dim, act_dim) + (1 if mc_gamma is not None else 0)
        self.table = torch.zeros(self.capacity, self.width, device=self.device)
        self.size = self.pos = 0
        self.offline_table: torch.Tensor | None = None
        if offline is not None and offline_ratio != 0.0:
            table = offline._table().to(self.device)
            if mc_gamma is not None:
                table = torch.cat([table, offline.mc_returns(mc_gamma).to(self.device)[:, None]], dim=1)
            self.offline_table = table

    def __len__(self) -> int:
        return self.size

    def add(self, rows: torch.Tensor) -> None:
        """Append packed rows ``[n, width]``, overwriting the oldest ones when full."""
        rows = rows.to(self.device, torch.float32)
        if rows.shape[1] != self.width:
            raise ValueError(f"rows have {rows.shape[1]} columns, the buffer stores {self.width}")
        n = rows.shape[0]
        if n >= self.capacity:
            rows, n = rows[-self.capacity :], self.capacity
        idx = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        self.table[idx] = rows
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        off = self.offline_table
        if off is None or self.offline_ratio == 0.0:
            if self.size == 0:
                raise RuntimeError("the replay buffer is empty; collect transitions before sampling")
            rows = self._online_rows(batch_size, generator)
        elif self.offline_ratio > 0.0 and self.size > 0:
            n_off = int(round(self.offline_ratio * batch_size))
            idx = torch.randint(0, off.shape[0], (n_off,), device=self.device, generator=generator)
            rows = torch.cat([off.index_select(0, idx), self._online_rows(batch_size - n_off, generator)])
        else:  # one pool: uniform over offline rows followed by online rows
            n_off = off.shape[0]
            idx = torch.randint(0, n_off + self.size, (batch_size,), device=self.device, generator=generator)
            from_off = (idx < n_off)[:, None]
            rows = torch.where(
                from_off,
                off.index_select(0, idx.clamp(max=n_off - 1)),
                self.table.index_select(0, (idx - n_off).clamp(min=0, max=max(self.size - 1, 0))),
            )
        return unpack_rows(rows, self.obs_dim, self.act_dim)

    def _online_rows(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        idx = torch.randint(0, self.size, (n,), device=self.device, generator=generator)
        return self.table.index_select(0, idx)

    def state_dict(self) -> dict[str, Any]:
        return {"table": self.table[: self.size].cpu().clone(), "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.pos = int(state["size"]), int(state["pos"])
        self.table.zero_()
        self.table[: self.size] = state["table"].to(self.device)


def _mc_returns(rewards: np.ndarray, terminals: np.ndarray, gamma: float) -> np.ndarray:
    out, acc = np.empty(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + gamma * (1.0 - terminals[t]) * acc
        out[t] = acc
    return out


class _Episode:
    """Transitions of one env's current episode (numpy rows until the episode ends)."""

    def __init__(self) -> None:
        self.observations: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.costs: list[float] = []
        self.next_observations: list[np.ndarray] = []
        self.terminals: list[float] = []
        self.timeouts: list[float] = []

    def __len__(self) -> int:
        return len(self.rewards)

    def append(self, obs, action, reward, cost, next_obs, terminated, truncated) -> None:
        self.observations.append(obs)
        self.actions.append(action)
        self.rewards.append(reward)
        self.costs.append(cost)
        self.next_observations.append(next_obs)
        self.terminals.append(float(terminated))
        self.timeouts.append(float(truncated))

    def rows(self, start: int = 0, mc_gamma: float | None = None) -> np.ndarray:
        """Packed rows of transitions ``start:`` (with MC returns of the whole episode when asked)."""
        cols = [
            np.asarray(self.observations[start:], dtype=np.float32),
            np.asarray(self.actions[start:], dtype=np.float32),
            np.asarray(self.rewards[start:], dtype=np.float32)[:, None],
            np.asarray(self.costs[start:], dtype=np.float32)[:, None],
            np.asarray(self.next_observations[start:], dtype=np.float32),
            np.asarray(self.terminals[start:], dtype=np.float32)[:, None],
            np.asarray(self.timeouts[start:], dtype=np.float32)[:, None],
        ]
        if mc_gamma is not None:
            mc = _mc_returns(np.asarray(self.rewards), np.asarray(self.terminals), mc_gamma)[start:]
            cols.append(mc.astype(np.float32)[:, None])
        return np.concatenate(cols, axis=1)


def episodes_to_dataset(episodes: list[_Episode], device: torch.device) -> OfflineDataset:
    """Whole episodes as an `OfflineDataset` (the on-policy rollout handed to ``online_update``)."""
    rows = torch.as_tensor(np.concatenate([ep.rows() for ep in episodes]), device=device)
    batch = unpack_rows(rows, len(episodes[0].observations[0]), len(episodes[0].actions[0]))
    lengths = torch.tensor([0] + [len(ep) for ep in episodes], dtype=torch.int64)
    return OfflineDataset(
        observations=batch.observations.contiguous(),
        actions=batch.actions.contiguous(),
        rewards=batch.rewards.contiguous(),
        costs=batch.costs.contiguous(),
        next_observations=batch.next_observations.contiguous(),
        terminals=batch.terminals.contiguous(),
        timeouts=batch.timeouts.contiguous(),
        episode_starts=lengths.cumsum(0).to(device),
        metadata={"dataset_id": "online-rollout"},
    )


class OnlineLoop:
    """Online interaction and updates for one offline→online algorithm (see the module docstring).

    Args:
        algo: an algorithm with ``online_mode`` set (its config is an `O2OConfig`).
        env_id: the gymnasium id of the task to interact with.
        offline: the offline dataset (mixed into replay batches and handed to ``start_online``).
        seed: seeds the env episodes and the replay sampler.
        num_envs: envs stepped in lock-step; each loop step collects ``num_envs`` transitions.
        wrap_env: wraps every env (e.g. ``saferl.safety.SafetyFilter``); where the wrapped env
            `CorrectsActions`, the executed (filtered) action is what the buffer stores.
    """

    def __init__(
        self,
        algo: Algorithm,
        env_id: str,
        offline: OfflineDataset | None,
        seed: int = 0,
        num_envs: int = 1,
        env_kwargs: dict[str, Any] | None = None,
        wrap_env: Callable[[gym.Env], gym.Env] | None = None,
    ):
        if algo.online_mode is None:
            from saferl.algos.registry import no_online_phase_message

            raise ValueError(no_online_phase_message(algo.name))
        if num_envs < 1:
            raise ValueError(f"online_envs must be >= 1, got {num_envs}")
        self.algo, self.offline, self.seed = algo, offline, int(seed)
        self.device = algo.ctx.device
        self.envs = [gym.make(env_id, **(env_kwargs or {})) for _ in range(num_envs)]
        if wrap_env is not None:
            self.envs = [wrap_env(env) for env in self.envs]
        self._corrects = [isinstance(env, CorrectsActions) for env in self.envs]  # store the executed action
        space = self.envs[0].action_space
        self.low, self.high = np.asarray(space.low), np.asarray(space.high)
        cfg = algo.config
        self.mc_gamma = algo.mc_gamma
        self.buffer: ReplayBuffer | None = None
        if algo.online_mode is OnlineMode.OFF_POLICY:
            self.buffer = ReplayBuffer(
                algo.ctx.obs_dim,
                algo.ctx.act_dim,
                cfg.online_buffer_size,
                self.device,
                offline,
                cfg.online_offline_ratio,
                self.mc_gamma,
            )
        self.sampler = torch.Generator(device=self.device)
        self.sampler.manual_seed(self.seed + 7919)
        self.env_steps = self.updates = self.episodes_started = 0
        self.started = False  # start_online runs at the first step of every loop, fresh or resumed
        self.update_credit = 0.0
        self.episode_returns: list[float] = []
        self.episode_costs: list[float] = []
        self.total_cost = 0.0
        self.interventions = 0  # safety-filter corrections of online actions (with wrap_env=SafetyFilter)
        self._obs: list[np.ndarray | None] = [None] * num_envs
        self._episodes = [_Episode() for _ in range(num_envs)]
        self._committed = [0] * num_envs  # transitions of the current episode already in the buffer
        self._episode_seeds: list[int | None] = [None] * num_envs
        self._resume_seeds: list[int | None] = [None] * num_envs

    # -- env handling -------------------------------------------------------------------------------
    def _reset(self, j: int, seed: int | None = None) -> None:
        if seed is None:
            seed = ONLINE_SEED_OFFSET + self.seed * 100_000 + self.episodes_started
            self.episodes_started += 1
        self._episode_seeds[j] = seed
        self._obs[j] = np.asarray(self.envs[j].reset(seed=seed)[0], dtype=np.float32)
        self._episodes[j] = _Episode()
        self._committed[j] = 0

    def _explore(self, obs: np.ndarray, timesteps: list[int]) -> np.ndarray:
        algo = self.algo
        was_training = algo.training
        algo.eval()
        try:
            with torch.inference_mode():
                t = torch.as_tensor(timesteps, dtype=torch.int64, device=self.device)
                action = algo.explore(torch.as_tensor(obs, device=self.device), t)
        finally:
            algo.train(was_training)
        return np.clip(action.float().cpu().numpy(), self.low, self.high)

    def _env_step(self, envs: list[int]) -> list[int]:
        """One step of the given envs with one batched action call; returns those whose episode ended."""
        actions = self._explore(np.stack([self._obs[j] for j in envs]), [len(self._episodes[j]) for j in envs])
        ended = []
        for j, action in zip(envs, actions, strict=True):
            env = self.envs[j]
            next_obs, reward, terminated, truncated, info = env.step(action)
            executed = env.last_action if self._corrects[j] else None
            cost = step_cost(info)
            record = info.get("safety_filter")
            if record is not None:
                self.interventions += int(bool(record["intervened"]))
            self._episodes[j].append(
                self._obs[j],
                action if executed is None else np.asarray(executed, dtype=np.float32),
                float(reward),
                cost,
                np.asarray(next_obs, dtype=np.float32),
                terminated,
                truncated,
            )
            self._obs[j] = np.asarray(next_obs, dtype=np.float32)
            self.total_cost += cost
            if terminated or truncated:
                ended.append(j)
        self.env_steps += len(envs)
        return ended

    def _finish(self, j: int) -> None:
        ep = self._episodes[j]
        self.episode_returns.append(float(np.sum(ep.rewards)))
        self.episode_costs.append(float(np.sum(ep.costs)))

    @property
    def at_episode_boundary(self) -> bool:
        """True when no env has an episode under way (a checkpoint now resumes exactly)."""
        return all(len(ep) == 0 for ep in self._episodes)

    # -- one iteration ------------------------------------------------------------------------------
    def _start(self) -> None:
        if not self.started:
            self.algo.start_online(self.offline)
            self.started = True
        for j in range(len(self.envs)):
            if self._obs[j] is None:
                self._reset(j, self._resume_seeds[j])

    def step(self) -> dict[str, torch.Tensor]:
        """One iteration: ``num_envs`` env steps and their updates (off-policy) or one rollout and one
        update (on-policy). Returns the last update's metrics (empty during warm-up)."""
        self._start()
        if self.algo.online_mode is OnlineMode.ON_POLICY:
            return self._on_policy_step()
        return self._off_policy_step()

    def _off_policy_step(self) -> dict[str, torch.Tensor]:
        assert self.buffer is not None
        cfg = self.algo.config
        ended = self._env_step(list(range(len(self.envs))))
        for j in range(len(self.envs)):
            done = j in ended
            if self.mc_gamma is None:  # transitions enter the buffer as they happen
                self.buffer.add(torch.as_tensor(self._episodes[j].rows(self._committed[j])))
                self._committed[j] = len(self._episodes[j])
            elif done:  # MC returns need the whole episode
                self.buffer.add(torch.as_tensor(self._episodes[j].rows(self._committed[j], self.mc_gamma)))
            if done:
                self._finish(j)
                self._reset(j)
        metrics: dict[str, torch.Tensor] = {}
        if self.env_steps <= cfg.online_warmup or len(self.buffer) == 0:
            return metrics
        self.update_credit += cfg.updates_per_step * len(self.envs)
        while self.update_credit >= 1.0:
            self.update_credit -= 1.0
            metrics = self.algo.online_update(self.buffer.sample(cfg.batch_size, self.sampler))
            self.updates += 1
        return metrics

    def _on_policy_step(self) -> dict[str, torch.Tensor]:
        target = self.algo.rollout_steps
        done_episodes: list[_Episode] = []
        collected = 0
        active = list(range(len(self.envs)))
        while active:
            for j in self._env_step(active):
                done_episodes.append(self._episodes[j])
                collected += len(self._episodes[j])
                self._finish(j)
                self._reset(j)
                # an env starts no new episode once the finished ones (and those under way) reach the target
                in_flight = sum(len(self._episodes[k]) for k in active if k != j)
                if collected + in_flight >= target:
                    active.remove(j)
        metrics = self.algo.online_update(episodes_to_dataset(done_episodes, self.device))
        self.updates += 1
        return metrics

    def run(self, env_steps: int) -> dict[str, torch.Tensor]:
        """Step until ``env_steps`` env steps have been taken in total; returns the last metrics."""
        metrics: dict[str, torch.Tensor] = {}
        while self.env_steps < env_steps:
            metrics = self.step() or metrics
        return metrics

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer.state_dict() if self.buffer is not None else None,
            "sampler": self.sampler.get_state(),
            "env_steps": self.env_steps,
            "updates": self.updates,
            "episodes_started": self.episodes_started,
            "update_credit": self.update_credit,
            "episode_returns": list(self.episode_returns),
            "episode_costs": list(self.episode_costs),
            "total_cost": self.total_cost,
            "interventions": self.interventions,
            # an episode that had not started at the checkpoint restarts with its seed on resume (so a run
            # checkpointed at episode boundaries resumes exactly); one under way is cut and replaced
            "resume_seeds": [
                seed if self._obs[j] is not None and len(self._episodes[j]) == 0 else None
                for j, seed in enumerate(self._episode_seeds)
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.buffer is not None and state["buffer"] is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.sampler.set_state(state["sampler"])
        for key in ("env_steps", "updates", "episodes_started", "update_credit", "total_cost", "interventions"):
            setattr(self, key, state[key])
        self.episode_returns = list(state["episode_returns"])
        self.episode_costs = list(state["episode_costs"])
        self._obs = [None] * len(self.envs)  # envs are not checkpointed: new episodes on resume
        self._resume_seeds = list(state["resume_seeds"])

    def close(self) -> None:
        for env in self.envs:
            env.close()
