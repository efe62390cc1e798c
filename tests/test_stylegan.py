"""StyleGAN and StyleGAN2: the papers' mechanisms against hand computation (demodulation, equalised lr, minibatch
stddev, truncation, style mixing), the lazy phases' schedule, training and exact resume through the composed config,
the extra sample grids, truncation and PPL in `gan.evaluate`, and bad values."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from conftest import assert_same, compose_config, final_state, kill_and_resume, model_settings
from gan.errors import UserError
from gan.evaluate import main as evaluate_main
from gan.metrics.ppl import lpips_distance, perceptual_path_length, slerp
from gan.models.stylegan import TRUNCATION_SWEEP, StyleGAN
from gan.nets.stylegan import (EqualLinear, StyleDiscriminator, StyleGenerator, minibatch_stddev, modulated_conv2d,
                               modulated_weights, upsample)
from gan.train import build, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["data.image_size=8", "data.batch_size=8", "model.latent_dim=16", "model.generator.w_dim=16",
        "model.generator.mapping_layers=2", "model.generator.channel_base=64", "model.generator.channel_max=8",
        "model.discriminator.channel_base=64", "model.discriminator.channel_max=8"]


def tiny(run, model: str, *overrides: str):
    return compose_config(run, f"model={model}", *TINY, *overrides)


def stylegan2_network(cls, role: str, **given):
    """StyleGAN2's G or D with the settings of conf/model/stylegan2.yaml (on data without a preset), `given` on top."""
    return cls(**{**model_settings("stylegan2", role, "data=cifar10"), **given})


# ---------------------------------------------------------------- the networks against hand computation


def test_demodulated_weights_have_unit_norm_per_output_channel_and_the_fast_conv_uses_them():
    torch.manual_seed(0)
    weight, styles, x = torch.randn(5, 3, 3, 3), torch.randn(4, 3) * 3, torch.randn(4, 3, 6, 6)
    w = modulated_weights(weight, styles)
    assert torch.allclose(w.square().sum(dim=(2, 3, 4)), torch.ones(4, 5), atol=1e-5)
    assert not torch.allclose(modulated_weights(weight, styles, demodulate=False).square().sum(dim=(2, 3, 4)),
                              torch.ones(4, 5), atol=0.1)
    # the training path (scale inputs, shared conv, scale outputs) is the grouped convolution with per-sample weights
    grouped = torch.stack([F.conv2d(x[i:i + 1], w[i], padding=1)[0] for i in range(4)])
    assert torch.allclose(modulated_conv2d(x, weight, styles), grouped, atol=1e-5)


def test_equalised_lr_mapping_layers_move_at_0_01_of_the_learning_rate():
    torch.manual_seed(0)
    G = stylegan2_network(StyleGenerator, "generator", shape=[1, 8, 8], latent_dim=256, w_dim=256, channel_base=64,
                          channel_max=8)  # the mapping network of the YAML: 8 layers at 0.01x the learning rate
    layers = list(G.mapping.net)
    assert len(layers) == 8 and all(m.lr_mul == 0.01 for m in layers)
    assert layers[0].effective_weight().std().item() == pytest.approx(1 / math.sqrt(256), rel=0.02)  # He init
    steps, lr = {}, 1e-3
    for name, layer in (("mapping", layers[0].double()), ("plain", EqualLinear(256, 256).double())):  # no rounding
        before = layer.effective_weight().detach().clone()
        optimizer = torch.optim.Adam(layer.parameters(), lr=lr, betas=(0.0, 0.99), eps=1e-12)
        layer(torch.randn(4, 256, dtype=torch.float64)).square().sum().backward()
        optimizer.step()  # Adam's first step moves every stored weight by lr (the sign of its gradient)
        steps[name] = (layer.effective_weight().detach() - before).abs()
    assert torch.allclose(steps["plain"], torch.full((256, 256), lr / 16, dtype=torch.float64), rtol=1e-6)  # lr / sqrt(fan_in)
    assert torch.allclose(steps["mapping"], torch.full((256, 256), 0.01 * lr / 16, dtype=torch.float64), rtol=1e-6)


