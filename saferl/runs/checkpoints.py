"""Checkpoints: what a resumed run needs to continue with the same parameters and random streams.

One rule for every checkpoint load: tensors are read onto the CPU (``map_location="cpu"``). RNG states must be
CPU tensors anyway, and ``load_state_dict`` copies module and optimizer tensors onto the device the algorithm
lives on, so a checkpoint written on one device loads on any other.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saferl.algos import Algorithm
from saferl.runs.errors import RunDirError, SaferlError
from saferl.runs.rundir import save_torch_atomic
from saferl.runs.settings import RunSettings

MAP_LOCATION = "cpu"


def save_checkpoint(
    path: Path,
    algo: Algorithm,
    sampler: torch.Generator,
    step: int,
    elapsed: float,
    update_time: float,
    s: RunSettings,
    steps: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """The algorithm, every random stream, the clocks and the settings (``steps`` = the offline length)."""
    save_torch_atomic(
        {
            **(extra or {}),
            "step": step,
            "algo": algo.state_dict(),
            "rng": {
                "sampler": sampler.get_state(),
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "elapsed": elapsed,
            "update_time": update_time,
            "settings": {**asdict(s), "steps": steps},
        },
        path,
    )


def read_checkpoint(path: Path, label: str | None = None) -> dict[str, Any]:
    """A checkpoint's contents on the CPU; a damaged file is a `SaferlError` naming ``label`` (or the path)."""
    try:
        state = torch.load(path, map_location=MAP_LOCATION, weights_only=False)
    except Exception as err:  # noqa: BLE001  (torch raises many types for damaged files)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SaferlError(
            f"{label or path}: cannot read the checkpoint {path} ({first}); the file is corrupt or truncated "
            "(a copy that did not finish?): copy it again, or point at another checkpoint or run directory"
        ) from None
    missing = [k for k in ("step", "algo", "settings") if not isinstance(state, dict) or k not in state]
    if missing:
        raise SaferlError(
            f"{label or path}: {path} is not a saferl checkpoint (no {', '.join(missing)}); pass a "
            "checkpoints/last.pt or checkpoints/offline.pt that saferl.run wrote"
        )
    return state


def restore(state: dict[str, Any], algo: Algorithm, sampler: torch.Generator) -> None:
    """Put the algorithm and every random stream back where the checkpoint left them."""
    algo.load_state_dict(state["algo"])
    rng = state["rng"]
    sampler.set_state(rng["sampler"])
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def check_same_run(state: dict[str, Any], s: RunSettings, steps: int) -> None:
    saved = state["settings"]
    for key, now in (("algo", s.algo), ("env", s.env), ("seed", s.seed), ("dataset", s.dataset)):
        if saved.get(key) != now:
            raise RunDirError(
                f"cannot resume: the checkpoint was written by a run with {key}={saved.get(key)!r}, this run has "
                f"{key}={now!r}; resume with the original settings or start a new run"
            )
    if state["step"] > steps:
        raise RunDirError(f"cannot resume: the checkpoint is at step {state['step']}, past steps={steps}")
