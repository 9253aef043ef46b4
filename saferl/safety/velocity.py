"""A speed-limit barrier for envs without known dynamics (e.g. MuJoCo locomotion), from a fitted model.

``fit_velocity_model`` fits the one-step linear model v' ≈ v + c + wᵀu of one observation entry (a speed)
by least squares on random-action data; `VelocityBarrier` keeps that speed below ``v_max`` with the
discrete-time CBF condition v_max − v' ≥ (1 − γ)(v_max − v), i.e. the row −wᵀu ≥ c − γ(v_max − v).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from saferl.safety.barriers import Barrier


class VelocityBarrier(Barrier):
    """Speed ``obs[:, index]`` below ``v_max`` under the linear model v' ≈ v + c + wᵀu."""

    def __init__(self, v_max: float, w: np.ndarray, c: float, gamma: float = 0.5, index: int = 8):
        self.v_max, self.w, self.c = v_max, np.asarray(w, dtype=np.float64), float(c)
        self.gamma, self.index = gamma, index
        self._a = (-self.w).tolist()  # the row for `constraint_row` (w is fixed after construction)

    def h(self, obs: np.ndarray) -> np.ndarray:
        return self.v_max - np.asarray(obs)[:, self.index]

    def constraints(self, obs: np.ndarray, u_nom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs = np.asarray(obs, dtype=np.float64)
        A = np.broadcast_to(-self.w, (len(obs), 1, self.w.size))
        b = (self.c - self.gamma * (self.v_max - obs[:, self.index]))[:, None]
        return A, b

    def constraint_row(self, obs: np.ndarray, u_nom: list[float]) -> tuple[list[float], float]:
        """`constraints` for one step on Python floats (the filter's fast path): the same a and b."""
        return self._a, self.c - self.gamma * (self.v_max - float(obs[self.index]))


def fit_velocity_model(env: gym.Env, steps: int, rng: np.random.Generator, index: int = 8) -> tuple[np.ndarray, float]:
    """(w, c) of v' − v ≈ c + wᵀu for ``obs[index]``, from ``steps`` uniformly random actions in ``env``."""
    low, high = env.action_space.low, env.action_space.high
    obs, _ = env.reset(seed=0)
    X, y = [], []
    for _ in range(steps):
        u = rng.uniform(low, high)
        nxt, _, term, trunc, _ = env.step(u)
        X.append(np.r_[u, 1.0])
        y.append(nxt[index] - obs[index])
        obs = nxt if not (term or trunc) else env.reset()[0]
    coef = np.linalg.lstsq(np.array(X), np.array(y), rcond=None)[0]
    return coef[:-1], float(coef[-1])
