"""Random draws inside an algorithm's ``update``, routed per member when K seeds train as one batched model.

In a plain run these are the torch calls they wrap (``torch.randn_like``, ``torch.rand``, …): same numbers from
the same random stream (the global one, or the ``generator`` given). Under `saferl.nn.members.MemberStack`
(``vmap`` over the update) each member's draw comes from that member's own stream instead, so member k sees
exactly the numbers the single run with ``seed=k`` would have drawn. Algorithms call these instead of the torch
functions wherever ``update`` draws noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Set by `saferl.nn.members` while a member stack runs an update: routes ``fn(generator)`` to every member.
_router: Callable[[Callable[[torch.Generator | None], torch.Tensor], torch.Generator | None], torch.Tensor] | None = (
    None
)


def draw(
    fn: Callable[[torch.Generator | None], torch.Tensor], generator: torch.Generator | None = None
) -> torch.Tensor:
    """``fn(generator)``, or, inside a member stack, one ``fn`` per member on that member's stream."""
    if _router is None:
        return fn(generator)
    return _router(fn, generator)


def routed() -> bool:
    """Whether draws are being routed per member (a member stack's update is running)."""
    return _router is not None


def _empty_like(x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A maker of ``torch.empty_like(x)``: same shape, dtype, device and memory layout. A random fill follows
    memory order, so a draw that replays one on ``empty_like(x)`` needs x's layout, not just its shape."""
    shape, dtype, device = tuple(x.shape), x.dtype, x.device
    stride = torch.empty_like(torch.empty_strided(shape, x.stride(), device="meta")).stride()
    return lambda: torch.empty_strided(shape, stride, dtype=dtype, device=device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    if generator is None:
        if _router is None:
            return torch.randn_like(x)
        empty = _empty_like(x)
        return draw(lambda g: empty().normal_())  # torch.randn_like is empty_like(x).normal_()
    shape, dtype, device = tuple(x.shape), x.dtype, x.device
    return draw(lambda g: torch.randn(shape, dtype=dtype, device=device, generator=g), generator)


def rand(*shape: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform [0, 1) of ``shape`` with ``like``'s dtype and device."""
    dtype, device = like.dtype, like.device
    return draw(lambda g: torch.rand(shape, dtype=dtype, device=device, generator=g), generator)


def randn(*shape: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal of ``shape`` with ``like``'s dtype and device."""
    dtype, device = like.dtype, like.device
    return draw(lambda g: torch.randn(shape, dtype=dtype, device=device, generator=g), generator)


def randint(high: int, *shape: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    return draw(lambda g: torch.randint(0, high, shape, device=device, generator=g), generator)


def bernoulli_mask(x: torch.Tensor, keep: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A 0/1 mask shaped like ``x`` that keeps each entry with probability ``keep``."""
    shape, dtype, device = tuple(x.shape), x.dtype, x.device
    return draw(lambda g: torch.empty(shape, dtype=dtype, device=device).bernoulli_(keep, generator=g), generator)


def rsample_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``Normal(loc, scale).rsample()``: ``loc + ε·scale`` with ε from the global stream (same numbers)."""
    shape = torch.broadcast_shapes(loc.shape, scale.shape)
    if _router is None:
        eps = torch.empty(shape, dtype=loc.dtype, device=loc.device).normal_()
    else:
        dtype, device = loc.dtype, loc.device
        eps = draw(lambda g: torch.empty(shape, dtype=dtype, device=device).normal_(generator=g))
    return loc + eps * scale


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``; inside a member stack each member draws its mask from its own stream."""
    if _router is None or not training or p <= 0.0:
        return F.dropout(x, p, training)
    # F.dropout(x) multiplies x by a scaled keep-mask drawn into empty_like(x): F.dropout of ones laid out like x
    # is that mask (the same draws, the same numbers)
    empty = _empty_like(x)
    return x * draw(lambda g: F.dropout(empty().fill_(1.0), p, True))


class Dropout(nn.Dropout):
    """`torch.nn.Dropout` whose mask is drawn by `dropout` (per member inside a member stack); never in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
