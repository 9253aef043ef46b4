"""FamO2O: the β embedding, the balance model's range and objective, where each update takes its β from,
and a short offline → online run on PointRobot that must clearly improve on its offline checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import box_ctx, eval_score
from torch import nn

from saferl.algos import get_algorithm
from saferl.data import load
from saferl.envs import get_task
from saferl.nn import sinusoidal_embedding

LO, HI = 1.0, 5.0
SMALL = {"hidden": [32, 32], "batch_size": 64, "beta_range": [LO, HI]}


pytestmark = pytest.mark.usefixtures("single_thread")


def _ctx():
    return box_ctx(task=get_task("point-robot"))


def _famo2o(**overrides):
    cls = get_algorithm("famo2o")
    return cls(cls.make_config({**SMALL, **overrides}), _ctx())


def _batch(n: int, seed: int = 0):
    from saferl.data import Batch

    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, 2, generator=g) * 6 - 3
    zeros = torch.zeros(n)
    act = torch.rand(n, 2, generator=g) * 2 - 1
    return Batch(obs, act, torch.rand(n, generator=g), zeros, obs + 0.05 * act, zeros, zeros)


def _pin_balance(algo, beta: float) -> None:
    """Make π_b(·|s) a near-point mass at ``beta`` for every state."""
    last = algo.balance.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(math.atanh(2 * (beta - LO) / (HI - LO) - 1))
        algo.balance.log_std.fill_(-10.0)


def _decode_beta(actor_input: torch.Tensor) -> torch.Tensor:
    """β back from the first (sin β, cos β) pair of the universal model's input (β in [1, 5] ⊂ (0, 2π))."""
    return torch.atan2(actor_input[:, 2], actor_input[:, 3]) % (2 * math.pi)


def test_sinusoidal_embedding_matches_the_formula_and_separates_nearby_betas():
    beta = torch.tensor([0.0, 1.0, 3.0, 3.05, 8.0, 14.0])
    emb = sinusoidal_embedding(beta, dim=6, base=10_000.0)
    expected = np.empty((6, 6))
    for i in range(3):
        expected[:, 2 * i] = np.sin(beta.numpy().astype(np.float64) / 10_000.0 ** (2 * i / 6))
        expected[:, 2 * i + 1] = np.cos(beta.numpy().astype(np.float64) / 10_000.0 ** (2 * i / 6))
    np.testing.assert_allclose(emb.numpy(), expected, atol=1e-6)
    assert sinusoidal_embedding(beta[:, None]).shape == (6, 6)  # [B, 1] works too
    # β = 3 and 3.05 differ by ≈ 0.05 in the first (unit-circle) pair: a policy can tell them apart
    assert torch.linalg.norm(emb[2] - emb[3]) > 0.045
    assert torch.linalg.norm(sinusoidal_embedding(torch.tensor([3.0, 3.0])).diff(dim=0)) == 0
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(beta, dim=5)


def test_balance_model_beta_stays_in_its_range_and_spans_it():
    algo = _famo2o()
    obs = torch.randn(4096, 2) * 100  # far outside the data: pushes tanh into saturation
    with torch.no_grad():
        for p in algo.balance.net.parameters():
            p.mul_(50.0)
        algo.balance.log_std.fill_(2.0)  # the widest σ the model allows
        sampled, logp = algo.balance(obs)
        mean_beta = algo.policy_beta(obs)
    for beta in (sampled, mean_beta):
        assert beta.shape == (4096,) and torch.isfinite(beta).all()
        assert float(beta.min()) >= LO and float(beta.max()) <= HI
    # the affine map reaches both ends of [β_lo, β_hi], not e.g. (β_lo − (β_hi − β_lo), β_hi)
    assert float(sampled.min()) < LO + 0.05 and float(sampled.max()) > HI - 0.05
    assert torch.isfinite(logp).all()


