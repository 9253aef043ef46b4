"""CLI name → algorithm class."""

from __future__ import annotations

from typing import TYPE_CHECKING

from saferl.errors import SaferlError

if TYPE_CHECKING:
    from saferl.algos.base import Algorithm

REGISTRY: dict[str, type[Algorithm]] = {}


class UnknownAlgorithmError(SaferlError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str):
    """Class decorator: make an algorithm available as ``algo=<name>``."""

    def wrap(cls):
        if name in REGISTRY:
            raise ValueError(f"algorithm name {name!r} is registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def get_algorithm(name: str) -> type[Algorithm]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownAlgorithmError(
            f"unknown algorithm {name!r}; valid algorithms: {', '.join(sorted(REGISTRY))}"
        ) from None


def no_online_phase_message(name: str) -> str:
    """Why ``online_steps > 0`` is refused for an offline-only algorithm, and which algorithms have a phase."""
    online = sorted(n for n, c in REGISTRY.items() if c.online_mode is not None)
    return f"algorithm {name!r} has no online phase; offline→online algorithms are {', '.join(online)}"
