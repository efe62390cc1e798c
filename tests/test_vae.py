"""The VAE baseline: its ELBO and IWAE bound against hand computations, the reparameterisation, training through the
real config (checkpoints, prior-sample and reconstruction grids), the bounds in the evaluation, bad values, resume."""
from __future__ import annotations

import json
import math
from functools import partial

import pytest
import torch
from PIL import Image
from torch import nn
from torch.distributions import Normal, kl_divergence

from conftest import assert_same, compose_config, final_state, kill_and_resume, model_settings
from gan.errors import UserError
from gan.evaluate import main as evaluate_main
from gan.models.vae import VAE, log_mean_exp, reparameterize
from gan.train import load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model=vae", "data.image_size=8", "data.batch_size=16", "model.latent_dim=4", "model.encoder.width=8",
        "model.decoder.width=8"]
SHAPE, LATENT = (1, 2, 3), 2


class LinearEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(math.prod(SHAPE), 2 * LATENT)

    def forward(self, x):
        return self.linear(x.flatten(1)).chunk(2, dim=1)


class LinearDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(LATENT, math.prod(SHAPE))

    def forward(self, z):
        return self.linear(z).view(-1, *SHAPE)


def tiny_vae(likelihood: str, **kwargs) -> VAE:
    torch.manual_seed(0)
    vae = VAE(LinearEncoder(), LinearDecoder(), partial(torch.optim.Adam),
              **{**model_settings("vae"), "latent_dim": LATENT, "likelihood": likelihood, "seed": 3, **kwargs})
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0, 0.7)  # far from an identity map: the terms are of different sizes
    return vae


def images(n: int) -> torch.Tensor:
    """Quantised like the served data: k / 127.5 - 1."""
    return torch.randint(0, 256, (n, *SHAPE), generator=torch.Generator().manual_seed(1)) / 127.5 - 1


