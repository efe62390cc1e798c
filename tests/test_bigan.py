"""BiGAN and ALI (gan.models.bigan) on the kinds contract: the losses on tiny linear networks against hand computations,
the priors and ALI's reparameterised encoder drawing from the module's RNG, training that logs and resumes exactly, the
inference kind's probe, reconstruction error and grid (gan.kinds.inference), gan.evaluate, toy data, and one-paragraph
errors for the settings they do not honour."""
from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from conftest import assert_same, compose_config, final_state, model_config, model_settings
from gan.compare import main as compare_main
from gan.errors import UserError
from gan.evaluate import main as evaluate_main
from gan.kinds import EvalRequest, check_model
from gan.kinds.inference import linear_probe, reconstruction_error
from gan.metrics.real_data import labelled_dataset, load_tensors
from gan.models.bigan import BiGAN
from gan.nets.bigan import discriminator, encoder, generator
from gan.train import build, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")

# 16 px digits, narrow networks (E follows G's width): the smallest real BiGAN run
SMALL = ["model=bigan", "data=digits", "data.batch_size=16", "model.generator.hidden=32",
         "model.discriminator.hidden=32"]
ALI = ["model=ali", *SMALL[1:]]


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- the configs
def test_the_configs_are_bigans_and_alis_settings():
    bigan, ali = (instantiate(model_config(m, "", "data=mnist5k")) for m in ("bigan", "ali"))
    assert (bigan.prior, bigan.stochastic_encoder, bigan.latent_dim) == ("uniform", False, 50)
    assert (ali.prior, ali.stochastic_encoder, ali.latent_dim) == ("normal", True, 50)
    assert bigan.encoder.net[-1].out_features == 50 and ali.encoder.net[-1].out_features == 100  # mu, log sigma
    assert bigan.encoder.net[1][0].in_features == 28 * 28
    assert bigan.generator(torch.randn(3, 50)).shape == (3, 1, 28, 28)
    for module in (bigan, ali):  # one optimiser steps G and E together
        assert module.players["generator"].networks == ("generator", "encoder")
        g_opt, d_opt = module.configure_optimizers()
        assert {id(p) for p in g_opt.param_groups[0]["params"]} == \
            {id(p) for p in [*module.generator.parameters(), *module.encoder.parameters()]}
        assert {id(p) for p in d_opt.param_groups[0]["params"]} == {id(p) for p in module.discriminator.parameters()}
    defaults = bigan.configure_optimizers()[0].defaults
    assert (defaults["lr"], defaults["betas"], defaults["weight_decay"]) == (2e-4, (0.5, 0.999), 2.5e-5)
    assert ali.configure_optimizers()[0].defaults["lr"] == 1e-4
    layers = lambda m: list(m.discriminator.modules())  # noqa: E731
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.Dropout)) for m in layers(bigan))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in layers(ali))
    assert {m.p for m in layers(ali) if isinstance(m, nn.Dropout)} == {0.2}
    assert check_model(bigan).name == "inference" and bigan.arch == "mlp"


