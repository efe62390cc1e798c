"""A plain (non-editable) install finds its configs from any working directory."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_ships_the_configs_and_runs_from_elsewhere(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("gan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gan/conf/train.yaml" in names and "gan/conf/model/dcgan.yaml" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    job = subprocess.run([sys.executable, "-m", "gan.run", "model=gan", "--cfg", "job"], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
    assert job.returncode == 0, job.stderr
    assert "name: gan" in job.stdout
    where = subprocess.run([sys.executable, "-c", "import gan.run; print(gan.run.config_dir())"], cwd=elsewhere,
                           env=env, capture_output=True, text=True)
    assert where.stdout.strip() == str(site / "gan" / "conf")
