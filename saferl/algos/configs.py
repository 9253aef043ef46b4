"""Hydra's ``algo`` config group, generated from the algorithms' config dataclasses.

Each algorithm's defaults are written once, in its ``Config`` dataclass; importing `saferl.algos` stores
one node per `REGISTRY` name in Hydra's ConfigStore (group ``algo``), so ``algo=<name>`` composes
``{name: <name>, **defaults}``. Presets (``conf/algo_preset/cpu_<name>.yaml``) and ``algo.<key>=``
overrides merge over that node as they did over the YAML files it replaces.

The nodes are plain dicts, not the dataclasses themselves: a typed node would convert values on the way
in (``algo.reward_scale=10`` becomes ``10.0``), which changes a recorded ``config.yaml`` and the run hashes
of existing benchmark suites. Keys and values are checked where they always were, in
`Algorithm.make_config`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from saferl.algos.base import AlgoConfig

GROUP = "algo"


def algo_defaults(name: str, config_cls: type[AlgoConfig]) -> dict[str, Any]:
    """The ``algo`` node for ``algo=<name>``: ``name`` first, then the dataclass's fields in their order (the
    order a run's config.yaml records), tuples as lists (what OmegaConf holds)."""
    node: dict[str, Any] = {"name": name}
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise TypeError(f"{config_cls.__name__}.{f.name} has no default; `algo={name}` needs one")
        node[f.name] = list(value) if isinstance(value, tuple) else value
    return node


def store_algo_configs() -> None:
    """Store every registered algorithm's defaults in Hydra's ConfigStore; idempotent. Runs when
    `saferl.algos` is imported, i.e. before any entry point or test composes ``conf/config.yaml``."""
    from hydra.core.config_store import ConfigStore

    from saferl.algos.registry import REGISTRY

    store = ConfigStore.instance()
    for name, cls in REGISTRY.items():
        store.store(group=GROUP, name=name, node=algo_defaults(name, cls.Config), provider="saferl")
