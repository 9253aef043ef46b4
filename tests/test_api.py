"""The Python API (`saferl.api`): the README snippet, API = CLI on the same config and seed, policies on plain
gymnasium envs, and the user errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, run_cli

import saferl
from saferl.errors import SaferlError
from saferl.evaluation import EVAL_SEED_OFFSET

# The README's "Python API" snippet, between its api:snippet markers (the test checks they are equal).
README_SNIPPET = """\
import saferl

agent = saferl.make("fisor_cpu", "saferl/PointRobot/mixed-v0", seed=0)   # the dataset is built if missing
agent.fit(steps=5000, run_dir="runs/fisor-api")                        # the CLI's trainer: a run directory
print(saferl.evaluate(agent, "point-robot", episodes=20, cost_limit=10)["normalized_cost"])
policy = saferl.load_policy("runs/fisor-api")                          # needs no training code

import gymnasium as gym
from saferl.safety import ControlAffineCBF, SafetyFilter

env = SafetyFilter(gym.make("saferl/PointRobot-v0"), ControlAffineCBF.for_task("point-robot"))
obs, info = env.reset(seed=0)
policy.reset()
for _ in range(200):
    obs, reward, terminated, truncated, info = env.step(policy.act(obs))
    policy.observe(reward, info["cost"])
    if terminated or truncated:
        break
"""

TIMING = {"wall_time_s", "updates_per_s"}  # eval.json fields that measure the machine, not the policy
SMALL_BC = {"hidden": (32, 32), "batch_size": 64}


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny networks run faster on one thread (and the CLI comparison passes threads=1 on both sides)."""


def _readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- api:snippet:begin -->\s*```python\n(.*?)```\s*<!-- api:snippet:end -->", text, re.S)
    assert found, "README.md lost its <!-- api:snippet:begin/end --> markers around the Python API snippet"
    return found.group(1)


def test_readme_snippet_runs(point_dataset, tmp_path, monkeypatch):
    snippet = _readme_snippet()
    assert snippet == README_SNIPPET  # README.md and this test show the same code
    assert "steps=5000" in snippet and "episodes=20" in snippet
    small = snippet.replace("steps=5000", "steps=30").replace("episodes=20", "episodes=3")
    small = small.replace("seed=0)", "seed=0, eval_episodes=3, progress=False, tensorboard=False)", 1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(small, "README.md", "exec"), scope)
    run_dir = tmp_path / "runs" / "fisor-api"
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["algo"] == "fisor_cpu" and result["steps"] == 30
    assert scope["agent"].run_dir == run_dir
    filtered = scope["info"]["safety_filter"]
    assert {"intervened", "correction_norm", "status"} <= set(filtered)
    assert scope["env"].action_space.contains(scope["policy"].act(scope["obs"]))


def test_fit_equals_cli_run(point_dataset, tmp_path):
    """algo=fisor under preset=cpu (the preset composes its CPU sizes), 40 updates, seed 3: the API's run
    directory holds the CLI's config, the same parameters bit for bit and the same eval.json metrics."""
    common = {"seed": 3, "eval_episodes": 4, "threads": 1, "checkpoint_every": 20, "log_every": 10}
    cli_dir, api_dir = tmp_path / "cli", tmp_path / "api"
    run_cli(
        "saferl.run",
        "algo=fisor",
        "env=point-robot",
        "steps=40",
        "algo.critic_hidden=[32,32]",
        "progress=false",
        "tensorboard=false",
        f"run_dir={cli_dir}",
        *(f"{k}={v}" for k, v in common.items()),
        cwd=tmp_path,
        check=True,
    )
    agent = saferl.make("fisor", env="point-robot", critic_hidden=(32, 32), tensorboard=False, **common)
    result = agent.fit(steps=40, run_dir=api_dir, progress=False)

    cli_cfg = yaml.safe_load((cli_dir / "config.yaml").read_text())
    api_cfg = yaml.safe_load((api_dir / "config.yaml").read_text())
    assert cli_cfg["algo"]["actor_hidden"] == 64  # preset=cpu's size, not FISOR's paper default
    assert {**cli_cfg, "run_dir": None, "progress": None} == {**api_cfg, "run_dir": None, "progress": None}
    cli_state = torch.load(cli_dir / "checkpoints" / "last.pt", weights_only=False)["algo"]["modules"]
    api_state = torch.load(api_dir / "checkpoints" / "last.pt", weights_only=False)["algo"]["modules"]
    assert cli_state.keys() == api_state.keys()
    for name, value in cli_state.items():
        assert torch.equal(value, api_state[name]), name
    cli_eval = json.loads((cli_dir / "eval.json").read_text())
    assert result.keys() == cli_eval.keys()
    for key in cli_eval.keys() - TIMING:
        assert result[key] == cli_eval[key], key
    header = [(d / "metrics.csv").read_text().splitlines()[0] for d in (api_dir, cli_dir)]
    assert header[0] == header[1]
    # and the API run loads like a CLI one
    algorithm, task, cfg, step = saferl.runs.load_run(api_dir)
    assert (type(algorithm).name, task.name, step) == ("fisor", "point-robot", 40)


