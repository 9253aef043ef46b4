"""CDSA (saferl.algos.cdsa) on top of another run's trained policy: the score-matching loss and the guidance step
by hand, the adjustment with an analytic Gaussian score, the update, the CLI with ``init_from=<run dir>``, every
bad ``init_from``, load_run / load_policy rebuilding base + adjustment, resume after a kill, and a learning test.

Learning test (measured on the 2-core dev machine; deterministic for a given torch build): TD3+BC trained for
1,500 updates (64-64, batch 128) on the PointRobot reference dataset drifts near the goal without settling in it
(normalized reward 0.552, episode cost 2.75 over 20 episodes; final distance to the goal 0.68 m in one episode
looked at). CDSA trained for 2,000 updates (64-64) on the same data, with its default guidance (one Tweedie step
at σ = 0.05), pulls each next state towards the data's densest region, the goal disc (22% of the dataset's
states), and scores 0.863 with cost 0.2 in this test's run (0.854–0.865, costs 0.2 / 0.2 / 3.5 over three
training seeds in a standalone script). The test asserts +0.15 normalized reward, a cost at most 1 above the
base's, and that guidance_scale = 0 acts exactly as the base (so the gain is the guidance's).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import box_ctx, compose_run, kill_after_first_checkpoint, run_cli

from saferl.algos import AlgoContext, Algorithm, get_algorithm
from saferl.algos.cdsa import CDSA, CDSAAdjuster, dsm_loss, noise_levels, score_guidance
from saferl.algos.configs import algo_defaults
from saferl.envs import get_task
from saferl.errors import SaferlError
from saferl.evaluation import rollout
from saferl.runs import load_run, run_experiment

pytestmark = pytest.mark.usefixtures("single_thread")

QUIET = ("progress=false", "tensorboard=false", "threads=1")
TINY = (*QUIET, "eval_episodes=3", "log_every=50", "checkpoint_every=1000")
TINY_CDSA = ("algo.score_hidden=[16,16]", "algo.dynamics_hidden=[16,16]", "algo.batch_size=64")


# -- the paper's pieces by hand --------------------------------------------------------------------------------
def test_dsm_loss_by_hand():
    """½·σ²·‖s + z/σ‖² per sample, summed over dimensions, averaged over the batch."""
    score = torch.tensor([[1.0, 2.0], [0.0, -4.0]])
    noise = torch.tensor([[0.5, -1.0], [1.0, 2.0]])
    sigma = torch.tensor([[0.5], [0.25]])
    # row 0: s + z/σ = (1 + 1, 2 − 2) = (2, 0)  → ½·0.25·4 = 0.5
    # row 1: s + z/σ = (0 + 4, −4 + 8) = (4, 4) → ½·0.0625·32 = 1.0
    assert float(dsm_loss(score, noise, sigma)) == pytest.approx(0.75)
    # the target score −z/σ has zero loss
    assert float(dsm_loss(-noise / sigma, noise, sigma)) == 0.0


def test_noise_levels_are_geometric_from_sigma_max_to_sigma_min():
    sigmas = noise_levels(1.0, 0.01, 5)
    torch.testing.assert_close(sigmas, torch.tensor([1.0, 10**-0.5, 0.1, 10**-1.5, 0.01]))
    assert noise_levels(0.3, 0.01, 1).tolist() == [pytest.approx(0.3)]


def gaussian_score(mu: torch.Tensor, var: float):
    """The score of N(μ, var·I) smoothed at noise level σ: −(x − μ)/(var + σ²)."""

    def score(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return -(x - mu) / (var + sigma**2)

    return score


class GaussianScore(torch.nn.Module):
    """`gaussian_score` in the place of CDSA's score network."""

    def __init__(self, mu: list[float], var: float):
        super().__init__()
        self.fn = gaussian_score(torch.tensor(mu), var)

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return self.fn(x, sigma)


