"""The cost convention: gymnasium 5-tuples with a float ``info["cost"] >= 0`` at reset and every step.

`SixTupleToInfoCost` adapts safety-gymnasium style envs whose ``step`` returns
``(obs, reward, cost, terminated, truncated, info)``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym


class SixTupleToInfoCost(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Wrap an env whose ``step`` returns a 6-tuple so that it speaks the gymnasium 5-tuple.

    The cost moves into ``info["cost"]`` (as a float); reset info gets ``cost = 0.0`` so that every info
    has the same keys (Minari needs that to record costs).
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        info = dict(info)
        info.setdefault("cost", 0.0)
        return obs, info

    def step(self, action):
        out = self.env.step(action)
        if len(out) != 6:
            raise ValueError(
                f"SixTupleToInfoCost expects step() to return 6 values (obs, reward, cost, terminated, "
                f"truncated, info), got {len(out)}; a 5-tuple env already follows the convention"
            )
        obs, reward, cost, terminated, truncated, info = out
        info = dict(info)
        info["cost"] = float(cost)
        return obs, reward, terminated, truncated, info


def step_cost(info: dict) -> float:
    """The cost of one transition from its info dict, with a clear error when the env has none."""
    try:
        cost = float(info["cost"])
    except KeyError:
        raise KeyError(
            "info has no 'cost' key: saferl tasks put the per-step cost in info['cost']; wrap "
            "6-tuple envs with saferl.envs.SixTupleToInfoCost"
        ) from None
    if not cost >= 0.0:
        raise ValueError(f"info['cost'] must be a float >= 0, got {cost!r}")
    return cost
