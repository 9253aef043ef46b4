"""Run directories and the one atomic-write rule for everything written into them.

A run directory holds ``config.yaml``, ``metrics.csv`` (+ TensorBoard events under ``tb/``),
``checkpoints/last.pt`` and, once finished, ``eval.json``. Every file is written to a temporary sibling and
renamed over its target, so a killed run never leaves a half-written config, checkpoint or result.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from saferl.algos import AlgoConfig
from saferl.runs.errors import RunDirError
from saferl.runs.settings import RunSettings

EVAL_FILE = "eval.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT = Path("checkpoints") / "last.pt"
OFFLINE_CHECKPOINT = Path("checkpoints") / "offline.pt"  # the policy at the offline→online switch


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed over ``path`` when the block ends without error."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def save_torch_atomic(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def is_finished(run_dir: Path) -> bool:
    return (run_dir / EVAL_FILE).is_file()


def resolve_run_dir(s: RunSettings) -> Path:
    """Where this run lives. An explicit ``run_dir`` is used as is; otherwise a new timestamped directory
    under ``runs_root/<env>/<algo>/``, or, with ``resume=true``, the newest unfinished run of the same
    algorithm, task and seed there."""
    if s.run_dir:
        run_dir = Path(s.run_dir)
        if not s.resume and (run_dir / CHECKPOINT).exists():
            state = "a finished run" if is_finished(run_dir) else "an unfinished run"
            raise RunDirError(
                f"{run_dir} already holds {state}; pass resume=true to continue it, or choose another run_dir"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    base = Path(s.runs_root) / s.env / s.algo
    prefix = f"seed{s.seed}-"
    if s.resume:
        candidates = sorted(
            (d for d in base.glob(prefix + "*") if (d / CHECKPOINT).exists() and not is_finished(d)),
            key=lambda d: d.name,
        )
        if not candidates:
            raise RunDirError(
                f"resume=true but there is no unfinished {s.algo} run on {s.env} with seed {s.seed} under "
                f"{base}; drop resume=true to start a new run, or pass run_dir=<dir> of the run to continue"
            )
        return candidates[-1]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_dir = base / (prefix + stamp + (f"-{n}" if n else ""))
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        except FileExistsError:
            continue
    raise RunDirError(f"could not create a fresh run directory under {base}")


def write_config(
    run_dir: Path,
    s: RunSettings,
    algo_cfg: AlgoConfig,
    steps: int,
    cost_limit: float,
    dataset: str,
    expert_episodes: int | None = None,
) -> None:
    """``config.yaml``: the settings with the values this run resolved (steps, cost limit, dataset, and the
    number of expert episodes of an imitation run)."""
    import yaml

    composed = {
        **asdict(s),
        "steps": steps,
        "cost_limit": cost_limit,
        "dataset": dataset,
        **({"expert_episodes": expert_episodes} if expert_episodes is not None else {}),
        "algo": {"name": s.algo, **asdict(algo_cfg)},
        "env": {"name": s.env},
    }
    composed["algo"] = {k: list(v) if isinstance(v, tuple) else v for k, v in composed["algo"].items()}
    write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(composed, sort_keys=False))