def test_guidance_step_by_hand_on_a_gaussian_score():
    mu = torch.tensor([1.0, -2.0])
    x = torch.tensor([[3.0, 0.0]])
    # σ = 0.5, var = 0.75: x + λ·σ²·(μ − x)/(var + σ²) = x + 0.5·0.25·(−2, −2)/1 = (2.75, −0.25)
    out = score_guidance(gaussian_score(mu, 0.75), x, [0.5], scale=0.5)
    torch.testing.assert_close(out, torch.tensor([[2.75, -0.25]]))
    # a point mass (var = 0): one step with λ = 1 is Tweedie's denoiser, it lands on μ at any σ
    torch.testing.assert_close(score_guidance(gaussian_score(mu, 0.0), x, [0.3], 1.0), mu[None])
    # two levels in turn, var = 1: σ = 1 takes (3, 0) to (3, 0) + (−2, −2)/2 = (2, −1); σ = 0.5 then adds
    # 0.25·((1, −2) − (2, −1))/1.25 = (−0.2, −0.2): (1.8, −1.2)
    two = score_guidance(gaussian_score(mu, 1.0), x, [1.0, 0.5], 1.0)
    torch.testing.assert_close(two, torch.tensor([[1.8, -1.2]]))


class ConstantPolicy(Algorithm):
    """A stand-in base policy: always the same action."""

    name = "constant"

    def __init__(self, ctx: AlgoContext, action: list[float]):
        super().__init__(get_algorithm("bc_all").Config(), ctx)
        self.register_buffer("action", torch.tensor(action))

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.action.expand(obs.shape[0], -1)


DT = 0.05  # PointRobot: s′ = s + a·dt


def analytic_cdsa(mu: list[float], var: float, base_action: list[float], mean: float, std: float, **cfg) -> CDSA:
    """A CDSA whose learned parts are replaced by exact ones: PointRobot's forward and inverse dynamics and the
    score of a Gaussian N(μ, var·I) in normalised states; the state normaliser is (s − mean)/std."""
    ctx = box_ctx()
    algo = CDSA(CDSA.Config(**cfg), ctx, base=ConstantPolicy(ctx, base_action))
    algo.obs_norm.mean.fill_(mean)
    algo.obs_norm.std.fill_(std)
    algo.score = GaussianScore(mu, var)
    algo.predict_next = lambda s, a: s + a * DT
    algo.inverse = lambda s, s_next: (s_next - s) / DT
    return algo.eval()


def test_adjustment_moves_the_action_exactly_as_the_formula_says():
    """s = (0, 0), a₀ = (0.5, 0): ŝ′ = (0.025, 0). Score of N(μ = (0.1, 0.2), 0.01·I) at σ = 0.05 (identity
    normaliser): s* = ŝ′ + 1·0.0025·(μ − ŝ′)/0.0125 = (0.04, 0.04); Δa = (s* − ŝ′)/dt = (0.3, 0.8)."""
    algo = analytic_cdsa([0.1, 0.2], 0.01, [0.5, 0.0], mean=0.0, std=1.0, guide_sigmas=(0.05,))
    np.testing.assert_allclose(algo.act(np.zeros((1, 2), np.float32)), [[0.8, 0.8]], atol=1e-6)
    # λ = 0: exactly the base action
    algo.config = dataclasses.replace(algo.config, guidance_scale=0.0)
    np.testing.assert_array_equal(algo.act(np.zeros(2, np.float32)), [0.5, 0.0])
    # λ = 10: Δa = (3, 8), clipped to the action box
    algo.config = dataclasses.replace(algo.config, guidance_scale=10.0)
    np.testing.assert_allclose(algo.act(np.zeros(2, np.float32)), [1.0, 1.0])


def test_guidance_runs_in_normalised_states():
    """The score is a density of normalised states: with s_n = (s − 1)/2 the step is taken on s_n and mapped back,
    s* = 1 + 2·(ŝ′_n + λσ²·(μ − ŝ′_n)/(var + σ²))."""
    mu, var, sigma, lam = [0.3, -0.1], 0.02, 0.1, 0.5
    algo = analytic_cdsa(mu, var, [-0.4, 0.6], mean=1.0, std=2.0, guide_sigmas=(sigma,), guidance_scale=lam)
    s = np.array([[0.2, 1.5], [-1.0, 0.0]], np.float32)
    nxt = s + np.array([-0.4, 0.6], np.float32) * DT
    n = (nxt - 1.0) / 2.0
    target = 1.0 + 2.0 * (n + lam * sigma**2 * (np.array(mu) - n) / (var + sigma**2))
    expected = np.clip(np.array([-0.4, 0.6]) + (target - nxt) / DT, -1.0, 1.0)
    np.testing.assert_allclose(algo.act(s), expected, atol=1e-5)


