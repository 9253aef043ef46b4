"""HNPG: conjugate gradient, the TRPO step's trust region, the per-step policies, and learning a short lock."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import box_ctx

from saferl.algos import get_algorithm
from saferl.algos.hnpg import HNPGConfig, returns_and_gae
from saferl.envs import get_task
from saferl.envs.comb_lock import observation_dim
from saferl.evaluation import rollout
from saferl.nn.per_step import StepPolicies
from saferl.nn.trpo import conjugate_gradient, gaussian_kl, trpo_step

LOCK = "saferl/CombinationLock-v0"


def _lock_ctx(horizon: int):
    return box_ctx(
        observation_dim(horizon),
        10,
        task=get_task("combination-lock"),
        low=0.0,
        high=1.0,
        max_episode_steps=horizon,
        cost_limit=0.0,
    )


def test_conjugate_gradient_solves_each_rows_spd_system():
    g = torch.Generator().manual_seed(0)
    rows, n = 3, 6
    m = torch.randn(rows, n, n, generator=g, dtype=torch.float64)
    a = m @ m.transpose(1, 2) + 0.5 * torch.eye(n, dtype=torch.float64)  # one SPD matrix per row
    b = torch.randn(rows, n, generator=g, dtype=torch.float64)
    b[2] = 0.0  # a row without data must stay at zero, not NaN

    x = conjugate_gradient(lambda v: torch.einsum("rij,rj->ri", a, v), b, iters=n)  # exact in n steps
    expected = torch.linalg.solve(a, b)
    torch.testing.assert_close(x, expected, atol=1e-8, rtol=1e-6)
    assert torch.equal(x[2], torch.zeros(n, dtype=torch.float64))
    # fewer iterations still make progress on every row (monotone decrease of the A-norm error)
    x2 = conjugate_gradient(lambda v: torch.einsum("rij,rj->ri", a, v), b, iters=2)
    err = lambda y: torch.einsum("ri,rij,rj->r", y - expected, a, y - expected)  # noqa: E731
    assert (err(x2)[:2] < err(torch.zeros_like(b))[:2]).all()


def test_trpo_step_improves_the_surrogate_within_the_trust_region():
    torch.manual_seed(0)
    horizon, n, obs_dim, act_dim = 4, 200, 8, 3
    pi = StepPolicies(horizon, obs_dim, act_dim, (16, 16))
    obs = torch.randn(horizon, n, obs_dim)
    with torch.no_grad():
        mean0, log_std0 = pi(obs)
        log_std0 = log_std0.clone()  # pi(obs) returns a view of the parameter
        actions = mean0 + log_std0.exp() * torch.randn_like(mean0)
        logp0 = torch.distributions.Normal(mean0, log_std0.exp()).log_prob(actions).sum(-1)
    advantages = torch.randn(horizon, n) + actions[..., 0]  # rewards the first action coordinate
    weights = torch.full((horizon, n), 1.0 / n)

    def loss_fn():
        mean, log_std = pi(obs)
        logp = torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
        return -(weights * advantages * torch.exp(logp - logp0)).sum(1)

    def kl_fn():
        mean, log_std = pi(obs)
        return (weights * gaussian_kl(mean0, log_std0, mean, log_std)).sum(1)

    cfg = HNPGConfig()
    before = loss_fn().detach()
    trust_region = {
        k: getattr(cfg, k) for k in ("max_kl", "damping", "cg_iters", "backtracks", "accept_ratio", "kl_tolerance")
    }
    metrics = trpo_step(list(pi.parameters()), loss_fn, kl_fn, **trust_region)
    kl = kl_fn().detach()
    assert float(metrics["step_accepted"]) == 1.0
    assert (kl > 0.1 * cfg.max_kl).all() and (kl <= cfg.kl_tolerance * cfg.max_kl).all()
    assert (loss_fn().detach() < before).all()  # every step's surrogate improved


def test_gae_with_lambda_one_is_return_minus_value_and_episodes_stay_apart():
    rewards = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.1])
    values = torch.tensor([0.2, 0.5, 0.9, 0.3, 0.0])
    episode = torch.tensor([0, 0, 0, 1, 1])
    t = torch.tensor([0, 1, 2, 0, 1])
    ret, adv = returns_and_gae(rewards, values, episode, t, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([1.0, 1.0, 1.0, 0.1, 0.1]))
    torch.testing.assert_close(adv, ret - values)
    _, td = returns_and_gae(rewards, values, episode, t, lam=0.0)
    torch.testing.assert_close(td, torch.tensor([0.3, 0.4, 0.1, -0.3, 0.1]))


def test_long_horizon_tasks_are_refused_before_training():
    """The loop calls check_online once, before the offline phase (saferl/runs/experiment.py)."""
    cls = get_algorithm("hnpg")
    ctx = _lock_ctx(3)
    ctx.max_episode_steps = 200
    algo = cls(cls.make_config({"hybrid": False}), ctx)
    with pytest.raises(ValueError, match="short-horizon tasks such as combination-lock"):
        algo.check_online()


def test_policy_reads_the_step_from_lock_observations():
    import gymnasium as gym

    cls = get_algorithm("hnpg")
    algo = cls(cls.make_config({}), _lock_ctx(4))
    with torch.no_grad():  # make the per-step policies differ
        algo.pi.mean.net[-1].bias.copy_(torch.rand(4, 1, 10))
    env = gym.make(LOCK, horizon=4)
    obs = [env.reset(seed=0)[0]]
    for _ in range(3):
        obs.append(env.step(np.ones(10, dtype=np.float32))[0])
    obs = np.stack(obs)
    with torch.no_grad():
        by_step = algo.policy_at(torch.as_tensor(obs), torch.arange(4)).numpy()
    np.testing.assert_allclose(algo.act(obs), by_step)
    assert np.abs(by_step[0] - by_step[3]).max() > 0.1


def test_hnpg_opens_a_short_lock_that_random_exploration_does_not():
    """H = 3: random arms open the lock with probability 1e-3; HNPG with the ε-greedy data learns to."""
    from saferl.data.recipes import lock_dataset
    from saferl.online import OnlineLoop

    torch.set_num_threads(1)
    torch.manual_seed(0)
    horizon, env_kwargs = 3, {"horizon": 3}
    cls = get_algorithm("hnpg")
    algo = cls(cls.make_config({"rollout_steps": 300}), _lock_ctx(horizon))
    loop = OnlineLoop(
        algo, LOCK, lock_dataset(horizon, episodes=1000, seed=0), seed=0, num_envs=16, env_kwargs=env_kwargs
    )

    def success(policy) -> float:
        return float(np.mean(rollout(LOCK, policy, 100, seed=0, env_kwargs=env_kwargs).rewards >= 1.0))

    rng = np.random.default_rng(0)
    random_success = success(lambda obs: rng.uniform(0.0, 1.0, (len(obs), 10)))
    untrained = success(algo.episodic_policy())
    for _ in range(25):
        metrics = loop.step()
    assert all(torch.isfinite(v) for v in metrics.values())
    learned = success(algo.episodic_policy())
    assert random_success <= 0.02 and untrained <= 0.05
    assert learned > 0.5, f"HNPG success {learned} after {loop.env_steps} env steps"
