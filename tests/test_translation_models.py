"""pix2pix, CycleGAN and StarGAN on the shared loop: each trains on its embedded data and resumes exactly; the
pieces the papers specify (pix2pix's halved D loss and L1, CycleGAN's image pool, the lr schedule) do what they say."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from conftest import assert_same, compose_config, ddp_run, final_state, kill_and_resume
from gan.errors import UserError
from gan.losses import LOSSES
from gan.models.core import lr_schedule
from gan.models.cyclegan import CycleGAN, ImagePool
from gan.models.pix2pix import Pix2Pix
from gan.models.stargan import StarGAN
from gan.train import train

SMALL = {  # each model on its embedded dataset, with networks a few channels wide
    "pix2pix": ["model=pix2pix", "data=digits_edges", "model.generator.width=8", "model.discriminator.width=8"],
    "cyclegan": ["model=cyclegan", "data=digits_styles", "model.g_ab.width=8", "model.d_a.width=8",
                 "model.pool_size=4"],
    "stargan": ["model=stargan", "data=digits_attributes", "model.generator.width=8", "model.discriminator.width=8",
                "model.n_critic=2"],
}
CLASSES = {"pix2pix": Pix2Pix, "cyclegan": CycleGAN, "stargan": StarGAN}


def small(run, model, *overrides):
    return compose_config(run, *SMALL[model], "data.batch_size=8", "callbacks.checkpoint.every_g_iters=3",
                          "callbacks.samples.every_g_iters=3", *overrides)


@pytest.mark.parametrize("model", sorted(SMALL))
def test_each_translation_model_trains_and_resumes_exactly(tmp_path, model):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(small(whole, model, "g_iters=5", "model.lr_decay=0.6"))
    train(small(parts, model, "g_iters=3", "model.lr_decay=0.6", "model.total_iters=5"))
    train(OmegaConf.merge(small(parts, model, "g_iters=5"), {"resume": str(parts / "checkpoints" / "last.ckpt")}),
          ["g_iters=5"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 5
    assert_same(state, final_state(parts))
    columns = {"pix2pix": 3, "cyclegan": 6, "stargan": 1 + 3}[model]  # input | outputs (see grid_columns)
    tile = 48 + 2  # 16-pixel images enlarged to 48, 2 pixels of padding
    assert Image.open(whole / "samples" / "iter_000003.png").size == (columns * tile + 2, 8 * tile + 2)


@pytest.mark.parametrize("model", sorted(SMALL))
def test_each_translation_config_builds_the_papers_settings(tmp_path, model):
    photos = {"pix2pix": "aligned", "cyclegan": "unaligned", "stargan": "celeba_attributes"}[model]
    cfg = compose_config(tmp_path, f"model={model}", f"data={photos}")  # no CPU scale file: the paper's settings
    module = instantiate(cfg.model)
    assert isinstance(module, CLASSES[model])
    expected = {"pix2pix": (2e-4, (0.5, 0.999), ["d", "g"], 1), "cyclegan": (2e-4, (0.5, 0.999), ["g", "d"], 1),
                "stargan": (1e-4, (0.5, 0.999), ["d", "g"], 5)}[model]
    optimizers = module.configure_optimizers()
    assert all(o.param_groups[0]["lr"] == expected[0] and o.param_groups[0]["betas"] == expected[1] for o in optimizers)
    assert [p.name for p in module.phases] == expected[2] and module.batches_per_iteration == expected[3]
    if model == "pix2pix":
        assert module.l1_weight == 100.0 and module.eval_dropout
    if model == "cyclegan":
        assert (module.cycle_weight, module.identity_weight, module.pools["a"].size) == (10.0, 0.5, 50)
        assert module.g_ab is not module.g_ba and type(module.g_ab).__name__ == "TranslationResNetGenerator"
    if model == "stargan":
        assert (module.gp_weight, module.cls_weight, module.rec_weight, module.n_critic) == (10.0, 1.0, 10.0, 5)


def test_pix2pix_halves_the_discriminator_loss_and_adds_100_l1():
    torch.manual_seed(0)
    cfg = compose_config("/tmp", *SMALL["pix2pix"], "data.image_size=8")
    module = instantiate(cfg.model)
    a, b = torch.rand(4, 1, 8, 8) * 2 - 1, torch.rand(4, 1, 8, 8) * 2 - 1
    torch.manual_seed(1)
    d_loss = module.discriminator_loss({"a": a, "b": b})
    torch.manual_seed(1)
    with torch.no_grad():
        fake = module.generator(a)
    bce = LOSSES["non_saturating"]
    expected = 0.5 * bce.d(module.discriminator(torch.cat([a, b], 1)), module.discriminator(torch.cat([a, fake], 1)))
    assert d_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.manual_seed(2)
    g_loss = module.generator_loss({"a": a, "b": b})
    torch.manual_seed(2)
    fake = module.generator(a)
    expected = bce.g(module.discriminator(torch.cat([a, fake], 1))) + 100 * (fake - b).abs().mean()
    assert g_loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_image_pool_fills_then_swaps_about_half_of_the_new_fakes():
    pool = ImagePool(4, torch.Generator().manual_seed(0))
    first = torch.arange(4.0).view(4, 1)
    assert torch.equal(pool.query(first), first) and len(pool.images) == 4  # filling: the new fakes pass through
    swapped = sum(int(not torch.equal(pool.query(torch.full((1, 1), 100.0 + i)), torch.full((1, 1), 100.0 + i)))
                  for i in range(400))
    assert 150 < swapped < 250 and len(pool.images) == 4
    assert torch.equal(ImagePool(0, torch.Generator()).query(first), first)


def test_lr_schedule_is_constant_then_falls_towards_zero():
    factor = lr_schedule(total_iters=10, decay=0.4)
    assert [factor(i) for i in (0, 5, 6, 7, 9)] == pytest.approx([1, 1, 1, 1 - 1 / 5, 1 - 3 / 5])  # 6 constant
    assert lr_schedule(total_iters=None, decay=0.0) is None
    for bad in ({"total_iters": None, "decay": 0.5}, {"total_iters": 10, "decay": 1.5}):
        with pytest.raises(UserError, match="model.lr_decay"):
            lr_schedule(**bad)


def test_stargan_translations_depend_on_the_target_attributes(tmp_path):
    module = instantiate(compose_config(tmp_path, *SMALL["stargan"]).model)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    on, off = module.translate(x, torch.ones(3, 3)), module.translate(x, torch.zeros(3, 3))
    assert on.shape == x.shape and not torch.allclose(on, off)


# ---------------------------------------------------------------- slow: a real kill, and DDP on 2 CPU processes

CLI_TINY = {model: [*args, "data.image_size=8", "data.batch_size=4", "metrics=none", "model.log_every=5"]
            for model, args in SMALL.items()}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(SMALL))
def test_each_translation_model_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path, model):
    args = [*CLI_TINY[model], "g_iters=40", "logger=none", "callbacks.checkpoint.every_g_iters=3",
            "callbacks.samples.every_g_iters=20", "model.lr_decay=0.5"]
    whole, parts = kill_and_resume(tmp_path, args)
    assert_same(final_state(whole), final_state(parts))


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(SMALL))
def test_each_translation_model_runs_under_ddp_on_two_cpu_processes(tmp_path, model):
    records = ddp_run(tmp_path, *CLI_TINY[model], "logger=none")
    assert records[-1]["images_seen"] == 4 * 4 * 2 * (2 if model == "stargan" else 1)  # 2 ranks x batch 4 (x n_critic)
