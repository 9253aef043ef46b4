"""Velocity-constrained locomotion on gymnasium's v5 MuJoCo envs (Safety-Gymnasium's velocity tasks, v1 rule).

The per-step cost is 1 when the agent moves faster than its threshold, else 0: the signed x-velocity for
the bodies that run along x, the planar speed sqrt(vx² + vy²) for Ant and Humanoid. Thresholds are
safety-gymnasium v1's. The reward, observation and termination are gymnasium v5's, except that Ant leaves
the contact forces out of its observation (27 numbers, as Ant-v4 and Safety-Gymnasium's AntVelocity).

`barrier` is the signed safety margin h(s) = threshold − velocity (h ≥ 0 safe) that V-OCBF's authors learn
from on these tasks (tayalmanan28/v-ocbf, ``jaxrl5/data/dsrl_datasets.py``). It reads the root's velocity
from the observation (qvel[0], and qvel[1] for the planar bodies), while the cost reads gymnasium's
``x_velocity`` (the root's displacement over the step / dt): the two agree on all but a few steps near the
threshold (tests/test_mujoco_data.py checks it; benchmarks/margins.py measures it on data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from saferl.envs.batched import planar_speed


@dataclass(frozen=True)
class VelocityRule:
    threshold: float
    planar: bool  # planar speed instead of the signed x-velocity
    # Where the root's qvel[0] (and qvel[1]) sit in the v5 observation, which leaves out the root's x (and y)
    # position: the authors' indices (HalfCheetah 8, Hopper 5, Walker2d 8, Swimmer 3, Ant 13/14).
    obs_index: tuple[int, ...]
    dt: float  # the env's step, frame_skip × MuJoCo timestep
    env_kwargs: tuple[tuple[str, Any], ...] = ()


VELOCITY_RULES: dict[str, VelocityRule] = {
    "HalfCheetah": VelocityRule(3.2096, planar=False, obs_index=(8,), dt=0.05),
    "Hopper": VelocityRule(0.7402, planar=False, obs_index=(5,), dt=0.008),
    "Walker2d": VelocityRule(2.3415, planar=False, obs_index=(8,), dt=0.008),
    "Swimmer": VelocityRule(0.2282, planar=False, obs_index=(3,), dt=0.04),
    "Ant": VelocityRule(
        2.6222, planar=True, obs_index=(13, 14), dt=0.05, env_kwargs=(("include_cfrc_ext_in_observation", False),)
    ),
    "Humanoid": VelocityRule(1.4149, planar=True, obs_index=(22, 23), dt=0.015),
}


def barrier(obs: Any, rule: VelocityRule) -> Any:
    """h(s) = threshold − velocity(s) for a batch of observations [..., obs_dim] (numpy or torch)."""
    if rule.planar:
        return rule.threshold - planar_speed(obs[..., rule.obs_index[0]], obs[..., rule.obs_index[1]])
    return rule.threshold - obs[..., rule.obs_index[0]]


def velocity_of(info: dict, planar: bool) -> float:
    """The velocity the cost is computed from, read from a v5 env's step info."""
    vx = float(info["x_velocity"])
    return math.hypot(vx, float(info["y_velocity"])) if planar else vx


class VelocityCostEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """``<agent>-v5`` with ``info["cost"] = float(velocity > threshold)`` and ``info["velocity"]``."""

    def __init__(self, agent: str, **env_kwargs: Any):
        if agent not in VELOCITY_RULES:
            raise ValueError(f"unknown velocity agent {agent!r}; valid: {', '.join(VELOCITY_RULES)}")
        gym.utils.RecordConstructorArgs.__init__(self, agent=agent, **env_kwargs)
        self.rule = VELOCITY_RULES[agent]
        kwargs = dict(self.rule.env_kwargs) | env_kwargs
        # The raw MuJoCo env: the time limit is the registered task's, not the inner v5 registration's.
        gym.Wrapper.__init__(self, gym.make(f"{agent}-v5", disable_env_checker=True, **kwargs).unwrapped)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        return obs, dict(info, cost=0.0, velocity=0.0)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        velocity = velocity_of(info, self.rule.planar)
        info = dict(info, velocity=velocity, cost=float(velocity > self.rule.threshold))
        return obs, reward, terminated, truncated, info
