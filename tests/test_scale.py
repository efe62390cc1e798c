"""Sweeps, SLURM launcher config and DDP on CPU: what issue 5 asks of the training side."""
from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, run_cli

TINY = ["data.image_size=8", "data.batch_size=16", "model.generator.dcgan.width=8", "model.discriminator.dcgan.width=8",
        "metrics=none", "callbacks.samples.every_g_iters=2", "callbacks.checkpoint.every_g_iters=2"]


def test_multirun_gives_each_combination_its_own_run_directory(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "model=gan,dcgan", "seed=0,1", "g_iters=2", "logger=csv", *TINY[:2],
                     "metrics=none", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(runs) == 4
    combos = {(OmegaConf.load(r / "config.yaml").model.name, OmegaConf.load(r / "config.yaml").seed) for r in runs}
    assert combos == {("gan", 0), ("gan", 1), ("dcgan", 0), ("dcgan", 1)}
    assert all(json.loads((r / "summary.json").read_text())["status"] == "completed" for r in runs)


def test_sweep_whose_runs_all_fail_exits_nonzero_with_a_message(tmp_path):
    result = run_cli("-m", "model.loss=hinge2,minimax2", "g_iters=2", "logger=none", *TINY,
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 1
    assert "all 2 runs of the sweep failed" in result.stderr and "Unknown adversarial loss" in result.stderr


def test_unknown_sweep_parameter_is_refused_before_anything_runs(tmp_path):
    result = run_cli("-m", "model.no_such_option=1,2", "g_iters=2", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode != 0 and "no_such_option" in result.stderr
    assert not list((tmp_path / "sweep").glob("*/summary.json"))


def _compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_optuna_search_config_composes_with_its_search_space():
    cfg = _compose_with_hydra("hparams_search=digits_optuna")
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_ and sweeper.direction == "minimize"
    assert set(sweeper.params) >= {"model.g_lr", "model.d_lr", "model.n_critic"}
    assert sweeper.max_failure_rate == 1.0  # diverged trials are recorded, not fatal


def test_slurm_launcher_matches_tasks_to_devices():
    cfg = _compose_with_hydra("launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    launcher = cfg.hydra.launcher
    assert "SlurmLauncher" in launcher._target_
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4 and launcher.nodes == 2


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_run_and_resumes_in_one_process(tmp_path):
    run = tmp_path / "ddp"
    result = run_cli("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "g_iters=4", "model.log_every=1",
                     "logger=wandb", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["g_iter"] for r in records] == [1, 2, 3, 4]  # written once, by rank 0
    assert all(torch.isfinite(torch.tensor([r["train/d_loss"], r["train/g_loss"]])).all() for r in records)
    assert records[-1]["images_seen"] == 4 * 16 * 2  # two ranks, disjoint halves of the global batch
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["g000002.ckpt", "g000004.ckpt", "last.ckpt"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert len(list(run.glob("samples/*.png"))) == 2

    resumed = run_cli(f"resume={run}", "trainer=default", "trainer.accelerator=cpu", "g_iters=6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["gan_progress"]["g_iter"] == 6
