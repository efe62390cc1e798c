"""Evaluation in training and after it: best.ckpt, the test-split report, eval.json, gan.evaluate, the collapse watchdog."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ImageGeneratorStandIn, compose_config, run_cli
from gan.callbacks.collapse import CollapseWatchdog
from gan.callbacks.evaluation import EvaluationCallback
from gan.data.digits import DigitsDataModule
from gan.evaluate import main as evaluate_main
from gan.loggers import JsonlLogger
from gan.train import train

PROVENANCE_KEYS = {"backbone", "weights_sha256", "resize", "image_size", "dataset", "split", "num_real", "num_fake",
                   "seed", "ckpt", "g_iter", "ema"}


pytestmark = pytest.mark.usefixtures("single_thread")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Shared by the tests here, so the digits classifier is trained once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cache) -> Path:
    """4 generator iterations of a tiny DCGAN on 8x8 digits, validated every 2, with the real training code."""
    run = tmp_path_factory.mktemp("run")
    cfg = compose_config(run, "data=digits", "data.image_size=8", "data.batch_size=16", "model.generator.dcgan.width=8",
                         "model.discriminator.dcgan.width=8", "g_iters=4", "logger=none", "callbacks.samples.every_g_iters=2",
                         "callbacks.checkpoint.every_g_iters=2", "metrics=default", "metrics.every_n_g_iters=2",
                         "metrics.num_samples=64", "metrics.final_num_samples=100", "metrics.kid_subsets=10",
                         f"paths.cache_dir={cache}", fast=False)
    train(cfg)
    return run


def test_training_validates_keeps_best_ckpt_and_reports_on_the_test_split(trained_run):
    records = read_jsonl(trained_run / "metrics.jsonl")
    val = [r for r in records if "val/fid" in r]
    assert [r["g_iter"] for r in val] == [2, 4]
    assert {"val/fid", "val/is", "val/kid", "val/precision", "val/recall"} <= val[0].keys()
    assert all(PROVENANCE_KEYS <= r["provenance"].keys() and r["provenance"]["split"] == "val" for r in val)
    best = min(val, key=lambda r: r["val/fid"])
    saved = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=False)
    assert saved["gan_progress"]["g_iter"] == best["g_iter"]
    test = [r for r in records if "test/fid" in r]
    assert len(test) == 1 and test[0]["provenance"]["split"] == "test"
    report = json.loads((trained_run / "eval.json").read_text())
    p = report["provenance"]
    assert report["values"]["fid"] == test[0]["test/fid"]
    assert (p["split"], p["num_fake"], p["selected_on"], p["g_iter"]) == ("test", 100, "val", best["g_iter"])
    assert p["ckpt"] == str(trained_run / "checkpoints" / "best.ckpt") and p["seed"] != val[0]["provenance"]["seed"]
    assert p["backbone"] == "classifier" and p["dataset"] == "digits"
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["objective"] == best["val/fid"] and summary["test/fid"] == report["values"]["fid"]


def test_gan_evaluate_prints_a_table_writes_eval_json_and_samples(trained_run, capsys):
    ckpt = trained_run / "checkpoints" / "g000004.ckpt"
    code = evaluate_main([f"ckpt={ckpt}", "metrics=[fid,is,kid,pr,memorization]", "num_samples=50", "split=val",
                          "save_samples=true", "seed=3"])
    out = capsys.readouterr().out
    assert code == 0 and "fid" in out and "memorization_ratio" in out
    report = json.loads((ckpt.parent / "eval.json").read_text())
    assert PROVENANCE_KEYS <= report["provenance"].keys()
    p = report["provenance"]
    assert (p["ckpt"], p["g_iter"], p["split"], p["num_fake"], p["seed"]) == (str(ckpt), 4, "val", 50, 3)
    assert {"fid", "is", "kid", "precision", "recall", "memorization_ratio"} <= report["values"].keys()
    assert "nearest_train_distance" in report["distributions"]
    samples = np.load(p["samples_file"])
    assert samples["arr_0"].shape == (50, 8, 8, 1) and samples["arr_0"].dtype == np.uint8


def test_gan_evaluate_missing_checkpoint_is_a_user_error(tmp_path):
    result = run_cli(f"ckpt={tmp_path / 'nope.ckpt'}", cwd=tmp_path, module="gan.evaluate")
    assert result.returncode == 2
    assert "No checkpoint at" in result.stderr and "Traceback" not in result.stderr


# ---- the callback and the watchdog with a stand-in trainer ------------------------------------------------------
class NoisyDigits(ImageGeneratorStandIn, torch.nn.Module):
    """A 'generator' whose quality is one parameter: training digits plus `noise` times Gaussian noise."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.images = images
        self.noise = torch.nn.Parameter(torch.tensor(0.0), requires_grad=False)
        self.g_iter = 0

    @property
    def device(self) -> torch.device:
        return self.noise.device

    def sample(self, n, generator=None, ema=None):
        x = self.images[torch.randint(len(self.images), (n,), generator=generator)].float() / 127.5 - 1
        return {"x": (x + self.noise * torch.randn(x.shape, generator=generator)).clamp(-1, 1)}


class StandInTrainer:
    fast_dev_run, is_global_zero = False, True

    def __init__(self, run_dir: Path, datamodule, module, callbacks):
        self.default_root_dir, self.datamodule, self.module = str(run_dir), datamodule, module
        self.loggers, self.callbacks = [JsonlLogger(run_dir)], callbacks

    def save_checkpoint(self, path, weights_only=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": self.module.state_dict(), "g_iter": self.module.g_iter}, path)


def test_final_report_uses_the_best_weights_and_the_watchdog_names_them(tmp_path, cache):
    dm = DigitsDataModule(name="digits", shape=(1, 8, 8), num_classes=None, batch_size=16, image_size=8, channels=1,
                          backbone="classifier")
    module = NoisyDigits(dm.dataset("train").data)
    callback = EvaluationCallback(names=["fid"], num_samples=100, final_num_samples=100, every_n_g_iters=2,
                                  cache_dir=str(cache), kid_subsets=10)
    watchdog = CollapseWatchdog(fid_rise=1.5)
    trainer = StandInTrainer(tmp_path, dm, module, [callback, watchdog])
    for g_iter, noise in ((1, 0.1), (2, 0.1), (3, 1.0), (4, 1.0)):  # good, then collapsed into noise
        module.g_iter, module.noise.data = g_iter, torch.tensor(noise)
        for hook in (callback, watchdog):
            hook.on_train_batch_end(trainer, module, None, None, g_iter)
    assert [h["g_iter"] for h in callback.history] == [2, 4] and callback.best_g_iter == 2
    assert torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)["g_iter"] == 2
    assert len(watchdog.warnings) == 1
    assert str(tmp_path / "checkpoints" / "best.ckpt") in watchdog.warnings[0] and "g_iter 2" in watchdog.warnings[0]

    callback.on_train_end(trainer, module)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["provenance"]["g_iter"] == 2 and report["provenance"]["ckpt"].endswith("best.ckpt")
    assert report["values"]["fid"] < 0.5 * callback.history[-1]["values"]["fid"]  # the good weights were evaluated
    assert float(module.noise) == 1.0  # ... and the live weights restored afterwards
    state = callback.state_dict()
    resumed = EvaluationCallback(names=["fid"], cache_dir=str(cache))
    resumed.load_state_dict(state)
    assert (resumed.best, resumed.best_g_iter, resumed.last_bucket) == (callback.best, 2, 2)