def test_offline_updates_draw_beta_uniformly_and_online_updates_use_the_balance_model():
    algo = _famo2o(batch_size=4096, balance_lr=0.0)  # π_b stays where it is pinned
    _pin_balance(algo, 4.2)
    seen: list[torch.Tensor] = []
    log_prob = algo.actor.log_prob

    def spy(x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        seen.append(_decode_beta(x.detach()))
        return log_prob(x, action)

    algo.actor.log_prob = spy
    batch = _batch(4096)
    algo.update(batch)
    offline = seen.pop()
    # U[1, 5]: covers the range, flat histogram, independent of the balance model (pinned at 4.2)
    assert float(offline.min()) < LO + 0.01 and float(offline.max()) > HI - 0.01
    counts = torch.histc(offline, bins=4, min=LO, max=HI) / len(offline)
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03), counts

    algo.online_update(batch)
    online = seen.pop()
    assert torch.allclose(online, torch.full_like(online, 4.2), atol=1e-3)

    # acting: the balance model's mean β; deterministic at evaluation, sampled in explore
    obs = batch.observations[:256]
    with torch.no_grad():
        expected = algo.actor(algo.universal_input(obs, torch.full((256,), 4.2)), deterministic=True)
    torch.testing.assert_close(torch.as_tensor(algo.act(obs.numpy())), expected, atol=1e-3, rtol=0)
    explored = algo.explore(obs, torch.zeros(256, dtype=torch.int64))
    assert not torch.allclose(explored, expected, atol=1e-3)
    assert float((explored - expected).abs().mean()) < 1.0


class LinearQ(nn.Module):
    """A fixed two-member critic Q(s, a) = 10·sign·(a₁ + a₂)."""

    def __init__(self, sign: float):
        super().__init__()
        self.sign = sign

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return (10 * self.sign * action.sum(-1)).expand(2, -1)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_balance_model_moves_towards_the_beta_whose_actions_have_higher_q(sign):
    torch.manual_seed(0)
    algo = _famo2o(balance_lr=1e-2)
    # a universal model whose action grows with β: a = ((β − 3)/2)·(1, 1), nearly noise-free
    fit = torch.optim.Adam(algo.actor.parameters(), lr=3e-3)
    for _ in range(200):
        obs, beta = torch.rand(256, 2) * 6 - 3, torch.rand(256) * (HI - LO) + LO
        target = ((beta - 3.0) / 2.0)[:, None].expand(-1, 2)
        loss = (algo.actor.distribution(algo.universal_input(obs, beta)).mean - target).pow(2).mean()
        fit.zero_grad()
        loss.backward()
        fit.step()
    assert loss.item() < 0.01
    with torch.no_grad():
        algo.actor.log_std.fill_(-5.0)
    algo.q_target = LinearQ(sign)  # larger β → larger Q when sign > 0, smaller when sign < 0

    obs = torch.rand(512, 2) * 6 - 3
    start = algo.policy_beta(obs).mean().item()
    for _ in range(60):
        metrics = algo.update_balance(torch.rand(256, 2) * 6 - 3)
    end = algo.policy_beta(obs).mean().item()
    assert all(torch.isfinite(v) for v in metrics.values())
    assert abs(start - 3.0) < 0.5
    if sign > 0:
        assert end > HI - 0.5, (start, end)
    else:
        assert end < LO + 0.5, (start, end)


def test_online_fine_tuning_clearly_improves_on_the_offline_checkpoint(point_dataset):
    from saferl.online import OnlineLoop

    torch.manual_seed(0)
    task = get_task("point-robot")
    data = load(point_dataset)
    worst = torch.zeros(data.num_episodes, dtype=torch.bool)
    worst[torch.argsort(data.episode_rewards)[:50]] = True
    poor = data.select_episodes(worst)  # the 50 worst episodes: random walkers that leave the arena
    cls = get_algorithm("famo2o")
    config = cls.make_config(
        {
            "hidden": [64, 64],
            "batch_size": 128,
            "reward_scale": 10.0,  # PointRobot's per-step rewards are ≈ 0.05: make advantages matter for β ∈ [1, 5]
            "actor_lr": 1e-3,
            "critic_lr": 1e-3,
            "value_lr": 1e-3,
            "balance_lr": 1e-3,
        }
    )
    algo = cls(config, _ctx())
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        algo.update(poor.sample(config.batch_size, g))

    offline = eval_score(task, algo.act)
    loop = OnlineLoop(algo, task.env_id, poor, seed=0)
    loop.run(600)
    assert loop.updates == 600  # one update per env step, no warm-up
    online = eval_score(task, algo.act)
    assert online > offline + 0.15, (offline, online)