def test_minibatch_stddev_against_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 3, 3)
    out = minibatch_stddev(x, group_size=4)
    assert out.shape == (8, 5, 3, 3) and torch.equal(out[:, :4], x)
    for i in range(8):  # sample i is grouped with samples i mod 2, i mod 2 + 2, ... (stride batch / group)
        group = x[i % 2::2]
        expected = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(out[i, 4], expected.expand(3, 3), atol=1e-6)


def test_upsampling_is_bilinear_inside_the_image():
    x = torch.randn(1, 2, 6, 6)
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(upsample(x)[..., 1:-1, 1:-1], bilinear[..., 1:-1, 1:-1], atol=1e-6)


@pytest.mark.parametrize("synthesis", ["adain", "modulated"])
def test_generators_take_two_styles_per_resolution(synthesis):
    G = stylegan2_network(StyleGenerator, "generator", shape=[3, 16, 16], latent_dim=8, w_dim=8, channel_base=64,
                          channel_max=8, synthesis=synthesis)
    assert G.num_ws == 6 and G(torch.randn(2, 8)).shape == (2, 3, 16, 16)
    ws = G.mapping(torch.randn(2, 8))
    noise = G.synthesis.draw_noise(2, torch.Generator().manual_seed(0))
    base = G.synthesis(ws, noise)
    for layer in range(6):  # every style input changes the image
        changed = ws.clone()
        changed[:, layer] += 1
        assert not torch.allclose(G.synthesis(changed, noise), base)
    D = stylegan2_network(StyleDiscriminator, "discriminator", shape=[3, 16, 16], channel_base=64, channel_max=8,
                          architecture="resnet" if synthesis == "modulated" else "orig")
    assert D(base).shape == (2,)


# ---------------------------------------------------------------- truncation and style mixing


def test_truncation_psi_1_equals_no_truncation_and_psi_0_gives_the_mean_w_up_to_the_cutoff():
    torch.manual_seed(0)
    mapping = stylegan2_network(StyleGenerator, "generator", shape=[1, 8, 8], latent_dim=8, w_dim=8, channel_base=64,
                                channel_max=8).mapping
    mapping.w_avg.copy_(torch.randn(8))
    z = torch.randn(5, 8)
    w = mapping.net(z * z.square().mean(dim=1, keepdim=True).rsqrt())  # by hand, no truncation
    assert torch.allclose(mapping(z, truncation_psi=1.0), w[:, None].repeat(1, 4, 1), atol=1e-6)
    assert torch.equal(mapping(z, truncation_psi=1.0, truncation_cutoff=2), mapping(z))
    cut = mapping(z, truncation_psi=0.0, truncation_cutoff=2)
    assert torch.allclose(cut[:, :2], mapping.w_avg.expand(5, 2, 8)) and torch.equal(cut[:, 2:], mapping(z)[:, 2:])
    half = mapping(z, truncation_psi=0.5)
    assert torch.allclose(half, (w[:, None] + mapping.w_avg) / 2 * torch.ones(1, 4, 1), atol=1e-6)


def test_style_mixing_switches_between_two_latents_at_one_crossover(tmp_path):
    module = instantiate(tiny(tmp_path, "stylegan2", "model.style_mixing=1.0").model)
    crossovers = set()
    for _ in range(40):
        ws = module.mapped(4)
        same = [torch.equal(ws[:, i], ws[:, i + 1]) for i in range(ws.shape[1] - 1)]
        assert same.count(False) == 1  # two latents: one switch, at the same layer for the whole batch
        crossovers.add(same.index(False) + 1)
    assert crossovers == set(range(1, module.generator.num_ws))  # every crossover in [1, num_ws) occurs
    module = instantiate(tiny(tmp_path, "stylegan2", "model.style_mixing=0.0").model)
    ws = module.mapped(4)
    assert all(torch.equal(ws[:, 0], ws[:, i]) for i in range(ws.shape[1]))


# ---------------------------------------------------------------- the loop: lazy phases, training, resume


