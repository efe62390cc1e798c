"""f-GAN losses (Nowozin et al. 2016): the variational bound they train D on is tight at the optimal critic and
strictly lower elsewhere, on distributions whose divergence is known; they stay finite where the naive formulas
overflow; every one trains through the real config."""
from __future__ import annotations

import copy
import json
import math
import pickle

import pytest
import torch

from conftest import assert_same, compose_config, final_state, kill_and_resume
from gan.losses import F_DIVERGENCES, LOSSES, get_loss
from gan.train import load_checkpoint, train

NAMES = sorted(F_DIVERGENCES)
# Total variation's optimal critic is v = +-inf wherever p != q (T* = f'(p/q) = +-1/2 lies on the boundary of dom f*,
# which tanh(v) / 2 reaches only in the limit) and anything where p = q: not unique, so it has tests of its own.
UNIQUE_OPTIMUM = [name for name in NAMES if name != "f_total_variation"]

# Two distributions on 5 points, in twentieths: a sample holding each point count times has means that are exact
# expectations, so the losses (means over samples) compute F exactly.
P_COUNTS, Q_COUNTS = [1, 2, 3, 4, 10], [4, 6, 3, 5, 2]


def discrete() -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(P_COUNTS, dtype=torch.float64) / 20, torch.tensor(Q_COUNTS, dtype=torch.float64) / 20)


def as_samples(per_point: torch.Tensor, counts: list[int]) -> torch.Tensor:
    return per_point.repeat_interleave(torch.tensor(counts))


def bound(name: str, logits: torch.Tensor) -> float:
    """F(T) = E_P[g_f(v)] - E_Q[f*(g_f(v))] for D's logits v on the 5 points, computed by the loss: -(D's loss)."""
    return -get_loss(name).d(as_samples(logits, P_COUNTS), as_samples(logits, Q_COUNTS)).item()


# P = N(0, 1), Q = N(1, 1) on a fine grid (trapezoid weights): D_f = integral of q f(p/q).
X = torch.linspace(-14, 15, 60_001, dtype=torch.float64)
WEIGHTS = torch.full_like(X, float(X[1] - X[0]))
WEIGHTS[[0, -1]] /= 2


def normal(mean: float) -> torch.Tensor:
    return torch.exp(-0.5 * (X - mean) ** 2) / math.sqrt(2 * math.pi)


def gaussian_bound(name: str, logits: torch.Tensor) -> float:
    div = F_DIVERGENCES[name]
    p, q = normal(0.0), normal(1.0)
    return float((WEIGHTS * (p * div.activation(logits) - q * div.activated_conjugate(logits))).sum())


# Closed forms for P = N(0, 1), Q = N(1, 1): KL = reverse KL = 1/2, chi^2 either way e - 1, squared Hellinger
# 2 (1 - Bhattacharyya coefficient exp(-1/8)), total variation P(X < 1/2) - Q(X < 1/2) = erf(1 / (2 sqrt 2)); the GAN
# divergence is the Jensen-Shannon f (2 JSD) minus log 4.
GAUSSIAN_DIVERGENCE = {"f_kl": 0.5, "f_reverse_kl": 0.5, "f_pearson": math.e - 1, "f_neyman": math.e - 1,
                       "f_hellinger": 2 * (1 - math.exp(-1 / 8)), "f_total_variation": math.erf(1 / (2 * math.sqrt(2)))}


@pytest.mark.parametrize("name", NAMES)
def test_the_bound_equals_the_divergence_at_the_optimal_critic_for_discrete_distributions(name):
    div = F_DIVERGENCES[name]
    p, q = discrete()
    divergence = float((q * div.f(p / q)).sum())
    # D_f(Q||Q) = f(1) = 0, but for the GAN divergence 2 JSD - log 4, whose f(1) = -log 4 (the paper's Table 1)
    assert float((q * div.f(q / q)).sum()) == pytest.approx(-math.log(4) if name == "f_gan" else 0.0, abs=1e-15)
    assert divergence > float((q * div.f(q / q)).sum()) + 0.01
    assert bound(name, div.optimal_logit(p / q)) == pytest.approx(divergence, rel=1e-9)


@pytest.mark.parametrize("name", UNIQUE_OPTIMUM)
def test_any_other_critic_gives_a_strictly_lower_bound(name):
    div = F_DIVERGENCES[name]
    p, q = discrete()
    optimal = div.optimal_logit(p / q)
    tight = bound(name, optimal)
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        perturbation = 0.3 * torch.randn(5, generator=rng, dtype=torch.float64)
        assert bound(name, optimal + perturbation) < tight - 1e-6
        assert bound(name, torch.randn(5, generator=rng, dtype=torch.float64)) < tight - 1e-6
    for point in range(5):  # one point's critic off by a little, up or down
        for step in (-0.05, 0.05):
            assert bound(name, optimal + step * torch.eye(5, dtype=torch.float64)[point]) < tight


