"""`python -m saferl.run algo=<name> env=<name> [seed= steps= device= cost_limit= ...]`: train, evaluate,
write the run directory."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import saferl.algos  # noqa: F401  (stores the algo=<name> configs in Hydra's ConfigStore before main composes)
from saferl.cli import setup_logging, user_errors
from saferl.runs import run_experiment


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    setup_logging()
    with user_errors():
        run_experiment(cfg)


if __name__ == "__main__":
    main()
