"""TRPO's natural-gradient step (Schulman et al., ICML 2015), batched over independent problems.

Every function works on R problems at once: parameters carry a leading dim R (one per-step network per row,
as `EnsembleMLP` members), flat vectors are ``[R, n_params]`` matrices, and the Fisher matrix is
block-diagonal over rows, so conjugate gradient and the backtracking line search run row by row without a
Python loop or a host sync. R = 1 with a leading singleton dim is plain TRPO.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def flat_rows(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Parameters (or gradients) with a leading row dim → one ``[R, n_params]`` matrix."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)


def set_flat_rows(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Write a ``[R, n_params]`` matrix back into ``params`` (the inverse of `flat_rows`)."""
    with torch.no_grad():
        offset = 0
        for p in params:
            n = p[0].numel()
            p.copy_(flat[:, offset : offset + n].reshape(p.shape))
            offset += n


def gaussian_kl(
    mean0: torch.Tensor, log_std0: torch.Tensor, mean1: torch.Tensor, log_std1: torch.Tensor
) -> torch.Tensor:
    """KL(N0 ‖ N1) of diagonal Gaussians, summed over the last dim (the trust region of Gaussian policies)."""
    var0, var1 = (2 * log_std0).exp(), (2 * log_std1).exp()
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1).pow(2)) / (2.0 * var1) - 0.5).sum(-1)


def conjugate_gradient(
    avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float = 1e-10
) -> torch.Tensor:
    """Solve A x = b for every row of ``b`` (``[R, n]``; ``avp`` applies the block-diagonal A row by row).
    A row stops once its residual r·r < ``tol`` (as TRPO's reference ``conjugate_gradients``); zero rows give 0."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = (r * r).sum(1)
    for _ in range(iters):
        active = rr >= tol
        ap = avp(p)
        pap = (p * ap).sum(1)
        alpha = torch.where(active & (pap > 0), rr / pap, torch.zeros_like(rr))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        new_rr = (r * r).sum(1)
        beta = torch.where(active & (rr > 0), new_rr / rr, torch.zeros_like(rr))
        p = torch.where(active[:, None], r + beta[:, None] * p, p)
        rr = torch.where(active, new_rr, rr)
    return x


def fisher_vector_product(
    params: Sequence[torch.Tensor], kl_fn: Callable[[], torch.Tensor], damping: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ (∇²KL + damping·I) v, per row: KL's Hessian at the old policy is the Fisher matrix."""

    def fvp(v: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(kl_fn().sum(), params, create_graph=True)
        hv = torch.autograd.grad((flat_rows(grads) * v).sum(), params)
        return flat_rows(hv) + damping * v

    return fvp


def line_search(
    params: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    kl_fn: Callable[[], torch.Tensor],
    start: torch.Tensor,
    full_step: torch.Tensor,
    expected_improve: torch.Tensor,
    *,
    max_kl: float,
    backtracks: int,
    accept_ratio: float,
    kl_tolerance: float,
) -> torch.Tensor:
    """Backtracking per row (TRPO's ``linesearch``): the first of step fractions 1, ½, ¼, … whose actual
    surrogate improvement is positive and above ``accept_ratio`` of the linear prediction and whose KL stays
    within ``kl_tolerance``·max_kl (OpenAI baselines' check); rows with none keep their old parameters. Sets
    the parameters and returns the accepted fraction of each row (0 = rejected)."""
    with torch.no_grad():
        loss_old = loss_fn()
        accepted = torch.zeros_like(loss_old)
        done = torch.zeros_like(loss_old, dtype=torch.bool)
        for k in range(backtracks):  # all fractions are tried: no host sync to stop early
            frac = 0.5**k
            set_flat_rows(params, start + frac * full_step)
            actual = loss_old - loss_fn()
            ok = (actual > 0) & (actual / (frac * expected_improve) > accept_ratio)
            ok = ok & (kl_fn() <= kl_tolerance * max_kl) & ~done
            accepted = torch.where(ok, torch.full_like(accepted, frac), accepted)
            done = done | ok
        set_flat_rows(params, start + accepted[:, None] * full_step)
    return accepted


def trpo_step(
    params: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    kl_fn: Callable[[], torch.Tensor],
    *,
    max_kl: float,
    damping: float,
    cg_iters: int,
    backtracks: int,
    accept_ratio: float,
    kl_tolerance: float,
) -> dict[str, torch.Tensor]:
    """One TRPO step on R independent problems at once: ``params`` have a leading dim R, ``loss_fn``/``kl_fn``
    return one surrogate loss / mean KL per row (row r may depend only on slice r of every parameter).

    Direction x from ``cg_iters`` conjugate-gradient steps on (F + damping·I)x = −∇L, scaled so that
    ½ xᵀFx = max_kl, then `line_search`. Returns scalar metrics (no host sync)."""
    loss = loss_fn()
    g = flat_rows(torch.autograd.grad(loss.sum(), params)).detach()
    fvp = fisher_vector_product(params, kl_fn, damping)
    step_dir = conjugate_gradient(lambda v: fvp(v).detach(), -g, cg_iters)
    shs = 0.5 * (step_dir * fvp(step_dir).detach()).sum(1)
    lagrange = torch.sqrt(shs.clamp(min=0.0) / max_kl)
    scale = torch.where(lagrange > 0, 1.0 / lagrange, torch.zeros_like(lagrange))  # rows without data: no step
    full_step = step_dir * scale[:, None]
    expected_improve = (-g * step_dir).sum(1) * scale
    start = flat_rows([p.detach() for p in params]).clone()
    accepted = line_search(
        params,
        loss_fn,
        kl_fn,
        start,
        full_step,
        expected_improve,
        max_kl=max_kl,
        backtracks=backtracks,
        accept_ratio=accept_ratio,
        kl_tolerance=kl_tolerance,
    )
    with torch.no_grad():
        loss_after, kl = loss_fn(), kl_fn()
    return {
        "surrogate_before": loss.detach().mean(),
        "surrogate_after": loss_after.mean(),
        "kl": kl.max(),
        "step_accepted": (accepted > 0).float().mean(),
    }