@pytest.mark.parametrize("name", NAMES)
def test_the_bound_equals_the_divergence_for_two_gaussians(name):
    div = F_DIVERGENCES[name]
    p, q = normal(0.0), normal(1.0)
    divergence = float((WEIGHTS * q * div.f(p / q)).sum())
    if name in GAUSSIAN_DIVERGENCE:
        assert divergence == pytest.approx(GAUSSIAN_DIVERGENCE[name], rel=1e-7)
    if name == "f_gan":
        js = F_DIVERGENCES["f_jensen_shannon"]
        assert divergence == pytest.approx(float((WEIGHTS * q * js.f(p / q)).sum()) - math.log(4), rel=1e-9)
    optimal = div.optimal_logit(p / q)
    assert gaussian_bound(name, optimal) == pytest.approx(divergence, rel=1e-7)
    if name in UNIQUE_OPTIMUM:
        others = [optimal + 0.2, 0.9 * optimal]
    else:  # finite critics of the right sign; the optimal critic of the wrong ratio (its sign flips at 3/2, not 1/2)
        others = [optimal.clamp(-3, 3), div.optimal_logit(math.e * p / q)]
    for other in others:
        assert gaussian_bound(name, other) < divergence - 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_the_optimal_logit_is_the_derivative_of_f_and_the_conjugate_is_fenchels(name):
    """g_f(v*) = f'(u) (by autograd), and f*(f'(u)) = u f'(u) - f(u), where the sup defining f* is attained."""
    div = F_DIVERGENCES[name]
    u = torch.tensor([0.05, 0.3, 1.0, 2.0, 7.0], dtype=torch.float64, requires_grad=True)
    (derivative,) = torch.autograd.grad(div.f(u).sum(), u)
    u = u.detach()
    assert torch.allclose(div.activation(div.optimal_logit(u)), derivative, rtol=1e-10, atol=1e-12)
    assert torch.allclose(div.conjugate(derivative), u * derivative - div.f(u), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_the_activation_maps_onto_the_conjugates_domain_and_the_closed_form_is_the_composition(name):
    div = F_DIVERGENCES[name]
    low, high = div.domain
    v = torch.linspace(-30, 30, 601, dtype=torch.float64)
    t = div.activation(v)  # total variation's tanh rounds to its bounds from |v| of about 19 in float64
    assert (t >= low).all() and (t <= high).all() and (t.diff() >= 0).all()
    inner = div.activation(torch.linspace(-15, 15, 301, dtype=torch.float64))
    assert (inner > low).all() and (inner < high).all() and (inner.diff() > 0).all()
    extremes = div.activation(torch.tensor([-100.0, 100.0], dtype=torch.float64))
    assert extremes[0] < -50 if low == -math.inf else extremes[0] - low < 1e-12
    assert extremes[1] > 50 if high == math.inf else high - extremes[1] < 1e-12
    assert (t > low).all() if name in UNIQUE_OPTIMUM else low == -0.5 and high == 0.5  # all but TV unbounded below
    assert torch.isfinite(div.conjugate(t)).all()
    moderate = torch.linspace(-8, 8, 161, dtype=torch.float64)
    assert torch.allclose(div.activated_conjugate(moderate), div.conjugate(div.activation(moderate)), rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_losses_and_their_gradients_are_finite_for_extreme_logits(name):
    loss = get_loss(name)
    real = torch.tensor([-50.0, 50.0, 0.0], requires_grad=True)
    fake = torch.tensor([50.0, -50.0, 0.0], requires_grad=True)
    d_loss, g_loss = loss.d(real, fake), loss.g(fake)
    d_grads = torch.autograd.grad(d_loss, (real, fake))
    (g_grad,) = torch.autograd.grad(g_loss, fake)
    for value in (d_loss, g_loss, *d_grads, g_grad):
        assert torch.isfinite(value).all(), (name, value)


def test_total_variation_is_half_the_l1_distance_reached_by_critics_of_the_right_sign():
    """Table 6: g_f(v) = tanh(v) / 2, f*(t) = t, so F = E_P[tanh(v)] / 2 - E_Q[tanh(v)] / 2 = 1/2 sum (p - q) tanh(v)
    <= 1/2 sum |p - q|, with equality only in the limit v -> sign(p - q) inf."""
    div, (p, q) = F_DIVERGENCES["f_total_variation"], discrete()
    tv = 0.5 * float((p - q).abs().sum())
    assert tv == pytest.approx(0.4, abs=1e-15)  # |1-4| + |2-6| + |3-3| + |4-5| + |10-2| = 16 twentieths, halved
    assert float((q * div.f(p / q)).sum()) == pytest.approx(tv, abs=1e-15)
    sign = torch.sign(p - q)
    optimal = div.optimal_logit(p / q)  # p = q at the third point: 0 there
    assert torch.equal(optimal, torch.tensor([-math.inf, -math.inf, 0.0, -math.inf, math.inf], dtype=torch.float64))
    assert bound("f_total_variation", optimal) == pytest.approx(tv, abs=1e-15)
    bounds = [bound("f_total_variation", scale * sign) for scale in (0.5, 1.0, 3.0, 10.0)]
    assert bounds == sorted(bounds) and bounds[-1] < tv and bounds[-1] == pytest.approx(tv, rel=1e-8)
    for scale, value in zip((0.5, 1.0, 3.0, 10.0), bounds):
        assert value == pytest.approx(tv * math.tanh(scale), rel=1e-12)
    assert bound("f_total_variation", -10 * sign) == pytest.approx(-tv, rel=1e-8)  # the wrong sign: the bound's minimum
    # where p = q the critic does not matter; any finite critic elsewhere gives less
    assert bound("f_total_variation", optimal + torch.tensor([0, 0, 5.0, 0, 0], dtype=torch.float64)) == \
        pytest.approx(tv, abs=1e-15)
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert bound("f_total_variation", 3 * torch.randn(5, generator=rng, dtype=torch.float64)) < tv - 1e-3


def test_the_gan_divergence_is_the_original_gan_loss():
    """g_f(v) = log sigmoid(v) and f*(g_f(v)) = softplus(v): D's loss is Goodfellow et al.'s, G's the non-saturating."""
    real, fake = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 10, torch.linspace(-40, 40, 64)
    f_gan, original = get_loss("f_gan"), LOSSES["non_saturating"]
    assert f_gan.d(real, fake).item() == pytest.approx(original.d(real, fake).item(), rel=1e-6)
    assert f_gan.g(fake).item() == pytest.approx(original.g(fake).item(), rel=1e-6)
    assert f_gan.probabilistic and not any(get_loss(n).probabilistic for n in NAMES if n != "f_gan")


def test_the_generator_maximises_the_activated_critic():
    """G's loss is -E_Q[g_f(v)] (the paper's section 3.2 alternative), not the saturating -E_Q[f*(g_f(v))]."""
    fake = torch.tensor([-3.0, 0.5, 2.0], dtype=torch.float64)
    for name in NAMES:
        div = F_DIVERGENCES[name]
        assert get_loss(name).g(fake).item() == pytest.approx(-div.activation(fake).mean().item(), rel=1e-12)


def test_the_losses_pickle_by_name():
    real, fake = torch.tensor([0.3, -1.0]), torch.tensor([2.0, -0.5])
    for name in NAMES:
        loss = pickle.loads(pickle.dumps(get_loss(name)))
        assert loss.name == name
        assert loss.d(real, fake) == get_loss(name).d(real, fake) and loss.g(fake) == get_loss(name).g(fake)


@pytest.fixture(scope="module")
def ring_config(tmp_path_factory):
    """`model=gan data=ring`, tiny, composed once (composing takes longer than the run): each test sets its loss
    and run directory as the command-line overrides `model.loss=... paths.run_dir=...` would."""
    return compose_config(tmp_path_factory.mktemp("unused"), "model=gan", "data=ring", "g_iters=2", "model.log_every=1",
                          "data.batch_size=32", "model.generator.mlp.hidden=16", "model.discriminator.mlp.hidden=16",
                          "callbacks.samples=null", "callbacks.progress_bar=null")


@pytest.mark.parametrize("name", NAMES)
def test_every_f_divergence_trains_through_the_config(tmp_path, ring_config, name):
    run, cfg = tmp_path / "run", copy.deepcopy(ring_config)
    cfg.model.loss, cfg.paths.run_dir = name, str(run)
    train(cfg)
    _, _, module = load_checkpoint(run)
    assert module.g_iter == 2 and module.loss.name == name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r[key] for r in records for key in ("train/d_loss", "train/g_loss") if key in r]
    assert len(losses) == 4 and all(math.isfinite(value) for value in losses)


@pytest.mark.slow
def test_an_f_gan_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    args = ["model=gan", "data=ring", "model.loss=f_pearson", "model.ema_decay=0.9", "g_iters=120",
            "model.log_every=10", "logger=csv", "metrics.every_n_g_iters=40", "callbacks.checkpoint.every_g_iters=3",
            "callbacks.samples.every_g_iters=40"]
    whole, parts = kill_and_resume(tmp_path, args)
    assert_same(final_state(whole), final_state(parts))
    evaluation = [json.loads((run / "eval.json").read_text())["values"] for run in (whole, parts)]
    assert evaluation[0] == evaluation[1] and "reverse_kl" in evaluation[0]
