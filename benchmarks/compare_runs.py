"""Compare two run directories: are they the same run?

    python benchmarks/compare_runs.py RUN_A RUN_B [--atol 0] [--rtol 0]

Compares ``eval.json`` (without the timing fields ``wall_time_s`` and ``updates_per_s`` and the K-seed marker
``batched_seeds``), ``metrics.csv`` (without its rate columns ``*per_s``; numbers within the tolerance) and every
file under ``checkpoints/`` (tensors, arrays and numbers within the tolerance; the clocks and the run's own
``run_dir``/``seeds``/``resume`` settings are not compared). With the default tolerance 0 it checks bit-identity,
e.g. of a run before and after a refactor. Prints one line per file and exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

TIMING = {"wall_time_s", "updates_per_s", "batched_seeds", "elapsed", "update_time"}
OWN_SETTINGS = {"run_dir", "seeds", "resume"}  # how a run was started, not what it computed


def close(a: float, b: float, atol: float, rtol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return abs(a - b) <= atol + rtol * abs(b)


def diff(a: Any, b: Any, atol: float, rtol: float, path: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ (beyond the tolerance), as paths."""
    key = path.rsplit("/", 1)[-1]
    if key in TIMING or (key in OWN_SETTINGS and "/settings/" in path + "/"):
        return []
    if isinstance(a, torch.Tensor) or isinstance(a, np.ndarray):
        a_t, b_t = torch.as_tensor(a), torch.as_tensor(b)
        if a_t.shape != b_t.shape or a_t.dtype != b_t.dtype:
            return [f"{path}: shape/dtype {tuple(a_t.shape)} {a_t.dtype} vs {tuple(b_t.shape)} {b_t.dtype}"]
        if a_t.is_floating_point():
            ok = torch.allclose(a_t, b_t, atol=atol, rtol=rtol, equal_nan=True)
            return [] if ok else [f"{path}: max |Δ| {(a_t - b_t).abs().max().item():.3g}"]
        return [] if torch.equal(a_t, b_t) else [f"{path}: differs"]
    if isinstance(a, dict):
        a, b = ({k: v for k, v in d.items() if k not in TIMING} for d in (a, b))
        if set(a) != set(b):
            return [f"{path}: keys {sorted(map(str, set(a) ^ set(b)))}"]
        return [d for k in a for d in diff(a[k], b[k], atol, rtol, f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, atol, rtol, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)):
        return [] if close(a, float(b), atol, rtol) else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def metrics_rows(path: Path) -> list[dict[str, Any]]:
    def value(text: str) -> Any:
        try:
            return float(text) if text != "" else None
        except ValueError:
            return text

    with path.open() as f:
        return [{k: value(v) for k, v in row.items() if not k.endswith("per_s")} for row in csv.DictReader(f)]


def compare(run_a: Path, run_b: Path, atol: float = 0.0, rtol: float = 0.0) -> dict[str, list[str]]:
    """Per compared file, the differences (empty: the same)."""
    out = {
        "eval.json": diff(
            json.loads((run_a / "eval.json").read_text()), json.loads((run_b / "eval.json").read_text()), atol, rtol
        ),
        "metrics.csv": diff(metrics_rows(run_a / "metrics.csv"), metrics_rows(run_b / "metrics.csv"), atol, rtol),
    }
    names = sorted(
        {p.name for p in (run_a / "checkpoints").glob("*.pt")} | {p.name for p in (run_b / "checkpoints").glob("*.pt")}
    )
    for name in names:
        pa, pb = run_a / "checkpoints" / name, run_b / "checkpoints" / name
        if not (pa.exists() and pb.exists()):
            out[f"checkpoints/{name}"] = ["only in one of the runs"]
            continue
        state_a = torch.load(pa, map_location="cpu", weights_only=False)
        state_b = torch.load(pb, map_location="cpu", weights_only=False)
        out[f"checkpoints/{name}"] = diff(state_a, state_b, atol, rtol)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--atol", type=float, default=0.0)
    parser.add_argument("--rtol", type=float, default=0.0)
    args = parser.parse_args()
    result = compare(args.run_a, args.run_b, args.atol, args.rtol)
    for name, problems in result.items():
        print(f"{name}: {'same' if not problems else 'DIFFERS'}")
        for p in problems[:10]:
            print(f"    {p}")
    return 0 if not any(result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
