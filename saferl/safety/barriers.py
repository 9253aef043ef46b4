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

from saferl.errors import SaferlError


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


class BarrierSignatureError(SaferlError, TypeError):
    """A barrier's h, f, g or grad_h cannot be called with states, or returns an unusable shape."""


class BarrierArgumentError(SaferlError, ValueError):
    """A barrier argument with a bad value (a `ValueError` too, as these were before)."""


# The call signatures ControlAffineCBF accepts, named in its errors.
_SIGNATURES = {
    "h": "h(x[d]) -> float or [k] (one state), or h(x[B, d]) -> [B] or [B, k] (a batch)",
    "f": "f(x[d]) -> [d] (one state), or f(x[B, d]) -> [B, d] (a batch)",
    "g": "g(x[d]) -> [d, n], or [d] when n = 1 (one state), or g(x[B, d]) -> [B, d, n] (a batch)",
    "grad_h": "grad_h(x[d]) -> [d] or [k, d] (one state), or grad_h(x[B, d]) -> [B, d] or [B, k, d] (a batch)",
}
# Central-difference step ε^(1/3)·max(1, |x_i|): it balances the O(step²) truncation error against the
# O(ε/step) rounding error (Nocedal & Wright, Numerical Optimization, §8.1).
_FD_EPS = float(np.finfo(np.float64).eps) ** (1.0 / 3.0)


class _Unusable(Exception):
    """A probe call's output that cannot be used (internal: the probe tries the next way of calling)."""


class _Call:
    """How one user callable is evaluated on a batch of states: with torch tensors or numpy arrays, once on
    the batch or once per state (found by `_probe` on first use)."""

    def __init__(self, fn: Callable[[Any], Any], use_torch: bool, per_state: bool):
        self.fn, self.use_torch, self.per_state = fn, use_torch, per_state

    def tensor(self, xt: torch.Tensor) -> torch.Tensor:
        """Torch output on a tensor batch; per-state outputs are stacked so autograd sees one graph."""
        if not self.per_state:
            return self.fn(xt)
        return torch.stack([torch.as_tensor(self.fn(xt[i])) for i in range(len(xt))])

    def array(self, x: np.ndarray, dtype: torch.dtype, device: torch.device) -> np.ndarray:
        """float64 numpy output on a numpy batch (converted to a tensor first when the callable wants torch)."""
        if self.use_torch:
            with torch.no_grad():
                xt = torch.as_tensor(x, dtype=dtype, device=device)
                out = self.fn(xt) if not self.per_state else [_numpy(self.fn(xt[i])) for i in range(len(xt))]
        else:
            out = self.fn(x) if not self.per_state else [_numpy(self.fn(row)) for row in x]
        return _numpy(np.stack(out) if self.per_state else out)


def _probe_states(x: np.ndarray) -> np.ndarray:
    """Two distinct states ``[2, d]``: the batch's first two rows, or its first row and a nudged copy."""
    if len(x) > 1 and not np.array_equal(x[0], x[1]):
        return x[:2].copy()
    # a nudge of a different size along each axis, so that a per-state function which mixes the rows of a
    # batch (x[0] read as the first state) gives values that differ from its per-state values
    nudge = 0.01 * np.arange(1, x.shape[1] + 1) * np.maximum(1.0, np.abs(x[0]))
    return np.stack([x[0], x[0] + nudge])


