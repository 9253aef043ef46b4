"""Shared plumbing of the Hydra entry points: logging and turning user errors into clean exits."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from saferl.errors import SaferlError

# Every user-facing error derives from SaferlError (datasets, tasks, algorithms, runs, suites, engines).
USER_ERRORS = (SaferlError,)


def setup_logging() -> None:
    logger = logging.getLogger("saferl")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[saferl] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error as one message and exit 1, without a traceback."""
    try:
        yield
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