def hand_log_likelihood(vae: VAE, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    if vae.likelihood == "bernoulli":
        t, p = (x + 1) / 2, torch.sigmoid(output)
        return (t * p.log() + (1 - t) * (1 - p).log()).flatten(1).sum(1)
    std = vae.decoder_scale.log_std.exp() if vae.gaussian_std is None else torch.tensor(vae.gaussian_std)
    return Normal(torch.tanh(output), std).log_prob(x).flatten(1).sum(1)


def posterior(vae: VAE, x: torch.Tensor) -> Normal:
    mean, log_var = vae.encoder(x)
    return Normal(mean, (0.5 * log_var).exp())


@pytest.mark.parametrize("likelihood,options", [("bernoulli", {}), ("gaussian", {}),
                                                ("gaussian", {"gaussian_std": 0.3})])
def test_training_loss_is_the_negative_elbo_computed_by_hand(likelihood, options):
    vae = tiny_vae(likelihood, kl_weight=0.7, **options)
    if vae.gaussian_std is None and likelihood == "gaussian":
        vae.decoder_scale.log_std.data.fill_(-0.8)
    x = images(5)
    loss = vae.negative_elbo({"x": x})
    # the same draws, in the same order, from the module's seeded generator: dequantisation, then eps
    rng = torch.Generator().manual_seed(3)
    y = x + (torch.rand(x.shape, generator=rng) - 0.5) / 127.5 if likelihood == "gaussian" else x
    q = posterior(vae, y)
    z = q.mean + q.stddev * torch.randn(5, LATENT, generator=rng)
    reconstruction = hand_log_likelihood(vae, y, vae.decoder(z))
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(loss, (0.7 * kl - reconstruction).mean(), rtol=1e-5)
    assert torch.allclose(vae._last["kl"], kl.mean(), rtol=1e-5) and vae._last["kl"] > 0.5


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_bounds_equal_a_hand_computation_of_the_importance_weights(likelihood):
    vae, x, k = tiny_vae(likelihood), images(3), 4
    bounds = vae.likelihood_bounds(x, k, torch.Generator().manual_seed(7))
    rng = torch.Generator().manual_seed(7)
    y = vae.dequantized(x, torch.rand(x.shape, generator=rng))
    q = posterior(vae, y)
    z = q.mean + q.stddev * torch.randn(k, 3, LATENT, generator=rng)
    log_px = torch.stack([hand_log_likelihood(vae, y, vae.decoder(z[i])) for i in range(k)])
    log_w = log_px + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    iwae = torch.log(torch.exp(log_w.double()).mean(0))  # naive: fine at these magnitudes
    elbo = log_px.mean(0) - kl_divergence(q, Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(bounds["iwae"].double(), iwae, rtol=1e-5, atol=1e-4)
    assert torch.allclose(bounds["elbo"], elbo, rtol=1e-5, atol=1e-4)


def test_iwae_with_one_sample_is_the_elbo_in_expectation_and_tighter_with_more():
    vae, x = tiny_vae("bernoulli"), images(1).repeat(4000, 1, 1, 1)
    one = vae.likelihood_bounds(x, 1, torch.Generator().manual_seed(0))
    gap = one["iwae"] - one["elbo"]  # log p(z) - log q(z|x) + KL: zero mean, single-sample noise
    assert abs(gap.mean()) < 4 * gap.std() / math.sqrt(len(gap)) and gap.std() > 0.1
    ten = vae.likelihood_bounds(x[:500], 10, torch.Generator().manual_seed(1))
    fifty = vae.likelihood_bounds(x[:500], 50, torch.Generator().manual_seed(2))
    assert fifty["iwae"].mean() > ten["iwae"].mean() > ten["elbo"].mean() + 0.05


def test_log_mean_exp_is_stable():
    values = torch.tensor([[-1e4, 1e4], [-1e4 + math.log(2), 1e4 + math.log(2)]], dtype=torch.float32)
    assert torch.isinf(torch.log(torch.exp(values).mean(0))).all()  # the naive form fails both ways
    assert torch.allclose(log_mean_exp(values, 0), torch.tensor([-1e4, 1e4]) + math.log(1.5), rtol=0, atol=1e-3)


def test_reparameterised_sample_has_the_posterior_mean_and_variance_and_gradients():
    mean = torch.tensor([1.0, -2.0], requires_grad=True)
    log_var = torch.tensor([math.log(4.0), math.log(0.25)], requires_grad=True)
    z = reparameterize(mean, log_var, torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.01)
    assert torch.allclose(z.var(0), torch.tensor([4.0, 0.25]), rtol=0.02)
    z.sum().backward()
    assert torch.allclose(mean.grad, torch.full((2,), 200_000.0))


def test_samples_are_decoder_means_of_prior_draws_in_eval_mode():
    vae = tiny_vae("bernoulli")
    first, again = (vae.sample(6, generator=torch.Generator().manual_seed(5))["x"] for _ in range(2))
    z = torch.randn(6, LATENT, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and torch.allclose(first, 2 * torch.sigmoid(vae.decoder(z)) - 1)
    assert first.shape == (6, *SHAPE) and first.min() >= -1 and first.max() <= 1 and vae.encoder.training


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_trains_through_the_config_with_checkpoints_and_both_grids(tmp_path, likelihood):
    run = tmp_path / "run"
    train(compose_config(run, *TINY, f"model.likelihood={likelihood}", "model.log_every=1"))
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"g000002.ckpt", "g000004.ckpt", "last.ckpt"}
    for grid in ("samples/iter_000004.png", "samples/reconstructions/iter_000004.png"):
        with Image.open(run / grid) as image:  # 8 x 8 tiles of 8x8 digits enlarged to 48 pixels, 2-pixel padding
            assert image.size == (8 * 50 + 2, 8 * 50 + 2)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["g_iter"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r[key]) for r in records for key in ("train/vae_loss", "train/recon_nll", "train/kl"))
    _, _, module = load_checkpoint(run)
    assert module.g_iter == 4 and module.sample(3)["x"].shape == (3, 1, 8, 8)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4  # one step each
    with Image.open(run / "samples/reconstructions/iter_000004.png") as image:
        pixels = torch.tensor(list(image.convert("L").getdata()), dtype=torch.float32).view(402, 402)
    tile = lambda row: pixels[2 + 50 * row:50 * (row + 1), 2:50]  # noqa: E731  (first column)
    assert not torch.equal(tile(0), tile(1))  # a real image above its reconstruction


def test_evaluation_reports_the_bounds_beside_the_sample_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    train(compose_config(run, *TINY, "model.likelihood=gaussian", "model.iwae_k=8", "model.likelihood_images=40",
                         "metrics=default", "metrics.every_n_g_iters=2", "metrics.num_samples=64",
                         "metrics.final_num_samples=100", "metrics.kid_subsets=10", "metrics.classifier.max_steps=30",
                         f"paths.cache_dir={tmp_path / 'cache'}"))
    report = json.loads((run / "eval.json").read_text())
    values, p = report["values"], report["provenance"]
    assert {"fid", "is", "kid", "precision", "recall", "nll_elbo", "nll_iwae", "recon_nll", "kl", "bpd_elbo",
            "bpd_iwae"} <= values.keys()
    assert (p["split"], p["likelihood_split"], p["likelihood_images"], p["iwae_k"]) == ("test", "test", 40, 8)
    assert values["nll_iwae"] <= values["nll_elbo"]
    assert math.isclose(values["nll_elbo"], values["recon_nll"] + values["kl"], rel_tol=1e-6)
    dims = 64
    assert math.isclose(values["bpd_elbo"], (values["nll_elbo"] + dims * math.log(127.5)) / (dims * math.log(2)))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["g_iter"] for r in records if "val/nll_iwae" in r] == [2, 4]
    # the same weights, split and seed give the same bounds: evaluation is reproducible
    ckpt = run / "checkpoints" / "g000004.ckpt"
    args = [f"ckpt={ckpt}", "metrics=[fid]", "num_samples=50", "split=val", f"cache_dir={tmp_path / 'cache'}"]
    assert evaluate_main(args) == 0
    first = json.loads((ckpt.parent / "eval.json").read_text())["values"]
    assert evaluate_main(args) == 0 and "nll_iwae" in capsys.readouterr().out
    assert json.loads((ckpt.parent / "eval.json").read_text())["values"] == first
    assert first["nll_iwae"] == next(r["val/nll_iwae"] for r in records if r["g_iter"] == 4 and "val/nll_iwae" in r)


