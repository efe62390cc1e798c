"""A multi-node rehearsal on one machine: `torchrun --nnodes=2 --nproc-per-node=1` on the loopback address, two
processes with node ranks 0 and 1 (`trainer.num_nodes=2`, Lightning's TorchElasticEnvironment, gloo), trains to the
same weights as one process with the same global batch; and so does `srun -N2` over the local Slurm's two node
entries (Lightning's SLURMEnvironment)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, assert_same, final_state, run_cli

B = 8          # data.batch_size per process: the 2-node run's global batch is 2 * B, the reference's batch
G_ITERS = 6

# model=gan: MLP G and D (D's norm is none), so nothing in the model depends on how the global batch is split.
# DCGAN's generator has BatchNorm, whose statistics are per process under DDP (running_mean off by ~3e-3 after 6
# iterations here), and trainer.sync_batchnorm=true cannot fix that on CPU: DDP refuses SyncBatchNorm without a GPU
# ("SyncBatchNorm layers only work with GPU modules"). Nor does anything draw from torch's global RNG (no dropout, no
# augmentation), which is seeded per (seed, iteration, rank); the data and the latents are drawn for the global batch
# and sliced per rank. One OpenMP thread everywhere keeps the float reduction order alike.
ARGS = ["model=gan", "data=digits", "data.image_size=8", "logger=none", "metrics=none", f"g_iters={G_ITERS}",
        "model.log_every=1", "callbacks.checkpoint.every_g_iters=3", "callbacks.samples.every_g_iters=3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment() -> dict:
    """The tests' environment, one thread, and no SLURM variables (Lightning would take SLURM's ranks over torchrun's)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return {key: value for key, value in env.items() if not key.startswith("SLURM_")}


def torchrun_two_nodes(tmp_path: Path, run: Path, timeout: float = 150) -> list[subprocess.CompletedProcess]:
    """Node ranks 0 and 1 as two torchrun launches (static rendezvous on 127.0.0.1), one process each, both
    writing to `run`. Returns their results; a hang past `timeout` kills both launches and their workers."""
    port = free_port()
    procs, logs = [], []
    for node_rank in (0, 1):
        log = (tmp_path / f"node{node_rank}.log").open("w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
             f"--node-rank={node_rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
             "-m", "gan.run", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
             f"data.batch_size={B}", *ARGS, f"hydra.run.dir={run}"],
            cwd=tmp_path, env=environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))  # its own process group: a kill reaches torchrun's worker too
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the 2-node run did not finish in {timeout} s:\n" + tail(tmp_path / "node0.log"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in logs:
            log.close()
    return [subprocess.CompletedProcess(proc.args, proc.returncode, (tmp_path / f"node{r}.log").read_text())
            for r, proc in enumerate(procs)]


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:])


def single_process(tmp_path: Path) -> Path:
    """The reference: one process at the 2-node runs' global batch."""
    single = tmp_path / "single"
    reference = run_cli("trainer=default", "trainer.accelerator=cpu", f"data.batch_size={2 * B}", *ARGS,
                        f"hydra.run.dir={single}", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=150)
    assert reference.returncode == 0, reference.stderr
    return single


def assert_two_nodes_equal_one_process(multi: Path, single: Path) -> None:
    records = [json.loads(line) for line in (multi / "metrics.jsonl").read_text().splitlines()]
    assert [r["g_iter"] for r in records] == list(range(1, G_ITERS + 1))  # written once, by rank 0
    assert [r["images_seen"] for r in records] == [i * 2 * B for i in range(1, G_ITERS + 1)]  # the global batch
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["g000003.ckpt", "g000006.ckpt", "last.ckpt"]
    summary = json.loads((multi / "summary.json").read_text())
    assert (summary["status"], summary["g_iter"], summary["images_seen"]) == ("completed", G_ITERS, G_ITERS * 2 * B)
    # weights, optimiser states, counters and module RNG, the data stream's position
    assert_same(final_state(multi), final_state(single))


@pytest.mark.slow  # three training processes and two torchrun launchers: ~20 s on 2 cores
def test_two_nodes_over_torchrun_train_to_the_weights_of_one_process_with_the_global_batch(tmp_path):
    multi = tmp_path / "multi"
    nodes = torchrun_two_nodes(tmp_path, multi)
    for node_rank, node in enumerate(nodes):
        assert node.returncode == 0, f"node rank {node_rank}:\n" + "\n".join(node.stdout.splitlines()[-40:])
        # one job of two members, not two single-process runs sharing a directory
        assert f"GLOBAL_RANK: {node_rank}, MEMBER: {node_rank + 1}/2" in node.stdout
    assert_two_nodes_equal_one_process(multi, single_process(tmp_path))


@pytest.mark.slow
@pytest.mark.slurm
def test_two_nodes_over_srun_train_to_the_weights_of_one_process_with_the_global_batch(tmp_path, slurm):
    """`srun -N2 --ntasks-per-node=1`: one task on each node entry, both writing the run directory named after the
    job step (slurm<job>.0_...)."""
    if int(subprocess.run(["sinfo", "-h", "-o", "%D"], capture_output=True, text=True).stdout.split()[0]) < 2:
        pytest.skip("the cluster's partition has fewer than two nodes")
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    # --immediate: a cluster whose nodes stay busy fails the test in two minutes, saying so, instead of hanging it
    job = subprocess.run(["srun", "-N2", "--ntasks-per-node=1", "--cpus-per-task=1", "--immediate=120", f"--chdir={tmp_path}",
                          sys.executable, "-m", "gan.run", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1",
                          "trainer.num_nodes=2", f"data.batch_size={B}", *ARGS, f"paths.runs_dir={runs}"],
                         env=env, capture_output=True, text=True, timeout=300)
    queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
    assert job.returncode == 0, job.stderr[-3000:] + "\nthe queue now:\n" + queue
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in job.stderr + job.stdout and "GLOBAL_RANK: 1, MEMBER: 2/2" in job.stderr + job.stdout
    multi, = runs.glob("slurm*.0_gan_digits_s0")
    assert_two_nodes_equal_one_process(multi, single_process(tmp_path))