# -- the algorithm on PointRobot data --------------------------------------------------------------------------
def _point_ctx(data) -> AlgoContext:
    return AlgoContext.for_task(get_task("point-robot"), data, 10.0)


def test_update_trains_its_own_networks_and_never_the_base(point_dataset):
    from saferl.data import load

    data = load(point_dataset)
    ctx = _point_ctx(data)
    base = get_algorithm("bc_all")(get_algorithm("bc_all").Config(hidden=(16, 16)), ctx)
    torch.manual_seed(0)
    algo = CDSA(CDSA.Config(score_hidden=(32, 32), dynamics_hidden=(32, 32), batch_size=128), ctx, base=base)
    algo.prepare(data)
    before = {k: v.clone() for k, v in algo.state_dict()["modules"].items()}
    x = algo.obs_norm(data.observations[:4096])  # a fixed evaluation of the score loss
    gen = torch.Generator().manual_seed(1)
    sigma = algo.sigmas[torch.randint(0, 10, (len(x),), generator=gen)].unsqueeze(-1)
    z = torch.randn(x.shape, generator=gen)

    def held_out_score_loss() -> float:
        with torch.no_grad():
            return float(dsm_loss(algo.score(x + sigma * z, sigma), z, sigma))

    untrained = held_out_score_loss()
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        last = algo.update(algo.sample(data, 128, gen))
    assert all(torch.isfinite(v) for v in last.values())
    assert held_out_score_loss() < 0.95 * untrained
    after = algo.state_dict()["modules"]
    for key, value in before.items():
        changed = not torch.equal(after[key], value)
        if key.startswith("base."):
            assert not changed, key  # frozen
        elif key.startswith(("score.", "forward_model.", "inverse_model.")) and key.endswith("weight"):
            assert changed, key
    algo.train()
    assert not algo.base.training  # the base acts as evaluated, whatever mode the loop sets
    # the dynamics models are learning PointRobot's s′ = s + a·dt: errors well below a step and an action
    obs, act, nxt = data.observations[:2000], data.actions[:2000], data.next_observations[:2000]
    with torch.no_grad():
        forward_err = (algo.predict_next(obs, act) - nxt).norm(dim=-1).mean()
        inverse_err = (algo.inverse(obs, nxt) - act).norm(dim=-1).mean()
    assert float(forward_err) < 0.5 * float((nxt - obs).norm(dim=-1).mean())
    assert float(inverse_err) < 0.5 * float(act.norm(dim=-1).mean())
    # save → load → same actions
    clone = CDSA(algo.config, ctx, base=get_algorithm("bc_all")(get_algorithm("bc_all").Config(hidden=(16, 16)), ctx))
    clone.load_state_dict(algo.state_dict())
    obs_np = data.observations[:64].numpy()
    np.testing.assert_array_equal(clone.act(obs_np), algo.act(obs_np))


def test_safe_only_fits_the_score_to_safe_episodes(point_dataset):
    from saferl.data import load

    data = load(point_dataset)
    ctx = _point_ctx(data)
    base = ConstantPolicy(ctx, [0.0, 0.0])
    algo = CDSA(CDSA.Config(safe_only=True), ctx, base=base)
    algo.prepare(data)
    safe = data.episode_costs <= 10.0
    assert algo.safe is not None and algo.safe.num_episodes == int(safe.sum()) < data.num_episodes
    batch, states = algo.sample(data, 4096, torch.Generator().manual_seed(0))
    assert states.shape == batch.observations.shape
    safe_states = set(map(tuple, algo.safe.observations.tolist()))
    assert all(tuple(s) in safe_states for s in states.tolist())  # every score state is a safe episode's
    assert not all(tuple(s) in safe_states for s in batch.observations.tolist())  # the dynamics see every episode
    ctx0 = dataclasses.replace(ctx, cost_limit=-1.0)
    with pytest.raises(SaferlError, match="safe_only"):
        CDSA(CDSA.Config(safe_only=True), ctx0, base=base).prepare(data)


