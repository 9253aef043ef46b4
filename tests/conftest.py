"""Shared fixtures: every test uses a private Minari root and never touches the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def minari_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("minari")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


@pytest.fixture(scope="session")
def point_dataset(minari_root) -> str:
    """The PointRobot reference dataset (recipe defaults), built once per session."""
    from saferl.data import ensure
    from saferl.envs import get_task

    dataset_id = get_task("point-robot").dataset_id
    ensure(dataset_id, progress=False)
    return dataset_id


@pytest.fixture(scope="session")
def boat_dataset(minari_root) -> str:
    from saferl.data import ensure
    from saferl.envs import get_task

    dataset_id = get_task("boat-robot").dataset_id
    ensure(dataset_id, progress=False)
    return dataset_id


def run_cli(
    module: str, *args: str, cwd: Path, timeout: float = 300, check: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` the way a user would, with the test's Minari root."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
