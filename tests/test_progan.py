"""ProGAN: equalised learning rate, pixel norm and minibatch stddev against hand computation; the fade-in blends;
the schedule in images shown; a run through the composed config; kill-and-resume in a fade-in; bad values."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import assert_same, compose_config, final_state, kill_and_resume, model_config
from gan.errors import UserError
from gan.losses import gradient_penalty
from gan.models.progan import ProGAN, growth_stage
from gan.nets.progan import (EqualizedConv2d, EqualizedLinear, ProGANDiscriminator, ProGANGenerator,
                             minibatch_stddev, pixel_norm)
from gan.train import load_checkpoint, train

TINY = ["model=progan", "data.image_size=8", "model.latent_dim=8", "model.generator.channel_base=32",
        "model.generator.channel_max=8", "model.discriminator.channel_base=32", "model.discriminator.channel_max=8"]


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the layers, by hand


def test_equalized_layers_store_unit_normal_weights_and_scale_them_by_he_constant():
    torch.manual_seed(0)
    linear, conv = EqualizedLinear(5, 3), EqualizedConv2d(2, 4, 3)
    x = torch.randn(6, 5)
    assert torch.allclose(linear(x), x @ (linear.weight * math.sqrt(2 / 5)).T + linear.bias, atol=1e-6)
    images = torch.randn(2, 2, 5, 5)
    expected = F.conv2d(images, conv.weight * math.sqrt(2 / (2 * 3 * 3)), conv.bias, padding=1)
    assert torch.allclose(conv(images), expected, atol=1e-6) and conv(images).shape == (2, 4, 5, 5)
    rgb = EqualizedConv2d(8, 3, 1, gain=1.0)  # toRGB: linear, gain 1
    assert rgb.scale == pytest.approx(1 / math.sqrt(8))
    big = EqualizedLinear(512, 512)
    assert abs(big.weight.std().item() - 1) < 0.01 and abs(big.weight.mean().item()) < 0.01  # N(0, 1) as stored
    assert big.bias.abs().max() == 0
    G = ProGANGenerator([1, 8, 8], latent_dim=16, channel_base=64, channel_max=8)
    assert G.dense.scale == pytest.approx(math.sqrt(2) / 4 / math.sqrt(16))  # the reference code's first layer


def reference_parameter_counts(channels: int, resolution: int, latent: int, fmap_base: int, fmap_max: int):
    """(G, D) trainable parameters of tkarras/progressive_growing_of_gans networks.py (commit 2504c3f), counted layer
    by layer as G_paper and D_paper build them; `apply_bias` (line 54) adds one bias per channel, also to G's first
    dense layer, which it follows the reshape to 4x4 (lines 183-186)."""
    def nf(stage):  # line 167 / 252
        return min(int(fmap_base / 2.0**stage), fmap_max)
    top = int(math.log2(resolution))
    g = latent * nf(1) * 16 + nf(1) + 9 * nf(1) ** 2 + nf(1)  # 4x4: Dense, Conv (lines 181-188)
    g += sum(9 * nf(r - 2) * nf(r - 1) + nf(r - 1) + 9 * nf(r - 1) ** 2 + nf(r - 1)  # Conv0_up, Conv1 (189-198)
             for r in range(3, top + 1))
    g += sum(nf(r - 1) * channels + channels for r in range(2, top + 1))  # ToRGB_lod* (200-203)
    d = sum(channels * nf(r - 1) + nf(r - 1) for r in range(2, top + 1))  # FromRGB_lod* (261-263)
    d += sum(9 * nf(r - 1) ** 2 + nf(r - 1) + 9 * nf(r - 1) * nf(r - 2) + nf(r - 2)  # Conv0, Conv1_down (266-274)
             for r in range(3, top + 1))
    d += 9 * (nf(1) + 1) * nf(1) + nf(1) + 16 * nf(1) * nf(0) + nf(0) + nf(0) + 1  # mbstd, Conv, Dense0, Dense1
    return g, d


def test_the_1024px_networks_have_the_reference_codes_parameter_counts():
    # conf/model/progan.yaml's networks for 1024x1024 RGB; the reference's config: fmap_base 8192 (its nf(res - 1)
    # is our channel_base / 2^res with channel_base 16384), fmap_max 512, latent 512
    G = instantiate(model_config("progan", "generator", "data=celeba", "data.image_size=1024"),
                    latent_dim=model_config("progan").latent_dim)
    D = instantiate(model_config("progan", "discriminator", "data=celeba", "data.image_size=1024"))
    counts = sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())
    assert counts == reference_parameter_counts(3, 1024, 512, 8192, 512) == (23_079_115, 23_087_249)  # Table 2: 23.1M
    assert G.dense.bias is None and G.dense_bias.shape == (512,)  # one bias per channel of the 4x4 map


def test_the_first_dense_layer_adds_one_bias_per_channel_after_the_reshape_to_4x4():
    G = ProGANGenerator([1, 8, 8], latent_dim=4, channel_base=32, channel_max=8)
    with torch.no_grad():
        G.dense_bias.copy_(torch.arange(8.0))
    z = torch.randn(3, 4)
    x = G.dense(pixel_norm(z)).reshape(3, 8, 4, 4) + torch.arange(8.0)[:, None, None]
    first = {}
    G.blocks[0].register_forward_pre_hook(lambda module, args: first.setdefault("x", args[0]))
    G(z, level=0)
    assert torch.allclose(first["x"], pixel_norm(F.leaky_relu(x, 0.2)), atol=1e-6)


def test_pixel_norm_scales_each_feature_vector_to_unit_mean_square():
    x = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1)
    assert torch.allclose(pixel_norm(x).flatten(), torch.tensor([3.0, 4.0]) / math.sqrt(12.5))
    y = pixel_norm(torch.randn(3, 7, 4, 4) * 5)
    assert torch.allclose(y.square().mean(dim=1), torch.ones(3, 4, 4), atol=1e-5)


def test_minibatch_stddev_appends_the_average_standard_deviation_over_the_group():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 2.0], [7.0, 4.0]]).reshape(4, 2, 1, 1)
    whole = minibatch_stddev(x, group_size=4)
    assert whole.shape == (4, 3, 1, 1) and torch.equal(whole[:, :2], x)
    # feature 0: [1, 3, 5, 7] has variance 5; feature 1: [0, 0, 2, 4] has variance 11 / 4 (population)
    assert torch.allclose(whole[:, 2].flatten(), torch.full((4,), (math.sqrt(5) + math.sqrt(11 / 4)) / 2))
    # groups of 2: samples {0, 2} (std 2 and 1) and {1, 3} (std 2 and 2), as the reference code's reshape
    pairs = minibatch_stddev(x, group_size=2)
    assert torch.allclose(pairs[:, 2].flatten(), torch.tensor([1.5, 2.0, 1.5, 2.0]))
    maps = minibatch_stddev(torch.randn(6, 3, 4, 4), group_size=4)  # 4 does not divide 6: groups of gcd = 2
    assert maps.shape == (6, 4, 4, 4) and torch.all(maps[:, 3] == maps[:, 3, :1, :1])


# ---------------------------------------------------------------- growing and fading


def test_fade_in_at_alpha_0_and_1_equals_the_lower_and_the_higher_resolution_path():
    torch.manual_seed(0)
    G = ProGANGenerator([1, 16, 16], latent_dim=8, channel_base=64, channel_max=8)
    D = ProGANDiscriminator([1, 16, 16], channel_base=64, channel_max=8, mbstd_group=4)
    z, x = torch.randn(4, 8), torch.randn(4, 1, 16, 16)
    lower, higher = G(z, level=1), G(z, level=2)
    assert lower.shape == (4, 1, 8, 8) and higher.shape == (4, 1, 16, 16) and torch.equal(G(z), higher)
    assert torch.equal(G(z, level=2, alpha=0.0), F.interpolate(lower, scale_factor=2, mode="nearest"))
    assert torch.equal(G(z, level=2, alpha=1.0), higher)
    assert torch.allclose(G(z, level=2, alpha=0.25), 0.75 * F.interpolate(lower, scale_factor=2) + 0.25 * higher)
    assert torch.equal(D(x, alpha=0.0), D(F.avg_pool2d(x, 2)))  # the 8x8 path on the pooled images
    assert torch.equal(D(x, alpha=1.0), D(x)) and not torch.allclose(D(x), D(F.avg_pool2d(x, 2)))
    assert D(G(z, level=0)).shape == (4,)


def test_the_schedule_counts_real_images_shown():
    stage = [growth_stage(images, levels=3, fade_images=10, stable_images=20)
             for images in (0, 19, 20, 25, 30, 49, 50, 57, 60, 10**9)]
    assert stage == [(0, 1.0), (0, 1.0), (1, 0.0), (1, 0.5), (1, 1.0), (1, 1.0), (2, 0.0), (2, 0.7), (2, 1.0),
                     (2, 1.0)]
    assert growth_stage(10**6, levels=1, fade_images=1, stable_images=1) == (0, 1.0)


def test_real_images_are_shown_at_the_current_resolution_and_blended_in_a_fade(tmp_path):
    module = instantiate(compose_config(tmp_path, *TINY, "data.image_size=16", "model.stable_images=4",
                                        "model.fade_images=4").model)
    x = torch.randn(2, 1, 16, 16)
    at_8 = F.avg_pool2d(x, 2)
    for images, expected in ((0, F.avg_pool2d(x, 4)),  # 4x4
                             (4, F.interpolate(F.avg_pool2d(x, 4), scale_factor=2)),  # 8x8 fading in, alpha 0
                             (6, 0.5 * F.interpolate(F.avg_pool2d(x, 4), scale_factor=2) + 0.5 * at_8),
                             (8, at_8), (12, F.interpolate(at_8, scale_factor=2)), (10**6, x)):
        module.stage_images = images
        assert torch.allclose(module.real_data({"x": x})[0], expected, atol=1e-6), images


def test_the_critic_loss_is_wgan_gp_plus_the_drift_term(tmp_path):
    torch.manual_seed(0)
    module = instantiate(compose_config(tmp_path, *TINY, "model.stable_images=4", "model.fade_images=8").model)
    module.stage_images = 8  # 8x8 fading in, alpha 0.5
    x = torch.randn(4, 1, 8, 8)
    state = module.rng.get_state()
    loss = module.discriminator_loss({"x": x})
    module.rng.set_state(state)
    real = 0.5 * F.interpolate(F.avg_pool2d(x, 2), scale_factor=2) + 0.5 * x
    fake = module.generator(module.noise(4), None, 1, 0.5).detach()
    d_real, d_fake = module.discriminator(real, None, 0.5), module.discriminator(fake, None, 0.5)
    penalty = gradient_penalty(lambda v: module.discriminator(v, None, 0.5), real, fake, module.rng)
    expected = d_fake.mean() - d_real.mean() + 10 * penalty + 0.001 * d_real.square().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- configs and training


def test_the_model_config_has_the_papers_settings_and_the_digits_scale_applies(tmp_path):
    paper = compose_config(tmp_path, "model=progan", "data=cifar10", fast=False)  # no scale file for cifar10
    module = instantiate(paper.model)
    assert isinstance(module, ProGAN) and module.levels == 4  # 4, 8, 16, 32
    assert (module.fade_images, module.stable_images, module.gp_weight, module.drift_weight, module.n_critic,
            module.latent_dim, module.ema_decay) == (800_000, 800_000, 10.0, 0.001, 1, 512, 0.999)
    assert [p.name for p in module.phases] == ["d", "g"] and module.loss.name == "wasserstein"
    for optimizer in module.configure_optimizers():
        assert optimizer.param_groups[0]["lr"] == 1e-3 and optimizer.param_groups[0]["betas"] == (0.0, 0.99)
    assert [m.weight.shape[0] for m in module.generator.to_rgb] == [3] * 4
    assert module.generator.blocks[3][1].weight.shape[0] == 512  # 512 channels up to 32x32
    digits = compose_config(tmp_path, "model=progan", fast=False)
    assert (digits.data.name, digits.model.fade_images, digits.g_iters * digits.data.batch_size) == \
           ("digits", 6400, 5 * 6400)  # the scaled schedule ends with the run


def test_a_short_run_grows_logs_its_stage_and_samples_at_the_data_resolution(tmp_path):
    run = tmp_path / "run"
    train(compose_config(run, *TINY, "data.batch_size=4", "model.stable_images=8", "model.fade_images=8",
                         "g_iters=7", "model.log_every=1"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["train/resolution"], r["train/alpha"]) for r in records] == \
           [(4, 1.0), (4, 1.0), (8, 0.0), (8, 0.5), (8, 1.0), (8, 1.0), (8, 1.0)]
    assert all(math.isfinite(r[k]) for r in records for k in ("train/d_loss", "train/g_loss", "train/drift"))
    _, _, module = load_checkpoint(run)
    assert module.images_seen == 28 and module.stage == (1, 1.0)
    assert module.sample(3)["x"].shape == (3, 1, 8, 8)
    module.stage_images = 0  # at 4x4, samples are enlarged to the data's 8x8 by nearest neighbour
    early = module.sample(3)["x"]
    assert early.shape == (3, 1, 8, 8)
    assert torch.equal(early, F.interpolate(early[..., ::2, ::2], scale_factor=2, mode="nearest"))
    fresh = instantiate(compose_config(tmp_path, *TINY).model)
    fresh.load_state_dict(module.state_dict())  # weights alone (the evaluation's best.ckpt) carry their stage
    assert fresh.stage == (0, 1.0)


def test_evaluations_record_the_resolution_and_alpha_they_sampled_at(tmp_path, monkeypatch):
    from gan.metrics.evaluator import Evaluator

    cfg = compose_config(tmp_path, *TINY, "model.stable_images=8", "model.fade_images=8")
    module = instantiate(cfg.model)
    module.stage_images = 12  # half-way through the fade-in of 8x8
    contexts = []
    monkeypatch.setattr(Evaluator, "score", lambda self, fake, split, seed, context, num_real: contexts.append(context))
    Evaluator(instantiate(cfg.data), names=["fid"], cache_dir=tmp_path).evaluate(module, num_samples=4)
    assert contexts[0]["resolution"] == 8 and contexts[0]["alpha"] == 0.5 and contexts[0]["g_iter"] == 0


def test_stopped_during_a_fade_in_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    # 2 iterations at 4x4, then 8x8 fades in over iterations 2-5: the first part stops after training at alpha 0.25
    args = [*TINY, "data.batch_size=4", "model.stable_images=8", "model.fade_images=16", "model.log_every=1"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose_config(whole, *args, "g_iters=7"))
    train(compose_config(parts, *args, "g_iters=4"))
    assert load_checkpoint(parts)[2].stage == (1, 0.25)
    resume = {"resume": str(parts / "checkpoints" / "last.ckpt")}
    train(OmegaConf.merge(compose_config(parts, *args, "g_iters=7"), resume), ["g_iters=7"])
    state = final_state(whole)
    assert state["progress"]["images_seen"] == 28
    assert_same(state, final_state(parts))


@pytest.mark.slow
def test_killed_during_a_fade_in_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    # 4 iterations at 4x4, then 8x8 fades in over iterations 4-35: every checkpoint the kill can land after is in it
    args = [*TINY, "data.batch_size=4", "model.stable_images=16", "model.fade_images=128", "g_iters=40",
            "logger=none", "metrics=none", "callbacks.checkpoint.every_g_iters=3", "callbacks.samples.every_g_iters=40",
            "model.log_every=5"]
    whole, parts = kill_and_resume(tmp_path, args)
    killed_at = torch.load(parts / "checkpoints" / "g000009.ckpt", weights_only=False)
    assert killed_at["gan_progress"]["images_seen"] == 36  # alpha (36 - 16) / 128 during the fade-in
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 40
    assert_same(state, final_state(parts))


@pytest.mark.parametrize("override,match", [
    ("model.fade_images=0", "model.fade_images"), ("model.stable_images=-5", "model.stable_images"),
    ("model.drift_weight=-1", "model.drift_weight"), ("model.gp_weight=strong", "model.gp_weight"),
    ("model.generator.channel_max=0", "model.generator.channel_max"),
    ("model.discriminator.shape=[1,16,16]", "discriminator through 3"),
    ("+model.fade_image=5", "It accepts: generator, .*fade_images"),
])
def test_bad_values_give_a_clear_error(hydra_run_dir, override, match):
    with pytest.raises(UserError, match=match):
        train(compose_config(hydra_run_dir, *TINY, override))
    assert not hydra_run_dir.exists()


def test_images_that_cannot_grow_from_4x4_are_refused():
    with pytest.raises(UserError, match="power of two"):
        ProGANGenerator([1, 12, 12], latent_dim=8, channel_base=64, channel_max=8)
    with pytest.raises(UserError, match="power of two"):
        ProGANDiscriminator([3, 32, 16], channel_base=64, channel_max=8, mbstd_group=4)
