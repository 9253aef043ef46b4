"""What a worker process does with one run: train it (or resume it, or return its stored result), never raise.

The same function runs in a local process pool and in a Ray task. It writes only inside the run's own
directory: ``bench.json`` (state: running / finished / failed, with host, pid, times and the error) and
``bench.log`` (everything the run prints), next to what `saferl.runs` writes there.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_FILE = "bench.json"
LOG_FILE = "bench.log"


def limit_threads(threads: int) -> None:
    """One process per core with one thread each: the measured best total throughput on 2-core machines."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


@contextlib.contextmanager
def _dataset_lock() -> Iterator[None]:
    """Serialise dataset builds: two runs needing the same missing dataset must not both build it."""
    from saferl.data import minari_io

    root = minari_io.datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".saferl-build.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    from saferl.runs import write_json_atomic

    write_json_atomic(run_dir / STATE_FILE, state)


def execute_run(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (a `RunSpec` as a dict: ``config``, ``run_dir``, ``threads``, ``attempt``); return its outcome.

    Any exception becomes ``{"status": "failed", "error": ...}``: one failing run never stops a suite.
    """
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    state: dict[str, Any] = {
        "state": "running",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "attempt": job.get("attempt", 1),
        "started": started,
        "command": job.get("command"),
    }
    _write_state(run_dir, state)
    outcome: dict[str, Any] = {"key": job["key"], "status": "failed", "result": None, "error": None}
    with open(run_dir / LOG_FILE, "a", buffering=1) as log_fh:
        handler = logging.StreamHandler(log_fh)
        handler.setFormatter(logging.Formatter("[saferl] %(message)s"))
        logger = logging.getLogger("saferl")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            with contextlib.redirect_stdout(log_fh), contextlib.redirect_stderr(log_fh):
                print(f"=== attempt {state['attempt']} on {state['host']} pid {state['pid']}: {job.get('command')}")
                limit_threads(int(job.get("threads") or 1))
                from saferl.data import ensure
                from saferl.runs import run_experiment

                dataset = job["config"].get("dataset")
                if dataset is None:
                    from saferl.envs import get_task

                    dataset = get_task(job["config"]["env"]["name"]).dataset_id
                with _dataset_lock():
                    ensure(dataset, progress=False)
                outcome["result"] = run_experiment(job["config"])
                outcome["status"] = "finished"
        except KeyboardInterrupt:
            outcome.update(status="interrupted", error="interrupted")
            raise
        except BaseException as err:  # SystemExit too: the outcome carries every error of the run
            outcome["error"] = f"{type(err).__name__}: {err}"
            print(traceback.format_exc(), file=log_fh)
        finally:
            logger.removeHandler(handler)
            outcome["wall_s"] = time.time() - started
            state.update(state=outcome["status"], finished=time.time(), error=outcome["error"])
            _write_state(run_dir, state)
    return outcome