@pytest.mark.parametrize(
    ("option", "fix"),
    [
        ({"guidance_scale": -1.0}, "algo.guidance_scale=1.0"),
        ({"guide_sigmas": (2.0,)}, "algo.guide_sigmas=[0.1]"),
        ({"guide_sigmas": ()}, "algo.guide_sigmas=[0.1]"),
        ({"sigma_min": 0.0}, "algo.sigma_min=0.01"),
        ({"sigma_min": 2.0}, "algo.sigma_min=0.01"),
    ],
)
def test_bad_guidance_options_are_refused(option, fix):
    ctx = box_ctx()
    with pytest.raises(ValueError, match=fix.replace("[", r"\[").replace("]", r"\]")):
        CDSA(CDSA.Config(**option), ctx, base=ConstantPolicy(ctx, [0.0, 0.0]))


# -- through the runs layer -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_run(tmp_path_factory, point_dataset) -> Path:
    """A finished bc_all run on PointRobot (tiny)."""
    run_dir = tmp_path_factory.mktemp("base") / "bc_all"
    run_experiment(compose_run("algo=bc_all", "steps=300", "algo.hidden=[16,16]", f"run_dir={run_dir}", *TINY))
    return run_dir


def test_cli_cdsa_on_a_bc_all_run_records_its_base(tmp_path, base_run):
    run_dir = tmp_path / "cdsa"
    args = ["algo=cdsa", f"init_from={base_run}", "steps=120", f"run_dir={run_dir}", *TINY, *TINY_CDSA]
    proc = run_cli("saferl.run", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["algo"] == "cdsa" and result["steps"] == 120 and result["episodes"] == 3
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["init_from"] == str(base_run)
    assert cfg["algo"]["base_run"] == str(base_run.resolve()) and cfg["algo"]["base_algo"] == "bc_all"
    assert cfg["algo"]["base_options"]["hidden"] == [16, 16] and cfg["algo"]["steps"] == 120
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert {"score_loss", "forward_loss", "inverse_loss"} <= set(header.split(","))
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    base_state = torch.load(base_run / "checkpoints" / "last.pt", weights_only=False)
    for key, value in base_state["algo"]["modules"].items():  # the base's weights, unchanged, in CDSA's checkpoint
        torch.testing.assert_close(state["algo"]["modules"]["base." + key], value, rtol=0, atol=0)

    # load_run and load_policy rebuild base + adjustment, also once the base run's directory is gone
    import saferl

    algo, task, _, step = load_run(run_dir)
    assert isinstance(algo, CDSA) and type(algo.base).__name__ == "BCAll" and step == 120
    stats = rollout(task.env_id, algo.act, 3, seed=0)  # the run's final evaluation, repeated
    assert np.isclose(stats.rewards.mean(), result["reward_mean"]) and np.isclose(
        stats.costs.mean(), result["cost_mean"]
    )
    obs = np.random.default_rng(0).uniform(-2.5, 2.5, (16, 2)).astype(np.float32)
    adjusted = algo.act(obs)
    base_policy = saferl.load_policy(base_run)
    assert not np.allclose(adjusted, base_policy.act(obs))  # the adjustment is there
    np.testing.assert_array_equal(CDSAAdjuster(base_policy, algo).act(obs), adjusted)  # the wrapper = the run
    moved = tmp_path / "elsewhere"
    shutil.copytree(base_run, moved)
    shutil.rmtree(base_run)
    try:
        np.testing.assert_array_equal(saferl.load_policy(run_dir).act(obs), adjusted)
        np.testing.assert_allclose(saferl.load_policy(run_dir).act(obs[0]), adjusted[0], rtol=0, atol=1e-6)
    finally:
        shutil.copytree(moved, base_run)


def test_adjuster_wraps_a_plain_function_and_any_base(base_run, tmp_path):
    """One trained CDSA adjusts another base: a constant policy given as a function of a batch."""
    run_dir = tmp_path / "cdsa"
    run_experiment(
        compose_run("algo=cdsa", f"init_from={base_run}", "steps=50", f"run_dir={run_dir}", *TINY, *TINY_CDSA)
    )
    cdsa = load_run(run_dir)[0]
    adjuster = CDSAAdjuster(lambda batch: np.tile([0.3, -0.2], (len(batch), 1)), cdsa)
    obs = np.array([[0.0, 0.0], [1.0, 2.0]], np.float32)
    with torch.no_grad():
        expected = cdsa.adjust(torch.as_tensor(obs), torch.tensor([[0.3, -0.2], [0.3, -0.2]])).numpy()
    np.testing.assert_allclose(adjuster(obs), expected)
    assert rollout("saferl/PointRobot-v0", adjuster, 2, seed=0).rewards.shape == (2,)
    with pytest.raises(TypeError, match="trained CDSA"):
        CDSAAdjuster(cdsa, cdsa.base)


def _resume_args(base: Path, run_dir: Path) -> list[str]:
    return [
        "algo=cdsa",
        f"init_from={base}",
        "steps=1500",
        "log_every=100",
        "checkpoint_every=100",
        f"run_dir={run_dir}",
        *QUIET,
        "eval_episodes=2",
        *TINY_CDSA,
    ]


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, base_run):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    killed_at = kill_after_first_checkpoint(_resume_args(base_run, killed_dir), killed_dir, tmp_path)
    assert 0 < killed_at < 1500

    resumed = run_cli("saferl.run", *_resume_args(base_run, killed_dir), "resume=true", cwd=tmp_path, check=True)
    assert f"resuming from step {killed_at}" in resumed.stdout + resumed.stderr
    run_cli("saferl.run", *_resume_args(base_run, clean_dir), cwd=tmp_path, check=True)
    a = torch.load(killed_dir / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(clean_dir / "checkpoints" / "last.pt", weights_only=False)
    assert a["algo"]["modules"].keys() == b["algo"]["modules"].keys()
    for key, value in b["algo"]["modules"].items():
        torch.testing.assert_close(a["algo"]["modules"][key], value, rtol=0, atol=0)
    ra, rb = (json.loads((d / "eval.json").read_text()) for d in (killed_dir, clean_dir))
    assert ra["reward_mean"] == rb["reward_mean"] and ra["cost_mean"] == rb["cost_mean"]


# -- bad init_from, refused before a run directory exists ----------------------------------------------------------
@pytest.fixture
def no_data(monkeypatch):
    """A refused input never reaches the dataset."""
    import saferl.runs.resolve as resolve

    def refuse(*_args, **_kwargs):
        raise AssertionError("a bad input reached the dataset")

    monkeypatch.setattr(resolve, "ensure", refuse)
    monkeypatch.setattr(resolve, "load", refuse)


def fake_run(
    root: Path, algo: str = "bc_all", env: str = "point-robot", checkpoint: str | None = "good", **extra
) -> Path:
    """A run directory as saferl.run writes one: config.yaml and checkpoints/last.pt of an untrained ``algo``."""
    run_dir = root / f"{algo}-{env}-{checkpoint}"
    cls = get_algorithm(algo)
    options = algo_defaults(algo, cls.Config)
    if "hidden" in options:
        options["hidden"] = [8, 8]
    config = {"algo": options, "env": {"name": env}, "cost_limit": 10.0, "seed": 0, **extra}
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    path = run_dir / "checkpoints" / "last.pt"
    if checkpoint == "good":
        task = get_task(env)
        env_ = gym.make(task.env_id)
        opts = {k: v for k, v in options.items() if k != "name"}
        algo_obj = cls(cls.make_config(opts), AlgoContext.for_task(task, env_, 10.0))
        env_.close()
        torch.save({"step": 10, "algo": algo_obj.state_dict(), "settings": {"algo": algo, "env": env}}, path)
    elif checkpoint == "junk":
        path.write_bytes(b"not a checkpoint")
    return run_dir


def refused(tmp_path: Path, *overrides: str) -> str:
    run_dir = tmp_path / "run"
    with pytest.raises(SaferlError) as info:
        run_experiment(compose_run("algo=cdsa", "env=point-robot", *QUIET, f"run_dir={run_dir}", *overrides))
    assert not run_dir.exists()  # refused before a run directory exists
    return str(info.value)


@pytest.mark.usefixtures("no_data")
@pytest.mark.parametrize(
    ("make", "names", "fix"),
    [
        (None, "needs init_from=<run dir>", "python -m saferl.run algo=iql env=point-robot"),
        (lambda d: d / "nowhere", "does not exist", "pass a run directory that saferl.run wrote"),
        (lambda d: d, "has no config.yaml", "pass a directory that saferl.run wrote"),
        (lambda d: fake_run(d, env="boat-robot"), "env=boat-robot, this run is env=point-robot", "allow_env_mismatch"),
        (lambda d: fake_run(d, "cdsa", checkpoint=None, init_from="/runs/iql"), "is a cdsa run", "init_from=/runs/iql"),
        (lambda d: fake_run(d, checkpoint=None), "has no checkpoints/last.pt", "load another run"),
        (lambda d: fake_run(d, checkpoint="junk"), "corrupt or truncated", "copy it again"),
        (lambda d: fake_run(d, "cdt"), "keeps per-episode context", "pass a run of iql"),
        (lambda d: fake_run(d, "vocbf"), "evaluation wrapper", "acts on its own"),
    ],
)
def test_bad_init_from_is_refused_before_any_work(tmp_path, make, names, fix):
    src = tmp_path / "src"
    src.mkdir()
    path = make(src) if make is not None else None
    message = refused(tmp_path, *([f"init_from={path}"] if path is not None else []))
    assert names in message and fix in message, message
    if path is not None:
        assert f"init_from={path}" in message, message


@pytest.mark.usefixtures("no_data")
@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["steps=0"], "steps=0 with online_steps=0 trains nothing"),
        (["online_steps=100"], "algorithm 'cdsa' has no online phase"),
        (["algo.base_algo=td3bc"], "algo.base_algo='td3bc' disagrees with init_from="),
    ],
)
def test_bad_cdsa_options_are_refused_before_any_work(tmp_path, overrides, names):
    message = refused(tmp_path, f"init_from={fake_run(tmp_path)}", *overrides)
    assert names in message, message


