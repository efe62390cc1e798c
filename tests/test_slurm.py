"""Training on a real Slurm cluster (the one `sinfo` reaches, or the local one .ci/slurm-local starts on this machine):
jobs told to stop by the signal Slurm sends before a time limit or a preemption are requeued and resume exactly, a
real time limit does the same, a job cancelled for good leaves a resumable run, and a sweep of DDP jobs goes through
the submitit launcher to `gan.compare`. The uninterrupted references run here, outside Slurm, with the same
arithmetic (one OpenMP thread, gloo DDP with as many processes as the job has tasks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, assert_same, final_state, logged_iterations, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ENV = {"PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}  # jobs inherit it (sbatch --export)
RUN = ["data=digits", "data.image_size=8", "data.batch_size=16", "model.generator.dcgan.width=8",
       "model.discriminator.dcgan.width=8", "metrics=none", "model.log_every=1", "callbacks.samples.every_g_iters=100",
       "callbacks.checkpoint.every_g_iters=50"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
# Two tasks of one CPU each and no GPU, so a job fits one node of the local cluster.
SUBMITIT = ["launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20"]


# A quick validation FID (the digits classifier's features), for the tests that rank runs.
EVALUATED = [*(a for a in RUN if a != "metrics=none"), "metrics.names=[fid]", "metrics.every_n_g_iters=10",
             "metrics.num_samples=200", "metrics.final_num_samples=200"]


@contextmanager
def requeued_jobs_start_at_once():
    """Slurm holds a requeued job until a begin time a minute or two ahead (Reason=BeginTime); as the cluster's
    operator, move it to now so the tests take seconds, not minutes, per requeue."""
    done = threading.Event()

    def release():
        while not done.wait(1):
            pending = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True, text=True).stdout
            for job, reason in (line.split() for line in pending.splitlines() if line.strip()):
                if reason == "BeginTime":
                    subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], capture_output=True)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the launching process ended (exit {proc.returncode}) before {what}:\n"
                                 + proc.communicate()[1][-3000:])
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def job_named(name: str) -> str:
    return wait_for(lambda: subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True,
                                           text=True).stdout.strip(), f"job {name} in the queue")


def restarts(job: str) -> int:
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return int(shown.split("Restarts=")[1].split()[0])


def gan_run_popen(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gan.run", *args], cwd=cwd, env={**os.environ, **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def largest_difference(a: Path, b: Path) -> float:
    weights = [final_state(run)["state_dict"] for run in (a, b)]
    return max((x.float() - weights[1][k].float()).abs().max().item() for k, x in weights[0].items())


def uninterrupted_ddp(tmp_path: Path, *args: str) -> Path:
    """The submitit tests' run, uninterrupted: 2-process DDP here (Lightning's own launcher), not on the cluster."""
    run = tmp_path / "uninterrupted"
    result = run_cli(*RUN, *DDP, *args, "logger=none", f"hydra.run.dir={run}", cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr
    return run


def test_submitit_job_told_to_stop_is_requeued_and_ends_like_an_uninterrupted_run(tmp_path, slurm):
    """`scancel --signal=USR2`: what Slurm sends a submitit job (its --signal) before a time limit or preemption."""
    sweep = tmp_path / "sweep"
    with requeued_jobs_start_at_once():
        proc = gan_run_popen("-m", *SUBMITIT, *RUN, *DDP, "g_iters=400", "logger=wandb", "hydra.launcher.name=usr2",
                             f"hydra.sweep.dir={sweep}", cwd=tmp_path)
        wait_for(lambda: list(sweep.glob("*/checkpoints/g000050.ckpt")), "the first checkpoint", proc)
        job = job_named("usr2")
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert restarts(job) == 1
    run, = (p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        *(f"g{i:06d}.ckpt" for i in range(50, 401, 50)), "last.ckpt"]  # one of each: nothing versioned
    assert logged_iterations(run) == list(range(1, 400 + 1))
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_0_log.out"))
    assert "Job restarted by the cluster: resuming" in logs
    offline_runs = {p.name.rsplit("-", 1)[1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2  # the first job's and the requeued job's
    assert offline_runs == {OmegaConf.load(run / "config.yaml").logger.wandb.id}  # one W&B run, continued
    whole = uninterrupted_ddp(tmp_path, "g_iters=400")
    assert_same(final_state(whole), final_state(run))
    print(f"largest weight difference, requeued vs uninterrupted: {largest_difference(whole, run):.3g}")


def test_submitit_job_at_its_time_limit_is_requeued_and_ends_like_an_uninterrupted_run(tmp_path, slurm):
    """A real time limit: 2 minutes, with submitit's USR2 asked for 60 s before it. Slurm 22.05 sends the warning at
    the first of its time-limit checks (every 30 s) that finds at most the delay + 30 s left, so the signal comes 30 to
    60 s into each job: after the run has installed its handlers (a signal in a job's first seconds, before that, is
    caught by submitit, which does not requeue; a 1-minute limit with a 30 s delay made that happen here). The run
    needs about 2 minutes of training, more than one job gets: each job of the chain trains until its signal, and the
    last one completes the run."""
    sweep, args = tmp_path / "sweep", ["g_iters=6000", "model.log_every=10", "callbacks.checkpoint.every_g_iters=1000"]
    with requeued_jobs_start_at_once():
        proc = gan_run_popen("-m", *SUBMITIT, *RUN, *DDP, *args, "logger=none", "hydra.launcher.name=limit",
                             "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60",
                             f"hydra.sweep.dir={sweep}", cwd=tmp_path)
        job = job_named("limit")
        out, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err[-3000:]
    assert restarts(job) >= 1
    run, = (p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert logged_iterations(run) == list(range(10, 6001, 10))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        *(f"g{i:06d}.ckpt" for i in range(1000, 6001, 1000)), "last.ckpt"]
    whole = uninterrupted_ddp(tmp_path, *args)
    assert_same(final_state(whole), final_state(run))
    print(f"{restarts(job)} requeues at the time limit; largest weight difference vs uninterrupted: "
          f"{largest_difference(whole, run):.3g}")


def test_sbatch_job_requeued_by_usr1_then_cancelled_for_good_resumes_exactly(tmp_path, slurm):
    """A plain `sbatch --requeue` of `srun python -m gan.run`: Lightning's signal (SIGUSR1) requeues it into the same
    run directory (slurm<job>.0_..., from the job id a requeue keeps); `scancel` then stops it for good, with the
    iteration it reached checkpointed and the summary saying so; `resume=` finishes it here."""
    runs = tmp_path / "runs"
    command = " ".join([sys.executable, "-m", "gan.run", *RUN, "g_iters=600", "logger=none", f"paths.runs_dir={runs}"])
    with requeued_jobs_start_at_once():
        job = subprocess.run(["sbatch", "--parsable", "--requeue", "--job-name=usr1", "--ntasks=1",
                              "--cpus-per-task=1", f"--chdir={tmp_path}", f"--output={tmp_path}/job.log",
                              "--open-mode=append", f"--export=ALL,{','.join(f'{k}={v}' for k, v in ENV.items())}",
                              f"--wrap=srun {command}"], capture_output=True, text=True, check=True).stdout.strip()
        run = runs / f"slurm{job}.0_dcgan_digits_s0"
        wait_for(lambda: (run / "checkpoints" / "g000050.ckpt").is_file(), "the first checkpoint")
        subprocess.run(["scancel", "--signal=USR1", job], check=True)
        wait_for(lambda: restarts(job) == 1 and (run / "checkpoints" / "g000100.ckpt").is_file(),
                 "the requeued job's next checkpoint")
        subprocess.run(["scancel", job], check=True)
        wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(),
                 "the cancelled job to leave the queue")
    log = (tmp_path / "job.log").read_text()
    assert "Job restarted by the cluster: resuming" in log, log[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["stopped_by"]) == ("cancelled", "SIGTERM"), summary
    assert summary["resume"] == f"python -m gan.run resume={run.resolve()}"
    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["gan_progress"]["g_iter"]
    assert stopped_at == summary["g_iter"] and 100 <= stopped_at < 600

    resumed = run_cli(f"resume={run}", cwd=tmp_path, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    result = run_cli(*RUN, "g_iters=600", "logger=none", f"hydra.run.dir={whole}", cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr
    assert logged_iterations(run) == list(range(1, 600 + 1))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert_same(final_state(whole), final_state(run))
    print(f"largest weight difference, requeued + cancelled + resumed vs uninterrupted: "
          f"{largest_difference(whole, run):.3g}")


def test_sweep_of_ddp_jobs_on_the_cluster_reports_the_failed_one_and_compares_the_others(tmp_path, slurm):
    sweep = tmp_path / "sweep"
    proc = gan_run_popen("-m", *SUBMITIT, *EVALUATED, *DDP, "g_iters=40", "logger=none",
                         "model.loss=hinge,least_squares,hinge_typo", "hydra.launcher.name=sweep",
                         f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "1 of 3 runs of the sweep did not complete: 2_dcgan_digits_s0 (failed: Unknown adversarial loss" in err
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/summary.json")}
    assert statuses == {"0_dcgan_digits_s0": "completed", "1_dcgan_digits_s0": "completed",
                        "2_dcgan_digits_s0": "failed"}
    report = tmp_path / "report.html"
    compared = run_cli(str(sweep), "--out", str(report), cwd=tmp_path, module="gan.compare", env=ENV)
    assert compared.returncode == 0, compared.stderr
    assert "hinge" in compared.stdout and "least_squares" in compared.stdout and report.is_file()


def test_optuna_search_runs_its_trials_as_cluster_jobs(tmp_path, slurm):
    """hydra/sweeper=optuna with launcher=slurm: the study's trials are Slurm jobs (two at a time) whose objective
    (the validation FID each run returns) comes back to the sweeper through submitit."""
    sweep = tmp_path / "sweep"
    proc = gan_run_popen("hparams_search=digits_optuna", *SUBMITIT, *EVALUATED, "g_iters=20", "logger=none",
                         "hydra.sweeper.n_trials=2",
                         "hydra.sweeper.n_jobs=2", "hydra.launcher.name=optuna", f"hydra.sweep.dir={sweep}",
                         cwd=tmp_path)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == {"model.g_lr", "model.d_lr", "model.n_critic"} and results.best_value > 0
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert len(summaries) == 2 and all(s["status"] == "completed" for s in summaries)
    assert min(s["objective"] for s in summaries) == pytest.approx(results.best_value)
