"""The faster update paths compute what the plain ones do: gradients only where an optimizer reads them, CDT's
micro-batches accumulating the whole batch's gradient, CPQ's out-of-distribution term on the selected pairs."""

from __future__ import annotations

import dataclasses

import torch

from saferl.algos import AlgoContext, get_algorithm
from saferl.algos import cdt as cdt_module
from saferl.algos.base import optimize
from saferl.algos.cpq import ood_count
from saferl.data import load
from saferl.envs import get_task
from saferl.nn import ActionVAE


def test_backward_fills_only_the_stepped_optimizers_parameters():
    torch.manual_seed(0)
    actor, critic = (
        torch.nn.Linear(3, 2),
        torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)),
    )
    x = torch.randn(16, 3)
    loss = lambda: critic(torch.cat([x, actor(x)], -1)).mean()  # noqa: E731  (an actor loss through a critic)
    loss().backward()
    expected = [p.grad.clone() for p in actor.parameters()]
    start = [p.detach().clone() for p in actor.parameters()]
    for p in [*actor.parameters(), *critic.parameters()]:
        p.grad = None
    opt = torch.optim.SGD(actor.parameters(), lr=1.0)
    optimize(opt, loss())
    assert all(p.grad is None for p in critic.parameters())  # never computed
    for p, g, p0 in zip(actor.parameters(), expected, start, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
        torch.testing.assert_close(p.detach(), p0 - g, rtol=0, atol=1e-7)


def _cdt(point_dataset, micro_batch: int):
    cls = get_algorithm("cdt")
    config = cls.make_config(
        {"embedding_dim": 32, "num_layers": 2, "seq_len": 5, "batch_size": 24, "micro_batch": micro_batch}
    )
    # no dropout: the chunks would draw their masks in another order than the whole batch
    config = dataclasses.replace(config, attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0)
    data = load(point_dataset)
    torch.manual_seed(0)
    algo = cls(config, AlgoContext.for_task(get_task("point-robot"), data, 10.0))
    return algo, algo.prepare(data)


def test_cdt_micro_batches_take_the_whole_batch_step(point_dataset, single_thread, monkeypatch):
    # a fixed "sample" for the entropy estimate, so that both paths see the same noise
    monkeypatch.setattr(cdt_module.draws, "rsample_normal", lambda loc, scale: loc + 0.3 * scale)
    whole, data = _cdt(point_dataset, micro_batch=24)
    chunked, _ = _cdt(point_dataset, micro_batch=5)  # chunks of 5, 5, 5, 5, 4
    assert chunked.micro_batch == 5 and whole.micro_batch == 24
    batch = whole.sample(data, 24, torch.Generator().manual_seed(1))
    assert batch.mask.sum() < batch.mask.numel(), "the batch should hold padded steps (masked means)"
    start = {n: p.detach().clone() for n, p in whole.named_parameters()}
    for _ in range(3):
        m_whole, m_chunked = whole.update(batch), chunked.update(batch)
        for name in m_whole:
            torch.testing.assert_close(m_chunked[name], m_whole[name], rtol=1e-5, atol=1e-6)
    chunked_params = dict(chunked.named_parameters())
    moved = max((p - start[n]).abs().max().item() for n, p in whole.named_parameters())
    assert moved > 1e-4
    for name, p in whole.named_parameters():
        torch.testing.assert_close(chunked_params[name], p, rtol=1e-4, atol=1e-6, msg=name)


def test_cdt_micro_batch_is_auto_sized_per_device(point_dataset):
    algo, _ = _cdt(point_dataset, micro_batch=0)
    assert algo.micro_batch == 256  # CPU


def test_ood_count_is_what_the_quantile_mask_selects():
    gen = torch.Generator().manual_seed(0)
    for n in (7, 100, 5120, 5121):
        kl = torch.rand(n, generator=gen)
        for q in (0.5, 0.75, 0.9):
            assert int((kl >= torch.quantile(kl, q)).sum()) == ood_count(n, q)


def test_cpq_ood_cost_equals_the_masked_mean_and_its_gradient(point_dataset, single_thread):
    cls = get_algorithm("cpq")
    data = load(point_dataset)
    ctx = AlgoContext.for_task(get_task("point-robot"), data, 10.0)
    config = cls.make_config({"batch_size": 64, "actor_hidden": (32, 32), "critic_hidden": (32, 32)})
    torch.manual_seed(0)
    algo = cls(config, ctx)
    obs = data.observations[:64]

    torch.manual_seed(1)
    fast = algo._ood_cost(obs)
    fast_grads = torch.autograd.grad(fast, list(algo.cost_critic.parameters()))

    torch.manual_seed(1)  # the formula as the paper writes it: mask every pair, the critic on all of them
    n, b = config.num_samples, obs.shape[0]
    rep = obs.repeat(n, 1)
    with torch.no_grad():
        samples, _ = algo.actor(rep, with_logprob=False)
        kl = ActionVAE.kl(*algo.vae.encode(rep, samples)).mean(-1).view(n, b)
        mask = (kl >= torch.quantile(kl, config.ood_quantile)).float()
    plain = (mask * algo.cost_critic(rep, samples).amin(0).view(n, b)).mean(0).mean()
    plain_grads = torch.autograd.grad(plain, list(algo.cost_critic.parameters()))

    assert int(mask.sum()) == ood_count(n * b, config.ood_quantile) < n * b
    torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-7)
    for g_fast, g_plain in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-5, atol=1e-7)
