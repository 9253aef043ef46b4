"""Barriers: safety constraints that are linear in the action, ``A(s) u ≥ b(s)``, for the QP filter.

The protocol is one method on batches: ``constraints(obs [B, ...], u_nom [B, n]) -> (A [B, m, n], b [B, m])``.
Any object with it works with `saferl.safety.SafetyFilter`; `Barrier` is its abstract base. Barriers that
have a state-only value also offer ``h(obs) -> [B]`` (or ``[B, k]``), h ≥ 0 safe, for diagnostics. A barrier
with a single row may also offer ``constraint_row(obs [...], u_nom: list[float]) -> (a: list[float], b: float)``,
the same row for one unbatched step on Python floats: `SafetyFilter` then skips numpy on its per-step path.

* `ControlAffineCBF` — a control barrier function for control-affine dynamics ṡ = f(s) + g(s)u, analytic or
  learned (torch autograd gives ∇h), in continuous time (∇h·f + ∇h·g·u + α·h ≥ 0) or discrete time.
* `CostCriticBarrier` — model-free: a learned critic Q(s, u) linearised in u around the nominal action.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn


class Barrier(ABC):
    """A safety constraint that is linear in the action: the filter keeps ``A(s) u ≥ b(s)``."""

    @abstractmethod
    def constraints(self, obs: np.ndarray, u_nom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batched ``(A [B, m, n], b [B, m])`` at observations ``[B, ...]`` and nominal actions ``[B, n]``."""


def _module_of(fn: Any) -> nn.Module | None:
    """The nn.Module behind a callable (a module or a bound method of one), to read its device and dtype."""
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _device_dtype(fns: tuple[Any, ...], device: Any, dtype: Any) -> tuple[torch.device, torch.dtype]:
    for fn in fns:
        module = _module_of(fn)
        if module is not None:
            param = next(module.parameters(), None)
            if param is not None:
                return torch.device(device) if device else param.device, dtype or param.dtype
    return torch.device(device or "cpu"), dtype or torch.float64


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


