"""Runs: one (algorithm, task, seed) from a composed config to a run directory and ``eval.json``.

errors       every user-facing error under `SaferlError`
settings     `RunSettings` (the run options of the Hydra config) and the checks that need no data
resolve      `ResolvedRun`: cost limit, thresholds, dataset, reward range, device, resolved once per run
rundir       run directories and the one atomic-write rule (json, text, torch)
metrics      `MetricsLog` (metrics.csv + TensorBoard)
checkpoints  save / read / restore checkpoints (one ``map_location`` rule)
trainer      the one loop skeleton (`Trainer`): log, periodic evaluation, checkpoint, resume, NaN check
phases       the offline phase and the online phase it runs
experiment   `run_experiment`
seeds        ``seeds=[…]``: K seeds trained in lock-step as one batched model (`saferl.nn.members`), a run dir each
load         `load_run` and ``init_from=`` checkpoints
"""

from saferl.runs.errors import RunDirError, SaferlError, TrainingDivergedError
from saferl.runs.experiment import run_experiment
from saferl.runs.load import load_init, load_run
from saferl.runs.metrics import MetricsLog
from saferl.runs.resolve import ResolvedRun, check_compatible, online_filter, resolve_device
from saferl.runs.rundir import (
    CHECKPOINT,
    EVAL_FILE,
    OFFLINE_CHECKPOINT,
    resolve_run_dir,
    write_json_atomic,
    write_text_atomic,
)
from saferl.runs.settings import RunSettings, settings_from
from saferl.runs.trainer import Trainer, seed_everything

__all__ = [
    "CHECKPOINT",
    "EVAL_FILE",
    "OFFLINE_CHECKPOINT",
    "MetricsLog",
    "ResolvedRun",
    "RunDirError",
    "RunSettings",
    "SaferlError",
    "Trainer",
    "TrainingDivergedError",
    "check_compatible",
    "load_init",
    "load_run",
    "online_filter",
    "resolve_device",
    "resolve_run_dir",
    "run_experiment",
    "seed_everything",
    "settings_from",
    "write_json_atomic",
    "write_text_atomic",
]
