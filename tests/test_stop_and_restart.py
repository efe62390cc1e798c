"""Stop signals and restarts outside a cluster: a run told to stop checkpoints the iteration under way and says how to
resume; a job its cluster runs again resumes its own run directory; a new run never writes over another's; the
records logged after a checkpoint are not there twice once a run resumes from it. (tests/test_slurm.py does the same
through a real Slurm.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, assert_same, final_state, logged_iterations, run_cli
from gan import run_stamp
from gan.callbacks.checkpoint import GIterCheckpoint
from gan.errors import UserError
from gan.loggers import JsonlLogger

TINY = ["data=digits", "data.image_size=8", "data.batch_size=16", "model.generator.dcgan.width=8",
        "model.discriminator.dcgan.width=8", "metrics=none", "logger=none", "model.log_every=1",
        "callbacks.samples.every_g_iters=100"]


def test_job_run_again_by_its_cluster_resumes_its_own_run_directory(tmp_path):
    run = tmp_path / "run"
    first = run_cli(*TINY, "g_iters=4", "callbacks.checkpoint.every_g_iters=2", f"hydra.run.dir={run}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with open(run / "metrics.jsonl", "a") as f:  # what a job killed after its checkpoint had logged, a half line last
        f.write(json.dumps({"g_iter": 5, "train/d_loss": 1.0}) + '\n{"g_iter": 6, "train/d_lo')
    again = run_cli(*TINY, "g_iters=6", "callbacks.checkpoint.every_g_iters=2", f"hydra.run.dir={run}", cwd=tmp_path,
                    env={"SLURM_RESTART_COUNT": "1"})
    assert again.returncode == 0, again.stderr
    assert f"Job restarted by the cluster: resuming {run / 'checkpoints' / 'last.ckpt'}" in again.stdout
    assert logged_iterations(run) == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "summary.json").read_text())["g_iter"] == 6


def test_new_run_in_a_directory_that_holds_a_run_is_refused_and_leaves_it_intact(tmp_path):
    run = tmp_path / "run"
    assert run_cli(*TINY, "g_iters=2", "callbacks.checkpoint.every_g_iters=2", f"hydra.run.dir={run}",
                   cwd=tmp_path).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    again = run_cli(*TINY, "g_iters=2", f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds a run" in again.stderr and f"resume={run}" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == before


def test_rewind_keeps_the_records_up_to_the_iteration_resumed_from(tmp_path):
    logger = JsonlLogger(tmp_path)
    for step in (1, 2, 3):
        logger.log_metrics({"train/d_loss": 0.5}, step=step)
    logger.log_metrics({"val/fid": 9.0}, step=2, provenance={"split": "val"})
    logger.path.write_text(logger.path.read_text() + '{"g_iter": 4, "tr')  # killed while writing
    logger.rewind(2)
    assert [json.loads(line)["g_iter"] for line in logger.path.read_text().splitlines()] == [1, 2, 2]


def test_run_directory_stamp_is_the_slurm_job_inside_a_job_task_and_the_time_elsewhere(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert run_stamp("%Y") == time.strftime("%Y")
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # an salloc shell: not a task of the job, each run its own directory
    assert run_stamp("%Y") == time.strftime("%Y")
    monkeypatch.setenv("SLURM_PROCID", "1")  # sbatch's batch step
    assert run_stamp("%Y") == "slurm42"
    monkeypatch.setenv("SLURM_STEP_ID", "0")  # an srun step: every task shares it
    assert run_stamp("%Y") == "slurm42.0"


def test_stop_signals_that_are_not_signals_are_refused():
    with pytest.raises(UserError, match="SIGUSR3"):
        GIterCheckpoint(every_g_iters=10, dirpath="unused", stop_signals=["SIGUSR3"], signal_check_every=None)


@pytest.mark.slow
def test_ddp_run_told_to_stop_checkpoints_the_iteration_and_resumes_like_an_uninterrupted_run(tmp_path):
    """SIGTERM reaches the launching process only (rank 0): the ranks agree at the next check to stop at the same
    iteration (callbacks.checkpoint.signal_check_every), and the run resumes in DDP to the uninterrupted weights."""
    args = [*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "callbacks.checkpoint.every_g_iters=50",
            "callbacks.checkpoint.signal_check_every=7"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    parts, whole = tmp_path / "parts", tmp_path / "whole"
    proc = subprocess.Popen([sys.executable, "-m", "gan.run", *args, "g_iters=2000", f"hydra.run.dir={parts}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (parts / "checkpoints" / "g000050.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    summary = json.loads((parts / "summary.json").read_text())
    assert (summary["status"], summary["stopped_by"]) == ("cancelled", "SIGTERM")
    assert summary["g_iter"] % 7 == 0 and 50 <= summary["g_iter"] < 2000  # stopped where the ranks compare
    assert f"continuewith:python-mgan.runresume={parts}" in "".join(out.split())  # the terminal wraps lines
    assert sorted(p.name for p in (parts / "checkpoints").iterdir()) == ["g000050.ckpt", "last.ckpt"]

    resumed = run_cli(f"resume={parts}", "g_iters=300", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr
    assert run_cli(*args, "g_iters=300", f"hydra.run.dir={whole}", cwd=tmp_path,
                   env={"OMP_NUM_THREADS": "1"}).returncode == 0
    assert logged_iterations(parts) == list(range(1, 301))
    assert_same(final_state(whole), final_state(parts))
