"""Pieces of the baselines against hand-computed values."""

from __future__ import annotations

import numpy as np
import torch

from saferl.algos.bcq_lag import soft_clipped_double_q
from saferl.algos.cdt import _reverse_cumsum, pareto_frontier
from saferl.algos.coptidice import f_divergence, occupancy_cost_threshold
from saferl.algos.cql import cql_gap
from saferl.algos.edac import gradient_diversity
from saferl.algos.iql import awr_weights
from saferl.algos.td3bc import actor_loss
from saferl.nn import PIDLagrangian, QEnsemble, TanhGaussianActor, per_step_cost_threshold


def test_per_step_cost_threshold_matches_osrl_formula():
    # κ(1 − γ^T) / ((1 − γ) T): the discounted value of spending κ/T per step
    assert abs(per_step_cost_threshold(10, 0.99, 200) - 10 * (1 - 0.99**200) / (0.01 * 200)) < 1e-12
    per_step = 10 / 200
    discounted = sum(per_step * 0.99**t for t in range(200))
    assert abs(per_step_cost_threshold(10, 0.99, 200) - discounted) < 1e-9


def test_coptidice_threshold_is_the_budget_in_occupancy_units():
    # E_{d^π}[c] with d^π = (1 − γ)·Σ_t γ^t·Pr(s_t, a_t): spending κ/T per step for T steps costs
    # (1 − γ)·Σ_{t<T} γ^t·κ/T under it, 1/(1 − γ) times less than the discounted sum BCQ-Lag and CPQ compare Q_c with
    gamma, horizon, kappa = 0.99, 300, 10.0
    by_hand = (1 - gamma) * sum(gamma**t * kappa / horizon for t in range(horizon))
    assert abs(occupancy_cost_threshold(kappa, gamma, horizon) - by_hand) < 1e-12
    # so a behaviour spending the budget at a constant rate ρ = κ/T sits at the threshold (up to the γ^T tail)
    assert abs(occupancy_cost_threshold(kappa, gamma, horizon) - kappa / horizon * (1 - gamma**horizon)) < 1e-12


def test_pid_lagrangian_hand_steps():
    pid = PIDLagrangian(kp=0.1, ki=0.01, kd=0.5, threshold=1.0)
    # error 2: λ = 0.1·2 + 0.01·2 + 0.5·relu(2 − 0) = 1.22
    assert float(pid(torch.tensor([3.0, 3.0]))) == torch.tensor(1.22).item()
    # error 1: integral 3, derivative relu(1 − 2) = 0 → λ = 0.1 + 0.03 = 0.13
    assert abs(float(pid(torch.tensor([2.0]))) - 0.13) < 1e-6
    # error −5: integral relu(3 − 5) = 0, proportional relu(−5) = 0 → λ = 0
    assert float(pid(torch.tensor([-4.0]))) == 0.0
    restored = PIDLagrangian(0.1, 0.01, 0.5, 1.0)
    restored.load_state_dict(pid.state_dict())
    assert float(restored.error_old) == -5.0


def test_bcq_soft_clipped_double_q():
    q = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    torch.testing.assert_close(soft_clipped_double_q(q, 0.75), torch.tensor([0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 5]))


def test_cql_gap_is_logsumexp_minus_data_q():
    q_data = torch.tensor([[1.0, 2.0]])
    q_ood = torch.tensor([[[0.0, 0.0], [float(np.log(3.0)), float(np.log(5.0))]]])
    expected = ((np.log(2.0) - 1.0) + (np.log(8.0) - 2.0)) / 2
    torch.testing.assert_close(cql_gap(q_data, q_ood, 1.0), torch.tensor([expected], dtype=torch.float32))


def test_td3bc_actor_loss_normalises_q():
    q = torch.tensor([2.0, -2.0, 4.0])
    pi = torch.zeros(3, 1)
    a = torch.ones(3, 1)
    # λ = 2.5 / mean|Q| = 2.5 / (8/3); loss = −λ·mean(Q) + mse = −(2.5·3/8)·(4/3) + 1
    assert abs(float(actor_loss(q, pi, a, 2.5)) - (-(2.5 * 3 / 8) * (4 / 3) + 1.0)) < 1e-6


