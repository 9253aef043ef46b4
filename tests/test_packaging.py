"""Packaging: Hydra configs ship inside the package, so a non-editable install can run."""

from __future__ import annotations

import configparser
import importlib.metadata
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_installed_distribution_carries_the_hydra_configs():
    # Look in site-packages only: a saferl.egg-info in the checkout would otherwise answer for it.
    purelib = sysconfig.get_paths()["purelib"]
    dists = list(importlib.metadata.distributions(name="saferl", path=[purelib]))
    if not dists:
        pytest.skip("saferl is not installed in this environment")
    names = {str(f).replace("\\", "/") for f in dists[0].files or []}
    if "saferl/__init__.py" not in names:
        pytest.skip("editable install: the package is the checkout itself")
    shipped = {n for n in names if n.startswith("saferl/conf/") and n.endswith(".yaml")}
    in_repo = {str(p.relative_to(REPO)) for p in (REPO / "saferl" / "conf").rglob("*.yaml")}
    assert in_repo <= shipped, f"configs missing from the installed package: {sorted(in_repo - shipped)}"


def test_setup_cfg_declares_ranges_not_pins():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    requires = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    assert any(r.startswith("torch>=") and "<3" in r for r in requires)
    assert not [r for r in requires if "==" in r], "pin exact versions in constraints.txt, not setup.cfg"
    assert cfg["options"]["python_requires"] == ">=3.11"
    assert "jax" not in cfg["options"]["install_requires"]
