"""BigGAN: orthogonal regularisation, conditional batch norm with the shared embedding and the z chunks, and
self-attention against hand computation; spectral norm everywhere; the EMA's warm-up; the truncation trick; the
paper's and the reference's settings; training, grids and exact resume through the composed config; bad values."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same, compose_config, final_state, model_settings
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

from gan.errors import UserError
from gan.kinds.image import truncation_options
from gan.metrics.evaluator import generate
from gan.models.base import GANModule
from gan.models.biggan import (
    TRUNCATION_SWEEP,
    BigGAN,
    orthogonal_penalty,
    threshold_of_psi,
    truncate,
)
from gan.nets.biggan import (
    BigGANDiscriminator,
    BigGANGenerator,
    ClassConditionalBatchNorm2d,
    SelfAttention,
)
from gan.train import load_checkpoint, train

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["model=biggan", "data.image_size=8", "data.batch_size=8", "model.latent_dim=8", "model.generator.width=2",
        "model.generator.shared_dim=4", "model.generator.hierarchical=true", "model.discriminator.width=2",
        "model.n_critic=2"]  # the paper's hierarchical latent and 2 D steps, which the digits scale changes


def biggan_network(cls, role: str, **given):
    """BigGAN's G or D with the settings of conf/model/biggan.yaml (on data without a preset), `given` on top."""
    return cls(**{**model_settings("biggan", role, "data=cifar10"), **given})


