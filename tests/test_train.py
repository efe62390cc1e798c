"""The foundation end to end: composed config -> train -> run directory; CLI, resume, divergence, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import assert_same, compose_config, final_state, kill_and_resume, run_cli
from gan.errors import DivergenceError, UserError
from gan.train import load_checkpoint, train


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("model", ["gan", "dcgan"])
@pytest.mark.parametrize("loss", ["minimax", "non_saturating"])
def test_every_model_and_loss_trains_and_fills_the_run_directory(tmp_path, tiny_digits, model, loss):
    run = tmp_path / "run"
    data = tiny_digits if model == "dcgan" else tiny_digits[:3]  # the MLP has no conv widths
    train(compose_config(run, f"model={model}", f"model.loss={loss}", *data, "model.log_every=1"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run / "checkpoints").glob("g*.ckpt")) == ["g000002.ckpt", "g000004.ckpt"]
    grids = sorted((run / "samples").glob("iter_*.png"))
    assert [p.name for p in grids] == ["iter_000002.png", "iter_000004.png"]
    assert Image.open(grids[-1]).size[0] > 8
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["g_iter"] for r in records] == [1, 2, 3, 4]
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "images_seen"} <= records[0].keys()
    assert records[-1]["images_seen"] == 4 * 16  # one real batch per discriminator step, n_critic = 1
    assert OmegaConf.load(run / "config.yaml").model.loss == loss
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["g_iter"] == 4


def test_generator_iterations_are_counted_apart_from_lightning_steps(tmp_path, tiny_digits):
    run = tmp_path / "run"
    train(compose_config(run, *tiny_digits, "model.n_critic=3", "model.log_every=1"))
    records = read_jsonl(run / "metrics.jsonl")
    assert records[-1]["g_iter"] == 4 and records[-1]["images_seen"] == 4 * 3 * 16
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4 * (3 + 1)  # Lightning counts D and G updates
    assert ckpt["gan_progress"]["g_iter"] == 4
    assert ckpt["DigitsDataModule"] == {"minibatches_consumed": 12}  # the data stream's position: 3 per iteration


def test_ema_generator_tracks_the_generator_and_is_checkpointed(tmp_path, tiny_digits):
    run = tmp_path / "run"
    train(compose_config(run, *tiny_digits, "model.ema_decay=0.5"))
    _, _, module = load_checkpoint(run)
    live = torch.nn.utils.parameters_to_vector(module.generator.parameters())
    ema = torch.nn.utils.parameters_to_vector(module.ema_generator.parameters())
    assert not torch.equal(live, ema) and torch.isfinite(ema).all()
    assert module.g_iter == 4 and module.sample(3)["x"].shape == (3, 1, 8, 8)


def test_cli_overrides_help_and_cfg(tmp_path):
    run = tmp_path / "cli-run"
    result = run_cli("model=gan", "data=ring", "g_iters=3", "seed=3", "logger=csv", "metrics=none", "model.log_every=1",
                     "callbacks.samples.every_g_iters=3", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Run completed" in result.stdout and str(run) in result.stdout
    assert (run / "samples" / "iter_000003.png").is_file()  # a scatter plot for 2-D data
    assert OmegaConf.load(run / "config.yaml").seed == 3
    assert list((run / "csv").rglob("metrics.csv"))
    help_text = run_cli("--help", cwd=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    groups = dict(line.split(": ", 1) for line in help_text.stdout.splitlines() if line.startswith(("model: ", "data: ")))
    assert {"dcgan", "wgan_gp", "acgan"} <= set(groups["model"].split(", ")) and "digits" in groups["data"]
    job = run_cli("model=gan", "--cfg", "job", cwd=tmp_path)
    assert job.returncode == 0 and "name: gan" in job.stdout


def test_wandb_runs_offline_without_credentials_and_leaves_its_files(tmp_path):
    run = tmp_path / "wandb-run"
    env = {"HOME": str(tmp_path), "WANDB_MODE": None, "WANDB_API_KEY": None, "NETRC": str(tmp_path / "none")}
    result = run_cli("data=digits", "data.image_size=8", "g_iters=2", "logger=wandb", "metrics=none",
                     "callbacks.samples.every_g_iters=1", f"hydra.run.dir={run}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert "wandb sync" in (run / "run.log").read_text()
    run_id = OmegaConf.load(run / "config.yaml").logger.wandb.id
    assert offline[0].name.endswith(run_id)


@pytest.mark.slow
def test_run_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    args = ["data=digits", "data.image_size=8", "data.batch_size=16", "model.generator.dcgan.width=8",
            "model.discriminator.dcgan.width=8", "model.ema_decay=0.9", "model.n_critic=2", "g_iters=120",
            "model.log_every=10", "logger=wandb", "metrics=none", "callbacks.checkpoint.every_g_iters=3",
            "callbacks.samples.every_g_iters=10"]
    whole, parts = kill_and_resume(tmp_path, args)
    assert_same(final_state(whole), final_state(parts))
    # Lines logged after the last checkpoint and before the kill are dropped at the resume, which logs them again.
    assert [r["g_iter"] for r in read_jsonl(parts / "metrics.jsonl")] == list(range(10, 121, 10))
    offline_runs = {p.name.rsplit("-", 1)[1] for p in (parts / "wandb").glob("offline-run-*")}
    assert offline_runs == {OmegaConf.load(parts / "config.yaml").logger.wandb.id}  # one W&B run, continued


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_digits, monkeypatch):
    from gan.models.base import GANModule

    original = GANModule.discriminator_loss

    def poisoned(self, *args):
        loss = original(self, *args)
        return loss * float("nan") if self.g_iter >= 3 else loss

    monkeypatch.setattr(GANModule, "discriminator_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(DivergenceError, match="generator iteration 4"):
        train(compose_config(run, *tiny_digits, "g_iters=10"))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["gan_progress"]["g_iter"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"


def _write_png(path: Path, size=(12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 10, 10)).save(path)


@pytest.mark.parametrize("case", ["image_size", "celeba_missing", "empty_folder", "unreadable_image",
                                  "unknown_loss", "conditional_unlabelled"])
def test_bad_input_raises_a_clear_error_and_leaves_no_run_directory(tmp_path, hydra_run_dir, case):
    folder = tmp_path / "images"
    overrides = {
        "image_size": ["model=dcgan", "data=folder", f"data.root={folder}", "data.image_size=36", "data.batch_size=4"],
        "celeba_missing": ["data=celeba", f"data.root={tmp_path / 'nowhere'}"],
        "empty_folder": ["data=folder", f"data.root={folder}"],
        "unreadable_image": ["data=folder", f"data.root={folder}", "data.image_size=8"],
        "unknown_loss": ["model.loss=wassersteinn"],
        "conditional_unlabelled": ["model.conditioning=projection", "data=ring", "model=gan"],
    }[case]
    folder.mkdir()
    if case in ("image_size", "unreadable_image"):
        for i in range(12):
            _write_png(folder / "a" / f"{i}.png")
    if case == "unreadable_image":
        (folder / "a" / "broken.png").write_bytes(b"not a png at all")
    expected = {"image_size": "power of two", "celeba_missing": "list_eval_partition", "empty_folder": "no image",
                "unreadable_image": "broken.png", "unknown_loss": "hinge", "conditional_unlabelled": "labelled"}[case]
    with pytest.raises(UserError, match=f"(?i){expected}"):
        train(compose_config(hydra_run_dir, *overrides))
    assert not hydra_run_dir.exists()


def test_cli_bad_input_exits_nonzero_with_one_paragraph(tmp_path):
    missing = run_cli("resume=/no/such/run", cwd=tmp_path)
    assert missing.returncode == 2 and "No checkpoint at /no/such/run" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = run_cli("model=nosuchgan", cwd=tmp_path)
    assert unknown.returncode != 0 and "dcgan" in unknown.stderr and "gan" in unknown.stderr
    bad = run_cli("data=celeba", f"data.root={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "celeba" in bad.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("override, expected", [
    ("model.g_lr=fast", "model.g_lr must be a positive number, got 'fast'"),
    ("model.betas=[0.5]", "model.betas must be two numbers in [0, 1)"),
    ("model.betas=[0.5,1.0]", "model.betas must be two numbers in [0, 1)"),
    ("model.n_critic=2.5", "model.n_critic must be a positive integer"),
    ("g_iters=-5", "g_iters must be a positive integer"),
    ("g_iters=true", "g_iters must be a positive integer"),
    ("callbacks.checkpoint.every_g_iters=0", "callbacks.checkpoint.every_g_iters must be a positive integer"),
    ("callbacks.samples.every_g_iters=x", "callbacks.samples.every_g_iters must be a positive integer"),
    ("data.image_size=abc", "values under `data`: ValueError"),
    ("trainer.max_steps=x", "values under `trainer`"),
])
def test_config_values_are_checked_where_they_enter_naming_the_key(hydra_run_dir, override, expected):
    with pytest.raises(UserError) as error:
        train(compose_config(hydra_run_dir, "metrics=none", override))
    assert expected in str(error.value)
    assert not hydra_run_dir.exists()
