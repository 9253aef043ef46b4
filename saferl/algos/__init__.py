"""Algorithms: one file each, registered under their CLI name in `REGISTRY`."""

from saferl.algos import (
    bc,  # noqa: F401  (registers bc_all, bc_safe)
    bcq_lag,  # noqa: F401
    calql,  # noqa: F401  (registers calql, sac_ft)
    cdsa,  # noqa: F401
    cdt,  # noqa: F401
    coptidice,  # noqa: F401
    cpq,  # noqa: F401
    cql,  # noqa: F401
    edac,  # noqa: F401
    famo2o,  # noqa: F401
    fdvl,  # noqa: F401  (registers fdvl, xql)
    fisor,  # noqa: F401  (registers fisor, fisor_cpu)
    hnpg,  # noqa: F401
    iql,  # noqa: F401
    parl,  # noqa: F401  (registers parl, parl_safe)
    recoil,  # noqa: F401
    ro2o,  # noqa: F401
    sac_n,  # noqa: F401
    td3bc,  # noqa: F401
    vocbf,  # noqa: F401
)
from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, O2OConfig
from saferl.algos.configs import store_algo_configs
from saferl.algos.registry import REGISTRY, UnknownAlgorithmError, get_algorithm, register

store_algo_configs()  # Hydra's `algo` group (algo=<name>): each algorithm's dataclass defaults

__all__ = [
    "AlgoConfig",
    "AlgoContext",
    "Algorithm",
    "O2OConfig",
    "REGISTRY",
    "UnknownAlgorithmError",
    "get_algorithm",
    "register",
]
