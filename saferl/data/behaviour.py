"""Scripted behaviour policies for the 2-D navigation tasks.

`NavController` steers towards the goal and, unless it ignores hazards, around each hazard disc inflated
by a `margin` (negative margins cut into the hazard, so one knob sweeps from "drive straight through" to
"keep well clear"). It goes around an obstacle by the tangent that deviates least from the goal direction,
which makes the side choice a deterministic function of the state (no left/right coin flips for behaviour
cloning to average into a straight line). The desired velocity is turned into an action through the
task's known dynamics, u = clip(v_des − f(p), −1, 1), so the same controller drives the drifting boat.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from saferl.envs.hazard_nav import NavGeometry

Policy = Callable[[np.ndarray], np.ndarray]


class NavController:
    def __init__(
        self,
        geometry: NavGeometry,
        rng: np.random.Generator,
        margin: float | None,
        speed: float,
        noise: float = 0.0,
    ):
        self.geo = geometry
        self.rng = rng
        self.margin = margin  # None: ignore hazards altogether
        self.speed = speed
        self.noise = noise

    def _direction(self, x: float, y: float) -> tuple[float, float]:
        gx, gy = self.geo.goal
        dx, dy = gx - x, gy - y
        dist = math.hypot(dx, dy) + 1e-9
        ux, uy = dx / dist, dy / dist
        if self.margin is None:
            return ux, uy
        # The nearest inflated hazard that the straight line to the goal runs into.
        best = None
        for cx, cy, r in self.geo.hazards:
            radius = r + self.margin
            if radius <= 0.0:
                continue
            ox, oy = cx - x, cy - y
            d_c = math.hypot(ox, oy)
            if d_c < radius:  # inside the inflated disc: slide out along the boundary
                best = (0.0, cx, cy, radius, d_c)
                break
            along = ox * ux + oy * uy
            if along <= 0.0 or along > dist + radius:
                continue  # behind us, or beyond the goal
            perp = abs(ox * uy - oy * ux)
            if perp < radius and (best is None or along < best[0]):
                best = (along, cx, cy, radius, d_c)
        if best is None:
            return ux, uy
        _, cx, cy, radius, d_c = best
        ox, oy = (cx - x) / (d_c + 1e-9), (cy - y) / (d_c + 1e-9)
        if d_c < radius:
            # Tangent on the goal's side plus a push outwards, back to the inflated boundary.
            tx, ty = -oy, ox
            if tx * ux + ty * uy < 0:
                tx, ty = -tx, -ty
            vx, vy = tx - ox, ty - oy
            n = math.hypot(vx, vy) + 1e-9
            return vx / n, vy / n
        half = math.asin(min(1.0, radius / d_c))
        cands = []
        for sign in (1.0, -1.0):
            c, s = math.cos(sign * half), math.sin(sign * half)
            cands.append((ox * c - oy * s, ox * s + oy * c))
        return max(cands, key=lambda t: t[0] * ux + t[1] * uy)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x, y = float(obs[0]), float(obs[1])
        dir_x, dir_y = self._direction(x, y)
        gx, gy = self.geo.goal
        # Slow down near the goal so that the point robot can stay inside the goal disc.
        speed = self.speed * min(1.0, math.hypot(gx - x, gy - y) / (self.geo.goal_radius + 1e-9))
        fx = 0.0 if self.geo.drift_kind == "none" else 2.0 - 0.5 * y * y
        action = np.array((speed * dir_x - fx, speed * dir_y), dtype=np.float64)
        if self.noise > 0.0:
            action += self.rng.normal(0.0, self.noise, size=2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class WaypointController:
    """Drive straight to a waypoint (hazards ignored), then on to the goal with a `NavController`.

    Waypoints placed in and around each hazard make the data visit hazards that no start→goal path crosses
    (the flanking discs of PointRobot, the boat's downstream disc): without them an offline method never sees
    a cost there and cannot learn that those regions are unsafe. The first leg ends at the waypoint or at the
    closest approach to it (the drifting boat may not be able to stop on it).
    """

    def __init__(self, waypoint: tuple[float, float], to_waypoint: NavController, to_goal: NavController):
        self.waypoint = waypoint
        self.first_leg = to_waypoint
        self.second_leg = to_goal
        self._best = math.inf
        self._passed = False

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if not self._passed:
            dist = math.hypot(float(obs[0]) - self.waypoint[0], float(obs[1]) - self.waypoint[1])
            # reached (within 5 cm) or moving away from it again
            self._passed = dist < 0.05 or dist > self._best + 1e-6
            self._best = min(self._best, dist)
        return (self.second_leg if self._passed else self.first_leg)(obs)


def waypoint_controller(
    geometry: NavGeometry,
    rng: np.random.Generator,
    speed: float,
    noise: float,
    goal_margin: float | None,
) -> WaypointController:
    """A waypoint in or near a hazard drawn uniformly from all of them: at ρ·r from its centre in a random
    direction, ρ ~ U[0, 1.3] (mostly inside, so that most such episodes enter it)."""
    cx, cy, r = geometry.hazards[int(rng.integers(len(geometry.hazards)))]
    rho, theta = rng.uniform(0.0, 1.3), rng.uniform(0.0, 2.0 * math.pi)
    waypoint = (cx + rho * r * math.cos(theta), cy + rho * r * math.sin(theta))
    # the first leg reuses the controller with the waypoint as its goal (it then also slows down on arrival)
    to_waypoint = NavController(replace(geometry, goal=waypoint, goal_radius=0.05), rng, None, speed, noise)
    return WaypointController(waypoint, to_waypoint, NavController(geometry, rng, goal_margin, speed, noise))


class UniformRandom:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=2).astype(np.float32)


class OrnsteinUhlenbeck:
    """Temporally correlated random actions: they wander much further than i.i.d. uniform noise."""

    def __init__(self, rng: np.random.Generator, theta: float = 0.15, sigma: float = 0.3):
        self.rng = rng
        self.theta = theta
        self.sigma = sigma
        self.state = rng.uniform(-1.0, 1.0, size=2)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        self.state += -self.theta * self.state + self.sigma * self.rng.normal(size=2)
        self.state = np.clip(self.state, -1.0, 1.0)
        return self.state.astype(np.float32)
