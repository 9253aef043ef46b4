"""Hydra launchers for ``python -m saferl.run -m ...`` on the engines of ``python -m saferl.bench``.

* ``hydra/launcher=saferl_local`` (the default of saferl's multiruns): a local process pool, one
  single-threaded process per core (``workers``, ``threads`` options).
* ``hydra/launcher=saferl_ray``: Ray tasks on the cluster at ``RAY_ADDRESS`` (or ``address``), or on a local
  Ray started for the sweep.

Hydra only instantiates launchers defined in the ``hydra_plugins`` namespace, hence this thin module; the
work is in `saferl.bench.hydra_launch`, the configs are ``saferl/conf/hydra/launcher/*.yaml``, and
`RegisterLaunchers` (a callback in saferl's config) registers these classes with Hydra, because Hydra's
plugin scan cannot list modules of an editable install. The dependency goes one way: this module uses
`saferl.bench.hydra_launch`, which never imports it. Nothing heavy is imported here: Hydra imports every
plugin module it finds whenever any Hydra app starts.

Why not Hydra's own ray launcher: hydra-ray-launcher 1.2.2 requires ``cloudpickle<3``, which conflicts with
the cloudpickle 3 that gymnasium uses and constraints.txt pins (pip: ResolutionImpossible), and boto3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class _SaferlLauncher(Launcher):
    engine = ""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from saferl.bench.hydra_launch import launch

        return launch(self, job_overrides, initial_job_idx)


class SaferlLocalLauncher(_SaferlLauncher):
    engine = "local"


class SaferlRayLauncher(_SaferlLauncher):
    engine = "ray"


class RegisterLaunchers(Callback):
    """A Hydra callback in saferl's config: before a multirun instantiates its launcher, make saferl's
    launchers known to Hydra (`Plugins.register`, Hydra's public API for plugins it cannot discover)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        for cls in (SaferlLocalLauncher, SaferlRayLauncher):
            Plugins.instance().register(cls)
