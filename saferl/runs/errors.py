"""Every error a run reports to the user derives from `SaferlError` (the CLI prints it without a traceback).

The errors of the lower layers are re-exported here, so a caller can catch or name them in one place.
"""

from saferl.algos.registry import UnknownAlgorithmError
from saferl.data import DatasetError
from saferl.envs import UnknownTaskError
from saferl.errors import SaferlError


class TrainingDivergedError(SaferlError):
    """A loss or a parameter became NaN/inf; the last good checkpoint is kept."""


class RunDirError(SaferlError):
    """The run directory cannot be used: taken by another run, nothing to resume, or another run's checkpoint."""


__all__ = [
    "DatasetError",
    "RunDirError",
    "SaferlError",
    "TrainingDivergedError",
    "UnknownAlgorithmError",
    "UnknownTaskError",
]