class ControlAffineCBF(Barrier):
    """Control barrier function for ṡ = f(s) + g(s)u with ``h(s) ≥ 0`` safe.

    Args:
        h: ``obs [B, d] -> [B]`` (one barrier) or ``[B, k]`` (k barriers, one constraint row each); numpy or
            torch. Learned barriers are torch modules (e.g. V-OCBF's V_c); ∇h comes from torch autograd unless
            ``grad_h`` is given.
        f: drift, ``obs -> [B, d]``.  g: control matrix, ``obs -> [B, d, n]``.
        alpha: the linear class-K rate α.
        form: ``"continuous"``: ∇h·f + ∇h·g·u + α·h ≥ 0 (Ames et al. 2017; V-OCBF's filter).
            ``"discrete"``: h(s + (f + g u)·dt) ≥ (1 − α·dt)·h(s), the Euler-step condition, linearised in u
            around u_nom (exact when h is affine). Needs ``dt`` with 0 < α·dt ≤ 1.
        grad_h: optional ``obs -> [B, d]`` (or ``[B, k, d]``) in numpy; then h, f, g are called with numpy
            arrays and torch is not used at all (the fastest path for analytic barriers).
        device, dtype: where torch evaluates; default: those of the first torch module among h, f, g, else
            CPU float64.

    Learned modules are called as they are: put them in eval mode first if they use dropout or batch norm.
    """

    def __init__(
        self,
        h: Callable[[Any], Any],
        f: Callable[[Any], Any],
        g: Callable[[Any], Any],
        alpha: float = 1.0,
        form: str = "continuous",
        dt: float | None = None,
        grad_h: Callable[[np.ndarray], np.ndarray] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        if form not in ("continuous", "discrete"):
            raise ValueError(f"form must be 'continuous' or 'discrete', got {form!r}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if form == "discrete":
            if dt is None or dt <= 0:
                raise ValueError("the discrete-time CBF needs the time step dt > 0")
            if alpha * dt > 1.0:
                raise ValueError(f"the discrete-time CBF needs alpha·dt <= 1, got alpha={alpha}, dt={dt}")
        self.h_fn, self.f_fn, self.g_fn, self.grad_fn = h, f, g, grad_h
        self.alpha, self.form, self.dt = float(alpha), form, dt
        self.device, self.dtype = _device_dtype((h, f, g), device, dtype)

    @classmethod
    def for_task(cls, task: Any, alpha: float = 1.0, form: str = "continuous", **kwargs: Any) -> ControlAffineCBF:
        """The analytic CBF of a saferl task with known dynamics (a `TaskSpec` or its Hydra name)."""
        from saferl.envs import get_task

        spec = get_task(task) if isinstance(task, str) else task
        if spec.barrier is None or spec.drift is None or spec.control_matrix is None:
            raise ValueError(f"task {spec.name} has no analytic barrier and control-affine dynamics")
        return cls(spec.barrier, spec.drift, spec.control_matrix, alpha=alpha, form=form, dt=spec.dt, **kwargs)

    # -- evaluation --------------------------------------------------------------------------------
    def _value_and_grad(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """h ``[B, k]`` and ∇h ``[B, k, d]`` at states x ``[B, d]``."""
        if self.grad_fn is not None:
            hv = np.asarray(self.h_fn(x), dtype=np.float64).reshape(len(x), -1)
            grad = np.asarray(self.grad_fn(x), dtype=np.float64).reshape(len(x), hv.shape[1], -1)
            return hv, grad
        xt = torch.as_tensor(x, dtype=self.dtype, device=self.device).requires_grad_(True)
        with torch.enable_grad():
            hv = self.h_fn(xt)
            hk = hv.reshape(len(x), -1)
            k = hk.shape[1]
            # h of sample i depends on x_i only, so the gradient of the batch sum is the per-sample gradient;
            # autograd.grad (not backward) leaves the parameters' .grad of learned barriers untouched.
            grads = [torch.autograd.grad(hk[:, i].sum(), xt, retain_graph=i < k - 1)[0] for i in range(k)]
        return _numpy(hk), _numpy(torch.stack(grads, dim=1))

    def _dynamics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.grad_fn is not None:
            return np.asarray(self.f_fn(x), dtype=np.float64), np.asarray(self.g_fn(x), dtype=np.float64)
        with torch.no_grad():
            xt = torch.as_tensor(x, dtype=self.dtype, device=self.device)
            return _numpy(self.f_fn(xt)), _numpy(self.g_fn(xt))

    def h(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64)
        if self.grad_fn is not None:
            return np.asarray(self.h_fn(x), dtype=np.float64)
        with torch.no_grad():
            return _numpy(self.h_fn(torch.as_tensor(x, dtype=self.dtype, device=self.device)))

    def constraints(self, obs: np.ndarray, u_nom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(obs, dtype=np.float64).reshape(len(u_nom), -1)
        u_nom = np.asarray(u_nom, dtype=np.float64)
        f, g = self._dynamics(x)
        g = g.reshape(len(x), x.shape[1], -1)
        hv, grad = self._value_and_grad(x)
        if self.form == "continuous":
            # ∇h·g·u ≥ −∇h·f − α·h
            A = np.einsum("bkd,bdn->bkn", grad, g)
            b = -np.einsum("bkd,bd->bk", grad, f) - self.alpha * hv
            return A, b
        # h(s⁺(u)) ≈ h(s⁺(u_nom)) + ∇h(s⁺(u_nom))·g·dt·(u − u_nom) ≥ (1 − α·dt)·h(s)
        dt = float(self.dt)
        x_next = x + (f + np.einsum("bdn,bn->bd", g, u_nom)) * dt
        h_next, grad_next = self._value_and_grad(x_next)
        A = dt * np.einsum("bkd,bdn->bkn", grad_next, g)
        b = (1.0 - self.alpha * dt) * hv - h_next + np.einsum("bkn,bn->bk", A, u_nom)
        return A, b


class CostCriticBarrier(Barrier):
    """Model-free barrier from a learned critic Q(s, u), linearised in u around the nominal action.

    ``sense=">="`` keeps Q(s, u) ≥ threshold (a safety critic with Q ≥ 0 safe, e.g. V-OCBF's Q_c);
    ``sense="<="`` keeps Q(s, u) ≤ threshold (a cost critic). The constraint row is the first-order model
    Q(s, u_nom) + ∇_u Q(s, u_nom)·(u − u_nom) — Dalal et al. 2018's safety layer with a critic in place of
    the one-step cost model. A critic returning an ensemble ``[E, B]`` is reduced with ``reduce`` (default:
    the pessimistic member, min for ``>=`` and max for ``<=``).
    """

    def __init__(
        self,
        q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        threshold: float = 0.0,
        sense: str = ">=",
        reduce: str | None = None,
        value: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        if sense not in (">=", "<="):
            raise ValueError(f"sense must be '>=' or '<=', got {sense!r}")
        self.q, self.value = q, value
        self.threshold, self.sense = float(threshold), sense
        self.reduce = reduce or ("min" if sense == ">=" else "max")
        if self.reduce not in ("min", "max", "mean"):
            raise ValueError(f"reduce must be min, max or mean, got {self.reduce!r}")
        self.device, self.dtype = _device_dtype((q, value), device, dtype)

    def _reduce(self, qv: torch.Tensor, batch: int) -> torch.Tensor:
        if qv.ndim == 1:
            return qv
        qv = qv.reshape(-1, batch)
        return {"min": qv.amin(0), "max": qv.amax(0), "mean": qv.mean(0)}[self.reduce]

    def constraints(self, obs: np.ndarray, u_nom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u_nom = np.asarray(u_nom, dtype=np.float64)
        batch = len(u_nom)
        x = torch.as_tensor(np.asarray(obs).reshape(batch, -1), dtype=self.dtype, device=self.device)
        u = torch.as_tensor(u_nom, dtype=self.dtype, device=self.device).requires_grad_(True)
        with torch.enable_grad():
            q0 = self._reduce(self.q(x, u), batch)
            (grad,) = torch.autograd.grad(q0.sum(), u)
        q0_np, grad_np = _numpy(q0), _numpy(grad)
        lin = np.einsum("bn,bn->b", grad_np, u_nom)
        if self.sense == ">=":  # ∇Q·u ≥ κ − Q(s, u_nom) + ∇Q·u_nom
            return grad_np[:, None, :], (self.threshold - q0_np + lin)[:, None]
        return -grad_np[:, None, :], (q0_np - self.threshold - lin)[:, None]  # −∇Q·u ≥ Q − κ − ∇Q·u_nom

    def h(self, obs: np.ndarray) -> np.ndarray:
        """The state-only value V(s) given as ``value`` (h ≥ 0 safe for ``sense=">="``)."""
        if self.value is None:
            raise ValueError("this CostCriticBarrier has no state-only value: build it with value=<V(s) network>")
        with torch.no_grad():
            return _numpy(self.value(torch.as_tensor(np.asarray(obs), dtype=self.dtype, device=self.device)))
