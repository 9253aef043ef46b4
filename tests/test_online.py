"""The online phase: replay buffer mixing and MC returns, the loop's episodes, the offline→online CLI
(offline checkpoint, learning curve against env steps, init_from, resume, safety filter, bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import box_ctx, compose_run, run_cli

from saferl.algos import AlgoContext, Algorithm, O2OConfig, get_algorithm
from saferl.data import OfflineDataset, load
from saferl.data.offline import packed_width, unpack_rows
from saferl.online import OnlineLoop, ReplayBuffer
from saferl.runs import SaferlError, run_experiment

TINY = [
    "algo.batch_size=64",
    "algo.hidden=[32,32]",
    "eval_episodes=3",
    "progress=false",
    "tensorboard=false",
    "threads=1",
]


config = compose_run


def _dataset(rewards: list[list[float]], terminals: list[list[float]]) -> OfflineDataset:
    """A 1-d dataset whose episodes have the given rewards/terminal flags (observations count up)."""
    r = torch.tensor([x for ep in rewards for x in ep])
    d = torch.tensor([x for ep in terminals for x in ep])
    n = len(r)
    obs = torch.arange(n, dtype=torch.float32)[:, None]
    lengths = torch.tensor([0] + [len(ep) for ep in rewards])
    return OfflineDataset(obs, torch.zeros(n, 1), r, torch.zeros(n), obs + 1, d, torch.zeros(n), lengths.cumsum(0))


def test_mc_returns_are_discounted_sums_within_each_episode():
    data = _dataset([[1.0, 2.0, 3.0], [5.0, 7.0]], [[0, 0, 0], [0, 1]])
    g = 0.9
    expected = [1 + g * 2 + g * g * 3, 2 + g * 3, 3.0, 5 + g * 7, 7.0]
    torch.testing.assert_close(data.mc_returns(g), torch.tensor(expected))
    # a terminal inside an episode stops the sum there
    cut = _dataset([[1.0, 2.0, 3.0]], [[0, 1, 0]])
    torch.testing.assert_close(cut.mc_returns(g), torch.tensor([1 + g * 2, 2.0, 3.0]))


def _rows(n: int, reward: float) -> torch.Tensor:
    rows = torch.zeros(n, packed_width(1, 1))
    rows[:, 2] = reward  # layout: obs, action, reward, cost, next_obs, terminal, timeout
    return rows


def test_replay_buffer_mixes_offline_and_online_data_as_configured():
    offline = _dataset([[-1.0] * 100], [[0] * 100])
    g = torch.Generator().manual_seed(0)
    fixed = ReplayBuffer(1, 1, 1000, offline=offline, offline_ratio=0.25)
    fixed.add(_rows(300, 1.0))
    assert int((fixed.sample(64, g).rewards < 0).sum()) == 16  # exactly round(0.25·64) offline rows

    online_only = ReplayBuffer(1, 1, 1000, offline=offline, offline_ratio=0.0)
    online_only.add(_rows(10, 1.0))
    assert bool((online_only.sample(256, g).rewards > 0).all())

    pool = ReplayBuffer(1, 1, 1000, offline=offline, offline_ratio=-1.0)
    pool.add(_rows(300, 1.0))
    share = float((pool.sample(20_000, g).rewards < 0).float().mean())
    assert share == pytest.approx(100 / 400, abs=0.02)  # uniform over 100 offline + 300 online rows

    fifo = ReplayBuffer(1, 1, 10)
    for k in range(15):
        fifo.add(_rows(1, float(k)))
    assert len(fifo) == 10 and set(fifo.sample(500, g).rewards.tolist()) == {float(k) for k in range(5, 15)}
    with pytest.raises(ValueError, match="online_offline_ratio"):
        ReplayBuffer(1, 1, 10, offline=offline, offline_ratio=1.5)


def _ctx(data):
    from saferl.envs import get_task

    return box_ctx(data.obs_dim, data.act_dim, task=get_task("point-robot"))


def test_calql_buffer_gets_whole_episodes_with_their_mc_returns(point_dataset):
    data = load(point_dataset)
    cls = get_algorithm("calql")
    algo = cls(cls.make_config({"hidden": (16, 16), "online_warmup": 10_000}), _ctx(data))
    train = algo.prepare(data)
    loop = OnlineLoop(algo, "saferl/PointRobot-v0", train, seed=0)
    loop.run(250)
    buf = loop.buffer
    finished = len(loop.episode_returns)
    assert finished >= 1 and loop.updates == 0
    # only finished episodes are in the buffer (the one under way waits for its returns)
    assert len(buf) == loop.env_steps - len(loop._episodes[0]) > 0
    stored = unpack_rows(buf.table[: len(buf)], data.obs_dim, data.act_dim)
    ends = (stored.terminals + stored.timeouts).clamp(max=1).double()
    assert int(ends.sum()) == finished and ends[-1] == 1
    rewards, mc = stored.rewards.double(), stored.mc_returns.double()
    expected, acc = torch.zeros(len(buf), dtype=torch.float64), 0.0
    for t in range(len(buf) - 1, -1, -1):
        acc = float(rewards[t]) + algo.config.gamma * (1.0 - float(ends[t])) * acc
        expected[t] = acc
    torch.testing.assert_close(mc, expected, rtol=1e-5, atol=1e-4)
    assert sum(loop.episode_returns) == pytest.approx(float(rewards.sum()), rel=1e-5)
    # the offline half of a batch carries its own MC returns
    torch.testing.assert_close(buf.offline_table[:, -1], train.mc_returns(algo.config.gamma))


class _Recorder(Algorithm):
    """An on-policy stand-in that records what the loop hands it."""

    Config = O2OConfig
    online_mode = "on_policy"
    name = "recorder"

    def __init__(self, ctx: AlgoContext):
        super().__init__(O2OConfig(), ctx)
        self.config.rollout_steps = 450  # type: ignore[attr-defined]
        self.rollouts: list[OfflineDataset] = []
        self.timesteps: list[torch.Tensor] = []
        self.started = 0

    def start_online(self, offline):
        self.started += 1

    def policy(self, obs, deterministic=True):
        return torch.zeros(obs.shape[0], self.ctx.act_dim)

    def explore(self, obs, timesteps):
        self.timesteps.append(timesteps.clone())
        return self.policy(obs)

    def online_update(self, rollout):
        self.rollouts.append(rollout)
        return {"episodes": torch.tensor(float(rollout.num_episodes))}


def test_on_policy_loop_hands_over_whole_episodes_from_lock_stepped_envs(point_dataset):
    data = load(point_dataset)
    algo = _Recorder(_ctx(data))
    loop = OnlineLoop(algo, "saferl/PointRobot-v0", data, seed=0, num_envs=3)
    loop.step()
    (rollout,) = algo.rollouts
    # whole episodes only: every one ends in a terminal or a timeout, none is cut, and the envs start no
    # new episode once the 450 asked-for steps are covered
    lengths = rollout.episode_lengths
    assert rollout.num_transitions == int(lengths.sum()) == loop.env_steps >= 450
    last = rollout.episode_starts[1:] - 1
    assert bool(((rollout.terminals + rollout.timeouts)[last] > 0).all())
    assert rollout.num_transitions - int(lengths.min()) < 450 + 3 * 200
    first = rollout.episode_starts[:-1]
    within = torch.ones(rollout.num_transitions, dtype=torch.bool)
    within[last] = False
    torch.testing.assert_close(rollout.observations[1:][within[:-1]], rollout.next_observations[:-1][within[:-1]])
    assert algo.timesteps[0].tolist() == [0, 0, 0] and algo.timesteps[5].tolist() == [5, 5, 5]
    assert algo.started == 1 and len(loop.episode_returns) == rollout.num_episodes == len(first)


def test_the_loop_contract_is_declared_with_defaults_and_online_mode_is_checked(point_dataset):
    from saferl.algos.base import OnlineMode

    iql = get_algorithm("iql")
    algo = iql(iql.make_config({"hidden": (16, 16)}), _ctx(load(point_dataset)))
    assert iql.online_mode is OnlineMode.OFF_POLICY and _Recorder.online_mode is OnlineMode.ON_POLICY
    assert algo.episodic_policy() == algo.act and algo.mc_gamma is None and not algo.wraps_eval_env
    env = object()
    assert algo.wrap_eval_env(env) is env  # type: ignore[arg-type]
    assert get_algorithm("vocbf").wraps_eval_env and get_algorithm("calql").online_mode is OnlineMode.OFF_POLICY
    with pytest.raises(NotImplementedError, match="rollout_steps"):
        _ = algo.rollout_steps  # off-policy configs have none
    with pytest.raises(TypeError, match="online_mode='offpolicy'"):

        class _Typo(Algorithm):
            online_mode = "offpolicy"


def _online_args(run_dir: Path, *extra: str) -> list[str]:
    return [
        "algo=iql",
        "offline_steps=300",
        "online_steps=600",
        "log_every=100",
        "online_eval_every=200",
        "checkpoint_every=200",
        f"run_dir={run_dir}",
        *TINY,
        *extra,
    ]


def test_offline_to_online_run_logs_against_env_steps_and_keeps_the_offline_policy(tmp_path, point_dataset):
    run_dir = tmp_path / "run"
    result = run_experiment(config(*_online_args(run_dir)))
    assert result["offline_steps"] == 300 and result["online_steps"] == 600
    assert result["online_episodes"] == 3 and result["online_updates"] == 600
    assert {"normalized_reward", "normalized_cost", "reward_mean"} <= set(result["offline"])
    assert json.loads((run_dir / "eval.json").read_text())["online_total_cost"] == result["online_total_cost"]
    offline_ckpt = torch.load(run_dir / "checkpoints" / "offline.pt", weights_only=False)
    assert offline_ckpt["step"] == 300 and "online" not in offline_ckpt
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, ln.split(","), strict=True)) for ln in lines[1:]]
    evals = [(r["env_steps"], r["eval/reward"]) for r in rows if r["env_steps"] and r["eval/reward"]]
    assert [int(float(e)) for e, _ in evals] == [0, 200, 400, 600]  # the switch, then every 200 env steps
    assert float(evals[0][1]) == pytest.approx(result["offline"]["reward_mean"], rel=1e-5)
    assert float(evals[-1][1]) == pytest.approx(result["reward_mean"], rel=1e-5)

    # init_from: a second online run from the same offline checkpoint (no offline phase of its own)
    again = run_experiment(config(*_online_args(tmp_path / "again", f"init_from={run_dir}", "online_steps=200")))
    assert again["steps"] == 300 and again["online_steps"] == 200
    assert again["offline"]["reward_mean"] == result["offline"]["reward_mean"]


def test_killed_online_run_resumes_to_the_same_parameters(tmp_path, point_dataset, monkeypatch):
    """Online checkpoints wait for an episode boundary, so the resumed run is the uninterrupted one."""
    import saferl.online

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    real_step = saferl.online.OnlineLoop.step

    def dying_step(self):
        if self.env_steps >= 500:
            raise KeyboardInterrupt  # as if the process were killed between checkpoints
        return real_step(self)

    monkeypatch.setattr(saferl.online.OnlineLoop, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config(*_online_args(killed)))
    at = torch.load(killed / "checkpoints" / "last.pt", weights_only=False)["online"]["loop"]
    assert 200 <= at["env_steps"] < 500 and at["resume_seeds"] != [None]
    monkeypatch.setattr(saferl.online.OnlineLoop, "step", real_step)
    resumed = run_experiment(config(*_online_args(killed), "resume=true"))
    uninterrupted = run_experiment(config(*_online_args(clean)))
    a = torch.load(killed / "checkpoints" / "last.pt", weights_only=False)["algo"]["modules"]
    b = torch.load(clean / "checkpoints" / "last.pt", weights_only=False)["algo"]["modules"]
    for key, value in b.items():
        torch.testing.assert_close(a[key], value, rtol=0, atol=0)
    assert resumed["reward_mean"] == uninterrupted["reward_mean"]
    assert resumed["online_total_cost"] == uninterrupted["online_total_cost"]
    steps = [int(ln.split(",")[0]) for ln in (killed / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [int(ln.split(",")[0]) for ln in (clean / "metrics.csv").read_text().splitlines()[1:]]


def test_safety_filter_corrects_online_actions_and_the_buffer_stores_them(point_dataset):
    from saferl.runs import online_filter
    from saferl.safety import ControlAffineCBF, SafetyFilter

    data = load(point_dataset)
    cls = get_algorithm("iql")
    torch.manual_seed(0)  # the untrained policy must reach the hazards: not left to the tests run before
    algo = cls(cls.make_config({"hidden": (16, 16), "online_warmup": 10_000}), _ctx(data))
    barrier = ControlAffineCBF.for_task("point-robot")
    assert online_filter("cbf", algo.ctx.task) is not None
    train = algo.prepare(data)
    loop = OnlineLoop(algo, "saferl/PointRobot-v0", train, seed=0, wrap_env=lambda e: SafetyFilter(e, barrier))
    loop.run(1000)
    assert loop.interventions > 0
    # every stored action satisfies the barrier's constraints at its state (the filtered action was stored)
    online = unpack_rows(loop.buffer.table[: len(loop.buffer)], data.obs_dim, data.act_dim)
    obs, act = online.observations.numpy(), online.actions.numpy()
    A, b = barrier.constraints(obs, act)
    assert np.all(np.einsum("bkd,bd->bk", A, act) >= b - 1e-4)  # the barrier rows read A·u ≥ b


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["algo=bc_all", "online_steps=100"], "has no online phase"),
        (["algo=iql", "online_steps=100", "init_from=/nonexistent"], "no checkpoint found"),
        (["algo=iql", "init_from=/nonexistent"], "also pass online_steps"),
        (["algo=iql", "steps=10", "offline_steps=20"], "disagree"),
        (["algo=iql", "env=hopper-velocity", "online_steps=100", "safety_filter=cbf"], "known barrier"),
        (["algo=hnpg", "online_steps=100"], "short-horizon tasks such as combination-lock"),
    ],
)
def test_bad_online_settings_fail_before_a_run_directory_exists(tmp_path, point_dataset, args, message):
    with pytest.raises(SaferlError, match=message):
        run_experiment(config(*args, f"runs_root={tmp_path}", *TINY[2:]))  # no algo.* options: any algorithm
    assert not list(tmp_path.rglob("config.yaml"))


def test_cli_offline_to_online(tmp_path, point_dataset):
    proc = run_cli(
        "saferl.run",
        "algo=calql",
        "offline_steps=50",
        "online_steps=200",
        "online_eval_every=100",
        f"run_dir={tmp_path / 'cli'}",
        *TINY,
        cwd=tmp_path,
        check=True,
    )
    out = " ".join(proc.stdout.split())  # rich wraps the table titles
    assert "the offline policy" in out and "50 offline updates + 200 online env steps" in out


def test_cbf_filter_keeps_a_whole_online_run_free_of_violations(tmp_path, point_dataset):
    """safety_filter=cbf through run_experiment: IQL after 300 offline updates drives point-robot's start→goal
    diagonal through the large hazard (the unfiltered control run pays cost online); the task's barrier
    filter must correct those actions and leave no violation in the whole online phase."""
    runs = {}
    for name in ("none", "cbf"):
        run_dir = tmp_path / name
        args = ["algo=iql", "offline_steps=300", "online_steps=300", f"safety_filter={name}", f"run_dir={run_dir}"]
        result = run_experiment(config(*args, *TINY))
        runs[name] = json.loads((run_dir / "eval.json").read_text())
        assert runs[name]["online_steps"] == 300 and runs[name]["online_total_cost"] == result["online_total_cost"]
    # the control: without the filter the same offline policy enters the hazard (else this test proves nothing)
    assert runs["none"]["online_total_cost"] > 0 and runs["none"]["online_interventions"] == 0
    assert runs["cbf"]["online_interventions"] > 0
    assert runs["cbf"]["online_total_cost"] == 0.0
