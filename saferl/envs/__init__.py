"""Constrained tasks: every step's info (and the reset info) carries a float ``cost >= 0``.

Importing this package registers the tasks with gymnasium as ``saferl/<Name>-v<N>``.
"""

from __future__ import annotations

import gymnasium as gym

from saferl.envs.cost import SixTupleToInfoCost, step_cost
from saferl.envs.tasks import TASKS, TaskSpec, UnknownTaskError, get_task


def _register_all() -> None:
    for task in TASKS.values():
        if task.env_id not in gym.registry:
            gym.register(
                id=task.env_id,
                entry_point=task.entry_point,
                max_episode_steps=task.max_episode_steps if task.time_limit else None,
                kwargs=dict(task.env_kwargs),
            )


def make(name: str, **kwargs) -> gym.Env:
    """``gymnasium.make`` for a task given by Hydra name or gymnasium id."""
    return gym.make(get_task(name).env_id, **kwargs)


_register_all()

__all__ = ["TASKS", "TaskSpec", "UnknownTaskError", "get_task", "make", "SixTupleToInfoCost", "step_cost"]
