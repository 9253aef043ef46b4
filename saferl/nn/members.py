"""K seeds of one algorithm trained as one batched model: ``torch.func.vmap`` over the algorithm's own ``update``.

Each member is an ordinary `Algorithm` instance, built and seeded as the single run with its seed would be.
`MemberStack` stacks their parameters and buffers along a leading member axis and runs the *unchanged*
``update(batch)`` of one template instance under ``vmap``, so an algorithm file keeps reading like its paper.
Three things cannot be expressed per member inside ``vmap`` and leave it for the physical ``[K, …]`` tensors:

* the optimizer step (`saferl.algos.base.optimize`): the K losses are summed before one backward, so each
  member's gradient is its own; one Adam over stacked parameters is K independent Adams (element-wise), and
  gradient-norm clipping is computed per member;
* Polyak averaging (`saferl.nn.soft_update`): one element-wise lerp over the stacked tensors;
* random draws (`saferl.nn.draws`): member k draws from its own stream (its global torch RNG state, or its own
  copy of a generator the algorithm owns), so it sees the numbers its single run would.

Nothing else couples the members: statistics, multipliers and PID states are parameters or buffers, hence
stacked. An update that reads a value on the host (``.item()``, data-dependent Python control flow) cannot be
batched; `MemberStack` reports the algorithm by name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.func import stack_module_state, vmap
from torch.nn.utils.stateless import _reparametrize_module
from torch.utils._pytree import tree_map

from saferl.nn import draws

# vmap runs an op without a batching rule (CPQ's quantile, an in-place clamp_) member by member and says so at
# every call; the result is the same (tests/test_seeds.py), the note is noise in a run's log
warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")

_active: MemberStack | None = None  # the stack whose update is running (one at a time: a single thread)


TorchRNGState = tuple[torch.Tensor, torch.Tensor | None]  # the CPU generator's state, the CUDA device's (or None)


def torch_rng_state(cuda: bool) -> TorchRNGState:
    """torch's global random state: the CPU generator's and, on CUDA, the current device's."""
    return torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None


def set_torch_rng_state(state: TorchRNGState) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])


class NotVectorizableError(RuntimeError):
    """The algorithm's update cannot run batched over members (it reads tensors on the host)."""


def active() -> MemberStack | None:
    return _active


class _Escape(torch.autograd.Function):
    """Calls ``fn`` on the physical (member-stacked) tensors when applied under vmap; returns a dummy."""

    @staticmethod
    def forward(fn: Callable[..., None], *tensors: torch.Tensor) -> torch.Tensor:  # outside vmap: plain call
        fn(*tensors)
        return torch.zeros(())

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def vmap(info: Any, in_dims: Any, fn: Callable[..., None], *tensors: torch.Tensor) -> tuple[torch.Tensor, None]:
        fn(*tensors)
        return torch.zeros(()), None


