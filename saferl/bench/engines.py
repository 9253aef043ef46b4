"""Execution engines: where runs execute. Both hand back `concurrent.futures.Future`s, so the suite runner
and the Hydra launchers wait on local and Ray runs the same way.

* ``local``: `concurrent.futures.ProcessPoolExecutor` with ``workers`` processes (default: one per core),
  forked from a ``forkserver`` that has imported saferl once, and replaced after every run
  (``max_tasks_per_child=1``): each run gets a fresh process with its own thread settings and memory, and a
  run that crashes its process breaks the pool only for the runs in flight, which the runner resubmits.
  (Python 3.11–3.13 can deadlock with ``max_tasks_per_child`` > 1, cpython#115634; 1 is not affected.)
  A worker ends when its runner is gone (killed, or its session ended), and an interrupted runner ends its
  workers: a run must never keep training unseen, or a restarted runner would train it a second time in the
  same directory. The run resumes from its last checkpoint.
* ``ray``: plain Ray tasks (``ray.remote(num_cpus=threads)``) on the cluster at ``RAY_ADDRESS``, or on a
  local Ray instance started for the suite. Ray schedules them over every node's CPUs; a task whose worker
  dies fails alone (``WorkerCrashedError``), the others go on.

Measured on the 2-core reference machine: one single-threaded process per core gives 1.3–1.6× more total
updates/s than one process with two threads, hence ``threads=1`` and ``workers = cores`` by default.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from saferl.runs.errors import SaferlError


class EngineError(SaferlError):
    pass


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, which containers and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from Linux's ``/proc``; None when it is gone or there is no ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def _runner_alive(pid: int, started: str | None) -> bool:
    """``started``: the runner's start time, so that a reused pid counts as gone (None: no ``/proc``)."""
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - it exists, owned by someone else
            return True
        return True
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z" and stat[1] == started  # a zombie has exited already


def exit_with_runner(runner_pid: int, runner_started: str | None, poll_s: float = 1.0) -> None:
    """Pool initializer: watch the runner from a daemon thread and end this worker within ``poll_s`` of the
    runner's death (the forkserver, not the runner, is a worker's parent, so the kernel would not tell it)."""

    def watch() -> None:
        while _runner_alive(runner_pid, runner_started):
            time.sleep(poll_s)
        os._exit(143)  # what SIGTERM would give; the run's checkpoints are written atomically

    threading.Thread(target=watch, name="saferl-runner-watch", daemon=True).start()


class LocalEngine:
    """A process pool on this machine."""

    name = "local"

    def __init__(self, workers: int | None = None, threads: int = 1):
        self.threads = max(1, int(threads))
        self.workers = int(workers) if workers else max(1, cpu_count() // self.threads)
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: a clean server process imports saferl (torch, gymnasium) once and forks each worker
            # from it, so a fresh process per run costs milliseconds instead of seconds of imports.
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["saferl.bench.preload"])
            runner = os.getpid()
            stat = _proc_stat(runner)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=ctx,
                max_tasks_per_child=1,
                initializer=exit_with_runner,
                initargs=(runner, stat[1] if stat else None),
            )
        return self._pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        try:
            return self._ensure_pool().submit(fn, *args)
        except BrokenProcessPool:
            self.restart()
            return self._ensure_pool().submit(fn, *args)

    def restart(self) -> None:
        """Drop the pool if it is broken (a worker died); the next submit starts a new one. A pool that is not
        broken (it was already replaced) is left alone, with the runs resubmitted to it."""
        if self._pool is not None and getattr(self._pool, "_broken", True):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @staticmethod
    def is_crash(err: BaseException) -> bool:
        return isinstance(err, BrokenProcessPool)

    def describe(self) -> str:
        return f"local process pool: {self.workers} worker(s) × {self.threads} thread(s)"

    def shutdown(self, cancel: bool = False) -> None:
        """Wait for the runs in flight; ``cancel`` (an interrupt): drop the queued runs and end the running ones
        now (the pool's own shutdown would still wait for them, at the latest when this process exits)."""
        if self._pool is None:
            return
        if cancel:  # ProcessPoolExecutor cannot stop running work before Python 3.14 (terminate_workers)
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
        self._pool = None


class RayEngine:
    """Ray tasks on the cluster at ``address`` (default: ``RAY_ADDRESS``), or on a local Ray started here."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        threads: int = 1,
        num_cpus: int | None = None,
        max_retries: int = 0,
        env_vars: dict[str, str] | None = None,
    ):
        try:
            import ray
        except ImportError:
            raise EngineError(
                "launcher=ray needs Ray: pip install 'saferl[ray]' (or pip install 'ray[default]>=2.9,<3')"
            ) from None
        self._ray = ray
        self.threads = max(1, int(threads))
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        # Environment the runs need on every node (the Minari root, one thread per run).
        env = {k: os.environ[k] for k in ("MINARI_DATASETS_PATH",) if k in os.environ}
        env.update({"OMP_NUM_THREADS": str(self.threads), **(env_vars or {})})
        self._started_here = False
        if not ray.is_initialized():
            init_kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False}
            if self.address:
                init_kwargs["address"] = self.address
            else:  # a local Ray for this suite only: no dashboard, stopped again by shutdown()
                init_kwargs.update(num_cpus=num_cpus or cpu_count(), include_dashboard=False)
                self._started_here = True
            try:
                ray.init(**init_kwargs)
            except ConnectionError as err:
                raise EngineError(f"could not connect to Ray at {self.address}: {err}") from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)
        # max_retries counts system failures only (a dead worker); a Python exception is never retried by Ray.
        self._max_retries = max_retries
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(num_cpus=self.threads, max_retries=self._max_retries)(fn)
        return remote.remote(*args).future()

    def restart(self) -> None:
        pass  # a crashed Ray worker only fails its own task

    def is_crash(self, err: BaseException) -> bool:
        from ray.exceptions import NodeDiedError, WorkerCrashedError

        return isinstance(err, WorkerCrashedError | NodeDiedError)

    def describe(self) -> str:
        where = self.address or "a local Ray instance"
        return f"Ray at {where}: {self.workers} concurrent run(s) × {self.threads} thread(s)"

    def shutdown(self, cancel: bool = False) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()


def make_engine(
    launcher: str, workers: int | None = None, threads: int = 1, ray_address: str | None = None
) -> LocalEngine | RayEngine:
    if launcher == "local":
        return LocalEngine(workers=workers, threads=threads)
    if launcher == "ray":
        return RayEngine(address=ray_address, threads=threads, num_cpus=workers * threads if workers else None)
    raise EngineError(f"unknown launcher {launcher!r}; use launcher=local or launcher=ray")
