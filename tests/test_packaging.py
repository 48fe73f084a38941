"""The package ships its configs, so an installed (non-editable) lab finds them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip("tomllib")
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"lab"} | {
        "lab." + ".".join(p.relative_to(ROOT / "lab").parts)
        for p in (ROOT / "lab").rglob("*") if p.is_dir() and (p / "__init__.py").exists()
    }
    # lab's Hydra plugins (the Optuna sweeper, the GPU launcher) live in Hydra's namespace package.
    plugins = {f"hydra_plugins.{p.parent.name}" for p in (ROOT / "hydra_plugins").glob("*/__init__.py")}
    assert plugins and not (ROOT / "hydra_plugins" / "__init__.py").exists()  # a namespace package
    assert found | {"lab.conf"} | plugins == declared


def test_installed_copy_finds_its_configs(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "lab" / "conf" / "config.yaml").exists()
    assert (target / "lab" / "conf" / "experiment" / "cnn_fashionmnist.yaml").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import lab.config.paths; print(lab.config.paths.config_dir())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.stdout.strip() == str(target / "lab" / "conf"), where.stderr
    cfg = subprocess.run([sys.executable, "-m", "lab.run", "--cfg", "job", "experiment=cnn_fashionmnist"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert cfg.returncode == 0, cfg.stderr[-2000:]
    assert "fashion_mnist" in cfg.stdout
