"""The dashboard around training: wall-clock axes for evaluation lines, real-data reference rows, the readable
`gan.compare` table, W&B's x-axis/summary/groups, a quiet console and the offline Inception message."""
from __future__ import annotations

import json
import logging
import re
import urllib.error
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ImageGeneratorStandIn, compose_config
from gan.compare import main as compare_main
from gan.compare import short_names
from gan.errors import UserError
from gan.metrics import feature_extractor_inception
from test_compare import REF_TEST, REF_VAL, write_composed_run

pytestmark = pytest.mark.usefixtures("single_thread")

SWEEP = Path("multirun") / "2024-05-01_12-00-00"
MODELS = ("dcgan", "wgan_gp")
SEEDS = (0, 1)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- gan.compare: 2 models x 2 seeds of real configs ---------------------------------------------------------------
def write_sweep(root: Path, hydra_dir: bool) -> Path:
    """A Hydra sweep of 2 models x 2 seeds as training leaves it (write_composed_run)."""
    sweep = root / SWEEP
    for job, (model, seed) in enumerate((m, s) for m in MODELS for s in SEEDS):
        fids = [60.0 / k + (5 if model == "dcgan" else 0) + seed for k in (1, 2, 3, 4)]  # at g_iter 500 ... 2000
        write_composed_run(sweep / f"{job}_{model}_digits_s{seed}", [f"model={model}", f"seed={seed}"], fids, hydra_dir)
    return sweep


def printed_table(stdout: str) -> tuple[list[str], list[str]]:
    """(header cells, lines) of the first table printed."""
    lines = stdout.splitlines()
    return re.split(r"\s{2,}", lines[0].strip()), lines


@pytest.mark.parametrize("hydra_dir", [True, False], ids=["with-.hydra", "config.yaml-only"])
def test_compare_table_of_two_models_and_two_seeds_shows_what_matters_in_120_columns(tmp_path, capsys, hydra_dir):
    sweep = write_sweep(tmp_path, hydra_dir)
    report = tmp_path / "report.html"
    assert compare_main([str(sweep), "--out", str(report)]) == 0
    out = capsys.readouterr().out
    header, lines = printed_table(out)

    assert max(len(line) for line in lines) <= 120, "\n".join(line for line in lines if len(line) > 120)
    # derived keys (interpolated from seed or copies of another key) and unused architectures are gone
    assert not [h for h in header if h.endswith("seed") and h != "seed"], header
    assert not [h for h in header if h.endswith(".arch") and h not in ("model.arch",)], header
    assert not [h for h in header if re.search(r"\b(mlp|cnn|resnet)\.", h)], header  # wgan_gp alone uses resnet
    assert not {"G.latent_dim", "generator.latent_dim", "data"} & set(header)
    assert header[:8] == ["run", "model", "seed", "best val/fid", "at g_iter", "final fid", "wall time", "model.arch"]
    assert len(header) <= 16
    assert "every run: data digits, preset none, status completed." in out  # conf/train.yaml: preset: none
    # one row per run, labelled by the job directory, seeds of one model side by side; then the real-data row
    rows = [line for line in lines[2:] if re.match(r"\d_", line)]
    assert [r.split()[0] for r in rows] == ["0_dcgan_digits_s0", "1_dcgan_digits_s1", "2_wgan_gp_digits_s0",
                                            "3_wgan_gp_digits_s1"]
    real = next(line for line in lines if line.startswith("real data"))
    assert real.split()[2:] == ["3.25", "3.5"]
    # the seeds summarised per configuration
    over_seeds = lines.index(next(line for line in lines if line.startswith("model") and "runs" in line))
    assert re.split(r"\s{2,}", lines[over_seeds + 2].strip())[:3] == ["dcgan", "2", "0,1"]
    assert re.split(r"\s{2,}", lines[over_seeds + 3].strip())[:3] == ["wgan_gp", "2", "0,1"]
    assert "16.5 ± 0.71" in lines[over_seeds + 3]  # best val/fid 16 and 17

    page = report.read_text()
    assert '<tr class="reference"><td class="text">real data</td>' in page
    assert "Curves on a log scale" in page and "Dashed line: the metric on real held-out data." in page
    assert "<h2>Over seeds</h2>" in page and 'model.seed' not in page.split("<h2>Runs</h2>")[1].split("</table>")[0]


