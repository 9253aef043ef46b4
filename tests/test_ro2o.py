"""RO2O: the regularisers piece by piece, the offline→online switch, and offline → online learning on PointRobot."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import box_ctx, eval_score, worst_episodes
from torch.distributions import Normal

from saferl.algos import get_algorithm
from saferl.algos.ro2o import asymmetric_smoothness, ood_uncertainty_loss, perturb, symmetric_kl
from saferl.data import Batch

TINY = {"hidden": (32, 32), "num_critics": 3, "sample_size": 4, "batch_size": 16}


pytestmark = pytest.mark.usefixtures("single_thread")


def _ctx():
    return box_ctx(obs_dim=3)


def _batch(n: int = 16, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        observations=torch.randn(n, obs_dim, generator=g),
        actions=torch.rand(n, act_dim, generator=g) * 2 - 1,
        rewards=torch.randn(n, generator=g),
        costs=torch.zeros(n),
        next_observations=torch.randn(n, obs_dim, generator=g),
        terminals=(torch.rand(n, generator=g) < 0.2).float(),
        timeouts=torch.zeros(n),
    )


def _ro2o(**overrides):
    cls = get_algorithm("ro2o")
    torch.manual_seed(0)
    return cls(cls.make_config({**TINY, **overrides}), _ctx())


# -- the pieces -------------------------------------------------------------------------------------
def test_perturbations_are_shared_across_the_batch_and_within_eps():
    obs = torch.randn(7, 3)
    delta = perturb(obs, 5, 0.01).view(5, 7, 3) - obs
    assert delta.abs().max() <= 0.01 + 1e-7
    torch.testing.assert_close(delta, delta[:, :1].expand_as(delta))  # offset j is the same for every state
    assert not torch.allclose(delta[0], delta[1])  # and differs between perturbations


def test_value_smoothness_penalises_q_increases_four_times_more_than_decreases():
    q_clean = torch.zeros(3, 4)  # [members, batch]
    up = torch.full((3, 2, 4), 0.5)  # [members, perturbations, batch]
    assert asymmetric_smoothness(q_clean, up, 0.2).item() == pytest.approx(0.8 * 0.25)
    assert asymmetric_smoothness(q_clean, -up, 0.2).item() == pytest.approx(0.2 * 0.25)
    # worst perturbation per state (max over j) of the member-mean: j=0 moves every member up by 0.1
    # (0.8·0.01 = 0.008), j=1 moves one member of three down by 1 (0.2·1/3 ≈ 0.067) → 0.067
    q_pert = torch.zeros(3, 2, 4)
    q_pert[:, 0] = 0.1
    q_pert[0, 1] = -1.0
    assert asymmetric_smoothness(q_clean, q_pert, 0.2).item() == pytest.approx(0.2 / 3)


def test_symmetric_kl_is_zero_for_identical_gaussians_and_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu_p, mu_q = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    sd_p, sd_q = torch.rand(5, 3, generator=g) + 0.1, torch.rand(5, 3, generator=g) + 0.1
    p, q = Normal(mu_p, sd_p), Normal(mu_q, sd_q)
    assert torch.all(symmetric_kl(p, Normal(mu_p.clone(), sd_p.clone())) == 0)
    d2 = (mu_p - mu_q).square()
    closed = 0.5 * ((sd_p**2 + d2) / sd_q**2 + (sd_q**2 + d2) / sd_p**2 - 2).sum(-1)
    torch.testing.assert_close(symmetric_kl(p, q), closed)
    torch.testing.assert_close(symmetric_kl(p, q), symmetric_kl(q, p))


def test_ood_penalty_pushes_q_down_in_proportion_to_ensemble_std():
    q = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0]], requires_grad=True)  # std over members: √2, 0, 0
    loss = ood_uncertainty_loss(q, 0.5)
    std = q.detach().std(0)
    assert loss.item() == pytest.approx(float((0.5 * std).square().mean()))
    loss.backward()
    torch.testing.assert_close(q.grad, (2 * 0.5 * std / q.numel()).expand_as(q))  # descent lowers Q by ∝ std
    assert q.grad[:, 0].min() > 0 and torch.all(q.grad[:, 1:] == 0)


def test_ood_weight_decays_to_its_floor_and_start_online_puts_it_there():
    algo = _ro2o(q_ood_uncertainty_reg=1.0, q_ood_uncertainty_reg_min=0.1, q_ood_uncertainty_decay=0.3)
    used = [algo.update(_batch(seed=i))["ood_uncertainty"].item() for i in range(5)]
    assert used == pytest.approx([1.0, 0.7, 0.4, 0.1, 0.1])
    restored = _ro2o(q_ood_uncertainty_reg=1.0, q_ood_uncertainty_reg_min=0.1, q_ood_uncertainty_decay=0.3)
    restored.load_state_dict(algo.state_dict())  # α_u is checkpointed
    assert restored.ood_uncertainty.item() == pytest.approx(0.1)

    fresh = _ro2o(q_ood_uncertainty_reg=2.0, q_ood_uncertainty_reg_min=0.25, q_ood_uncertainty_decay=1e-6)
    fresh.start_online(None)
    fresh.start_online(None)  # idempotent (the loop calls it again on resume)
    online = [fresh.online_update(_batch(seed=i))["ood_uncertainty"].item() for i in range(3)]
    assert online == pytest.approx([0.25] * 3)


def _copy_into_sac_n(algo):
    sac_cls = get_algorithm("sac_n")
    sac = sac_cls(sac_cls.make_config({k: TINY[k] for k in ("hidden", "num_critics", "batch_size")}), _ctx())
    sac.actor.load_state_dict(algo.actor.state_dict())
    sac.critic.load_state_dict(algo.critic.state_dict())
    sac.critic_target.load_state_dict(algo.critic_target.state_dict())
    return sac


@pytest.mark.parametrize("online_regularizers", [False, True])
def test_online_regularizers_false_is_exactly_a_sac_n_update(online_regularizers):
    algo = _ro2o(online_regularizers=online_regularizers)
    sac = _copy_into_sac_n(algo)  # identity normaliser (not fitted) → same inputs
    batch = _batch(seed=3)
    torch.manual_seed(1)
    metrics = algo.online_update(batch)
    torch.manual_seed(1)
    sac_metrics = sac.update(batch)
    regularizer_keys = {"q_smooth_loss", "ood_loss", "policy_smooth_loss", "ood_uncertainty"}
    same = all(
        torch.allclose(p, q, atol=1e-6)
        for p, q in zip(
            [*algo.actor.parameters(), *algo.critic.parameters()],
            [*sac.actor.parameters(), *sac.critic.parameters()],
            strict=True,
        )
    )
    if online_regularizers:  # the paper's default: the same objective online, so the step differs
        assert regularizer_keys <= set(metrics) and not same
    else:
        assert not regularizer_keys & set(metrics) and same
        for key in ("critic_loss", "actor_loss"):
            torch.testing.assert_close(metrics[key], sac_metrics[key])
    # the offline update always regularises
    assert regularizer_keys <= set(algo.update(batch))


# -- learning: offline on poor data, then online ----------------------------------------------------
def test_online_phase_improves_on_the_offline_checkpoint(point_dataset):
    """Pretrain briefly on PointRobot's worst 10 % of episodes (near-random behaviour, normalized reward ≤ 0.17), then
    fine-tune online with the default (regularised) objective through `OnlineLoop`: the policy must clearly
    beat its offline checkpoint on the same evaluation seeds. γ = 0.9, reward ×10 and a faster temperature,
    as for SAC-N in test_learning.py (PointRobot's per-step rewards are small next to the entropy bonus)."""
    from saferl.data import load
    from saferl.envs import get_task
    from saferl.online import OnlineLoop

    task = get_task("point-robot")
    data = load(point_dataset)
    poor = worst_episodes(data)
    assert task.normalized_reward(float(poor.episode_rewards.max())) < 0.2  # a poor dataset to start from

    cls = get_algorithm("ro2o")
    config = cls.make_config(
        {
            "hidden": (64, 64),
            "num_critics": 4,
            "sample_size": 5,
            "batch_size": 64,
            "gamma": 0.9,
            "reward_scale": 10.0,
            "alpha_lr": 3e-3,
            "online_warmup": 100,
        }
    )
    ctx = box_ctx(data.obs_dim, data.act_dim, task=task, max_episode_steps=task.max_episode_steps)
    torch.manual_seed(0)
    algo = cls(config, ctx)
    train_data = algo.prepare(poor)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        algo.update(algo.sample(train_data, config.batch_size, g))

    offline_score = eval_score(task, algo.act)
    loop = OnlineLoop(algo, task.env_id, poor, seed=0)
    metrics = loop.run(400)  # 100 warm-up steps, then one update per env step
    assert loop.updates == 300
    assert metrics["ood_uncertainty"].item() == pytest.approx(config.q_ood_uncertainty_reg_min)
    assert all(math.isfinite(float(v)) for v in metrics.values())
    online_score = eval_score(task, algo.act)
    assert online_score > offline_score + 0.2, (offline_score, online_score)