def _probe(
    name: str,
    fn: Callable[[Any], Any],
    x: np.ndarray,
    torch_first: bool,
    needs_grad: bool,
    dtype: torch.dtype,
    device: torch.device,
    size: Callable[[int], bool],
    hint: str = "",
) -> _Call:
    """Find how ``fn`` takes states: call it on two states as a batch ``[2, d]`` and on each state ``[d]``.

    It is batched when the batch call returns a leading axis of 2 whose rows equal the per-state outputs (or
    when only the batch call works); per-state when the per-state calls work. ``size`` says which numbers of
    values one state's output may have: it rules out a per-state reading of a batched function that also runs
    on one state (``eye(2).expand(len(x), 2, 2)``) and the reverse. The framework preferred by
    ``torch_first`` is tried first, then the other; with ``needs_grad`` a torch output must carry autograd.
    """
    probe = _probe_states(x)
    rtol = 1e-4 if dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-7
    tried: list[str] = []
    for use_torch in (torch_first, not torch_first):

        def run(states: np.ndarray, use_torch: bool = use_torch) -> np.ndarray:
            if not use_torch:
                return _numpy(fn(states.copy()))
            xt = torch.as_tensor(states, dtype=dtype, device=device)
            if not needs_grad:
                with torch.no_grad():
                    return _numpy(fn(xt))
            with torch.enable_grad():
                out = fn(xt.requires_grad_(True))
            if not (isinstance(out, torch.Tensor) and out.requires_grad):
                raise _Unusable(f"returned {type(out).__name__} without a torch autograd graph")
            return _numpy(out)

        kind = "torch tensors" if use_torch else "numpy arrays"
        rows = batch = None
        try:
            rows = [run(state) for state in probe]
            if rows[0].shape != rows[1].shape:
                raise _Unusable(f"returned shapes {rows[0].shape} and {rows[1].shape} for two states")
            if not size(rows[0].size):
                raise _Unusable(f"returned shape {rows[0].shape}, not the size of one state's output")
        except Exception as err:  # noqa: BLE001  (any failure means: not this way; reported if none works)
            rows = None
            tried.append(f"one state as {kind}: {type(err).__name__}: {err}")
        try:
            batch = run(probe)
        except Exception as err:  # noqa: BLE001
            tried.append(f"a batch as {kind}: {type(err).__name__}: {err}")
        if batch is not None and batch.ndim >= 1 and batch.shape[0] == 2 and size(batch[0].size):
            if rows is None:
                return _Call(fn, use_torch, per_state=False)
            want = np.stack(rows)
            scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0)))
            if batch.shape == want.shape and np.allclose(batch, want, rtol=rtol, atol=rtol * scale, equal_nan=True):
                return _Call(fn, use_torch, per_state=False)
        elif batch is not None:
            tried.append(f"a batch of 2 as {kind}: returned shape {batch.shape}, not [2, ...] of that size")
        if rows is not None:
            return _Call(fn, use_torch, per_state=True)
    raise BarrierSignatureError(
        f"ControlAffineCBF: cannot call {name} on states of dimension {x.shape[1]}. Expected {_SIGNATURES[name]}, "
        f"on numpy arrays or torch tensors.{hint} Tried: " + "; ".join(tried)
    )


