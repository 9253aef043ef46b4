"""The shared torch base: ensembles equal their members, losses match hand-computed values."""

from __future__ import annotations

import torch

from saferl.nn import EnsembleLinear, QEnsemble, aggregate, expectile_loss, random_subset_min, soft_update


def test_ensemble_linear_equals_separate_linear_layers():
    layer = EnsembleLinear(3, 4, 5)
    x = torch.randn(3, 7, 4)
    out = layer(x)
    for e in range(3):
        expected = x[e] @ layer.weight[e] + layer.bias[e]
        torch.testing.assert_close(out[e], expected)
    assert not torch.equal(layer.weight[0], layer.weight[1])  # members start different


def test_q_ensemble_shapes_and_aggregation():
    q = QEnsemble(3, 2, ensemble_size=4, hidden=(8,))
    values = q(torch.randn(10, 3), torch.randn(10, 2))
    assert values.shape == (4, 10)
    torch.testing.assert_close(aggregate(values, "min"), values.min(0).values)
    torch.testing.assert_close(aggregate(values, "max"), values.max(0).values)
    torch.testing.assert_close(aggregate(values, "mean"), values.mean(0))
    sub = random_subset_min(values, 2, torch.Generator().manual_seed(0))
    assert torch.all(sub >= values.min(0).values)


def test_member_subset_forward_equals_those_rows_of_the_full_forward_and_its_gradient():
    for layer_norm in (False, True):
        q = QEnsemble(3, 2, ensemble_size=4, hidden=(8, 8), layer_norm=layer_norm)
        obs, act = torch.randn(10, 3), torch.randn(10, 2, requires_grad=True)
        full = q(obs, act)
        for members in (slice(0, 1), slice(1, 3)):
            torch.testing.assert_close(q(obs, act, members=members), full[members])
        # the actor's gradient through Q1 alone equals the gradient through the full forward's first row
        (g_full,) = torch.autograd.grad(q(obs, act)[0].sum(), act)
        (g_one,) = torch.autograd.grad(q(obs, act, members=slice(0, 1))[0].sum(), act)
        torch.testing.assert_close(g_one, g_full)


def test_expectile_loss_hand_values():
    diff = torch.tensor([2.0, -2.0, 0.5])
    torch.testing.assert_close(expectile_loss(diff, 0.9), torch.tensor([0.9 * 4, 0.1 * 4, 0.9 * 0.25]))
    torch.testing.assert_close(expectile_loss(diff, 0.5), 0.5 * diff.pow(2))


def test_soft_update():
    target, source = [torch.zeros(3)], [torch.ones(3)]
    soft_update(target, source, 0.25)
    torch.testing.assert_close(target[0], torch.full((3,), 0.25))