def test_log_scale_is_a_choice_and_only_the_default_for_fid_like_metrics(tmp_path, capsys):
    sweep = write_sweep(tmp_path, hydra_dir=True)
    report = tmp_path / "report.html"
    assert compare_main([str(sweep), "--out", str(report), "--no-log-y"]) == 0
    assert "Curves on a linear scale (--log-y for a log scale)." in report.read_text()
    for run in sweep.iterdir():  # a metric where higher is better: linear unless asked
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"g_iter": 2000, "elapsed_s": 200.0, "val/is": 5.0, "provenance": {}}) + "\n")
    assert compare_main([str(sweep), "--metric", "is", "--out", str(report)]) == 0
    assert "Curves on a linear scale" in report.read_text()
    assert compare_main([str(sweep), "--metric", "is", "--out", str(report), "--log-y"]) == 0
    assert "Curves on a log scale" in report.read_text()
    capsys.readouterr()


def test_short_column_names_stay_unambiguous():
    keys = ["model.g_lr", "model.generator.resnet.width", "model.discriminator.resnet.width",
            "model.discriminator.norm", "g_iters", "data.image_size"]
    assert short_names(keys) == {
        "model.g_lr": "model.g_lr", "model.generator.resnet.width": "G.resnet.width",
        "model.discriminator.resnet.width": "D.resnet.width", "model.discriminator.norm": "D.norm",
        "g_iters": "g_iters", "data.image_size": "data.image_size"}


# ---- real-data reference rows of the image evaluator ---------------------------------------------------------------
def test_image_evaluation_carries_real_data_reference_rows_computed_once(tmp_path, monkeypatch):
    from gan.data.digits import DigitsDataModule
    from gan.metrics import evaluator as evaluator_module
    from gan.metrics.evaluator import Evaluator
    from gan.metrics.quantize import from_uint8
    from gan.metrics.real_data import load_tensors

    dm = DigitsDataModule(name="digits", shape=(1, 8, 8), num_classes=None, batch_size=16, image_size=8, channels=1,
                          backbone="classifier")
    images = dm.dataset("train").data

    class Generator(ImageGeneratorStandIn):
        g_iter = 3

        def sample(self, n, generator=None, ema=None):
            x = images[torch.randint(len(images), (n,), generator=generator)].float() / 127.5 - 1
            return {"x": (x + 0.3 * torch.randn(x.shape, generator=generator)).clamp(-1, 1)}

    names = ["fid", "is", "kid", "pr"]
    evaluator = Evaluator(dm, names=names, num_samples=200, cache_dir=tmp_path, kid_subsets=10)
    evaluation = evaluator.evaluate(Generator(), split="val", seed=2)
    values, p = evaluation.values, evaluation.provenance
    for key in ("fid", "is", "kid", "precision", "recall", "diversity"):
        assert f"ref_real/{key}" in values
    assert values["ref_real/fid"] < values["fid"] and values["ref_real/precision"] > 0.5
    assert p["ref_real_split"] == "train" and p["ref_real_num"] == 200
    assert "scored as generated samples are" in p["ref_real"]
    # the reference is the partner split's real images put through the very same scoring
    partner = from_uint8(load_tensors(dm.dataset("train"), 200, uint8=True)[0])
    direct = evaluator.score(partner, "val", seed=2, num_real=200).values
    assert values["ref_real/fid"] == pytest.approx(direct["fid"])
    assert values["ref_real/is"] == pytest.approx(direct["is"])
    # computed once: later evaluations (and other evaluators on the same cache) read it
    monkeypatch.setattr(evaluator_module, "load_tensors", lambda *a, **k: pytest.fail("reference recomputed"))
    assert evaluator.evaluate(Generator(), split="val", seed=2).values["ref_real/fid"] == values["ref_real/fid"]
    again = Evaluator(dm, names=names, num_samples=200, cache_dir=tmp_path, kid_subsets=10)
    assert again._image_real_rows("val", 2, 200)[0]["ref_real/fid"] == values["ref_real/fid"]


# ---- a real (toy) training run: metrics.jsonl, eval.json, summary.json, W&B -----------------------------------------
class FakeSummary(dict):
    pass


class FakeRun:
    """What GanWandbLogger and Lightning's WandbLogger call on a wandb run."""

    def __init__(self):
        self.id, self.name, self.defined, self.logged, self.summary = "fake01", "fake", [], [], FakeSummary()
        self.config = type("Config", (), {"update": lambda *a, **k: None})()

    def define_metric(self, name, **kwargs):
        self.defined.append((name, kwargs))

    def log(self, record, **kwargs):
        self.logged.append(dict(record))

    def project_name(self):
        return "gan"


@pytest.fixture
def wandb_run(monkeypatch):
    wandb = pytest.importorskip("wandb")
    run = FakeRun()
    inits = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: inits.append(kwargs) or run)
    run.inits = inits
    return run


