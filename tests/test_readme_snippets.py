"""The README's safety-filter snippet (plain numpy barrier and dynamics) runs and does what it says."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
from conftest import REPO


def _snippet(name: str) -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(rf"<!-- {name}:snippet:begin -->\s*```python\n(.*?)```\s*<!-- {name}:snippet:end -->", text, re.S)
    assert found, f"README.md lost its <!-- {name}:snippet:begin/end --> markers"
    return found.group(1)


def test_filter_snippet_keeps_a_hazard_seeking_robot_safe(capsys):
    scope: dict = {}
    exec(compile(_snippet("filter"), "README.md", "exec"), scope)
    assert scope["cost"] == 0.0
    assert scope["info"]["safety_filter"]["episode_interventions"] > 0
    assert "cost 0.0" in capsys.readouterr().out

    # the same driver without the filter enters a hazard: the snippet's claim is not vacuous
    env = gym.make("saferl/PointRobot-v0")
    obs, _ = env.reset(seed=0)
    cost = 0.0
    for _ in range(200):
        obs, _, terminated, truncated, info = env.step(np.clip(2.2 - obs, -1.0, 1.0))
        cost += info["cost"]
        if terminated or truncated:
            break
    assert cost > 0
