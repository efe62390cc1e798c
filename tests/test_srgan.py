"""SRGAN (Ledig et al. 2017) on the shared loop: the paper's networks, the staged schedule, the SR metrics against hand
computations, exact resumption, the command-line tools, and the data layouts (DIV2K, an HR folder, Set5-style test
folders) with their errors, read from small PNG files written here."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from conftest import assert_same, compose_config, ddp_run, final_state, kill_and_resume, run_cli
from gan.data.super_resolution import DIV2KSuperResolution, FolderSuperResolution, MNIST5kSuperResolution
from gan.errors import UserError
from gan.kinds import check_model, get_kind
from gan.metrics import super_resolution as sr
from gan.metrics.classifier_training import classifier_weights
from gan.models.srgan import SRGAN, VGG19_FILE
from gan.nets.srgan import SRGANDiscriminator, SRResNet
from gan.train import instantiate, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model=srgan", "data=mnist5k_x4", "data.image_size=16", "data.batch_size=8", "model.generator.width=8",
        "model.generator.num_blocks=2", "model.discriminator.width=4", "model.discriminator.dense=16",
        "model.content=mse", "model.pretrain_iters=2", "callbacks.checkpoint.every_g_iters=3",
        "callbacks.samples.every_g_iters=3"]


def tiny(run, *overrides):
    return compose_config(run, *TINY, *overrides)


# ---------------------------------------------------------------- networks


def test_networks_have_the_papers_layers_and_shapes():
    cfg = compose_config(Path("unused"), "model=srgan", "data=div2k", "scale=none", fast=False)
    g, d = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    # 9x9 head, 16 blocks x 2, the conv before the long skip, two x2 upsampling convs (64 -> 256), the 9x9 output
    assert len(convs) == 1 + 16 * 2 + 1 + 2 + 1
    assert convs[0].kernel_size == (9, 9) and convs[0].out_channels == 64 and convs[-1].kernel_size == (9, 9)
    assert [(c.in_channels, c.out_channels) for c in convs[-3:-1]] == [(64, 256), (64, 256)]
    assert sum(isinstance(m, nn.PixelShuffle) for m in g.modules()) == 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 16 * 2 + 1
    d_convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in d_convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in d_convs] == [1, 2] * 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 7  # from the second conv on
    assert [m.out_features for m in d.modules() if isinstance(m, nn.Linear)] == [1024, 1]
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    with torch.no_grad():
        out = SRResNet(3, 4, 8, 2).eval()(torch.rand(2, 3, 6, 5) * 2 - 1)
        assert out.shape == (2, 3, 24, 20) and out.abs().max() <= 1
        assert SRGANDiscriminator(3, 96, 8, 16).eval()(torch.rand(2, 3, 96, 96)).shape == (2,)
    with pytest.raises(UserError, match="power of 2"):
        SRResNet(1, 3, 8, 1)


# ---------------------------------------------------------------- metrics


def test_psnr_and_ssim_on_the_luminance_with_the_border_cropped_equal_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (2, 3, 24, 24), generator=gen, dtype=torch.uint8)
    fake = real.clone()
    fake[0, :, 9, 12] = 0  # inside the cropped window
    fake[0, :, 0, 0] = 255 - fake[0, :, 0, 0]  # in the border: does not count
    fake[1] = (real[1].int() + 3).clamp(0, 255).to(torch.uint8)
    border = 4

    def y(img):  # MATLAB rgb2ycbcr on 0..255 RGB
        r, g, b = (img.double()[c] for c in range(3))
        return 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255

    expected = []
    for f, r in zip(fake, real):
        diff = (y(f) - y(r))[border:-border, border:-border]
        expected.append(10 * math.log10(255 ** 2 / float((diff ** 2).mean())))
    assert sr.psnr_y(fake, real, border).tolist() == pytest.approx(expected, rel=1e-12)
    assert sr.psnr_y(real, real, border).isinf().all() and sr.ssim_y(real, real, border).tolist() == pytest.approx([1, 1])
    grey = real[:, :1]
    assert torch.allclose(sr.luminance(grey)[:, 0], 16 + grey[:, 0].double() * 219 / 255)
    assert sr.ssim_y(fake, real, border)[0] < 1


def test_bicubic_resampling_keeps_sizes_and_constant_images():
    flat = torch.full((1, 1, 16, 16), 77, dtype=torch.uint8)
    assert torch.equal(sr.bicubic_down(flat, 4), torch.full((1, 1, 4, 4), 77, dtype=torch.uint8))
    assert torch.equal(sr.bicubic_up(sr.bicubic_down(flat, 4), 4), flat)
    assert torch.equal(sr.nearest_up(torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2), 2)[0, 0, :2, :2],
                       torch.zeros(2, 2, dtype=torch.uint8))


# ---------------------------------------------------------------- the schedule


def test_mse_pretraining_then_d_and_g_with_the_1e3_weight_and_the_lr_drop_at_half(tmp_path):
    cfg = tiny(tmp_path, "g_iters=10", "model.pretrain_iters=4")
    module: SRGAN = instantiate(cfg.model)
    assert module.adversarial_weight == 1e-3 and module.pretrain_iters == 4
    stages = {i: [p.name for p in module.phases if p.in_stage(i)] for i in range(10)}
    assert all(stages[i] == ["mse"] for i in range(4)) and all(stages[i] == ["d", "g"] for i in range(4, 10))
    players = module.players
    assert players["srresnet"].lr_factor is None
    assert [players["generator"].lr_factor(i) for i in (4, 6, 7, 9)] == [1, 1, 0.1, 0.1]  # drop at 4 + 6 / 2
    assert players["discriminator"].lr_factor is players["generator"].lr_factor
    optimizers = module.configure_optimizers()
    assert all(o.param_groups[0]["lr"] == 1e-4 and o.param_groups[0]["betas"] == (0.9, 0.999) for o in optimizers)
    # the G loss: content (mse here) + 1e-3 x non-saturating BCE
    module._content = (nn.Identity(),)
    batch = {"lr": torch.rand(4, 1, 4, 4) * 2 - 1, "hr": torch.rand(4, 1, 16, 16) * 2 - 1}
    loss = module.generator_loss(batch)
    with torch.no_grad():
        fake = module.generator(batch["lr"])
        bce = nn.functional.softplus(-module.discriminator(fake)).mean()
    assert loss.item() == pytest.approx(((fake - batch["hr"]) ** 2).mean().item() + 1e-3 * bce.item(), rel=1e-5)


def test_a_run_trains_the_generator_alone_before_pretrain_iters_then_both_at_1e5_after_half(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, "g_iters=6", "model.pretrain_iters=2", "model.log_every=1", "model.lr_drop=0.5"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(k for k in r if k.startswith("train/")) for r in records[:2]] == [["train/mse_loss"]] * 2
    assert all({"train/d_loss", "train/g_loss", "train/content", "train/adversarial"} <= set(r) for r in records[2:])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    lrs = [o["param_groups"][0]["lr"] for o in ckpt["optimizer_states"]]
    assert lrs == pytest.approx([1e-4, 1e-5, 1e-5])  # srresnet, generator, discriminator after 4 + (6-2)/2
    assert ckpt["srgan_content_used"] == "mse (pixels); model.content=mse"


def test_bad_stage_settings_are_user_errors(tmp_path):
    for overrides, says in ((["g_iters=3", "model.pretrain_iters=5"], "at least model.pretrain_iters=5"),
                            (["model.lr_drop=2"], "model.lr_drop"), (["model.content=vgg"], "model.content='vgg'")):
        with pytest.raises(UserError, match=says):
            instantiate(tiny(tmp_path, *overrides).model)


def test_vgg19_content_without_the_weights_file_is_one_paragraph_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError) as error:
        instantiate(tiny(tmp_path, "model.content=vgg19").model)
    message = str(error.value)
    assert VGG19_FILE in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message and "\n" not in message


def test_auto_content_uses_the_datasets_classifier_and_records_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no VGG19 weights there
    run = tmp_path / "run"
    train(tiny(run, "model.content=auto", "g_iters=2", "model.pretrain_iters=1", f"paths.cache_dir={tmp_path}",
               "model.classifier={max_steps:20,epochs:1}"))
    used = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["srgan_content_used"]
    assert used.startswith("classifier conv maps, seed 1 (mnist5k_x4-16px-") and used.endswith("model.content=auto")
    # its own classifier (seed 1), not the metrics' judge (seed 0): the judge never scores features G learnt to match
    content_file = used.split("(")[1].split(")")[0]
    judge = classifier_weights(instantiate(tiny(run, "g_iters=2").data), tmp_path, {"max_steps": 20, "epochs": 1})
    assert judge.name != content_file and (tmp_path / "classifiers" / content_file).is_file()


# ---------------------------------------------------------------- training and resuming


def test_trains_and_resumes_exactly(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny(whole, "g_iters=6", "model.pretrain_iters=2"))
    train(tiny(parts, "g_iters=3", "model.pretrain_iters=2", "model.total_iters=6"))
    train(OmegaConf.merge(tiny(parts, "g_iters=6", "model.pretrain_iters=2"),
                          {"resume": str(parts / "checkpoints" / "last.ckpt")}), ["g_iters=6"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 6
    assert_same(state, final_state(parts))
    tile = 48 + 2  # 16-pixel images enlarged to 48, 2 pixels of padding
    assert Image.open(whole / "samples" / "iter_000003.png").size == (4 * tile + 2, 8 * tile + 2)  # LR|bicubic|SR|HR


def test_training_crops_are_random_aligned_and_keyed_by_the_stream_position():
    dm = MNIST5kSuperResolution(name="mnist5k_x4", shape=(1, 16, 16), num_classes=10, batch_size=4, image_size=16,
                                scale=4, crop=8, flip=True)
    loader = dm.train_dataloader()
    first = next(iter(loader))
    assert first["lr"].shape == (4, 1, 2, 2) and first["hr"].shape == (4, 1, 8, 8)
    from gan.metrics.quantize import to_uint8
    # every LR crop is the matching window of the record's LR image (or its mirror)
    train_split = dm.dataset("train")
    lr_all = train_split.fields["lr"]
    for lr in to_uint8(first["lr"]):
        windows = lr_all.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 1, 2, 2)
        assert any(torch.equal(w, lr) or torch.equal(w.flip(-1), lr) for w in windows)
    dm.load_state_dict({"minibatches_consumed": 0})
    again = next(iter(dm.train_dataloader()))
    assert torch.equal(again["hr"], first["hr"]) and torch.equal(again["lr"], first["lr"])
    dm.load_state_dict({"minibatches_consumed": 1})
    assert not torch.equal(next(iter(dm.train_dataloader()))["hr"], first["hr"])


# ---------------------------------------------------------------- evaluation, the command-line tools


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """Two tiny runs with evaluation on (a classifier trained briefly into a private cache)."""
    root = tmp_path_factory.mktemp("srgan-runs")
    runs = []
    for seed in (0, 1):
        run = root / f"run{seed}"
        train(compose_config(run, *TINY, "g_iters=4", "model.pretrain_iters=2", f"seed={seed}", "metrics=default",
                             "metrics.every_n_g_iters=2", "metrics.num_samples=60", "metrics.final_num_samples=60",
                             f"paths.cache_dir={root / 'cache'}", "metrics.classifier.max_steps=60",
                             "metrics.classifier.epochs=1"))
        runs.append(run)
    return runs


def test_the_callback_selects_by_fid_and_reports_every_value_beside_bicubic_and_hr(trained_runs):
    report = json.loads((trained_runs[0] / "eval.json").read_text())
    values, provenance = report["values"], report["provenance"]
    for key in ("psnr_y", "ssim_y", "fid", "class_accuracy"):
        assert math.isfinite(values[key]) and f"ref_bicubic/{key}" in values
    assert "ref_real/fid" in values and "ref_real/class_accuracy" in values and "ref_real/psnr_y" not in values
    assert provenance["kind"] == "super_resolution" and provenance["scale"] == 4
    assert "border pixels cropped" in provenance["pixel_metrics"] and "4 border" in provenance["pixel_metrics"]
    assert provenance["content_used"].startswith("mse") and "bicubic" in provenance["bicubic"]
    assert get_kind("super_resolution").monitor(None) == "fid"


def test_gan_evaluate_prints_the_table_and_saves_the_arrays(trained_runs, tmp_path):
    run = trained_runs[0]
    result = run_cli(f"ckpt={run}", "split=test", "num_samples=40", "save_samples=true", module="gan.evaluate",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "x4 super-resolution" in lines[0] and lines[1].split() == ["metric", "value", "bicubic", "HR"]
    psnr = next(line for line in lines if line.split()[:1] == ["psnr_y"]).split()
    assert psnr[3] == "inf" and float(psnr[1]) > 0 and float(psnr[2]) > 0
    saved = np.load(next(run.glob("checkpoints/samples_*_test_n40_seed0.npz")))
    assert saved["arr_0"].shape == (40, 16, 16, 1) and saved["arr_0"].dtype == np.uint8
    assert saved["lr"].shape == (40, 4, 4, 1) and saved["bicubic"].shape == saved["hr"].shape == (40, 16, 16, 1)
    assert np.array_equal(saved["bicubic"], sr.bicubic_up(torch.from_numpy(saved["lr"]).permute(0, 3, 1, 2), 4)
                          .permute(0, 2, 3, 1).numpy())
    assert saved["labels"].shape == (40,) and set(saved["labels"].tolist()) <= set(range(10))


def test_gan_compare_on_two_runs_exits_0(trained_runs, tmp_path):
    result = run_cli(*map(str, trained_runs), "--metric", "psnr_y", "--out", str(tmp_path / "r.html"),
                     module="gan.compare", cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert (tmp_path / "r.html").is_file()


# ---------------------------------------------------------------- data layouts and their errors


def write_png(path: Path, size: tuple[int, int], seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def div2k(root: Path, part: str, names, hr_size=(36, 28), lr_size=(9, 7)) -> None:
    for i, name in enumerate(names):
        write_png(root / f"DIV2K_{part}_HR" / f"{name}.png", hr_size, i)
        write_png(root / f"DIV2K_{part}_LR_bicubic" / "X4" / f"{name}x4.png", lr_size, 100 + i)


def sr_module(cls, root, **extra):
    settings = dict(name="sr", shape=(3, 16, 16), num_classes=None, batch_size=2, root=str(root), image_size=16,
                    scale=4, crop=16, flip=False, channels=3, test_root=None)
    return cls(**{**settings, **extra})


def test_div2k_reads_hr_and_lr_files_and_crops_them_together(tmp_path):
    div2k(tmp_path, "train", ["0001", "0002", "0003"])
    div2k(tmp_path, "valid", ["0801", "0802", "0803", "0804"])
    dm = sr_module(DIV2KSuperResolution, tmp_path)
    dm.setup("fit")
    data = dm.eval_tensors("val")
    hr = np.asarray(Image.open(tmp_path / "DIV2K_valid_HR" / "0801.png"))
    lr = np.asarray(Image.open(tmp_path / "DIV2K_valid_LR_bicubic" / "X4" / "0801x4.png"))
    top, left = (7 - 4) // 2, (9 - 4) // 2  # the centred 4x4 LR square and the HR square over it
    assert np.array_equal(data["lr"][0].permute(1, 2, 0).numpy(), lr[top:top + 4, left:left + 4])
    assert np.array_equal(data["hr"][0].permute(1, 2, 0).numpy(), hr[4 * top:4 * top + 16, 4 * left:4 * left + 16])
    # no test_root: the valid pairs' first half selects, the second half reports (never the same images)
    assert [p.stem for p in dm.dataset("val").hr] == ["0801", "0802"]
    assert [p.stem for p in dm.dataset("test").hr] == ["0803", "0804"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["lr"].shape == (2, 3, 4, 4) and batch["hr"].shape == (2, 3, 16, 16)
    from gan.metrics.quantize import to_uint8
    names = ["0001", "0002", "0003"]
    lrs = [torch.from_numpy(np.asarray(Image.open(tmp_path / "DIV2K_train_LR_bicubic" / "X4" / f"{n}x4.png")))
           .permute(2, 0, 1) for n in names]
    hrs = [torch.from_numpy(np.asarray(Image.open(tmp_path / "DIV2K_train_HR" / f"{n}.png"))).permute(2, 0, 1)
           for n in names]
    for lr_crop, hr_crop in zip(to_uint8(batch["lr"]), to_uint8(batch["hr"])):
        found = [(i, t, l) for i, image in enumerate(lrs) for t in range(4) for l in range(6)
                 if torch.equal(image[:, t:t + 4, l:l + 4], lr_crop)]
        assert found, "each LR crop is a window of an LR file"
        i, t, l = found[0]
        assert torch.equal(hrs[i][:, 4 * t:4 * t + 16, 4 * l:4 * l + 16], hr_crop)  # with the HR window over it


def test_an_hr_folder_and_a_set5_style_test_folder_make_lr_by_bicubic(tmp_path):
    for i in range(40):
        write_png(tmp_path / "hr" / f"img{i:03d}.png", (18, 17), i)  # modcrop: 16 x 16
    for i, name in enumerate(["baby", "bird", "butterfly", "head", "woman"]):
        write_png(tmp_path / "Set5" / f"{name}.png", (20, 16 + i), 50 + i)
    dm = sr_module(FolderSuperResolution, tmp_path / "hr", test_root=str(tmp_path / "Set5"))
    sizes = {split: len(dm.dataset(split)) for split in ("train", "val", "test")}
    assert sizes["test"] == 5 and sizes["train"] + sizes["val"] == 40 and sizes["val"] < 10
    test = dm.eval_tensors("test")
    assert test["hr"].shape == (5, 3, 16, 16) and test["lr"].shape == (5, 3, 4, 4)
    first = dm.dataset("test").pair(0)
    assert torch.equal(first[0], sr.bicubic_down(first[1][None], 4)[0]) and first[1].shape == (3, 16, 20)
    held = sr_module(FolderSuperResolution, tmp_path / "hr")
    assert sum(len(held.dataset(s)) for s in ("train", "val", "test")) == 40


def test_bad_inputs_are_one_paragraph_user_errors(tmp_path):
    def fails(make, *says):
        with pytest.raises(UserError) as error:
            make()
        message = str(error.value)
        assert "\n" not in message and all(s in message for s in says), message

    fails(lambda: sr_module(DIV2KSuperResolution, tmp_path / "none").dataset("train"),
          str(tmp_path / "none" / "DIV2K_train_HR"), "DIV2K_train_LR_bicubic/X4")
    div2k(tmp_path / "nolr", "train", ["0001", "0002"])
    os.remove(tmp_path / "nolr" / "DIV2K_train_LR_bicubic" / "X4" / "0002x4.png")
    fails(lambda: sr_module(DIV2KSuperResolution, tmp_path / "nolr").dataset("train"), "0002x4.png", "0002.png")
    div2k(tmp_path / "sizes", "train", ["0001", "0002"], lr_size=(12, 7))
    fails(lambda: sr_module(DIV2KSuperResolution, tmp_path / "sizes").dataset("train").pair(0),
          "0001x4.png", "12x7", "must be 9x7")
    fails(lambda: sr_module(FolderSuperResolution, tmp_path / "empty").dataset("train"), str(tmp_path / "empty"),
          "folder of HR images")
    fails(lambda: MNIST5kSuperResolution(name="m", shape=(1, 28, 28), num_classes=10, batch_size=4, image_size=28,
                                         scale=3, crop=28, flip=False), "data.image_size=28", "data.scale=3")
    fails(lambda: sr_module(FolderSuperResolution, tmp_path, crop=18), "data.crop=18", "multiple of data.scale=4")
    for i in range(3):
        write_png(tmp_path / "small" / f"{i}.png", (12, 12), i)
    small = sr_module(FolderSuperResolution, tmp_path / "small")
    fails(lambda: small.eval_tensors("train"), "12x12", "data.image_size=16")
    fails(lambda: next(iter(small.train_dataloader())), "12x12", "data.crop=16")


def test_the_kind_refuses_data_without_lr_hr_pairs_naming_the_data_that_fits(tmp_path):
    module = instantiate(tiny(tmp_path).model)
    assert check_model(module).name == "super_resolution"
    from gan.data import data_configs_serving
    assert data_configs_serving(("lr", "hr")) == ["div2k", "mnist5k_x4", "sr_folder"]
    from gan.data.digits import DigitsDataModule
    from gan.kinds import check_fields

    digits = DigitsDataModule(name="digits", shape=(1, 8, 8), num_classes=None, batch_size=16, image_size=8, channels=1)
    with pytest.raises(UserError, match=r"missing: lr, hr\). Data that fits this model: data=div2k, data=mnist5k_x4, "
                                        r"data=sr_folder\."):
        check_fields(module, digits)


# ---------------------------------------------------------------- slow: a real kill, and DDP on 2 CPU processes

CLI_TINY = [*TINY, "data.batch_size=4", "metrics=none", "model.log_every=5", "model.pretrain_iters=10"]


@pytest.mark.slow
def test_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    args = [*CLI_TINY, "g_iters=40", "logger=none", "callbacks.checkpoint.every_g_iters=3",
            "callbacks.samples.every_g_iters=20"]
    whole, parts = kill_and_resume(tmp_path, args, kill_after="g000015.ckpt")
    assert_same(final_state(whole), final_state(parts))


@pytest.mark.slow
def test_runs_under_ddp_on_two_cpu_processes(tmp_path):
    records = ddp_run(tmp_path, *CLI_TINY, "model.pretrain_iters=2", "logger=none")
    assert "train/mse_loss" in records[0] and "train/g_loss" in records[-1]
    assert records[-1]["images_seen"] == 4 * 4 * 2  # 2 ranks x batch 4