def test_toy_run_logs_wall_clock_references_and_a_wandb_summary(tmp_path, wandb_run, caplog):
    run_dir = tmp_path / "run"
    cfg = compose_config(run_dir, "model=gan", "data=ring", "g_iters=4", "logger=wandb", "logger.wandb.mode=disabled",
                         "callbacks.samples.every_g_iters=2", "callbacks.checkpoint.every_g_iters=2",
                         "metrics=default", "metrics.every_n_g_iters=2", "metrics.toy_num_samples=300",
                         f"paths.cache_dir={tmp_path / 'c'}", "model.log_every=1", fast=False)
    from gan.train import train

    with caplog.at_level(logging.INFO):
        train(cfg)

    # every line of metrics.jsonl, evaluations included, is on the training clock
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert records and all("elapsed_s" in r and "images_seen" in r for r in records), records
    val = [r for r in records if "val/reverse_kl" in r]
    train_at = {r["g_iter"]: r["elapsed_s"] for r in records if "train/d_loss" in r}
    assert [r["g_iter"] for r in val] == [2, 4] and all(r["elapsed_s"] == train_at[r["g_iter"]] for r in val)
    # the real-data reference beside every value, in the lines, eval.json and summary.json
    assert {"val/ref_real/modes", "val/ref_real/high_quality", "val/ref_real/reverse_kl"} <= val[0].keys()
    assert val[0]["val/ref_real/modes"] == 8 and val[0]["provenance"]["ref_real_split"] == "train"
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["values"]["ref_real/modes"] == 8 and "ref_real" in report["provenance"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/ref_real/high_quality"] == report["values"]["ref_real/high_quality"]

    # W&B: g_iter is every chart's x-axis, the summary holds the best validation and the final test values
    assert ("g_iter", {}) in wandb_run.defined
    assert ("*", {"step_metric": "g_iter", "step_sync": True}) in wandb_run.defined
    assert wandb_run.logged and all("g_iter" in r and "trainer/global_step" not in r for r in wandb_run.logged)
    best = min(val, key=lambda r: r["val/reverse_kl"])
    s = wandb_run.summary
    assert s["best/val/reverse_kl"] == best["val/reverse_kl"] and s["best/g_iter"] == best["g_iter"]
    assert s["best/monitor"] == "val/reverse_kl" and s["test/reverse_kl"] == report["values"]["reverse_kl"]
    assert s["test/ref_real/modes"] == 8 and s["test/weights_g_iter"] == best["g_iter"]
    assert wandb_run.inits[0]["group"] == "gan-ring"  # not a sweep: the model-data group

    # no advertising from Lightning
    assert not [r for r in caplog.records if "litlogger" in r.getMessage() or "💡" in r.getMessage()]


def test_sweep_runs_share_a_wandb_group_named_after_the_sweep(tmp_path, wandb_run, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gan.loggers import sweep_group, wandb_logger

    assert sweep_group() is None  # outside Hydra
    hydra = OmegaConf.create({"mode": RunMode.MULTIRUN.name, "sweep": {"dir": "runs/multirun/2024-05-01_12-00-00"}})
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hydra))
    assert sweep_group() == "sweep-2024-05-01_12-00-00"
    logger = wandb_logger(str(tmp_path), mode="disabled", project="gan", name="dcgan-digits-s0", group="dcgan-digits")
    logger.experiment
    assert wandb_run.inits[0]["group"] == "sweep-2024-05-01_12-00-00"
    assert wandb_run.inits[0]["job_type"] == "dcgan-digits"
    kept = wandb_logger(str(tmp_path), mode="disabled", group="dcgan-digits", group_sweeps=False)
    assert kept._wandb_init["group"] == "dcgan-digits"


# ---- the console ---------------------------------------------------------------------------------------------------
def test_lightning_tips_are_filtered_and_other_messages_pass(caplog):
    import gan.loggers  # noqa: F401  (installs the filter)
    from pytorch_lightning.utilities import rank_zero_info

    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing "
                       "[litlogger](https://pypi.org/project/litlogger/) to enable LitLogger")
        rank_zero_info("💡 Tip: For seamless cloud uploads and versioning, try installing litmodels")
        rank_zero_info("GPU available: False, used: False")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["GPU available: False, used: False"]


# ---- Inception weights missing offline -----------------------------------------------------------------------------
def test_missing_inception_weights_message_offers_training_without_metrics_and_scoring_later(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(feature_extractor_inception, "download_url_to_file", offline)
    for weights in (None, str(tmp_path / "missing.pth")):
        with pytest.raises(UserError) as error:
            feature_extractor_inception.inception_weights_path(weights)
        message = str(error.value)
        assert "metrics=none" in message and "python -m gan.evaluate ckpt=<run dir or .ckpt>" in message
        assert f"inception_weights=/path/to/{feature_extractor_inception.WEIGHTS_FILENAME}" in message
        assert "metrics.backbone=classifier" in message and "\n" not in message
