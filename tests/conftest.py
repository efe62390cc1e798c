"""Shared test helpers: compose the real Hydra config, run the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

# Short runs everywhere: a few generator iterations, frequent samples and checkpoints, no W&B.
FAST = ["g_iters=4", "logger=none", "callbacks.samples.every_g_iters=2", "callbacks.checkpoint.every_g_iters=2",
        "metrics=none"]


def compose_config(run_dir: Path, *overrides: str, fast: bool = True):
    """The training config exactly as `python -m gan.run` composes it, with the run directory given."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*(FAST if fast else []), *overrides, f"paths.run_dir={run_dir}"])


def run_cli(*args: str, cwd: Path, env: dict | None = None, module: str = "gan.run",
            timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", **(env or {})}
    full_env = {key: value for key, value in full_env.items() if value is not None}  # None removes a variable
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def tiny_digits():
    """Overrides for the smallest real image run: 8x8 digits through the DCGAN code path."""
    return ["data=digits", "data.image_size=8", "data.batch_size=16", "model.generator.width=8",
            "model.discriminator.width=8"]
