"""2-D hazard navigation with known control-affine dynamics: PointRobot and BoatRobot.

Both tasks share one model: the state is the planar position p = (x, y), the observation is p itself,
and the dynamics are control-affine, p' = p + (f(p) + g(p)·u)·dt, with u in the box [-1, 1]^2 (Euler
step of the continuous-time system). Hazards are discs; the analytic barrier is

    h(p) = min_i (‖p − c_i‖² − r_i²)        (h ≥ 0 safe, h < 0 inside a hazard)

and the per-step cost is 1[h(p_{t+1}) < 0], so cost = 1 exactly where the barrier is negative.

Everything here is plain numpy/math on 2-vectors so a single env runs well above 20k steps/s.
The barrier and the dynamics are also exposed as batched functions that accept numpy arrays or
torch tensors (`barrier`, `drift`, `control_matrix`), for safety filters and learned barriers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from saferl.envs.batched import is_torch


@dataclass(frozen=True)
class NavGeometry:
    """Constants of one navigation task; every number the task uses lives here."""

    hazards: tuple[tuple[float, float, float], ...]  # (cx, cy, radius)
    goal: tuple[float, float]
    goal_radius: float
    start_low: tuple[float, float]
    start_high: tuple[float, float]
    arena_low: tuple[float, float]  # leaving the arena terminates the episode
    arena_high: tuple[float, float]
    dt: float
    max_episode_steps: int
    dwell_bonus: float  # reward per step spent inside the goal disc (episode continues)
    goal_bonus: float  # one-off reward on reaching the goal (episode terminates)
    terminate_at_goal: bool
    time_penalty: float  # subtracted every step
    drift_kind: str  # "none" (PointRobot) or "boat" (BoatRobot river current)


POINT_ROBOT = NavGeometry(
    # One large hazard sits just off the start→goal diagonal so the short way round is on its upper-left
    # side; two smaller ones flank the detours. Straight-line driving crosses ~1.7 m of hazard (~24 steps).
    hazards=((0.25, -0.25, 0.9), (-1.4, 1.2, 0.5), (1.6, -1.0, 0.5)),
    goal=(2.2, 2.2),
    goal_radius=0.3,
    start_low=(-2.8, -2.8),
    start_high=(-2.2, -2.2),
    arena_low=(-3.0, -3.0),
    arena_high=(3.0, 3.0),
    dt=0.05,
    max_episode_steps=200,
    dwell_bonus=0.1,
    goal_bonus=0.0,
    terminate_at_goal=False,
    time_penalty=0.0,
    drift_kind="none",
)

BOAT_ROBOT = NavGeometry(
    # V-OCBF's boat case study (Tayal et al.): ẋ = u1 + 2 − 0.5·y², ẏ = u2, hazards (−0.5, 0.5, 0.4) and
    # (−1.0, −1.2, 0.5), goal (1.5, 0), 400 steps. The current pushes the boat to +x at up to 2 m/s, so it
    # cannot hover at the goal: reaching it ends the episode. dt = 0.01 (4 s per episode): at full thrust
    # the goal is ~1.4 s away from the start region, which leaves time for detours around the hazards.
    hazards=((-0.5, 0.5, 0.4), (-1.0, -1.2, 0.5)),
    goal=(1.5, 0.0),
    goal_radius=0.2,
    start_low=(-2.8, -0.2),
    start_high=(-2.4, 1.0),
    arena_low=(-3.0, -2.0),
    arena_high=(2.0, 2.0),
    dt=0.01,
    max_episode_steps=400,
    dwell_bonus=0.0,
    goal_bonus=1.0,
    terminate_at_goal=True,
    time_penalty=0.02,
    drift_kind="boat",
)


def barrier(obs: Any, geometry: NavGeometry) -> Any:
    """h(p) = min_i(‖p − c_i‖² − r_i²) for a batch of observations [..., 2] (numpy or torch)."""
    values = []
    for cx, cy, r in geometry.hazards:
        values.append((obs[..., 0] - cx) ** 2 + (obs[..., 1] - cy) ** 2 - r * r)
    if is_torch(obs):
        import torch

        return torch.stack(values, dim=-1).amin(dim=-1)
    return np.min(np.stack(values, axis=-1), axis=-1)


def drift(obs: Any, geometry: NavGeometry) -> Any:
    """f(p), shape [..., 2]: zero for the point robot, the river current (2 − 0.5·y², 0) for the boat."""
    if geometry.drift_kind == "none":
        return obs[..., :2] * 0.0
    if geometry.drift_kind == "boat":
        fx = 2.0 - 0.5 * obs[..., 1] ** 2
        if is_torch(obs):
            import torch

            return torch.stack([fx, fx * 0.0], dim=-1)
        return np.stack([fx, fx * 0.0], axis=-1)
    raise ValueError(f"unknown drift kind {geometry.drift_kind!r}")


def control_matrix(obs: Any, geometry: NavGeometry) -> Any:
    """g(p), shape [..., 2, 2]: the identity for both robots (each actuator drives one axis)."""
    if is_torch(obs):
        import torch

        eye = torch.eye(2, dtype=obs.dtype, device=obs.device)
        return eye.expand(*obs.shape[:-1], 2, 2)
    return np.broadcast_to(np.eye(2, dtype=np.asarray(obs).dtype), (*np.shape(obs)[:-1], 2, 2))


class HazardNavEnv(gym.Env):
    """Gymnasium env for a `NavGeometry`; cost in `info["cost"]` at reset (0.0) and at every step.

    Reward per step = progress towards the goal (d_t − d_{t+1}) + dwell bonus inside the goal disc
    + goal bonus on arrival (when arrival terminates) − time penalty. Leaving the arena terminates.
    """

    metadata = {"render_modes": []}
    geometry: NavGeometry

    def __init__(self, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"{type(self).__name__} has no renderer; use render_mode=None")
        geo = self.geometry
        self._hazards = tuple((float(cx), float(cy), float(r) * float(r)) for cx, cy, r in geo.hazards)
        margin = 1.0  # final observations of an episode may lie just outside the arena
        low = np.asarray(geo.arena_low, dtype=np.float32) - margin
        high = np.asarray(geo.arena_high, dtype=np.float32) + margin
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._x = 0.0
        self._y = 0.0
        self._dist = 0.0

    # -- analytic model (single state, plain floats for speed) -------------------------------------
    def _h(self, x: float, y: float) -> float:
        return min((x - cx) * (x - cx) + (y - cy) * (y - cy) - r2 for cx, cy, r2 in self._hazards)

    def _goal_dist(self, x: float, y: float) -> float:
        gx, gy = self.geometry.goal
        return math.hypot(x - gx, y - gy)

    def _obs(self) -> np.ndarray:
        return np.array((self._x, self._y), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        geo = self.geometry
        if options and "state" in options:
            self._x, self._y = (float(v) for v in options["state"])
        else:
            start = self.np_random.uniform(geo.start_low, geo.start_high)
            self._x, self._y = float(start[0]), float(start[1])
        self._dist = self._goal_dist(self._x, self._y)
        h = self._h(self._x, self._y)
        return self._obs(), {"cost": 0.0, "h": h}

    def step(self, action):
        geo = self.geometry
        u0 = min(max(float(action[0]), -1.0), 1.0)
        u1 = min(max(float(action[1]), -1.0), 1.0)
        fx = 0.0 if geo.drift_kind == "none" else 2.0 - 0.5 * self._y * self._y
        self._x += (fx + u0) * geo.dt
        self._y += u1 * geo.dt

        dist = self._goal_dist(self._x, self._y)
        reward = self._dist - dist - geo.time_penalty
        self._dist = dist
        at_goal = dist <= geo.goal_radius
        if at_goal:
            reward += geo.dwell_bonus + (geo.goal_bonus if geo.terminate_at_goal else 0.0)
        (lx, ly), (hx, hy) = geo.arena_low, geo.arena_high
        left_arena = not (lx <= self._x <= hx and ly <= self._y <= hy)
        terminated = left_arena or (at_goal and geo.terminate_at_goal)

        h = self._h(self._x, self._y)
        cost = 1.0 if h < 0.0 else 0.0
        info = {"cost": cost, "h": h}
        return self._obs(), reward, terminated, False, info


class PointRobotEnv(HazardNavEnv):
    """Point robot, ṗ = u: drive to the goal at (2.2, 2.2) and stay there; three circular hazards."""

    geometry = POINT_ROBOT


class BoatRobotEnv(HazardNavEnv):
    """V-OCBF's boat in a river current, ẋ = u1 + 2 − 0.5·y², ẏ = u2; reach the goal at (1.5, 0)."""

    geometry = BOAT_ROBOT
