"""The one base class of saferl's user-facing errors.

It lives at the bottom of the package (no imports) so that every layer — data, envs, algos, runs, bench — can
derive its errors from it and the command-line entry points catch one type (`saferl.cli.user_errors`).
"""


class SaferlError(RuntimeError):
    """An error with a message meant for the user (the CLI prints it without a traceback)."""