def spectral(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight") and \
        type(module.parametrizations.weight[0]).__name__ == "_SpectralNorm"


# ---------------------------------------------------------------- the mechanisms against hand computation


def test_the_orthogonal_penalty_is_the_off_diagonal_form():
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    assert orthogonal_penalty(q).item() == pytest.approx(0.0, abs=1e-9)
    assert orthogonal_penalty(3 * q[:4]).item() == pytest.approx(0.0, abs=1e-9)  # norms are free, only angles count
    # filters (1, 2) and (3, 4): W^T W = [[5, 11], [11, 25]]; the off-diagonal entries give 2 * 11^2
    assert orthogonal_penalty(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).item() == pytest.approx(242.0)
    conv = torch.randn(3, 2, 3, 3)  # a conv kernel's filters are its flattened [in, k, k] slices
    dots = [(conv[i] * conv[j]).sum() for i in range(3) for j in range(3) if i != j]
    assert orthogonal_penalty(conv).item() == pytest.approx(sum(d**2 for d in dots).item(), rel=1e-5)


def test_the_generator_loss_adds_beta_times_the_penalty_of_every_weight_but_the_shared_embedding(tmp_path):
    torch.manual_seed(0)
    module = instantiate(compose_config(tmp_path, *TINY).model)
    G = module.generator
    layers = [m for m in G.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = G.regularized_weights()
    assert len(weights) == len(layers) and all(w is m.parametrizations.weight.original for w, m in zip(weights, layers))
    assert all(w is not G.shared.weight for w in weights)
    batch = {"x": torch.randn(8, 1, 8, 8), "y": torch.arange(8)}
    state = module.rng.get_state()
    with parametrize.cached():  # the same spectrally normalised weights in both forwards
        loss = module.generator_loss(batch)
        module.rng.set_state(state)
        adversarial = GANModule.generator_loss(module, batch)
    expected = adversarial + 1e-4 * sum(orthogonal_penalty(w) for w in weights)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and module.ortho_weight == 1e-4
    assert module._last["ortho"].item() > 0


def test_conditional_batch_norm_gains_and_biases_come_from_a_linear_map_of_the_condition():
    torch.manual_seed(0)
    cbn = ClassConditionalBatchNorm2d(3, condition_dim=5)
    x, c = torch.randn(4, 3, 2, 2), torch.randn(4, 5)
    with parametrize.cached():
        out = cbn(x, c)
        w_gain, w_bias = cbn.gain.weight, cbn.bias.weight
    mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    normalised = (x - mean) / torch.sqrt(var + 1e-5)
    expected = normalised * (1 + c @ w_gain.T)[:, :, None, None] + (c @ w_bias.T)[:, :, None, None]
    assert torch.allclose(out, expected, atol=1e-5)
    assert not any(p.dim() == 1 for p in cbn.parameters())  # no per-channel affine of its own


def test_each_block_is_conditioned_on_the_shared_class_embedding_and_its_own_z_chunk():
    torch.manual_seed(0)
    G = biggan_network(BigGANGenerator, "generator", shape=[1, 16, 16], latent_dim=12, num_classes=10, width=2,
                       shared_dim=6, attention=None)
    z, y = torch.randn(4, 12), torch.tensor([0, 3, 3, 9])
    seen, first = {}, []
    for i, block in enumerate(G.blocks):
        for bn in ("bn1", "bn2"):
            getattr(block, bn).register_forward_pre_hook(lambda m, args, key=(i, bn): seen.__setitem__(key, args[1]))
    G.linear.register_forward_pre_hook(lambda m, args: first.append(args[0]))
    G(z, y)
    shared = G.shared(y)
    assert torch.equal(first[0], z[:, :4])  # 3 chunks of 4: the input layer's, then one per block
    for i in range(2):
        expected = torch.cat([shared, z[:, 4 * (i + 1):4 * (i + 2)]], dim=1)
        assert torch.equal(seen[(i, "bn1")], expected) and torch.equal(seen[(i, "bn2")], expected)
    assert seen[(0, "bn1")].shape == (4, 10) and G.blocks[0].bn1.gain.in_features == 10
    # the reference's CIFAR-10 conditioning: one-hot classes, z to the input layer only
    flat = biggan_network(BigGANGenerator, "generator", shape=[1, 16, 16], latent_dim=12, num_classes=10, width=2,
                          shared_dim=0, hierarchical=False, attention=None)
    assert flat.shared is None and flat.linear.in_features == 12 and flat.blocks[0].bn1.gain.in_features == 10
    z0, conditions = flat.conditions(z, y)
    assert torch.equal(z0, z) and all(torch.equal(c, F.one_hot(y, 10).float()) for c in conditions)


def test_self_attention_keeps_the_shape_and_is_gated_by_gamma():
    torch.manual_seed(0)
    attention = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(attention(x), x)  # gamma starts at 0: the block starts as the identity
    with torch.no_grad():
        attention.gamma.fill_(0.5)
    with parametrize.cached():
        out = attention(x)
        q = attention.theta(x).flatten(2)                          # [2, 2, 64]
        k = F.max_pool2d(attention.phi(x), 2).flatten(2)           # [2, 2, 16]
        v = F.max_pool2d(attention.g(x), 2).flatten(2)             # [2, 8, 16]
        weights = torch.softmax(torch.einsum("ncq,nck->nqk", q, k), dim=-1)
        expected = x + 0.5 * attention.o(torch.einsum("nck,nqk->ncq", v, weights).view(2, 8, 8, 8))
    assert out.shape == x.shape and torch.allclose(out, expected, atol=1e-5) and not torch.allclose(out, x)


def test_spectral_norm_is_on_every_layer_of_g_and_d_but_the_shared_embedding():
    G = biggan_network(BigGANGenerator, "generator", shape=[1, 16, 16], latent_dim=12, num_classes=10, width=2,
                       shared_dim=6, attention=8)
    D = biggan_network(BigGANDiscriminator, "discriminator", shape=[1, 16, 16], num_classes=10, width=2, attention=8)
    g_layers = [m for m in G.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    d_layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(g_layers) == 1 + 2 * 7 + 4 + 1 and all(spectral(m) for m in g_layers)  # input, blocks, attention, out
    assert len(d_layers) == 3 + 2 + 2 + 4 + 2 and all(spectral(m) for m in d_layers)  # 3 blocks, attention, head
    assert not spectral(G.shared) and G.attention_at == 0 and D.attention_at == 0
    assert isinstance(D.head.embed, nn.Embedding)  # projection


@pytest.mark.slow  # ~10 s: 158M parameters
def test_the_reference_128px_networks_have_its_parameter_counts():
    # conf/model/biggan.yaml's networks at 128 px; N(0, 0.02) init: the orthogonal one of these takes ~30 s
    G = biggan_network(BigGANGenerator, "generator", shape=[3, 128, 128], num_classes=1000, init="N02")
    D = biggan_network(BigGANDiscriminator, "discriminator", shape=[3, 128, 128], num_classes=1000, init="N02")
    assert sum(p.numel() for p in G.parameters()) == 70_433_988  # BigGAN-PyTorch's count for its 128x128 model
    assert sum(p.numel() for p in D.parameters()) == 87_982_370
    assert G.chunk == 20 and G.attention_at == 3 and D.attention_at == 0  # z 120 = 6 x 20; attention at 64x64


# ---------------------------------------------------------------- EMA and truncation


def test_the_ema_copies_g_until_ema_start_and_averages_from_then_on(tmp_path):
    module = instantiate(compose_config(tmp_path, *TINY, "model.ema_start=3", "model.ema_decay=0.5").model)
    player = module.players["generator"]
    live, ema = module.generator.linear.parametrizations.weight.original, \
        module.ema_generator.module.linear.parametrizations.weight.original
    for g_iter in range(3):
        module.g_iter = g_iter
        with torch.no_grad():
            live.add_(1.0)
        module._update_ema(player)
        assert torch.equal(ema, live), g_iter
    before = ema.clone()
    module.g_iter = 3
    with torch.no_grad():
        live.add_(1.0)
    module._update_ema(player)
    assert torch.allclose(ema, 0.5 * before + 0.5 * live)


def test_truncation_redraws_the_entries_beyond_the_threshold_and_only_those():
    z = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    for threshold in (2.0, 0.5, 0.04):
        t = truncate(z, threshold, torch.Generator().manual_seed(1))
        inside = z.abs() <= threshold
        assert t.abs().max() <= threshold and torch.equal(t[inside], z[inside])
    assert torch.equal(truncate(z, None), z) and torch.equal(truncate(z, 100.0), z)
    assert threshold_of_psi(1.0) is None
    assert threshold_of_psi(math.erf(1 / math.sqrt(2))) == pytest.approx(1.0)
    assert threshold_of_psi(math.erf(2 / math.sqrt(2))) == pytest.approx(2.0)


def test_samples_use_truncated_latents_and_psi_1_is_no_truncation(tmp_path):
    module = instantiate(compose_config(tmp_path, *TINY).model)
    latents = []
    module.ema_generator.module.register_forward_pre_hook(lambda m, args: latents.append(args[0]))

    def draw(**options):
        return module.sample(64, generator=torch.Generator().manual_seed(3), **options)

    plain = draw()
    assert torch.equal(draw(truncation_psi=1.0)["x"], plain["x"]) and torch.equal(draw(threshold=50.0)["x"], plain["x"])
    assert torch.equal(draw(truncation_psi=1.0)["y"], plain["y"])
    assert latents[0].abs().max() > 1.5
    draw(threshold=0.5)
    assert latents[-1].abs().max() <= 0.5
    draw(truncation_psi=0.5)  # the evaluator's psi: the threshold keeping half the normal's mass
    assert latents[-1].abs().max() <= threshold_of_psi(0.5) < 0.675
    # the evaluator's hook passes psi (and no cutoff) through, and its samples are those of the threshold
    options = truncation_options(module, 0.5, None)
    assert options == {"truncation_psi": 0.5, "truncation_cutoff": None}
    via_psi, _ = generate(module, 10, seed=7, batch_size=4, **options)
    via_threshold, _ = generate(module, 10, seed=7, batch_size=4, threshold=threshold_of_psi(0.5))
    assert torch.equal(via_psi, via_threshold)


# ---------------------------------------------------------------- configs, training, resume


def test_the_model_config_has_the_papers_settings_and_the_cifar10_experiment_the_references(tmp_path):
    paper = compose_config(tmp_path, "model=biggan", "data=cifar10", "model.generator.attention=32",
                           "model.discriminator.attention=16", fast=False)
    assert paper.model.generator.attention == 32 and OmegaConf.select(paper, "scale") is None
    module = instantiate(paper.model)
    assert isinstance(module, BigGAN) and module.loss.name == "hinge" and module.n_critic == 2
    assert [p.name for p in module.phases] == ["d", "g"] and module.phases[0].repeats == 2
    assert (module.latent_dim, module.ortho_weight, module.ema_decay, module.ema_start) == (120, 1e-4, 0.9999, 20000)
    g_opt, d_opt = module.configure_optimizers()
    assert (g_opt.param_groups[0]["lr"], d_opt.param_groups[0]["lr"]) == (5e-5, 2e-4)
    assert g_opt.param_groups[0]["betas"] == d_opt.param_groups[0]["betas"] == (0.0, 0.999)
    assert module.generator.shared.embedding_dim == 128 and module.generator.chunk == 30  # 4 chunks at 32x32
    cifar = compose_config(tmp_path, "experiment=biggan_cifar10", fast=False)
    reference = instantiate(cifar.model)
    assert (cifar.data.name, cifar.data.batch_size, cifar.g_iters) == ("cifar10", 50, 125000)
    assert (reference.n_critic, reference.ortho_weight, reference.ema_start, reference.latent_dim) == (4, 0.0, 1000, 128)
    assert [o.param_groups[0]["lr"] for o in reference.configure_optimizers()] == [2e-4, 2e-4]
    G, D = reference.generator, reference.discriminator
    assert G.shared is None and G.slots == 1 and G.attention is None and D.attention is None
    assert G.widths == [256] * 4 and [b.conv1.out_channels for b in D.blocks] == [256] * 4
    digits = compose_config(tmp_path, "model=biggan", fast=False)
    assert (digits.model.generator.width, digits.model.generator.attention, digits.g_iters) == (8, 8, 1500)
    assert (digits.model.n_critic, digits.model.generator.hierarchical, digits.model.ema_decay) == (1, False, 0.99)


def test_a_short_run_trains_logs_the_penalty_and_draws_class_rows_and_a_truncation_sweep(tmp_path):
    run = tmp_path / "run"
    cfg = compose_config(run, *TINY, "model.log_every=1", "model.ema_start=4")
    train(cfg)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(math.isfinite(r["train/ortho"]) and math.isfinite(r["train/d_loss"])
                                     for r in records)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4 * 3  # 2 D steps and 1 G step per iteration
    _, _, module = load_checkpoint(run)
    live, ema = module.generator.state_dict(), module.ema_generator.module.state_dict()
    assert all(torch.equal(live[k], ema[k]) for k in live)  # every update before ema_start copies G
    # 8x8 tiles enlarged to 48 px, 2 px padding: one row per class (64 // 10 = 6 columns) and 10 x 5 thresholds
    assert Image.open(run / "samples" / "iter_000004.png").size == (6 * 50 + 2, 10 * 50 + 2)
    assert Image.open(run / "samples" / "truncation" / "iter_000004.png").size == \
           (len(TRUNCATION_SWEEP) * 50 + 2, 10 * 50 + 2)
    images, columns = module.extra_grids(torch.Generator().manual_seed(1), 64)["truncation"]
    again, _ = module.extra_grids(torch.Generator().manual_seed(1), 64)["truncation"]
    assert columns == 5 and images.shape == (50, 1, 8, 8) and torch.equal(images, again)


def test_stopped_and_resumed_across_the_ema_start_ends_like_an_uninterrupted_run(tmp_path):
    args = [*TINY, "model.ema_start=2", "model.ema_decay=0.9", "model.log_every=1"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose_config(whole, *args, "g_iters=5"))
    train(compose_config(parts, *args, "g_iters=3"))
    resume = {"resume": str(parts / "checkpoints" / "last.ckpt")}
    train(OmegaConf.merge(compose_config(parts, *args, "g_iters=5"), resume), ["g_iters=5"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 5
    assert_same(state, final_state(parts))


@pytest.mark.parametrize("override,match", [
    ("model.latent_dim=9", "model.latent_dim=9 must split into 2 equal chunks"),
    ("model.generator.attention=4", "model.generator.attention=4"),
    ("model.discriminator.attention=16", "model.discriminator.attention=16"),
    ("model.generator.channels=[4,4,4]", "model.generator.channels"),
    ("model.generator.shared_dim=-1", "model.generator.shared_dim"),
    ("model.generator.init=kaiming", "init"),
    ("model.ortho_weight=-1", "model.ortho_weight"),
    ("model.ema_start=-5", "model.ema_start"),
    ("model.sample_eval_mode=1", "model.sample_eval_mode"),
    ("+model.ortho=1", "It accepts: generator, .*ortho_weight"),
])
def test_bad_values_give_a_clear_error(hydra_run_dir, override, match):
    with pytest.raises(UserError, match=match):
        train(compose_config(hydra_run_dir, *TINY, override))
    assert not hydra_run_dir.exists()


def test_unlabelled_data_is_refused():
    with pytest.raises(UserError, match="needs labelled data"):
        biggan_network(BigGANGenerator, "generator", shape=[1, 16, 16], num_classes=None)
    with pytest.raises(UserError, match="needs labelled data"):
        biggan_network(BigGANDiscriminator, "discriminator", shape=[1, 16, 16], num_classes=None)


def test_bad_truncation_values_give_a_clear_error(tmp_path):
    module = instantiate(compose_config(tmp_path, *TINY).model)
    for options, match in (({"truncation_psi": 1.5}, "in \\(0, 1\\]"), ({"truncation_psi": 0}, "in \\(0, 1\\]"),
                           ({"threshold": 0}, "positive"), ({"truncation_cutoff": 2, "truncation_psi": 0.5}, "cutoff"),
                           ({"threshold": 1.0, "truncation_psi": 0.5}, "not both")):
        with pytest.raises(UserError, match=match):
            module.sample(2, **options)
