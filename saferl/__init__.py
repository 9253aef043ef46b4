"""saferl: safe and offline control RL on gymnasium 1.x / mujoco / numpy 2 / torch."""

from saferl import envs  # noqa: F401  (registers the saferl/* gymnasium ids)

__version__ = "0.1.0"