class ControlAffineCBF(Barrier):
    """Control barrier function for ṡ = f(s) + g(s)u with ``h(s) ≥ 0`` safe.

    Args:
        h: the barrier, one state ``x [d] -> float`` or ``[k]`` (k barriers, one constraint row each), or
            batched ``x [B, d] -> [B]`` or ``[B, k]``; numpy or torch. Learned barriers are torch modules
            (e.g. V-OCBF's V_c). ∇h comes from ``grad_h`` when given, else from torch autograd when h
            returns a tensor with an autograd graph for a tensor input, else from central differences on
            numpy states: ∂h/∂x_i ≈ (h(x + δ_i e_i) − h(x − δ_i e_i)) / 2δ_i with δ_i = ε^(1/3)·max(1, |x_i|),
            ε the float64 machine epsilon (δ ≈ 6e-6 at unit scale; error O(δ²) plus rounding O(ε/δ)), which
            costs 2d calls of h per state. Pass ``grad_h`` for an exact gradient or a costly h.
        f: drift, ``x [d] -> [d]`` or ``x [B, d] -> [B, d]`` (lists and numpy arrays are fine).
        g: control matrix, ``x [d] -> [d, n]`` (or ``[d]`` for one action, n = 1) or ``x [B, d] -> [B, d, n]``.
        alpha: the linear class-K rate α.
        form: ``"continuous"``: ∇h·f + ∇h·g·u + α·h ≥ 0 (Ames et al. 2017; V-OCBF's filter).
            ``"discrete"``: h(s + (f + g u)·dt) ≥ (1 − α·dt)·h(s), the Euler-step condition, linearised in u
            around u_nom (exact when h is affine). Needs ``dt`` with 0 < α·dt ≤ 1.
        grad_h: optional ∇h, ``x [d] -> [d]`` or ``[k, d]``, or ``x [B, d] -> [B, d]`` or ``[B, k, d]``; then
            h, f, g are called with numpy arrays first (the fastest path for analytic barriers).
        device, dtype: where torch evaluates; default: those of the first torch module among h, f, g, else
            CPU float64.

    How each callable is called is found on first use, once: it is called on two states as a batch
    ``[2, d]`` and on each state ``[d]``; it counts as batched when the batch call returns a leading axis of 2
    whose rows equal the per-state results (or only the batch call works), else it is called once per state.
    Torch tensors are tried first (numpy first with ``grad_h``), then the other. Torch modules (and their
    bound methods) are not probed: they are called on the batch as they are. A callable that works in none
    of these ways raises `BarrierSignatureError` naming the expected signatures.

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
            raise BarrierArgumentError(f"form must be 'continuous' or 'discrete', got {form!r}")
        if not alpha > 0:
            raise BarrierArgumentError(
                f"alpha must be > 0, got {alpha}: it is the class-K gain of ḣ ≥ −α·h; use e.g. alpha=1.0 "
                "(larger lets the state approach the boundary faster)"
            )
        if form == "discrete":
            if dt is None or not dt > 0:
                raise BarrierArgumentError(
                    f"the discrete-time CBF needs the env's time step dt > 0, got dt={dt}; pass dt=<seconds per step>"
                )
            if alpha * dt > 1.0:
                raise BarrierArgumentError(
                    f"the discrete-time CBF needs alpha·dt <= 1, got alpha={alpha}, dt={dt}; use alpha <= {1 / dt:g}"
                )
        for name, fn in (("h", h), ("f", f), ("g", g), ("grad_h", grad_h)):
            if fn is not None and not callable(fn):
                raise BarrierSignatureError(
                    f"ControlAffineCBF: {name} must be a callable, {_SIGNATURES[name]}; got {type(fn).__name__}"
                )
        self.h_fn, self.f_fn, self.g_fn, self.grad_fn = h, f, g, grad_h
        self.alpha, self.form, self.dt = float(alpha), form, dt
        self.device, self.dtype = _device_dtype((h, f, g), device, dtype)
        self._calls: dict[str, _Call] = {}  # how h, f, g, grad_h are called, found on first use

    @classmethod
    def for_task(cls, task: Any, alpha: float = 1.0, form: str = "continuous", **kwargs: Any) -> ControlAffineCBF:
        """The analytic CBF of a saferl task with known dynamics (a `TaskSpec` or its Hydra name)."""
        from saferl.envs import get_task

        spec = get_task(task) if isinstance(task, str) else task
        if spec.barrier is None or spec.drift is None or spec.control_matrix is None:
            raise ValueError(f"task {spec.name} has no analytic barrier and control-affine dynamics")
        return cls(spec.barrier, spec.drift, spec.control_matrix, alpha=alpha, form=form, dt=spec.dt, **kwargs)

    # -- how the callables are called --------------------------------------------------------------
    def _call(self, name: str, x: np.ndarray, n: int = 1) -> _Call:
        call = self._calls.get(name)
        if call is None:
            fn = {"h": self.h_fn, "f": self.f_fn, "g": self.g_fn, "grad_h": self.grad_fn}[name]
            d = x.shape[1]
            # how many values one state's output may have (n: the number of actions)
            size = {
                "h": lambda m: m >= 1,
                "f": lambda m: m == d,
                "g": lambda m: m == d * n,
                "grad_h": lambda m: m >= d and m % d == 0,
            }[name]
            numpy_first = self.grad_fn is not None
            if _module_of(fn) is not None:  # learned: batched torch, as always (probing would run dropout)
                call = _Call(fn, use_torch=True, per_state=False)
            elif name == "h" and not numpy_first:
                try:  # ∇h by autograd when h is a torch function
                    call = _probe("h", fn, x, True, True, self.dtype, self.device, size)
                except BarrierSignatureError:  # else central differences on numpy states
                    hint = (
                        " (∇h comes from torch autograd, from central differences on numpy states, or from "
                        f"grad_h: {_SIGNATURES['grad_h']}.)"
                    )
                    call = _probe("h", fn, x, False, False, self.dtype, self.device, size, hint)
            else:
                call = _probe(name, fn, x, not numpy_first, False, self.dtype, self.device, size)
            self._calls[name] = call
        return call

    def _array(self, name: str, x: np.ndarray, n: int = 1) -> np.ndarray:
        return self._call(name, x, n).array(x, self.dtype, self.device)

    def _shaped(self, name: str, out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if out.size != int(np.prod(shape)) or (out.ndim == len(shape) and out.shape != shape):
            per = "once per state" if self._calls[name].per_state else "on the batch"
            raise BarrierSignatureError(
                f"ControlAffineCBF: {name}, called {per}, gave {out.size} values (shape {out.shape}) for "
                f"{shape[0]} states; expected {_SIGNATURES[name]} (here shape {shape})"
            )
        return out.reshape(shape)

    # -- evaluation --------------------------------------------------------------------------------
    def _value_and_grad(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """h ``[B, k]`` and ∇h ``[B, k, d]`` at states x ``[B, d]``."""
        call = self._call("h", x)
        if self.grad_fn is not None:
            hv = self._array("h", x).reshape(len(x), -1)
            grad = self._array("grad_h", x)
            return hv, self._shaped("grad_h", grad, (len(x), hv.shape[1], x.shape[1]))
        if not call.use_torch:
            hv = self._array("h", x).reshape(len(x), -1)
            return hv, self._central_difference(x, hv.shape[1])
        xt = torch.as_tensor(x, dtype=self.dtype, device=self.device).requires_grad_(True)
        with torch.enable_grad():
            hv = call.tensor(xt)
            hk = hv.reshape(len(x), -1)
            k = hk.shape[1]
            # h of sample i depends on x_i only, so the gradient of the batch sum is the per-sample gradient;
            # autograd.grad (not backward) leaves the parameters' .grad of learned barriers untouched.
            grads = [torch.autograd.grad(hk[:, i].sum(), xt, retain_graph=i < k - 1)[0] for i in range(k)]
        return _numpy(hk), _numpy(torch.stack(grads, dim=1))

    def _central_difference(self, x: np.ndarray, k: int) -> np.ndarray:
        """∇h ``[B, k, d]`` by central differences (step: see the class docstring), all 2d shifts in one call."""
        batch, d = x.shape
        step = _FD_EPS * np.maximum(1.0, np.abs(x))
        shift = np.eye(d) * step[:, None, :]  # [B, d (which axis), d]
        plus, minus = x[:, None, :] + shift, x[:, None, :] - shift
        # divide by the representable width x⁺ − x⁻, not 2δ: the rounding of x ± δ then cancels
        width = np.diagonal(plus - minus, axis1=1, axis2=2)  # [B, d]
        shifted = np.concatenate([plus, minus], axis=1).reshape(batch * 2 * d, d)
        hv = self._array("h", shifted).reshape(batch, 2, d, k)
        return np.swapaxes((hv[:, 0] - hv[:, 1]) / width[:, :, None], 1, 2)

    def _dynamics(self, x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        batch, d = x.shape
        f = self._shaped("f", self._array("f", x), (batch, d))
        return f, self._shaped("g", self._array("g", x, n), (batch, d, n))

    def h(self, obs: np.ndarray) -> np.ndarray:
        """h at observations ``[B, d]`` (``[B]`` or ``[B, k]``, as h returns it), or at one state ``[d]``."""
        x = np.asarray(obs, dtype=np.float64)
        if x.ndim == 1:
            return self.h(x[None])[0]
        return self._array("h", x.reshape(len(x), -1))

    def constraints(self, obs: np.ndarray, u_nom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(obs, dtype=np.float64).reshape(len(u_nom), -1)
        u_nom = np.asarray(u_nom, dtype=np.float64)
        f, g = self._dynamics(x, u_nom.shape[-1])
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