def test_the_conv_networks_read_28_px_digits_through_two_strided_convolutions():
    module = instantiate(model_config("ali", "", "data=mnist5k", "model.nets=conv"))
    convs = lambda net: [(m.in_channels, m.out_channels, m.stride) for m in net.modules()  # noqa: E731
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs(module.encoder) == convs(module.discriminator) == [(1, 64, (2, 2)), (64, 128, (2, 2))]
    assert convs(module.generator) == [(128, 64, (2, 2)), (64, 1, (2, 2))]
    assert module.encoder.net[1][0].in_features == 128 * 7 * 7 and module.arch == "conv"
    x = module.generator(torch.randn(3, 50))
    assert x.shape == (3, 1, 28, 28) and module.encoder(x).shape == (3, 100)
    assert module.discriminator(x, torch.randn(3, 50)).shape == (3,)


# ---------------------------------------------------------------- the losses on tiny known networks
def linear(layer: nn.Linear, weight, bias) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


def tiny_module(loss: str = "non_saturating", stochastic: bool = False, prior: str = "normal") -> BiGAN:
    """2-D points, a 1-D code, networks without hidden layers: E(x) = x1 + x2 (or mu = x1, log sigma = x2),
    G(z) = (z, -z), D(x, z) = x1 - x2 + 2 z."""
    e = encoder("mlp", [2], latent_dim=1, hidden=4, depth=0, width=4, stochastic=stochastic)
    g = generator("mlp", [2], latent_dim=1, hidden=4, depth=0, width=4)
    d = discriminator("mlp", [2], latent_dim=1, hidden=4, depth=0, width=4, norm="none", dropout=0.0)
    if stochastic:
        linear(e.net[-1], [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    else:
        linear(e.net[-1], [[1.0, 1.0]], [0.0])
    linear(g.net[-1], [[1.0], [-1.0]], [0.0, 0.0])
    linear(d.head[-1], [[1.0, -1.0, 2.0]], [0.0])
    settings = {**model_settings("bigan", "", "data=ring"), "latent_dim": 1, "prior": prior, "loss": loss,
                "stochastic_encoder": stochastic}
    return BiGAN(generator=g, discriminator=d, encoder=e, g_optimizer=None, d_optimizer=None, **settings)


X = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
Z = torch.tensor([[0.5], [-1.0]])
# by hand: E(x) = (1, 2); D(x, E(x)) = 1 - 0 + 2 = 3 and 0 - 2 + 4 = 2; G(z) = (0.5, -0.5), (-1, 1);
# D(G(z), z) = 0.5 + 0.5 + 1 = 2 and -1 - 1 - 2 = -4
REAL, FAKE = (3.0, 2.0), (2.0, -4.0)
D_LOSS = (softplus(-3) + softplus(-2)) / 2 + (softplus(2) + softplus(-4)) / 2


@pytest.mark.parametrize("loss, g_loss", [
    ("non_saturating", (softplus(3) + softplus(2)) / 2 + (softplus(-2) + softplus(4)) / 2),  # labels swapped
    ("minimax", -D_LOSS),
], ids=["non_saturating", "minimax"])
def test_the_losses_on_tiny_linear_networks_equal_the_hand_computed_values(monkeypatch, loss, g_loss):
    module = tiny_module(loss)
    monkeypatch.setattr(module, "noise", lambda n: Z[:n])
    assert module.discriminator_loss({"x": X}).item() == pytest.approx(D_LOSS, rel=1e-6)
    assert module._last["d_real"].item() == pytest.approx((sigmoid(3) + sigmoid(2)) / 2, rel=1e-6)
    assert module._last["d_fake"].item() == pytest.approx((sigmoid(2) + sigmoid(-4)) / 2, rel=1e-6)
    value = module.generator_loss({"x": X})
    assert value.item() == pytest.approx(g_loss, rel=1e-6)
    value.backward()
    # E is trained through D's z input (dD/dz = 2): d/dw of E's term, mean softplus(D(x, w.x)) (non-saturating) or
    # mean -softplus(-D(x, w.x)) (minimax), is mean sigmoid(+-D) 2 x; x = (1, 0) and (0, 2)
    sign = 1 if loss == "non_saturating" else -1
    expected = [sigmoid(sign * REAL[0]) * 2 * 1 / 2, sigmoid(sign * REAL[1]) * 2 * 2 / 2]
    assert module.encoder.net[-1].weight.grad[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_the_priors_draw_from_the_module_rng_and_the_uniform_code_is_squashed_into_its_support():
    uniform, normal = tiny_module(prior="uniform"), tiny_module(prior="normal")
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(uniform.noise(4), 2 * torch.rand(4, 1, generator=seeded(uniform.seed)) - 1)
    assert torch.equal(normal.noise(4), torch.randn(4, 1, generator=seeded(normal.seed)))
    assert uniform.inferred(X).flatten().tolist() == pytest.approx([math.tanh(1), math.tanh(2)], rel=1e-6)
    assert normal.inferred(X).flatten().tolist() == pytest.approx([1, 2])


def test_alis_encoder_is_reparameterised_with_noise_from_the_module_rng():
    module = tiny_module(stochastic=True)
    state = module.rng.get_state()
    torch.manual_seed(123)
    z = module.inferred(X)  # mu = x1, log sigma = x2
    eps = torch.randn(2, 1, generator=torch.Generator().set_state(state))
    assert torch.allclose(z, torch.tensor([[1.0], [0.0]]) + torch.tensor([[1.0], [math.exp(2)]]) * eps)
    module.rng.set_state(state)
    torch.manual_seed(7)
    assert torch.equal(module.inferred(X), z)  # the same module RNG state, another global seed: the same draw
    assert not torch.equal(module.inferred(X), z)  # the module RNG moved on
    z.sum().backward()  # the gradient reaches mu (d/dW[0] = x) and log sigma (d/dW[1] = sigma eps x)
    grad = module.encoder.net[-1].weight.grad
    assert grad[0].tolist() == pytest.approx(X.sum(0).tolist())
    assert grad[1].tolist() == pytest.approx((torch.exp(X[:, 1:]) * eps * X).sum(0).tolist(), rel=1e-5)
    assert module.encode(X).flatten().tolist() == [1.0, 0.0]  # features: the posterior mean
    drawn = module.encode(X, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(drawn, X[:, :1] + X[:, 1:].exp() * torch.randn(2, 1, generator=seeded(3)))


def test_the_linear_probe_scores_separable_classes_perfectly_and_noise_at_chance():
    rng = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    separable = torch.randn(400, 3, generator=rng) + 10 * nn.functional.one_hot(y, 4)[:, :3]
    assert linear_probe(separable[:200], y[:200], separable[200:], y[200:]) == 1.0
    noise = torch.randn(400, 3, generator=rng)
    assert abs(linear_probe(noise[:200], y[:200], noise[200:], y[200:]) - 0.25) < 0.1


# ---------------------------------------------------------------- training, evaluation, grids
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("bigan") / "run"
    train(compose_config(run, *SMALL, "g_iters=4", "metrics=default", "metrics.names=[fid]", "metrics.num_samples=40",
                         "metrics.final_num_samples=40", "metrics.every_n_g_iters=4", "model.log_every=2"))
    return run


def test_training_logs_the_losses_and_draws_reconstructions_under_real_images(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in records for k in r}
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "val/probe_accuracy", "val/recon_l1",
            "val/ref_pixels/probe_accuracy", "val/ref_random/probe_accuracy", "val/ref_shuffled/recon_l1"} <= logged
    assert all(math.isfinite(r[k]) for r in records for k in r if k.startswith("train/"))
    values = json.loads((trained / "eval.json").read_text())["values"]
    for key in ("probe_accuracy", "ref_pixels/probe_accuracy", "ref_random/probe_accuracy", "ref_real/probe_accuracy"):
        assert 0 <= values[key] <= 1
    assert values["ref_real/probe_accuracy"] > 0.8 and values["ref_pixels/probe_accuracy"] > 0.5  # ceiling, baseline
    assert 0 < values["recon_l1"] <= 2 and 0 < values["ref_shuffled/recon_l1"] <= 2
    grid = Image.open(trained / "samples" / "reconstructions" / "iter_000004.png")
    assert grid.size == (8 * (48 + 2) + 2,) * 2  # 4 rows of 8 digits, each under a row of reconstructions
    pixels = torch.tensor(list(grid.convert("L").getdata()), dtype=torch.float).view(grid.size[1], grid.size[0])
    rows = [pixels[2 + i * 50:2 + i * 50 + 48, 2:50] for i in range(8)]
    real_background = rows[0][:4, :4].mean()  # the digits' black corners, drawn black
    assert real_background < 30 and rows[2][:4, :4].mean() < 30 and abs(rows[1][:4, :4].mean() - real_background) > 30


def test_the_reconstruction_error_is_the_mean_l1_of_g_of_e(trained):
    _, datamodule, module = load_checkpoint(trained)
    values, _ = reconstruction_error(SimpleNamespace(datamodule=datamodule), module,
                                     EvalRequest(split="val", seed=0, num_samples=1000))
    x = torch.stack([datamodule.dataset("val")[i][0] for i in range(len(datamodule.dataset("val")))])
    module.eval()
    with torch.no_grad():
        by_hand = (x - module.generator(torch.tanh(module.encoder(x)))).abs().mean().item()
    assert values["recon_l1"] == pytest.approx(by_hand, rel=1e-5)
    assert values["ref_shuffled/recon_l1"] > 0.1


def test_gan_evaluate_prints_the_probe_beside_its_references(trained, capsys):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    code = evaluate_main([f"ckpt={trained}", "metrics=[fid]", "num_samples=30", "split=test"])
    out = capsys.readouterr().out
    assert code == 0
    rows = dict(re.findall(r"^\s+(\S*(?:probe_accuracy|recon_l1))\s+(\S+)$", out, re.M))
    assert set(rows) == {"probe_accuracy", "ref_pixels/probe_accuracy", "ref_random/probe_accuracy",
                         "ref_real/probe_accuracy", "recon_l1", "ref_shuffled/recon_l1"}
    _, datamodule, _ = load_checkpoint(trained)
    train_set, test_set = (labelled_dataset(datamodule, split)[0] for split in ("train", "test"))
    fit_x = torch.stack([train_set[i][0].flatten() for i in range(len(train_set))]).double().numpy()
    fit_y = [int(train_set[i][1]) for i in range(len(train_set))]
    report = json.loads((trained / "checkpoints" / "eval.json").read_text())
    assert report["provenance"]["probe_images"] == 30
    pixels = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(fit_x, fit_y)
    x, y = load_tensors(test_set, 30)  # the evaluation's fixed subset of the test split
    assert float(rows["ref_pixels/probe_accuracy"]) == pytest.approx(pixels.score(x.flatten(1).double().numpy(),
                                                                                   y.numpy()), abs=1e-5)


def test_gan_compare_ranks_runs_by_the_probe(trained, tmp_path, capsys):
    assert compare_main([str(trained), "--metric", "probe_accuracy", "--out", str(tmp_path / "r.html")]) == 0
    assert "probe_accuracy" in capsys.readouterr().out and (tmp_path / "r.html").is_file()


@pytest.mark.parametrize("overrides", [
    SMALL, ALI, [*ALI, "model.nets=conv", "model.generator.width=4", "model.discriminator.width=4"],
    [*SMALL, "model.ema_decay=0.9"]], ids=["bigan", "ali", "ali-conv", "bigan-ema"])
def test_training_resumes_exactly(tmp_path, overrides):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose_config(whole, *overrides, "g_iters=5", "callbacks.checkpoint.every_g_iters=3"))
    train(compose_config(parts, *overrides, "g_iters=3", "callbacks.checkpoint.every_g_iters=3"))
    train(OmegaConf.merge(compose_config(parts, *overrides, "g_iters=5", "callbacks.checkpoint.every_g_iters=3"),
                          {"resume": str(parts / "checkpoints" / "last.ckpt")}), ["g_iters=5"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 5
    assert ("ema_encoder.n_averaged" in state["state_dict"]) == ("model.ema_decay=0.9" in overrides)
    assert_same(state, final_state(parts))


def test_ali_trains_on_the_toy_ring_without_a_probe(tmp_path):
    run = tmp_path / "run"
    train(compose_config(run, "model=ali", "data=ring", "data.batch_size=64", "model.generator.hidden=32",
                         "model.discriminator.hidden=32", "g_iters=4", "metrics=default", "metrics.every_n_g_iters=4"))
    report = json.loads((run / "eval.json").read_text())
    assert {"modes", "high_quality", "reverse_kl", "recon_l1", "ref_shuffled/recon_l1"} <= set(report["values"])
    assert not any("probe" in key for key in report["values"])
    assert report["provenance"]["probe_accuracy"] == "not computed: dataset 'ring' has no class labels"
    assert (run / "samples" / "iter_000004.png").is_file() and not (run / "samples" / "reconstructions").exists()


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("override, says", [
    ("model.loss=hinge", "does not honour model.loss=hinge"),
    ("model.loss=wasserstein", "does not honour model.loss=wasserstein"),
    ("model.regularizer=r1 model.reg_weight=1", "does not honour model.regularizer=r1"),
    ("model.pack=2", "does not honour model.pack=2"),
    ("model.conditioning=concat", "does not honour model.conditioning=concat"),
    ("model.augment=diffaugment", "does not honour model.augment=diffaugment"),
    ("model.historical_averaging=0.1", "does not honour model.historical_averaging=0.1"),
    ("model.loss=relativistic_average", "does not honour model.loss=relativistic_average"),
    ("model.unroll_steps=5", "BiGAN does not use"),
    ("model.feature_matching=true", "BiGAN does not use"),
    ("model.prior=laplace", "Unknown model.prior='laplace'"),
    ("model.nets=transformer", "Unknown model.nets='transformer'"),
    ("model.stochastic_encoder=maybe", "model.stochastic_encoder must be true or false"),
    ("model.encoder.stochastic=true", "model.stochastic_encoder=False, but the encoder network was built"),
    ("model.discriminator.dropout=1.5", "model.discriminator.dropout is the probability"),
    ("model.generator.depth=-1", "depth is the number of hidden layers, a whole number >= 0"),
])
def test_settings_it_does_not_honour_are_refused_in_one_paragraph(tmp_path, override, says):
    with pytest.raises(UserError, match=re.escape(says)) as error:
        build(compose_config(tmp_path / "run", *SMALL, *override.split()), tmp_path / "run")
    assert "\n" not in str(error.value)


def test_the_conv_networks_refuse_2d_points_naming_the_mlp(tmp_path):
    with pytest.raises(UserError, match=re.escape("model.nets=conv makes square images whose side is a multiple of 4 "
                                                  "(two stride-2 stages: 28 = 7 x 4), but the data has shape [2]. "
                                                  "Use model.nets=mlp")):
        build(compose_config(tmp_path / "run", "model=ali", "data=ring", "model.nets=conv"), tmp_path / "run")
