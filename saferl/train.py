"""Kept for existing imports: the training loop lives in `saferl.runs` (see its module list)."""

from saferl.runs import (
    CHECKPOINT,
    EVAL_FILE,
    OFFLINE_CHECKPOINT,
    MetricsLog,
    RunDirError,
    RunSettings,
    SaferlError,
    TrainingDivergedError,
    load_run,
    run_experiment,
    settings_from,
    write_json_atomic,
)

__all__ = [
    "CHECKPOINT",
    "EVAL_FILE",
    "OFFLINE_CHECKPOINT",
    "MetricsLog",
    "RunDirError",
    "RunSettings",
    "SaferlError",
    "TrainingDivergedError",
    "load_run",
    "run_experiment",
    "settings_from",
    "write_json_atomic",
]