class _PerMember(torch.autograd.Function):
    """``fn(k)`` for every member k, stacked: the batched value of a member-indexed computation."""

    @staticmethod
    def forward(fn: Callable[[int], torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        return fn(int(index))

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def vmap(
        info: Any, in_dims: Any, fn: Callable[[int], torch.Tensor], index: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        return torch.stack([fn(k) for k in range(index.shape[0])]), 0


class MemberStack:
    """The members' stacked state, one optimizer per key of the template's ``optimizers`` over it, and the
    batched update. ``sync()`` writes the stacked state back into the member instances (for logging,
    evaluation and checkpoints); ``load()`` reads it from them (after they were restored from checkpoints)."""

    def __init__(self, members: list[torch.nn.Module], rng_states: list[TorchRNGState]):
        if len(members) < 1:
            raise ValueError("a member stack needs at least one member")
        self.members, self.k = members, len(members)
        self.template = members[0]
        self.name = getattr(self.template, "name", type(self.template).__name__)
        self.rng_states = list(rng_states)  # each member's global torch RNG state (`torch_rng_state`)
        device = next(self.template.parameters()).device
        self._device_rng = device.type == "cuda"
        params, buffers = stack_module_state(members)
        names = dict(self.template.named_parameters())
        self.params = {n: p.detach().clone().requires_grad_(names[n].requires_grad) for n, p in params.items()}
        self.buffers = buffers
        self._index = torch.arange(self.k, device=device)
        self._generators = self._member_generators()
        name_of = {id(p): n for n, p in self.template.named_parameters()}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._group_names: dict[str, list[list[str]]] = {}
        for key, opt in self.template.optimizers.items():
            groups, group_names = [], []
            for group in opt.param_groups:
                group_names.append([name_of[id(p)] for p in group["params"]])
                groups.append(
                    {
                        **{h: v for h, v in group.items() if h != "params"},
                        "params": [self.params[n] for n in group_names[-1]],
                    }
                )
            self.optimizers[key] = type(opt)(groups)
            self._group_names[key] = group_names
        for opt in self.template.optimizers.values():  # the stacked copies step, never the template's
            opt._opt_called = True  # type: ignore[attr-defined]  (silences the LR scheduler's order warning)
        self.load()

    def _member_generators(self) -> dict[int, list[torch.Generator]]:
        """Generators the algorithm owns (attributes of type torch.Generator): each member has its own."""
        gens: dict[int, list[torch.Generator]] = {}
        for name, value in vars(self.template).items():
            if isinstance(value, torch.Generator):
                gens[id(value)] = [getattr(m, name) for m in self.members]
        return gens

    # -- the batched update ---------------------------------------------------------------------------
    def _body(self, state: dict[str, torch.Tensor], batch: Any, index: torch.Tensor) -> dict[str, torch.Tensor]:
        self._member_index = index
        with _reparametrize_module(self.template, state):
            return self.template.update(batch)

    def update(self, batches: list[Any]) -> dict[str, torch.Tensor]:
        """One update of every member on its own batch; metrics come back ``[K]`` per name."""
        global _active
        batch = tree_map(lambda *xs: None if xs[0] is None else torch.stack(xs), *batches)
        dims = tree_map(lambda x: None if x is None else 0, batch)
        _active, draws._router = self, self._route_draw
        try:
            batched = vmap(self._body, in_dims=(0, dims, 0), randomness="different")
            return batched({**self.params, **self.buffers}, batch, self._index)
        except RuntimeError as err:
            if "vmap" in str(err) and ("item" in str(err) or "data-dependent" in str(err)):
                raise NotVectorizableError(
                    f"{self.name} cannot train several seeds as one batched model: its update reads a tensor on "
                    f"the host ({err}); run one process per seed (seed=<k>) instead"
                ) from None
            raise
        finally:
            _active, draws._router = None, None

    # -- what leaves vmap ---------------------------------------------------------------------------
    def owns(self, optimizer: torch.optim.Optimizer) -> bool:
        return optimizer in self.template.optimizers.values()

    def step(
        self, optimizer: torch.optim.Optimizer, losses: Iterable[torch.Tensor], max_grad_norm: float | None
    ) -> None:
        """The members' step for the template optimizer ``optimizer``; each loss is ``[K]``, one per member, and
        several losses accumulate their gradients (`saferl.algos.base.optimize_accumulated`)."""
        key = next(k for k, o in self.template.optimizers.items() if o is optimizer)
        stacked = self.optimizers[key]
        params = [p for g in stacked.param_groups for p in g["params"] if p.requires_grad]

        def start() -> None:
            for group, template_group in zip(stacked.param_groups, optimizer.param_groups, strict=True):
                group["lr"] = template_group["lr"]  # schedulers step the template's optimizer
            stacked.zero_grad(set_to_none=True)

        def finish() -> None:
            if max_grad_norm is not None:
                clip_per_member(params, max_grad_norm)
            stacked.step()

        _Escape.apply(start)
        for loss in losses:
            _Escape.apply(lambda physical_loss: physical_loss.sum().backward(inputs=params), loss)
        _Escape.apply(finish)

    def lerp(self, targets: list[torch.Tensor], sources: list[torch.Tensor], tau: float) -> None:
        n = len(targets)
        _Escape.apply(lambda *ts: torch._foreach_lerp_(list(ts[:n]), list(ts[n:]), tau), *targets, *sources)

    def _route_draw(self, fn: Callable[[torch.Generator | None], torch.Tensor], generator: torch.Generator | None):
        if generator is not None:
            gens = self._generators.get(id(generator))
            if gens is None:
                raise NotVectorizableError(
                    f"{self.name}: a random draw uses a generator that is not an attribute of the algorithm; "
                    "member streams cannot be told apart"
                )
            return _PerMember.apply(lambda k: fn(gens[k]), self._member_index)

        def member_draw(k: int) -> torch.Tensor:
            with self.member_rng(k):
                return fn(None)

        return _PerMember.apply(member_draw, self._member_index)

    @contextmanager
    def member_rng(self, k: int) -> Iterator[None]:
        """Run with member k's global torch RNG state (CPU, and the device's on CUDA) and keep what it consumed."""
        outer = torch_rng_state(self._device_rng)
        set_torch_rng_state(self.rng_states[k])
        try:
            yield
        finally:
            self.rng_states[k] = torch_rng_state(self._device_rng)
            set_torch_rng_state(outer)

    # -- members ↔ stack ------------------------------------------------------------------------------
    @torch.no_grad()
    def sync(self) -> None:
        """Copy the stacked parameters, buffers and optimizer states into the member instances."""
        for k, m in enumerate(self.members):
            for n, p in m.named_parameters():
                p.copy_(self.params[n][k])
            for n, b in m.named_buffers():
                b.copy_(self.buffers[n][k])
            for key, opt in m.optimizers.items():
                for names, group in zip(self._group_names[key], opt.param_groups, strict=True):
                    for n, p in zip(names, group["params"], strict=True):
                        opt.state[p] = _slice_state(self.optimizers[key].state.get(self.params[n], {}), k)
                for group, template_group in zip(
                    opt.param_groups, self.template.optimizers[key].param_groups, strict=True
                ):
                    group["lr"] = template_group["lr"]
            m.num_updates = self.template.num_updates
            for key, sched in m.schedulers.items():
                sched.load_state_dict(self.template.schedulers[key].state_dict())

    @torch.no_grad()
    def load(self) -> None:
        """Read the stacked state from the member instances (they must all be at the same update)."""
        counts = {int(m.num_updates) for m in self.members}
        if len(counts) > 1:
            raise ValueError(f"members are at different updates {sorted(counts)}; a stack trains them in lock-step")
        for n, p in self.params.items():
            p.copy_(torch.stack([dict(m.named_parameters())[n] for m in self.members]))
        for n, b in self.buffers.items():
            b.copy_(torch.stack([dict(m.named_buffers())[n] for m in self.members]))
        for key, stacked in self.optimizers.items():
            for names in self._group_names[key]:
                for n in names:
                    states = []
                    for m in self.members:
                        p = dict(m.named_parameters())[n]
                        states.append(m.optimizers[key].state.get(p, {}))
                    if any(states):
                        stacked.state[self.params[n]] = _stack_state(states)
            for group, template_group in zip(
                stacked.param_groups, self.template.optimizers[key].param_groups, strict=True
            ):
                group["lr"] = template_group["lr"]


def _slice_state(state: dict[str, Any], k: int) -> dict[str, Any]:
    # Adam's "step" is a scalar tensor shared by the members (they step together); moments are per member.
    return {
        n: (v[k].clone() if torch.is_tensor(v) and v.ndim > 0 else (v.clone() if torch.is_tensor(v) else v))
        for n, v in state.items()
    }


def _stack_state(states: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, v in states[0].items():
        if torch.is_tensor(v) and v.ndim > 0:
            out[n] = torch.stack([s[n] for s in states])
        else:
            out[n] = v.clone() if torch.is_tensor(v) else v
    return out


@torch.no_grad()
def clip_per_member(params: list[torch.Tensor], max_norm: float) -> None:
    """`torch.nn.utils.clip_grad_norm_` for each member of stacked parameters ``[K, …]`` separately."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    k = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), dim=1) for g in grads])  # [P, K]
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(k, *([1] * (g.ndim - 1))).to(g.dtype))