def test_lazy_phases_fire_every_16_and_4_iterations_with_rescaled_optimisers(tmp_path):
    cfg = tiny(tmp_path / "run", "stylegan2", "g_iters=17", "callbacks.samples.every_g_iters=100",
               "callbacks.checkpoint.every_g_iters=100")
    datamodule, module, trainer = build(cfg, tmp_path / "run")
    calls: dict[str, list[int]] = {}

    def recorded(phase):
        def loss(batch):
            calls.setdefault(phase.name, []).append(module.g_iter)
            return phase.loss(batch)
        return dataclasses.replace(phase, loss=loss)

    module.phases = tuple(recorded(p) for p in module.phases)
    g_opt, d_opt = module.configure_optimizers()
    assert g_opt.param_groups[0]["lr"] == pytest.approx(cfg.model.g_lr * 4 / 5)
    assert g_opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** (4 / 5)))
    assert d_opt.param_groups[0]["lr"] == pytest.approx(cfg.model.d_lr * 16 / 17)
    assert d_opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    trainer.fit(module, datamodule=datamodule)
    assert calls == {"d": list(range(17)), "d_reg": [0, 16], "g": list(range(17)), "g_reg": [0, 4, 8, 12, 16]}
    assert trainer.global_step == 17 * 2 + 2 + 5
    assert module.pl_mean > 0  # the running mean of path lengths moved
    assert not torch.equal(module.generator.mapping.w_avg, torch.zeros_like(module.generator.mapping.w_avg))


@pytest.mark.parametrize("model", ["stylegan", "stylegan2"])
def test_each_config_builds_the_papers_settings(tmp_path, model):
    cfg = compose_config(tmp_path, f"model={model}", "data=cifar10", "data.batch_size=32")  # no CPU scale file
    module = instantiate(cfg.model)
    G, D = module.generator, module.discriminator
    phases = {"stylegan": [("d", 1, False), ("g", 1, False)],
              "stylegan2": [("d", 1, False), ("d_reg", 16, True), ("g", 1, False), ("g_reg", 4, True)]}[model]
    assert [(p.name, p.every, p.lazy) for p in module.phases] == phases
    assert G.synthesis.kind == {"stylegan": "adain", "stylegan2": "modulated"}[model]
    assert (type(D.blocks[0].skip).__name__ if D.blocks[0].skip else None) == \
           {"stylegan": None, "stylegan2": "EqualConv2d"}[model]  # residual D in StyleGAN2
    assert (module.loss.name, module.regularizer.__name__, module.reg_weight) == ("non_saturating", "r1_penalty", 10.0)
    assert (module.pl_weight, module.pl_decay, module.pl_batch_shrink) == \
           ({"stylegan": 0.0, "stylegan2": 2.0}[model], 0.01, 2)
    assert module.style_mixing == 0.9 and module.ema_decay == pytest.approx(0.5 ** (32 / 10_000))
    assert len(G.mapping.net) == 8 and G.mapping.net[0].lr_mul == 0.01 and G.mapping.w_dim == 512
    assert D.mbstd_group_size == 4 and D.mbstd_channels == 1
    lr = {"stylegan": 1e-3, "stylegan2": 2e-3}[model]
    assert [o.param_groups[0]["lr"] for o in module.configure_optimizers()] == \
           pytest.approx([lr * (4 / 5 if model == "stylegan2" else 1), lr * (16 / 17 if model == "stylegan2" else 1)])


@pytest.mark.parametrize("model", ["stylegan", "stylegan2"])
def test_each_model_trains_through_the_composed_config_with_its_grids(tmp_path, model):
    run = tmp_path / "run"
    train(tiny(run, model, "g_iters=4", "model.log_every=1", "callbacks.samples.min_tile=8"))
    _, _, module = load_checkpoint(run)
    assert isinstance(module, StyleGAN) and module.g_iter == 4 and module.images_seen == 4 * 8
    assert module.ema_decay == pytest.approx(0.5 ** (8 / module.ema_half_life))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train/d_loss"]) and math.isfinite(r["train/g_loss"]) for r in records)
    assert module.sample(3)["x"].shape == (3, 1, 8, 8)
    tile = 8 + 2
    assert Image.open(run / "samples" / "iter_000004.png").size == (8 * tile + 2, 8 * tile + 2)
    k = 7  # style mixing: a header row and column around 7 x 7 mixes (64 samples asked)
    assert Image.open(run / "samples" / "style_mixing" / "iter_000004.png").size == ((k + 1) * tile + 2,) * 2
    assert Image.open(run / "samples" / "truncation" / "iter_000004.png").size == \
           (len(TRUNCATION_SWEEP) * tile + 2, k * tile + 2)


