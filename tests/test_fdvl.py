"""f-DVL and XQL (`saferl/algos/fdvl.py`): each value loss and the Q loss against hand-computed numbers, the
update order V → π → Q → Q̄ of the authors' `learner.py`, the value batch, the reward normalisation, the refusal
of unknown divergences, XQL = f-DVL with reverse KL, K seeds under vmap with the noise option, and a learning
test on PointRobot through the CLI's code path."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import box_ctx, compose_run

from saferl.algos import get_algorithm
from saferl.algos.fdvl import (
    FDVL,
    XQL,
    FDVLConfig,
    XQLConfig,
    chi_square_loss,
    q_loss,
    reverse_kl_loss,
    total_variation_loss,
    value_loss,
)
from saferl.data import Batch, OfflineDataset
from saferl.nn.members import MemberStack, torch_rng_state

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add overhead

X = torch.tensor([-6.0, -3.0, -1.0, 0.0, 2.0])  # residuals x = Q̄(s, a) − V(s)


# -- the value losses --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("temp", "expected"),
    [
        # max(x + x²/4, 0) = [3, 0, 0, 0, 3]: zero on [−4, 0], rising again below −4
        (1.0, (3 + 0 + 0 + 0 + 3) / 5),
        # 0.5·[3, 0, 0, 0, 3] − 0.5·x = [4.5, 1.5, 0.5, 0, 0.5]
        (0.5, (4.5 + 1.5 + 0.5 + 0 + 0.5) / 5),
    ],
)
def test_chi_square_loss_by_hand(temp, expected):
    assert value_loss(X, "chi-square", temp, max_clip=5.0).item() == pytest.approx(expected)
    assert chi_square_loss(X, temp).mean().item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("temp", "expected"),
    [
        (1.0, 2 / 5),  # max(x, 0) = [0, 0, 0, 0, 2]
        (0.8, (1.2 + 0.6 + 0.2 + 0 + 1.2) / 5),  # 0.8·max(x, 0) − 0.2·x
    ],
)
def test_total_variation_loss_by_hand(temp, expected):
    assert value_loss(X, "total-variation", temp, max_clip=None).item() == pytest.approx(expected)
    assert total_variation_loss(X, temp).mean().item() == pytest.approx(expected)


def _gumbel(z: list[float], m: float) -> float:
    """mean of e^(z−m) − z·e^(−m) − e^(−m), written out."""
    return sum(math.exp(v - m) - v * math.exp(-m) - math.exp(-m) for v in z) / len(z)


def test_reverse_kl_loss_clips_and_rescales_by_the_batch_max():
    x = torch.tensor([-2.0, 0.0, 1.0, 20.0], requires_grad=True)
    # λ = 2: z = x/2 = [−1, 0, 0.5, 10], clipped at 5; m = max z = 5
    loss = value_loss(x, "reverse-kl", 2.0, max_clip=5.0)
    assert _gumbel([-1, 0, 0.5, 5], 5.0) == pytest.approx(0.2407632866)
    assert loss.item() == pytest.approx(0.2407632866, rel=1e-6)
    # no clip: z = 10 stays, m = 10
    assert value_loss(x, "reverse-kl", 2.0, max_clip=None).item() == pytest.approx(0.2498810136, rel=1e-6)
    # m is a constant (stop-gradient): d/dx = (e^(z−m) − e^(−m)) / (λ·B); the clipped sample gets none
    (grad,) = torch.autograd.grad(loss, x)
    want = [(math.exp(z - 5) - math.exp(-5)) / (2 * 4) for z in (-1, 0, 0.5)] + [0.0]
    np.testing.assert_allclose(grad.numpy(), want, rtol=1e-5, atol=1e-9)
    # the largest z unclipped (clip 7): no gradient through m either, or x = 8 would get e^(−m)·(… − 1)/λ more
    x_top = torch.tensor([-2.0, 0.0, 1.0, 8.0], requires_grad=True)
    (grad,) = torch.autograd.grad(value_loss(x_top, "reverse-kl", 2.0, max_clip=7.0), x_top)
    want = [(math.exp(z - 4) - math.exp(-4)) / (2 * 4) for z in (-1, 0, 0.5, 4)]
    np.testing.assert_allclose(grad.numpy(), want, rtol=1e-5, atol=1e-9)
    # it is Gumbel regression e^z − z − 1 scaled by e^(−m)
    z = torch.tensor([-1.0, 0.0, 0.5, 5.0])
    torch.testing.assert_close(reverse_kl_loss(x.detach(), 2.0, 5.0), (z.exp() - z - 1) * math.exp(-5.0))


def test_reverse_kl_loss_floors_the_rescaling_at_minus_one():
    x = torch.tensor([-10.0, -6.0])  # z = [−5, −3]: max z = −3, floored to m = −1
    assert _gumbel([-5, -3], -1.0) == pytest.approx(8.2316709464)
    assert value_loss(x, "reverse-kl", 2.0, max_clip=7.0).item() == pytest.approx(8.2316709464, rel=1e-6)


def test_q_loss_is_huber_20_per_critic_summed():
    qs = torch.tensor([[3.0, -25.0], [2.0, 30.0]])  # two critics, two samples
    target = torch.tensor([2.0, 5.0])  # residuals [[1, −30], [0, 25]]
    # Huber_20: ½x² inside ±20, 20·(|x| − 10) outside → critic 1: (0.5 + 400)/2, critic 2: (0 + 300)/2
    assert q_loss(qs, target).item() == pytest.approx(200.25 + 150.0)


# -- configs -----------------------------------------------------------------------------------------------------
def test_f_is_read_case_insensitively_and_unknown_values_are_refused(tmp_path):
    assert FDVL.make_config({"f": "Reverse-KL"}).f == "reverse-kl"  # the DVL README's spelling
    with pytest.raises(ValueError, match="algo.f='kl' is not allowed: f must be one of chi-square, total-varia"):
        FDVL.make_config({"f": "kl"})
    with pytest.raises(ValueError, match="lie in .0, 1.; use e.g. algo.loss_temp=1"):
        FDVL.make_config({"f": "total-variation", "loss_temp": 2.0})
    with pytest.raises(ValueError, match="loss_temp=0"):
        FDVL.make_config({"loss_temp": 0})
    with pytest.raises(ValueError, match="sample_random_times=-1"):
        FDVL.make_config({"sample_random_times": -1})
    with pytest.raises(ValueError, match="for another f use algo=fdvl algo.f=chi-square"):
        XQL.make_config({"f": "chi-square"})
    assert XQL.make_config({"loss_temp": 5.0}).loss_temp == 5.0  # reverse KL: any temperature > 0

    from saferl.errors import SaferlError
    from saferl.runs import run_experiment

    with pytest.raises(SaferlError, match="f must be one of chi-square, total-variation, reverse-kl"):
        run_experiment(compose_run("algo=fdvl", "env=point-robot", "algo.f=kl", f"run_dir={tmp_path / 'run'}"))
    assert not (tmp_path / "run").exists()


def test_defaults_are_the_authors_commands():
    fdvl, xql = FDVLConfig(), XQLConfig()
    # DVL README, locomotion: --f=chi-square --temp=1 --max_clip=5 --sample_random_times=1
    assert (fdvl.f, fdvl.loss_temp, fdvl.max_clip, fdvl.sample_random_times) == ("chi-square", 1.0, 5.0, 1)
    # XQL reproduce/mujoco/halfcheetah_expert.sh: --temp=1 --max_clip=5 (no random actions)
    assert (xql.f, xql.loss_temp, xql.max_clip, xql.sample_random_times) == ("reverse-kl", 1.0, 5.0, 0)
    for c in (fdvl, xql):
        assert (c.batch_size, c.steps, c.beta, c.tau, c.value_layer_norm) == (1024, 1_000_000, 3.0, 0.005, True)


# -- the update --------------------------------------------------------------------------------------------------
def _batch(n: int = 32, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(n)
    return Batch(
        observations=torch.randn(n, obs_dim, generator=g),
        actions=torch.rand(n, act_dim, generator=g) * 2 - 1,
        rewards=torch.randn(n, generator=g),
        costs=zeros,
        next_observations=torch.randn(n, obs_dim, generator=g),
        terminals=(torch.rand(n, generator=g) < 0.2).float(),
        timeouts=zeros,
    )


def _small(cls, **over):
    return cls.make_config({"hidden": (16, 16), "batch_size": 32, "steps": 100, **over})


def test_update_order_is_v_then_actor_then_q_then_target():
    """`learner.py`: V steps first; the actor's advantage and the Q target both read the *updated* V and the
    target critic as it was; Q̄ is averaged towards the *updated* Q last."""
    torch.manual_seed(0)
    cfg = _small(FDVL, sample_random_times=0, loss_temp=0.7, beta=2.0)
    algo = FDVL(cfg, box_ctx(obs_dim=3))
    algo.update(_batch(seed=1))  # so that Q and Q̄ differ: a check below can tell which one a step read
    batch = _batch()
    v0, q0, qt0, actor0 = (copy.deepcopy(m) for m in (algo.v, algo.q, algo.q_target, algo.actor))
    order: list[str] = []
    for key, opt in algo.optimizers.items():
        opt.register_step_post_hook(lambda *_, k=key: order.append(k))
    metrics = algo.update(batch)
    assert order == ["v", "actor", "q"]

    obs, act, next_obs = batch.observations, batch.actions, batch.next_observations
    with torch.no_grad():
        q_bar = qt0(obs, act).amin(0)
        v_old, v_new = v0(obs), algo.v(obs)
        assert not torch.allclose(v_old, v_new)  # V did move, so the checks below can tell old from new
        assert metrics["value_loss"].item() == pytest.approx(value_loss(q_bar - v_old, "chi-square", 0.7, None).item())
        # actor: AWR weights from Q̄ and the new V, the actor as it was before its step
        w = torch.exp(2.0 * (q_bar - v_new)).clamp(max=100.0)
        assert metrics["actor_loss"].item() == pytest.approx(-(w * actor0.log_prob(obs, act)).mean().item(), rel=1e-5)
        # Q: r + γ·(1 − done)·V_new(s'), not V_old(s')
        target_new = batch.rewards + 0.99 * (1 - batch.terminals) * algo.v(next_obs)
        target_old = batch.rewards + 0.99 * (1 - batch.terminals) * v0(next_obs)
        assert metrics["q_loss"].item() == pytest.approx(q_loss(q0(obs, act), target_new).item(), rel=1e-5)
        assert q_loss(q0(obs, act), target_old).item() != pytest.approx(metrics["q_loss"].item(), rel=1e-5)
        # Q̄ ← (1 − τ)·Q̄ + τ·Q_new
        assert not all(torch.equal(a, b) for a, b in zip(algo.q.parameters(), q0.parameters(), strict=True))
        for t, t0, q in zip(algo.q_target.parameters(), qt0.parameters(), algo.q.parameters(), strict=True):
            assert torch.equal(t, torch.lerp(t0, q, 0.005))


def test_value_batch_appends_uniform_actions_of_the_box_and_noise_stays_in_it():
    torch.manual_seed(0)
    algo = FDVL(_small(FDVL, sample_random_times=3), box_ctx(obs_dim=3, low=-2.0, high=4.0))
    obs, act = torch.randn(50, 3), torch.rand(50, 2) * 6 - 2
    v_obs, v_act = algo.value_batch(obs, act)
    assert v_obs.shape == (200, 3) and v_act.shape == (200, 2)
    torch.testing.assert_close(v_obs[:50], obs)
    torch.testing.assert_close(v_act[:50], act)
    torch.testing.assert_close(v_obs[50:], obs.repeat_interleave(3, dim=0))  # each state with its 3 actions
    rand = v_act[50:]
    assert rand.min() >= -2.0 and rand.max() <= 4.0 and rand.std(0).min() > 1.4  # uniform on [−2, 4]: std 1.73

    noisy = FDVL(_small(FDVL, sample_random_times=0, noise=True, noise_std=1.0), box_ctx(obs_dim=3, low=-2.0, high=4.0))
    _, v_act = noisy.value_batch(obs, act)
    shift = v_act - act
    assert shift.abs().max() <= 0.5 * 3.0 + 1e-5 and (shift != 0).float().mean() > 0.9  # ±0.5 of the half-range 3
    assert v_act.min() >= -2.0 and v_act.max() <= 4.0


def _dataset(returns_per_episode: list[list[float]]) -> OfflineDataset:
    rewards = torch.tensor([r for ep in returns_per_episode for r in ep])
    n = rewards.shape[0]
    starts = torch.tensor(np.cumsum([0] + [len(ep) for ep in returns_per_episode]))
    return OfflineDataset(
        observations=torch.zeros(n, 3),
        actions=torch.zeros(n, 2),
        rewards=rewards,
        costs=torch.zeros(n),
        next_observations=torch.zeros(n, 3),
        terminals=torch.zeros(n),
        timeouts=torch.zeros(n),
        episode_starts=starts,
    )


def test_prepare_scales_rewards_to_a_return_span_of_1000():
    data = _dataset([[1.0, 2.0], [-1.0, 0.5, 0.5], [4.0, 1.0]])  # returns 3, 0, 5: span 5
    data.sample(4)  # builds the packed table that batches are gathered from
    prepared = FDVL(_small(FDVL), box_ctx(obs_dim=3)).prepare(data)
    torch.testing.assert_close(prepared.rewards, data.rewards * 200.0)
    torch.testing.assert_close(prepared.batch(torch.arange(7)).rewards, data.rewards * 200.0)  # batches see it too
    off = FDVL(_small(FDVL, normalize_rewards=False), box_ctx(obs_dim=3)).prepare(data)
    assert off.rewards is data.rewards
    with pytest.raises(ValueError, match="normalize_rewards=false"):
        FDVL(_small(FDVL), box_ctx(obs_dim=3)).prepare(_dataset([[1.0], [0.5, 0.5]]))


def test_xql_is_fdvl_with_reverse_kl():
    """algo=xql and algo=fdvl algo.f=reverse-kl with the same options make the same updates, bit for bit."""
    options = {f.name: getattr(_small(XQL), f.name) for f in dataclasses.fields(XQLConfig)}
    options.update(sample_random_times=2, noise=True)  # random draws too
    runs = []
    for cls in (XQL, FDVL):
        torch.manual_seed(0)
        algo = cls(cls.make_config(options), box_ctx(obs_dim=3))
        for step in range(10):
            algo.update(_batch(seed=step))
        runs.append(dict(algo.named_parameters()))
    assert get_algorithm("xql") is XQL and runs[1].keys() == runs[0].keys()
    for name, p in runs[0].items():
        assert torch.equal(p, runs[1][name]), name
    # … and a different f makes a different update (the comparison can fail)
    torch.manual_seed(0)
    chi = FDVL(FDVL.make_config({**options, "f": "chi-square"}), box_ctx(obs_dim=3))
    for step in range(10):
        chi.update(_batch(seed=step))
    assert not torch.equal(chi.v.net[0].weight, runs[0]["v.net.0.weight"])


def test_seeds_as_one_batched_model_with_noise_and_random_actions():
    """tests/test_seeds.py runs the defaults; this covers both random draws (uniform actions, action noise)."""
    config = _small(FDVL, sample_random_times=2, noise=True, loss_temp=0.5)
    ctx = box_ctx(obs_dim=3)

    def build(seed):
        torch.manual_seed(seed)
        return FDVL(config, ctx)

    singles = []
    for seed in (0, 1):
        algo = build(seed)
        for step in range(20):
            algo.update(_batch(seed=step + 100 * seed))
        singles.append(algo)
    members, states = [], []
    for seed in (0, 1):
        members.append(build(seed))
        states.append(torch_rng_state(False))
    stack = MemberStack(members, states)
    for step in range(20):
        stack.update([_batch(seed=step + 100 * seed) for seed in (0, 1)])
    stack.sync()
    for single, member in zip(singles, members, strict=True):
        params = dict(single.named_parameters())
        for n, p in member.named_parameters():
            torch.testing.assert_close(p, params[n], atol=1e-4, rtol=0, msg=n)


# -- learning ----------------------------------------------------------------------------------------------------
def test_fdvl_chi_square_beats_a_random_policy_on_point_robot(tmp_path, point_dataset):
    """The default f-DVL (χ², the authors' locomotion command) through `saferl.run`'s code path, small networks.
    Like tests/test_learning.py: normalized reward more than 0.15 above a uniformly random policy's (~0.04)."""
    from saferl.envs import get_task
    from saferl.evaluation import rollout
    from saferl.runs import run_experiment

    task = get_task("point-robot")
    rng = np.random.default_rng(0)
    random_stats = rollout(task.env_id, lambda o: rng.uniform(-1, 1, size=(len(o), 2)), 10, seed=0)
    random_reward = task.normalized_reward(float(random_stats.rewards.mean()))
    overrides = ["algo=fdvl", "env=point-robot", "cost_limit=10", "eval_episodes=10", "threads=1", "progress=false"]
    overrides += ["tensorboard=false", f"runs_root={tmp_path}", "steps=1000", "algo.hidden=[64,64]"]
    result = run_experiment(compose_run(*overrides, "algo.batch_size=128"))
    assert result["normalized_reward"] > random_reward + 0.15, (result["normalized_reward"], random_reward)
    (config,) = Path(tmp_path).rglob("config.yaml")
    assert "chi-square" in config.read_text()