def test_evaluate_reproduces_eval_json(point_dataset, tmp_path):
    agent = saferl.make("bc_safe", point_dataset, seed=2, eval_episodes=6, tensorboard=False, **SMALL_BC)
    result = agent.fit(steps=150, run_dir=tmp_path / "run", progress=False)
    assert agent.task.name == "point-robot"  # taken from the dataset
    ours = saferl.evaluate(agent, episodes=6)
    loaded = saferl.evaluate(saferl.load_policy(tmp_path / "run"), "saferl/PointRobot-v0", episodes=6)
    assert {"normalized_reward", "normalized_cost", "safe", "episodes_with_violation"} <= ours.keys()
    for key in (ours.keys() & result.keys()) - TIMING:
        assert ours[key] == result[key] == loaded[key], key
    assert ours["cost_limit"] == 10.0 and ours["seed"] == 2
    # cost_limit moves the thresholds and the normalized cost, as eval.json's cost_limit does
    strict = saferl.evaluate(agent, episodes=6, cost_limit=2)
    assert strict["thresholds"] == [2.0, 5.0, 10.0, 20.0]
    assert strict["normalized_cost"]["2"] == pytest.approx(result["cost_mean"] / 2)
    # other seeds meet other start states
    assert saferl.evaluate(agent, episodes=6, seed=5)["reward_mean"] != result["reward_mean"]


def test_fit_without_run_dir_leaves_nothing(point_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    agent = saferl.make("bc_safe", point_dataset, eval_episodes=2, **SMALL_BC)
    result = agent.fit(steps=20, progress=False)
    assert result["steps"] == 20 and agent.run_dir is None
    assert list(tmp_path.iterdir()) == []
    action = agent.act(np.zeros(2, dtype=np.float32))
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)
    with pytest.raises(SaferlError, match="already trained"):
        agent.fit(steps=20)


def test_load_policy_acts_on_plain_env(point_dataset, tmp_path):
    agent = saferl.make("bc_safe", point_dataset, eval_episodes=2, tensorboard=False, **SMALL_BC)
    agent.fit(steps=100, run_dir=tmp_path / "run", progress=False)
    policy = saferl.load_policy(tmp_path / "run")
    assert not policy.episodic
    env = gym.make("saferl/PointRobot-v0")
    obs, _ = env.reset(seed=0)
    steps, total = 0, 0.0
    while True:
        action = policy.act(obs)
        assert action.shape == env.action_space.shape and env.action_space.contains(action)
        np.testing.assert_array_equal(action, agent.act(obs))  # the run directory holds the trained weights
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        steps += 1
        if terminated or truncated:
            break
    assert steps > 1 and np.isfinite(total)
    batch = np.stack([env.observation_space.sample() for _ in range(5)])
    actions = policy.act(batch)
    assert actions.shape == (5, 2) and actions.dtype == np.float32
    np.testing.assert_allclose(actions[3], policy.act(batch[3]), atol=1e-6)
    with pytest.raises(SaferlError, match=r"shape \(2,\)"):
        policy.act(np.zeros(3))


def test_episodic_policy_matches_evaluation(point_dataset, tmp_path):
    """CDT conditions on returns-to-go: a hand-written loop with reset/observe gives the episode the CLI's
    evaluation gives, and a loop that forgets observe() is refused."""
    tiny = {"embedding_dim": 16, "num_layers": 1, "num_heads": 1, "seq_len": 4, "batch_size": 16}
    agent = saferl.make("cdt", point_dataset, eval_episodes=1, tensorboard=False, **tiny)
    agent.fit(steps=10, run_dir=tmp_path / "cdt", progress=False)
    policy = saferl.load_policy(tmp_path / "cdt")
    assert policy.episodic
    env = gym.make("saferl/PointRobot-v0")
    obs, _ = env.reset(seed=EVAL_SEED_OFFSET)  # evaluation episode 0 of seed 0
    policy.reset()
    total_reward = total_cost = 0.0
    for _ in range(env.spec.max_episode_steps):
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))
        policy.observe(reward, info["cost"])
        total_reward, total_cost = total_reward + reward, total_cost + info["cost"]
        if terminated or truncated:
            break
    expected = saferl.evaluate(policy, episodes=1)
    assert total_reward == pytest.approx(expected["reward_mean"], abs=1e-9)
    assert total_cost == pytest.approx(expected["cost_mean"], abs=1e-9)
    policy.reset()
    policy.act(obs)
    with pytest.raises(SaferlError, match="observe"):
        policy.act(obs)


def test_user_errors(point_dataset):
    with pytest.raises(SaferlError, match="unknown algorithm 'fisorr'.*bc_safe.*fisor_cpu"):
        saferl.make("fisorr", point_dataset)
    with pytest.raises(SaferlError, match=r"unknown option\(s\) hiden.*seed.*options are batch_size, hidden"):
        saferl.make("bc_safe", point_dataset, hiden=(32, 32))
    with pytest.raises(SaferlError, match="unknown task 'point'"):
        saferl.make("bc_safe", env="point")
    with pytest.raises(SaferlError, match="preset='gpu'.*cpu, paper"):
        saferl.make("bc_safe", point_dataset, preset="gpu")
    with pytest.raises(SaferlError, match="seeds"):
        saferl.make("bc_safe", point_dataset, seeds=[0, 1])
    with pytest.raises(SaferlError, match="boat-robot"):  # the dataset belongs to another task
        saferl.make("bc_safe", point_dataset, env="boat-robot")
    agent = saferl.make("bc_safe", point_dataset, **SMALL_BC)
    with pytest.raises(SaferlError, match="not trained yet"):
        saferl.evaluate(agent)
    with pytest.raises(SaferlError, match="belong to saferl.make"):
        agent.fit(steps=5, lr=0.1)
    with pytest.raises(SaferlError, match="dataset cannot change after make"):
        agent.fit(steps=5, dataset=point_dataset)
    with pytest.raises(SaferlError, match="no-such-run"):
        saferl.load_policy(Path("no-such-run"))