@pytest.mark.parametrize("override,match", [
    ("model.likelihood=poisson", "model.likelihood='poisson'.*bernoulli.*gaussian"),
    ("model.iwae_k=0", "model.iwae_k must be a positive integer"),
    ("model.kl_weight=-1", "model.kl_weight must be a number >= 0"),
    ("model.gaussian_std=0", "model.gaussian_std .*positive number"),
    ("model.likelihood_images=0", "model.likelihood_images must be a positive integer"),
    ("model.lr=fast", "model.lr must be a positive number"),
    ("model.betas=[0.9]", "model.betas must be two numbers"),
    ("model.encoder.norm=group", "model.encoder.norm='group'"),
    ("+model.beta=4", "Unknown key 'beta'.*kl_weight"),
])
def test_bad_values_give_a_clear_error(hydra_run_dir, override, match):
    overrides = [*TINY, override] + (["model.likelihood=gaussian"] if "gaussian_std" in override else [])
    with pytest.raises(UserError, match=match):
        train(compose_config(hydra_run_dir, *overrides))
    assert not hydra_run_dir.exists()


@pytest.mark.slow
def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    args = [*TINY, "model.likelihood=gaussian", "g_iters=20", "logger=none", "metrics=none",
            "callbacks.checkpoint.every_g_iters=3", "callbacks.samples.every_g_iters=20", "model.log_every=5"]
    whole, parts = kill_and_resume(tmp_path, args)
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 20
    assert_same(state, final_state(parts))
