"""The work of the ``saferl_local`` / ``saferl_ray`` Hydra launchers (``hydra_plugins/saferl_launcher``).

The launcher classes and their registration live in ``hydra_plugins.saferl_launcher`` and call `launch`;
nothing here imports them back (one-way dependency).

Each Hydra job runs in a worker of the bench engines (`saferl.bench.engines`): the sweep's config, the task
function and Hydra's global state travel to the worker with cloudpickle, as in Hydra's joblib launcher, and
the worker calls Hydra's own ``run_job``. A failing job (including one that calls ``sys.exit``, which
``python -m saferl.run`` does for user errors) is returned as a failed ``JobReturn``; the other jobs go on
and Hydra reports the failure at the end of the sweep.

Parallel jobs do not draw progress bars (``progress=false`` unless a job sets ``progress`` explicitly):
several rich bars in one terminal overwrite each other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def execute_job(payload: bytes, threads: int) -> bytes:
    """Run one Hydra job in a worker process; returns the pickled ``JobReturn``."""
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
    from omegaconf import open_dict

    from saferl.bench.worker import limit_threads

    idx, overrides, hydra_context, config, task_function, singleton_state = cloudpickle.loads(payload)
    limit_threads(threads)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
        explicit = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
        if "progress" in sweep_config and "progress" not in explicit:
            sweep_config.progress = False
    HydraConfig.instance().set_config(sweep_config)
    try:
        ret = run_job(
            hydra_context=hydra_context,
            config=sweep_config,
            task_function=task_function,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except SystemExit as exit_:  # the task printed its error and exited: a failed job, not a dead worker
        ret = JobReturn(overrides=list(overrides), cfg=sweep_config, hydra_cfg=sweep_config)
        ret.status = JobStatus.FAILED
        ret.return_value = JobFailedError(f"job #{idx} ({' '.join(overrides)}) exited with status {exit_.code}")
        ret.task_name = sweep_config.hydra.job.name
    return cloudpickle.dumps(ret)


class JobFailedError(RuntimeError):
    pass


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals

    from saferl.bench.engines import LocalEngine, RayEngine

    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    opts = launcher.options
    threads = int(opts.get("threads") or 1)
    if launcher.engine == "ray":
        engine: Any = RayEngine(address=opts.get("address"), threads=threads, num_cpus=opts.get("num_cpus"))
    else:
        engine = LocalEngine(workers=opts.get("workers"), threads=threads)
    singleton_state = Singleton.get_state()
    n = len(job_overrides)
    print(f"[saferl] {n} job(s) on {engine.describe()}; sweep record in {sweep_dir}", flush=True)
    futures = {}
    try:
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            payload = cloudpickle.dumps(
                (idx, list(overrides), launcher.hydra_context, config, launcher.task_function, singleton_state)
            )
            futures[engine.submit(execute_job, payload, threads)] = i
        results: list[Any] = [None] * n
        start, done = time.time(), 0
        for fut in as_completed(futures):
            i = futures[fut]
            overrides = list(job_overrides[i])
            try:
                ret = cloudpickle.loads(fut.result())
            except Exception as err:  # the worker died (killed, out of memory): this job failed, not the sweep
                ret = JobReturn(overrides=overrides, cfg=config, hydra_cfg=config)
                ret.status = JobStatus.FAILED
                ret.return_value = JobFailedError(f"worker of job #{initial_job_idx + i} died: {err}")
            results[i] = ret
            done += 1
            status = "done" if ret.status == JobStatus.COMPLETED else "FAILED"
            print(
                f"[saferl] [{done}/{n}] {status} #{initial_job_idx + i}: {' '.join(filter_overrides(overrides))} "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )
    finally:
        engine.shutdown()
    return results