def test_resume_continues_exactly_across_the_lazy_phases(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    every = ["callbacks.checkpoint.every_g_iters=100", "callbacks.samples.every_g_iters=100"]
    train(tiny(whole, "stylegan2", "g_iters=18", *every))
    train(tiny(parts, "stylegan2", "g_iters=7", *every))
    train(OmegaConf.merge(tiny(parts, "stylegan2", "g_iters=18", *every),
                          {"resume": str(parts / "checkpoints" / "last.ckpt")}), ["g_iters=18"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 18 and state["state_dict"]["pl_mean"] > 0
    assert_same(state, final_state(parts))


@pytest.mark.slow
def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    args = ["model=stylegan2", *TINY, "g_iters=40", "logger=none", "metrics=none", "callbacks.checkpoint.every_g_iters=3",
            "callbacks.samples.every_g_iters=20"]
    whole, parts = kill_and_resume(tmp_path, args)
    assert_same(final_state(whole), final_state(parts))


# ---------------------------------------------------------------- evaluation: truncation, PPL


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny StyleGAN2 and a tiny DCGAN, 2 iterations each, with a classifier backbone that trains in seconds."""
    root = tmp_path_factory.mktemp("eval")
    quick = ["g_iters=2", "logger=none", "callbacks.samples.every_g_iters=100", "callbacks.checkpoint.every_g_iters=100",
             "metrics.every_n_g_iters=0", "metrics.names=[fid]", "metrics.num_samples=50",
             "metrics.final_num_samples=50", "metrics.classifier.epochs=1", "metrics.classifier.max_steps=20",
             f"paths.cache_dir={root / 'cache'}"]
    train(compose_config(root / "stylegan2", "model=stylegan2", *TINY, *quick, fast=False))
    train(compose_config(root / "dcgan", "model=dcgan", "data.image_size=8", "data.batch_size=8",
                         "model.generator.dcgan.width=8", "model.discriminator.dcgan.width=8", *quick, fast=False))
    return root


def test_gan_evaluate_truncates_when_asked_and_records_it(trained, capsys):
    args = ["metrics=[fid,ppl]", "num_samples=200", "split=val"]
    assert evaluate_main([f"ckpt={trained / 'stylegan2'}", *args]) == 0
    plain = json.loads((trained / "stylegan2" / "checkpoints" / "eval.json").read_text())
    assert evaluate_main([f"ckpt={trained / 'stylegan2'}", *args, "truncation=0.5", "truncation_cutoff=2"]) == 0
    assert "truncation psi 0.5 (cutoff 2)" in capsys.readouterr().out
    truncated = json.loads((trained / "stylegan2" / "checkpoints" / "eval.json").read_text())
    assert (plain["provenance"]["truncation_psi"], plain["provenance"]["truncation_cutoff"]) == (1.0, None)
    assert (truncated["provenance"]["truncation_psi"], truncated["provenance"]["truncation_cutoff"]) == (0.5, 2)
    assert truncated["values"]["fid"] != plain["values"]["fid"]
    assert truncated["values"]["ppl"] == plain["values"]["ppl"] > 0  # PPL is measured without truncation
    assert (plain["provenance"]["ppl_space"], plain["provenance"]["ppl_sampling"]) == ("w", "end")


@pytest.mark.parametrize("args,match", [(["truncation=0.7"], "no mapping network"),
                                        (["metrics=[fid,ppl]"], "mapping network")])
def test_models_without_a_mapping_network_refuse_truncation_and_ppl(trained, capsys, args, match):
    assert evaluate_main([f"ckpt={trained / 'dcgan'}", "num_samples=50", "split=val", *args]) == 2
    assert match in capsys.readouterr().err


def test_slerp_walks_the_great_circle_at_constant_speed():
    a, b = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    assert torch.allclose(slerp(a, b, torch.tensor([[0.0]])), a, atol=1e-6)
    assert torch.allclose(slerp(a, b, torch.tensor([[1.0]])), b / 2, atol=1e-6)
    mid = slerp(a, b, torch.tensor([[1 / 3]]))
    assert torch.allclose(mid, torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6), 0.0]]), atol=1e-6)


def test_ppl_of_a_linear_generator_matches_its_closed_form():
    """W-space 'end' PPL of image = A w with the squared L2 distance is ||A (w1 - w0)||^2 per pair exactly;
    the 1st-99th percentile mean of that, estimated independently here, is what the metric reports."""
    torch.manual_seed(0)
    A = torch.randn(3, 6, dtype=torch.float64)

    class Synthesis:
        def draw_noise(self, n, generator):
            return []

        def __call__(self, ws, noise):
            return ws[:, 0] @ A.T

    class Linear:
        z_dim, synthesis = 6, Synthesis()

        def mapping(self, z):
            return z.double()[:, None].repeat(1, 2, 1)

    values, provenance = perceptual_path_length(Linear(), lambda x, y: (x - y).square().sum(dim=1), 20_000, seed=0)
    diff = np.random.default_rng(1).standard_normal((400_000, 6)) * math.sqrt(2)  # w1 - w0 ~ N(0, 2 I)
    exact = ((diff @ A.numpy().T) ** 2).sum(axis=1)
    lo, hi = np.percentile(exact, [1, 99])
    assert values["ppl"] == pytest.approx(exact[(exact >= lo) & (exact <= hi)].mean(), rel=0.03)
    assert provenance["ppl_epsilon"] == 1e-4 and provenance["ppl_num_pairs"] == 20_000


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize("override,match", [
    ("model.r1_every=0", "model.r1_every"),
    ("model.pl_decay=0", "model.pl_decay"),
    ("model.style_mixing=1.5", "model.style_mixing"),
    ("model.ema_half_life=0", "model.ema_half_life"),
    ("model.generator.synthesis=conv", "adain"),
    ("model.discriminator.architecture=skip", "resnet"),
    ("model.generator.channel_base=4", "channel_base"),
    ("model.latent_dim=0", "model.latent_dim"),
])
def test_bad_values_give_a_clear_error(hydra_run_dir, override, match):
    with pytest.raises(UserError, match=match):
        train(tiny(hydra_run_dir, "stylegan2", override))
    assert not hydra_run_dir.exists()


@pytest.mark.parametrize("options,match", [({"truncation_psi": "high"}, "number"),
                                           ({"truncation_psi": 0.7, "truncation_cutoff": 7}, "1..4")])
def test_bad_truncation_gives_a_clear_error(tmp_path, options, match):
    module = instantiate(tiny(tmp_path, "stylegan2").model)
    with pytest.raises(UserError, match=match):
        module.sample(2, **options)


def test_lpips_distance_is_torch_fidelitys_lpips_and_offline_a_clear_error(monkeypatch):
    """With the inception backbone PPL uses torch-fidelity's LPIPS-VGG16 module. Here its weights cannot be
    downloaded: the failure is one UserError; with stand-in weights (random VGG16, positive linear heads) the
    distance of an image to itself is 0, to another positive, one value per pair, grey images accepted."""
    import urllib.error

    import torchvision
    from torch_fidelity import sample_similarity_lpips as lpips_module

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(lpips_module, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="LPIPS-VGG16.*backbone=classifier"):
        lpips_distance()
    torch.manual_seed(0)
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate([64, 128, 256, 512, 512])}
    monkeypatch.setattr(lpips_module, "load_state_dict_from_url", lambda *a, **k: heads)
    monkeypatch.setattr(lpips_module, "torchvision_load_pretrained_vgg16", lambda: torchvision.models.vgg16())
    distance = lpips_distance()
    x, y = torch.rand(3, 1, 16, 16) * 2 - 1, torch.rand(3, 1, 16, 16) * 2 - 1
    assert torch.allclose(distance(x, x), torch.zeros(3), atol=1e-6)
    d = distance(x, y)
    assert d.shape == (3,) and (d > 0).all()

