"""The continuous combination lock of HNPG (Zhou, Sekhari, Song & Sun, ICLR 2024), after the authors'
`lock_continuous.py` (`YifeiZhou02/HNPG`, class ``Lock``).

A horizon-H chain with three latent states: two good ones, A (0) and B (1), and an absorbing bad one, C (2).
The episode starts in A or B (probability ½ each). At step h each good state has one correct arm out of 10,
drawn once from ``lock_seed`` (``opt_a[h]``, ``opt_b[h]``: the same lock in every episode, whatever the
episode seed). The action is a continuous 10-vector a; the env samples the arm from softmax(a / 0.1) with its
own RNG. The correct arm keeps the agent on a good chain (switching between A and B with probability ½); any
other arm sends it to C for the rest of the episode. Reward:

* 1 at the last step for the correct arm on a good chain: the only way to get it is to be right H times;
* otherwise at the last step an "anti-reward" 0.1 with probability ½ (the distractor that lures myopic
  learners). The authors' code also draws an anti-reward when a wrong arm is pulled before the last step but
  then returns 0 (``return obs, 0, False, {}``), so mid-episode rewards are always 0; this env does the same.

A uniformly random policy opens the lock with probability 10^-H.

Observation: x = W·(e_latent + e_{3+h} + ε), ε ~ N(0, 0.1²) on the first H + 3 coordinates, in dimension
d = 2^ceil(log2(H + 4)) with W the d×d Sylvester–Hadamard matrix (entries ±1, not normalised, as
``scipy.linalg.hadamard``). The step index h is part of the state (W x / d recovers it, see `timestep`).

The lock has no constraint: ``info["cost"]`` is 0.0 at reset and at every step (saferl's cost convention,
`saferl.envs.cost`), so every cost threshold is met.

Differences from the authors' env, none of which changes the MDP: gymnasium 1.x API and seeding through
``reset(seed=...)`` (the authors use NumPy's global RNG), the lock drawn from its own ``lock_seed``, a
numerically stable softmax (theirs overflows for actions above ~70), float32 observations with an unbounded
observation box (theirs declares [0, 1], which the rotated observations leave).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import gymnasium as gym
import numpy as np

DEFAULT_HORIZON = 5  # the authors' `--horizon` default (utils.py)
NUM_LATENTS = 3  # A, B good; C absorbing bad
GOOD = (0, 1)
BAD = 2


@cache
def hadamard(n: int) -> np.ndarray:
    """The n×n Sylvester–Hadamard matrix (n a power of two), entries ±1: H·H = n·I."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard order must be a power of two, got {n}")
    mat = np.ones((1, 1))
    while mat.shape[0] < n:
        mat = np.block([[mat, mat], [mat, -mat]])
    mat.setflags(write=False)
    return mat


def observation_dim(horizon: int) -> int:
    """2^ceil(log2(H + 4)): room for 3 latent and H + 1 step indicators."""
    return 2 ** math.ceil(math.log2(horizon + 4))


def _unrotate(obs: Any) -> Any:
    """W·x / d: the noisy one-hot code (latent, step) behind an observation; numpy or torch, batched."""
    n = obs.shape[-1]
    if isinstance(obs, np.ndarray):
        return obs @ hadamard(n).astype(obs.dtype) / n
    return obs @ _torch_hadamard(n, obs.dtype, obs.device) / n


@cache
def _torch_hadamard(n: int, dtype: Any, device: Any) -> Any:
    import torch

    return torch.tensor(hadamard(n), dtype=dtype, device=device)


def timestep(obs: Any) -> Any:
    """The step index h encoded in observations ``[..., d]`` (numpy or torch; int64). The code's step
    indicator is 1 against noise of σ = 0.1, so this is exact except with probability below 1e-12."""
    return _unrotate(obs)[..., NUM_LATENTS:].argmax(-1)


def latent(obs: Any) -> Any:
    """The latent state (0 = A, 1 = B, 2 = C) encoded in observations (numpy or torch; int64)."""
    return _unrotate(obs)[..., :NUM_LATENTS].argmax(-1)


class CombinationLockEnv(gym.Env):
    """HNPG's continuous combination lock (see the module docstring). ``info`` carries ``cost`` (always
    0.0), the ``latent`` state and the ``timestep`` of the returned observation."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        horizon: int = DEFAULT_HORIZON,
        action_dim: int = 10,
        p_switch: float = 0.5,
        p_anti_reward: float = 0.5,
        anti_reward: float = 0.1,
        noise: float = 0.1,
        temperature: float = 0.1,
        lock_seed: int = 0,
        render_mode: str | None = None,
    ):
        if render_mode is not None:
            raise ValueError(f"{type(self).__name__} has no renderer; use render_mode=None")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon, self.action_dim = int(horizon), int(action_dim)
        self.p_switch, self.p_anti_reward, self.anti_reward = p_switch, p_anti_reward, anti_reward
        self.noise, self.temperature = noise, temperature
        # The lock: correct arm per (good latent, step); row 0 = the authors' opt_a, row 1 = opt_b.
        rng = np.random.default_rng(lock_seed)
        self.opt_actions = np.stack([rng.integers(0, self.action_dim, self.horizon) for _ in GOOD])
        self.obs_dim = observation_dim(self.horizon)
        self.rotation = hadamard(self.obs_dim)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float32)
        # The authors' box; any finite real vector is a valid action (it only enters a softmax).
        self.action_space = gym.spaces.Box(0.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
        self.latent = 0
        self.h = 0

    def _obs(self) -> np.ndarray:
        code = np.zeros(self.obs_dim)
        code[: self.horizon + NUM_LATENTS] = self.np_random.normal(0.0, self.noise, self.horizon + NUM_LATENTS)
        code[self.latent] += 1.0
        code[NUM_LATENTS + self.h] += 1.0
        return (self.rotation @ code).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        return {"cost": 0.0, "latent": self.latent, "timestep": self.h}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.h = 0
        self.latent = 0 if self.np_random.binomial(1, self.p_switch) else 1
        return self._obs(), self._info()

    def arm_probabilities(self, action: np.ndarray) -> np.ndarray:
        """softmax(a / temperature), the distribution the pulled arm is drawn from."""
        logits = np.asarray(action, dtype=np.float64).reshape(self.action_dim) / self.temperature
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def step(self, action):
        if self.h >= self.horizon:
            raise RuntimeError("CombinationLockEnv.step called after the episode ended; call reset()")
        # Same draws, in the same order, as the authors' step: switch coin, anti-reward coin, arm.
        switch = self.np_random.binomial(1, self.p_switch)
        anti = self.np_random.binomial(1, self.p_anti_reward)
        arm = int(self.np_random.choice(self.action_dim, p=self.arm_probabilities(action)))
        correct = self.latent in GOOD and arm == self.opt_actions[self.latent, self.h]
        last = self.h == self.horizon - 1
        reward = 0.0
        if not correct:
            self.latent = BAD
            if last:
                reward = self.anti_reward if anti else 0.0
        elif last:
            reward = 1.0
        elif switch:
            self.latent = 1 - self.latent
        self.h += 1
        return self._obs(), reward, last, False, self._info()