def test_a_base_on_another_task_with_the_same_shapes_is_allowed_when_asked(tmp_path):
    from saferl.runs.load import check_base_fits, load_base

    boat = fake_run(tmp_path, env="boat-robot")
    base, cfg = load_base(str(boat), "cdsa", "point-robot", allow_env_mismatch=True)
    assert cfg["env"]["name"] == "boat-robot" and not any(p.requires_grad for p in base.parameters())
    check_base_fits(base, box_ctx(), str(boat))  # 2-D observations and actions, as PointRobot's
    with pytest.raises(SaferlError, match=r"observations \(2,\) with actions \(2,\); this run's task has observations"):
        check_base_fits(base, box_ctx(obs_dim=3), str(boat))
    # a checkpoint inside the run stands for its run
    base2, _ = load_base(str(boat / "checkpoints" / "last.pt"), "cdsa", "boat-robot")
    assert type(base2) is type(base)


# -- learning ------------------------------------------------------------------------------------------------------
def test_cdsa_beats_its_td3bc_base_on_point_robot(tmp_path, point_dataset):
    """See the module docstring for the numbers."""
    common = (*QUIET, "eval_episodes=20", "log_every=500", "checkpoint_every=5000")
    base_dir = tmp_path / "td3bc"
    base = run_experiment(
        compose_run(
            "algo=td3bc", "steps=1500", "algo.hidden=[64,64]", "algo.batch_size=128", f"run_dir={base_dir}", *common
        )
    )
    cdsa_dir = tmp_path / "cdsa"
    cdsa = run_experiment(
        compose_run(
            "algo=cdsa",
            f"init_from={base_dir}",
            "steps=2000",
            "algo.score_hidden=[64,64]",
            "algo.dynamics_hidden=[64,64]",
            f"run_dir={cdsa_dir}",
            *common,
        )
    )
    for name, r in (("td3bc", base), ("cdsa", cdsa)):
        print(f"{name}: normalized reward {r['normalized_reward']:.3f}, cost {r['cost_mean']}")
    assert cdsa["normalized_reward"] >= base["normalized_reward"] + 0.15
    assert cdsa["cost_mean"] <= base["cost_mean"] + 1.0  # the reward is not bought with hazard visits
    # the control: without guidance the same run acts exactly as its base
    algo, task, _, _ = load_run(cdsa_dir)
    algo.config = dataclasses.replace(algo.config, guidance_scale=0.0)
    plain = rollout(task.env_id, algo.act, 20, seed=0)
    assert float(plain.rewards.mean()) == pytest.approx(base["reward_mean"], abs=1e-9)
    assert float(plain.costs.mean()) == base["cost_mean"]
