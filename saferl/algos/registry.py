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
