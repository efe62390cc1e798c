"""Every adversarial loss and regulariser against a value computed by hand on a tiny case."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import model_settings
from gan.errors import UserError
from gan.losses import LOSSES, REGULARIZERS, get_loss, get_regularizer
from gan.models.base import GANModule

REAL, FAKE = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# D's loss on (REAL, FAKE) and G's loss on FAKE, written out from the papers' formulas
EXPECTED = {
    "minimax": (-mean(math.log(sigmoid(r)) for r in REAL.tolist()) - mean(math.log(1 - sigmoid(f)) for f in FAKE.tolist()),
                mean(math.log(1 - sigmoid(f)) for f in FAKE.tolist())),
    "non_saturating": (-mean(math.log(sigmoid(r)) for r in REAL.tolist()) - mean(math.log(1 - sigmoid(f)) for f in FAKE.tolist()),
                       -mean(math.log(sigmoid(f)) for f in FAKE.tolist())),
    "wasserstein": ((0.5 + 3.0) / 2 - (1.0 - 2.0) / 2, -(0.5 + 3.0) / 2),
    "hinge": ((0 + 3) / 2 + (1.5 + 4) / 2, -(0.5 + 3.0) / 2),
    "least_squares": (0.5 * (0 + 9) / 2 + 0.5 * (0.25 + 9) / 2, 0.5 * (0.25 + 4) / 2),
}
# f-GAN (Nowozin et al. 2016, Table 6): (g_f, f*); D's loss E_Q[f*(g_f(v))] - E_P[g_f(v)], G's -E_Q[g_f(v)]
F_GAN_TABLE = {
    "f_kl": (lambda v: v, lambda t: math.exp(t - 1)),
    "f_reverse_kl": (lambda v: -math.exp(-v), lambda t: -1 - math.log(-t)),
    "f_pearson": (lambda v: v, lambda t: t**2 / 4 + t),
    "f_neyman": (lambda v: 1 - math.exp(-v), lambda t: 2 - 2 * math.sqrt(1 - t)),
    "f_hellinger": (lambda v: 1 - math.exp(-v), lambda t: t / (1 - t)),
    "f_jensen_shannon": (lambda v: math.log(2) - math.log(1 + math.exp(-v)), lambda t: -math.log(2 - math.exp(t))),
    "f_gan": (lambda v: -math.log(1 + math.exp(-v)), lambda t: -math.log(1 - math.exp(t))),
    "f_total_variation": (lambda v: math.tanh(v) / 2, lambda t: t),
}
EXPECTED.update({name: (mean(conjugate(g(f)) for f in FAKE.tolist()) - mean(g(r) for r in REAL.tolist()),
                        -mean(g(f) for f in FAKE.tolist()))
                 for name, (g, conjugate) in F_GAN_TABLE.items()})

# Relativistic (Jolicoeur-Martineau 2019): f1 of C(x_r) - C(x_f) on pairs (RSGAN-type), or against the other batch's
# mean with f2(t) = f1(-t) on the fakes' side, halved as the author's code (RaGAN-type); G's loss is D's with real and
# fake swapped. f1: SGAN softplus(-t) = -log sigmoid(t), LSGAN (t - 1)^2, hinge max(0, 1 - t).
R, Q = REAL.tolist(), FAKE.tolist()
for suffix, f1 in {"": lambda t: -math.log(sigmoid(t)), "_ls": lambda t: (t - 1) ** 2,
                   "_hinge": lambda t: max(0.0, 1 - t)}.items():
    EXPECTED[f"relativistic{suffix}"] = (mean(f1(r - f) for r, f in zip(R, Q)), mean(f1(f - r) for r, f in zip(R, Q)))
    EXPECTED[f"relativistic_average{suffix}"] = (
        0.5 * (mean(f1(r - mean(Q)) for r in R) + mean(f1(-(f - mean(R))) for f in Q)),
        0.5 * (mean(f1(f - mean(R)) for f in Q) + mean(f1(-(r - mean(Q))) for r in R)))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_equals_the_hand_computed_value(name):
    assert set(EXPECTED) == set(LOSSES)  # a new loss needs its hand-computed case here
    loss = get_loss(name)
    d_expected, g_expected = EXPECTED[name]
    assert loss.d(REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    g = loss.g(FAKE, REAL) if loss.relativistic else loss.g(FAKE)  # relativistic: G's loss reads real logits too
    assert g.item() == pytest.approx(g_expected, rel=1e-6)
    probability = loss.d_output(torch.tensor([0.0]))
    assert probability.item() == (0.5 if loss.probabilistic else 0.0)


def linear_critic(w: torch.Tensor):
    return lambda x: x.flatten(1) @ w + 0.7


def quadratic_critic(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x.flatten(1) ** 2).sum(1)  # gradient = x


def test_penalties_of_a_linear_critic_are_known_in_closed_form():
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    critic = linear_critic(torch.tensor([3.0, 4.0]))  # gradient (3, 4) everywhere, norm 5
    rng = torch.Generator().manual_seed(0)
    assert get_regularizer("gp")(critic, real, fake, rng).item() == pytest.approx((5 - 1) ** 2)
    assert get_regularizer("r1")(critic, real, fake, rng).item() == pytest.approx(0.5 * 5**2)
    assert get_regularizer("dragan")(critic, real, fake, rng).item() == pytest.approx((5 - 1) ** 2)


def test_penalties_are_taken_where_each_paper_takes_them():
    """With grad f(x) = x the penalty reveals the points it was evaluated at."""
    real, fake = torch.randn(5, 2), torch.randn(5, 2) + 3
    eps = torch.rand(5, 1, generator=torch.Generator().manual_seed(1))
    interpolates = eps * real + (1 - eps) * fake
    gp = get_regularizer("gp")(quadratic_critic, real, fake, torch.Generator().manual_seed(1))
    assert gp.item() == pytest.approx(((interpolates.norm(dim=1) - 1) ** 2).mean().item(), rel=1e-5)

    r1 = get_regularizer("r1")(quadratic_critic, real, fake, torch.Generator())
    assert r1.item() == pytest.approx(0.5 * (real.norm(dim=1) ** 2).mean().item(), rel=1e-5)  # real data only

    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(2))
    perturbed = real + 0.5 * real.std() * noise
    dragan = get_regularizer("dragan")(quadratic_critic, real, fake, torch.Generator().manual_seed(2))
    assert dragan.item() == pytest.approx(((perturbed.norm(dim=1) - 1) ** 2).mean().item(), rel=1e-5)


def test_penalty_gradient_flows_to_the_critic():
    """The penalty must train D (create_graph=True), not just be reported."""
    layer = nn.Linear(2, 1)
    for name in REGULARIZERS:
        layer.zero_grad()
        penalty = get_regularizer(name)(lambda x: layer(x).squeeze(1), torch.randn(4, 2), torch.randn(4, 2),
                                        torch.Generator().manual_seed(0))
        penalty.backward()
        assert layer.weight.grad.abs().sum() > 0, name


class LinearD(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x, y=None):
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("regularizer", ["gp", "r1"])
def test_with_packing_the_penalty_uses_the_gradient_of_the_packed_input(regularizer):
    """PacGAN's D sees m samples as one input; its Lipschitz constant is with respect to that input."""
    w = torch.tensor([1.0, 2.0, 2.0, 4.0])  # packed norm 5; per-sample parts have norms sqrt(5), sqrt(20)
    settings = {**model_settings("gan"), "latent_dim": 2, "regularizer": regularizer, "reg_weight": 2.0, "pack": 2}
    module = GANModule(nn.Identity(), LinearD(w), None, None, **settings)
    value = module.regularization(torch.randn(8, 2), None, torch.randn(8, 2))
    expected = (5 - 1) ** 2 if regularizer == "gp" else 0.5 * 25
    assert value.item() == pytest.approx(2.0 * expected)


def test_unknown_loss_and_regulariser_name_the_choices():
    with pytest.raises(UserError, match="least_squares") as error:
        get_loss("wassersteinn")
    assert "model.loss" in str(error.value)
    with pytest.raises(UserError, match="dragan") as error:
        get_regularizer("l2")
    assert "model.regularizer" in str(error.value)
    assert get_regularizer("none") is None and get_regularizer(None) is None
