"""`python -m saferl.run algo=<name> env=<name> [seed= steps= device= cost_limit= ...]`: train, evaluate,
write the run directory.

Where the run directory goes: ``run_dir=<dir>``, or, as in every Hydra app, ``hydra.run.dir=<dir>`` (the same
thing; ``hydra.sweep.dir=<dir>`` in a multirun puts job ``n`` in ``<dir>/<n>``, or in ``<dir>/<subdir>`` with
``hydra.sweep.subdir=``); with none of them, ``runs_root/<env>/<algo>/seed<k>-<time>``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import saferl.algos  # noqa: F401  (stores the algo=<name> configs in Hydra's ConfigStore before main composes)
from saferl.cli import setup_logging, user_errors
from saferl.runs import SaferlError, run_experiment


def hydra_output_dir() -> str | None:
    """The directory the user gave Hydra for this job (``hydra.run.dir``, or ``hydra.sweep.dir`` /
    ``hydra.sweep.subdir`` in a multirun) on the command line; None when they left Hydra's directories at
    saferl's defaults (which write nothing: the run directory is ``run_dir`` / ``runs_root``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    given = {o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.hydra}
    out = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN:
        if "hydra.sweep.subdir" in given:
            return str(out)
        if "hydra.sweep.dir" in given:  # Hydra's own default subdir is the job number: one run dir per job
            return str(out / str(hc.job.num))
        return None
    return str(out) if "hydra.run.dir" in given else None


def apply_hydra_dir(cfg: DictConfig) -> None:
    """``hydra.run.dir=<dir>`` (or the sweep's job directory) becomes the run directory, as ``run_dir=<dir>``."""
    out = hydra_output_dir()
    if out is None:
        return
    if cfg.run_dir and Path(cfg.run_dir).resolve() != Path(out).resolve():
        raise SaferlError(
            f"run_dir={cfg.run_dir} and Hydra's output directory {out} (hydra.run.dir / hydra.sweep.dir) disagree; "
            "they name the same thing: give one of them"
        )
    cfg.run_dir = out


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    setup_logging()
    with user_errors():
        apply_hydra_dir(cfg)
        run_experiment(cfg)


if __name__ == "__main__":
    main()
