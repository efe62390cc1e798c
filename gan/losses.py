"""Adversarial losses and discriminator regularisers as small pure functions.

A loss is a strategy object: how the discriminator is trained on (real, fake) logits and how the
generator is trained on fake logits. Logits are raw discriminator outputs of any shape.
Regularisers take a closure `critic(x) -> logits` so conditional models can bind their labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gan.errors import UserError


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    d: Callable[[Tensor, Tensor], Tensor]  # (real_logits, fake_logits) -> scalar
    g: Callable[[Tensor], Tensor]  # fake_logits -> scalar
    probabilistic: bool  # whether sigmoid(logit) is D's probability that the input is real

    def d_output(self, logits: Tensor) -> Tensor:
        """What a person reads as D(x): a probability for probabilistic losses, the critic value otherwise."""
        return torch.sigmoid(logits) if self.probabilistic else logits


# Goodfellow et al. 2014: max_D E[log D(x)] + E[log(1 - D(G(z)))]; G minimises log(1 - D(G(z))).
def minimax_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def minimax_g(fake: Tensor) -> Tensor:
    return -F.softplus(fake).mean()  # = mean log(1 - sigmoid(fake)), saturates when D wins


def non_saturating_g(fake: Tensor) -> Tensor:
    return F.softplus(-fake).mean()  # = -mean log sigmoid(fake)


# Arjovsky et al. 2017: the critic maximises E[f(x)] - E[f(G(z))].
def wasserstein_d(real: Tensor, fake: Tensor) -> Tensor:
    return fake.mean() - real.mean()


def wasserstein_g(fake: Tensor) -> Tensor:
    return -fake.mean()


# Lim & Ye 2017 / Miyato et al. 2018.
def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


# Mao et al. 2017, the a=0, b=1, c=1 variant; the 1/2 factors follow the paper.
def least_squares_d(real: Tensor, fake: Tensor) -> Tensor:
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


def least_squares_g(fake: Tensor) -> Tensor:
    return 0.5 * ((fake - 1.0) ** 2).mean()


LOSSES = {
    "minimax": AdversarialLoss("minimax", minimax_d, minimax_g, probabilistic=True),
    "non_saturating": AdversarialLoss("non_saturating", minimax_d, non_saturating_g, probabilistic=True),
    "wasserstein": AdversarialLoss("wasserstein", wasserstein_d, wasserstein_g, probabilistic=False),
    "hinge": AdversarialLoss("hinge", hinge_d, wasserstein_g, probabilistic=False),
    "least_squares": AdversarialLoss("least_squares", least_squares_d, least_squares_g, probabilistic=False),
}


Critic = Callable[[Tensor], Tensor]


def _input_gradient_norm(critic: Critic, x: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    # A network compiled with torch.compile (model.compile=true) cannot be differentiated twice: run it eagerly.
    with torch.compiler.set_stance("force_eager"):
        (grad,) = torch.autograd.grad(critic(x).float().sum(), x, create_graph=True)
    return grad.flatten(1).norm(2, dim=1)


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, rng: torch.Generator) -> Tensor:
    """Gulrajani et al. 2017: (||grad f(x_hat)|| - 1)^2 on random interpolates of real and fake."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=rng).to(real)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    return ((_input_gradient_norm(critic, x_hat) - 1.0) ** 2).mean()


def r1_penalty(critic: Critic, real: Tensor, fake: Tensor, rng: torch.Generator) -> Tensor:
    """Mescheder et al. 2018: (gamma/2) E ||grad D(x)||^2 on real data; the 1/2 is applied here."""
    return 0.5 * (_input_gradient_norm(critic, real) ** 2).mean()


def dragan_penalty(critic: Critic, real: Tensor, fake: Tensor, rng: torch.Generator) -> Tensor:
    """Kodali et al. 2017: gradient penalty around real data perturbed by 0.5 * std(x) * U[0, 1] noise."""
    noise = torch.rand(real.shape, generator=rng).to(real)
    x_hat = real.detach() + 0.5 * real.detach().std() * noise
    return ((_input_gradient_norm(critic, x_hat) - 1.0) ** 2).mean()


REGULARIZERS = {"gp": gradient_penalty, "r1": r1_penalty, "dragan": dragan_penalty}


def get_loss(name: str) -> AdversarialLoss:
    if name not in LOSSES:
        raise UserError(
            f"Unknown adversarial loss model.loss={name!r}. Available losses: {', '.join(LOSSES)}. "
            f"Pick one with, e.g., `model.loss=hinge`."
        )
    return LOSSES[name]


def get_regularizer(name: str | None):
    if name in (None, "none", "null"):
        return None
    if name not in REGULARIZERS:
        raise UserError(
            f"Unknown discriminator regulariser model.regularizer={name!r}. Available: none, "
            f"{', '.join(REGULARIZERS)}. Pick one with, e.g., `model.regularizer=gp model.reg_weight=10`."
        )
    return REGULARIZERS[name]
