"""The worker-process jobs of a MuJoCo dataset build: SAC segments on the shaped reward, checkpoint rollouts,
and the runner that runs them inline or in a spawn pool (top-level functions, so they pickle).

Each job reads and writes only its own files, committed by rename, so a killed build resumes at the last
finished job (`saferl.data.sb3_recipe` plans the jobs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from saferl.data.sb3_recipe import Budget


# -- the environment SAC trains on -------------------------------------------------------------------------
class LagrangianReward(gym.Wrapper):
    """Reward r − λ·c for the learner, or with a speed target T the env's reward with its forward term v
    replaced by T − |v − T|; logs the env's own reward and cost of every step for the dataset."""

    def __init__(self, env: gym.Env, lam: float, speed_target: float | None = None):
        super().__init__(env)
        self.lam = lam
        self.speed_target = speed_target
        self.env_rewards: list[float] = []
        self.costs: list[float] = []

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        cost = float(info["cost"])
        self.env_rewards.append(float(reward))
        self.costs.append(cost)
        shaped = float(reward) - self.lam * cost
        if self.speed_target is not None:
            if "reward_forward" not in info:
                raise ValueError("a speed target needs an env whose info has 'reward_forward' (a v5 MuJoCo body)")
            target = self.speed_target
            shaped += target - abs(float(info["velocity"]) - target) - float(info["reward_forward"])
        return obs, shaped, terminated, truncated, info


def make_env(env_id: str, max_episode_steps: int | None) -> gym.Env:
    import saferl.envs  # noqa: F401  (registers the tasks in a fresh worker)

    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    return gym.make(env_id, disable_env_checker=True, **kwargs)


def _derived_seed(*keys: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] % (2**31 - 1))


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _silent_logger():
    from stable_baselines3.common.logger import Logger

    return Logger(folder=None, output_formats=[])  # no /tmp/SB3-* folders, no stdout


# -- jobs (top-level functions: they run in worker processes) ---------------------------------------------
@dataclass(frozen=True)
class SegmentJob:
    run_dir: str
    env_id: str
    run: int  # index into the recipe's runs
    lam: float
    speed_target: float | None
    segment: int
    steps: int  # env steps in this segment
    total_steps: int
    budget: Budget
    seed: int  # the run's seed
    segment_seed: int


def train_segment(job: SegmentJob) -> str:
    """Train one segment of one SAC run, starting from the previous segment's checkpoint on disk."""
    from stable_baselines3 import SAC

    run_dir = Path(job.run_dir)
    env = LagrangianReward(make_env(job.env_id, job.budget.max_episode_steps), job.lam, job.speed_target)
    if job.segment == 0:
        model = SAC(
            "MlpPolicy",
            env,
            buffer_size=job.total_steps,
            learning_starts=job.budget.learning_starts,
            policy_kwargs={"net_arch": list(job.budget.net)},
            seed=job.seed,
            device="cpu",
        )
    else:
        model = SAC.load(run_dir / f"ckpt{job.segment - 1}.zip", env=env, device="cpu")
        model.load_replay_buffer(run_dir / f"replay{job.segment - 1}.pkl")
    model.set_logger(_silent_logger())
    # Every segment starts from the same state whether it follows the previous one in memory or on disk.
    model.set_random_seed(job.segment_seed)
    model._last_obs = None  # makes learn() reset the env (seeded just above)
    model.learn(job.steps, reset_num_timesteps=False)

    _atomic_savez(
        run_dir / f"log{job.segment}.npz",
        rewards=np.asarray(env.env_rewards, dtype=np.float64),
        costs=np.asarray(env.costs, dtype=np.float64),
    )
    tmp = run_dir / f"tmp-replay{job.segment}.pkl"
    model.save_replay_buffer(tmp)
    tmp.replace(run_dir / f"replay{job.segment}.pkl")
    tmp = run_dir / f"tmp-ckpt{job.segment}.zip"
    model.save(tmp)
    tmp.replace(run_dir / f"ckpt{job.segment}.zip")  # the checkpoint commits the segment
    (run_dir / f"replay{job.segment - 1}.pkl").unlink(missing_ok=True)
    env.close()
    return str(run_dir / f"ckpt{job.segment}.zip")


@dataclass(frozen=True)
class RolloutJob:
    out: str
    env_id: str
    max_episode_steps: int | None
    policy: str | None  # SB3 checkpoint; None: uniform random actions
    noise: float
    deterministic: bool
    episodes: int
    seed: int


def rollout_unit(job: RolloutJob) -> str:
    """Roll a checkpoint (or uniform random actions) out for some episodes; one .npz per unit."""
    import torch

    env = make_env(job.env_id, job.max_episode_steps)
    model = None
    if job.policy is not None:
        from stable_baselines3 import SAC

        model = SAC.load(job.policy, device="cpu")
    rng = np.random.default_rng(job.seed)
    torch.manual_seed(job.seed)  # stochastic SAC sampling
    low, high = env.action_space.low, env.action_space.high
    scale = job.noise * (high - low) / 2.0
    obs_all, act_all, rew_all, term_all, trunc_all, cost_all, lengths = [], [], [], [], [], [], []
    for _ in range(job.episodes):
        obs, info = env.reset(seed=int(rng.integers(2**31 - 1)))
        obs_all.append(obs)
        cost_all.append(float(info["cost"]))
        steps = 0
        while True:
            if model is None:
                action = rng.uniform(low, high)
            else:
                action = model.predict(obs, deterministic=job.deterministic)[0]
            if job.noise > 0.0:
                action = np.clip(action + rng.normal(0.0, 1.0, size=action.shape) * scale, low, high)
            obs, reward, terminated, truncated, info = env.step(action.astype(env.action_space.dtype))
            obs_all.append(obs)
            act_all.append(action)
            rew_all.append(float(reward))
            term_all.append(bool(terminated))
            trunc_all.append(bool(truncated))
            cost_all.append(float(info["cost"]))
            steps += 1
            if terminated or truncated:
                break
        lengths.append(steps)
    env.close()
    _atomic_savez(
        Path(job.out),
        observations=np.asarray(obs_all, dtype=np.float32),
        actions=np.asarray(act_all, dtype=np.float32),
        rewards=np.asarray(rew_all, dtype=np.float64),
        terminations=np.asarray(term_all),
        truncations=np.asarray(trunc_all),
        costs=np.asarray(cost_all, dtype=np.float64),
        lengths=np.asarray(lengths, dtype=np.int64),
    )
    return job.out


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class _Runner:
    """Runs jobs inline (one worker) or in a spawn process pool; the callback may submit follow-ups."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self.pool: ProcessPoolExecutor | None = None
        if self.workers > 1:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self.pool = ProcessPoolExecutor(
                self.workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads,)
            )

    def run(self, fn: Callable, jobs: Iterable, on_done: Callable[[Any], Iterable]) -> None:
        """Run ``fn`` on every job; ``on_done(job)`` returns jobs that become ready afterwards."""
        queue = list(jobs)
        if self.pool is None:
            while queue:
                job = queue.pop(0)
                fn(job)
                queue.extend(on_done(job))
            return
        running: dict[Future, Any] = {}
        while queue or running:
            while queue and len(running) < self.workers:
                job = queue.pop(0)
                running[self.pool.submit(fn, job)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                job = running.pop(fut)
                fut.result()  # re-raises a worker's error here
                queue.extend(on_done(job))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def segment_steps(budget: Budget) -> list[int]:
    base = budget.train_steps // budget.segments
    return [base] * (budget.segments - 1) + [budget.train_steps - base * (budget.segments - 1)]
