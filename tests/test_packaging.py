"""Packaging: a non-editable install carries the Hydra configs and the launcher plugin and runs from any
directory.

CI (.ci/run) installs saferl non-editably, so these tests check that installed package. Under an editable
dev install they check a wheel of the checkout instead, installed into a temporary venv that borrows this
environment's dependencies (no network, ~10 s).
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, sysconfig
from pathlib import Path
import saferl
import hydra_plugins.saferl_launcher.saferl_launcher as plugin
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
package = Path(saferl.__file__).parent
print(json.dumps({
    "saferl": saferl.__file__,
    "plugin": plugin.__file__,
    "purelib": sysconfig.get_paths()["purelib"],
    "conf": [p.relative_to(package.parent).as_posix() for p in (package / "conf").rglob("*.yaml")],
    "scanned_launchers": sorted(c.__name__ for c in Plugins.instance().discover(Launcher)),
}))
"""


def _installed_here() -> bool:
    """saferl is installed non-editably in this environment (its files sit in site-packages)."""
    # Look in site-packages only: a saferl.egg-info in the checkout would otherwise answer for it.
    purelib = sysconfig.get_paths()["purelib"]
    dists = list(importlib.metadata.distributions(name="saferl", path=[purelib]))
    return bool(dists) and "saferl/__init__.py" in {str(f).replace("\\", "/") for f in dists[0].files or []}


def _run(cmd: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    # No PYTHONPATH: a dev shell's PYTHONPATH=<checkout> would import the checkout, not the installed package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env={**env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _checked(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _wheel_in_temp_venv(tmp: Path) -> Path:
    """Build a wheel of the checkout and install it into a fresh venv; returns that venv's python."""
    missing = [m for m in ("pip", "setuptools") if importlib.util.find_spec(m) is None]
    if missing or shutil.which("git") is None:
        pytest.skip(f"editable install without {missing or 'git'} to build a wheel; this test runs in CI (.ci/run)")
    # The files of a clean checkout (plus uncommitted work), not build/ or *.egg-info leftovers.
    listed = _run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO)
    if listed.returncode != 0:
        pytest.skip("not a git checkout; this test runs in CI (.ci/run)")
    src = tmp / "src"
    for name in listed.stdout.splitlines():
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _checked(_run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", src], tmp))
    (wheel,) = (tmp / "dist").glob("saferl-*.whl")
    venv = tmp / "venv"
    _checked(_run([sys.executable, "-m", "venv", "--without-pip", venv], tmp))
    python = venv / "bin" / "python"
    purelib = Path(
        _checked(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp)).stdout.strip()
    )
    # Dependencies (and pip) from this environment, after the venv's own site-packages: a plain path line is not
    # a site dir, so this environment's editable-install finder is not loaded there.
    (purelib / "_saferl_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _checked(_run([python, *pip[1:], "install", "--no-deps", "--no-index", wheel], tmp))
    return python


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory) -> Path:
    """A python whose saferl is a non-editable install: this one in CI, else a wheel in a temp venv."""
    if _installed_here():
        return Path(sys.executable)
    return _wheel_in_temp_venv(tmp_path_factory.mktemp("wheel"))


def test_installed_package_carries_the_configs_and_the_launcher_plugin(installed_python, tmp_path):
    info = json.loads(_checked(_run([installed_python, "-c", PROBE], cwd=tmp_path)).stdout)
    purelib = Path(info["purelib"])
    for module in ("saferl", "plugin"):  # imported from site-packages, not from the checkout
        assert Path(info[module]).is_relative_to(purelib), info[module]
    in_repo = {p.relative_to(REPO).as_posix() for p in (REPO / "saferl" / "conf").rglob("*.yaml")}
    missing = in_repo - set(info["conf"])
    assert not missing, f"configs missing from the installed package: {sorted(missing)}"
    # Hydra's own plugin scan finds the launchers in a real install (RegisterLaunchers covers editable ones)
    assert {"SaferlLocalLauncher", "SaferlRayLauncher"} <= set(info["scanned_launchers"])


def test_installed_cli_runs_from_outside_the_checkout(installed_python, tmp_path, point_dataset):
    job = _checked(_run([installed_python, "-m", "saferl.run", "--cfg", "job", "algo=iql"], cwd=tmp_path))
    assert "name: iql" in job.stdout and "runs_root: runs" in job.stdout
    multirun = _run(
        [
            installed_python,
            "-m",
            "saferl.run",
            "-m",
            "algo=bc_all,bc_safe",
            "steps=5",
            "eval_episodes=1",
            "algo.hidden=[16,16]",
            "progress=false",
            "tensorboard=false",
            f"runs_root={tmp_path / 'runs'}",
        ],
        cwd=tmp_path,
    )
    out = _checked(multirun).stdout
    assert "2 job(s) on local process pool" in out and out.count("] done #") == 2, out
    runs = [json.loads(p.read_text())["algo"] for p in (tmp_path / "runs").rglob("eval.json")]
    assert sorted(runs) == ["bc_all", "bc_safe"]


def test_saferl_never_imports_the_hydra_plugin_module():
    """One-way dependency: hydra_plugins/saferl_launcher uses saferl.bench.hydra_launch, never the reverse."""
    offenders = []
    for path in (REPO / "saferl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}" for n in names if n.startswith("hydra_plugins")]
    assert not offenders, f"saferl imports hydra_plugins (an import cycle): {offenders}"


def test_setup_cfg_declares_ranges_not_pins():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    requires = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    assert any(r.startswith("torch>=") and "<3" in r for r in requires)
    assert not [r for r in requires if "==" in r], "pin exact versions in constraints.txt, not setup.cfg"
    assert cfg["options"]["python_requires"] == ">=3.11"
    assert "jax" not in cfg["options"]["install_requires"]