def test_iql_weights_are_clipped():
    w = awr_weights(torch.tensor([0.0, 1.0, 10.0]), 3.0, 100.0)
    torch.testing.assert_close(w, torch.tensor([1.0, float(np.exp(3.0)), 100.0]))


def test_softchi_divergence_and_inverse_derivative():
    f, f_prime_inv = f_divergence("softchi")
    x = torch.tensor([0.5, 1.0, 3.0])
    torch.testing.assert_close(f(x), torch.tensor([0.5 * (np.log(0.5) - 1) + 1, 0.0, 2.0], dtype=torch.float32))
    # f'(x) = log x for x < 1 and x − 1 for x ≥ 1, so (f')⁻¹(y) = e^y for y < 0 and y + 1 otherwise
    torch.testing.assert_close(
        f_prime_inv(torch.tensor([-1.0, 0.0, 2.0])), torch.tensor([float(np.exp(-1.0)), 1.0, 3.0])
    )


def test_edac_diversity_is_zero_for_orthogonal_gradients_and_one_for_parallel():
    critic = QEnsemble(1, 2, ensemble_size=2, hidden=())  # linear critics: ∇_a Q_i is the action weight row
    with torch.no_grad():
        w = critic.net.net[0].weight  # [E, in=3, out=1]
        w.zero_()
        w[0, 1, 0], w[1, 2, 0] = 1.0, 1.0  # member 0 ∝ a₀, member 1 ∝ a₁: orthogonal
    obs, act = torch.zeros(4, 1), torch.randn(4, 2)
    assert abs(float(gradient_diversity(critic, obs, act))) < 1e-6
    with torch.no_grad():
        w[1].copy_(w[0])  # identical gradients: cosine 1 for each of the 2 ordered pairs, / (N − 1) = 2
    assert abs(float(gradient_diversity(critic, obs, act)) - 2.0) < 1e-5


def test_tanh_gaussian_log_prob_integrates_to_one():
    torch.manual_seed(0)
    actor = TanhGaussianActor(1, 1, [-1.0], [1.0], hidden=(4,))
    grid = torch.linspace(-0.999, 0.999, 20001)[:, None]
    density = actor.log_prob(torch.zeros(len(grid), 1), grid).exp()
    assert abs(float(torch.trapezoid(density, grid[:, 0])) - 1.0) < 1e-2


def test_pareto_frontier_and_reverse_cumsum():
    costs = np.array([0.0, 5.0, 5.0, 10.0, 2.0])
    rewards = np.array([1.0, 3.0, 2.0, 2.5, 0.5])
    assert sorted(pareto_frontier(costs, rewards).tolist()) == [0, 1]
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(_reverse_cumsum(values, np.array([0, 2, 5])), [3.0, 2.0, 12.0, 9.0, 5.0])


def test_coptidice_threshold_and_cost_estimate_share_units(point_dataset):
    # With w ≡ 1 (the policy is the data's behaviour) COptiDICE's cost estimate E_D[w·c] is the data's cost per
    # step. At κ = the data's own mean episode cost that behaviour spends its budget, so the threshold must be of
    # the same size; OSRL's discounted-sum threshold is 1/(1 − γ) = 100 times larger and never binds.
    from saferl.algos import AlgoContext, get_algorithm
    from saferl.data import load
    from saferl.envs import get_task

    data, task = load(point_dataset), get_task("point-robot")
    kappa = float(data.episode_costs.mean())
    cls = get_algorithm("coptidice")
    config = cls.make_config({"actor_hidden": (8,), "critic_hidden": (8,)})
    algo = cls(config, AlgoContext.for_task(task, data, kappa))
    estimate_of_the_behaviour = float(data.costs.mean())
    assert 0.5 < algo.cost_threshold / estimate_of_the_behaviour < 1.5, (algo.cost_threshold, estimate_of_the_behaviour)
