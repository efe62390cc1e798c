"""Adversarial losses and discriminator regularisers as small pure functions.

A loss is a strategy object: how the discriminator is trained on (real, fake) logits and how the
generator is trained on fake logits. Logits are raw discriminator outputs of any shape.
Regularisers take a closure `critic(x) -> logits` so conditional models can bind their labels.
"""
from __future__ import annotations

import math
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
    g: Callable[..., Tensor]  # fake_logits -> scalar; relativistic: (fake_logits, real_logits) -> scalar
    probabilistic: bool  # whether sigmoid(logit) is D's probability that the input is real
    relativistic: bool = False  # G's loss also reads D's logits on real data
    paired: bool = False  # relativistic on pairs (RSGAN): real and fake logits must be as many

    def d_output(self, logits: Tensor) -> Tensor:
        """What a person reads as D(x): a probability for probabilistic losses, the critic value otherwise."""
        return torch.sigmoid(logits) if self.probabilistic else logits

    def __reduce__(self):  # closures inside: a registered loss is pickled (DDP spawn, multiprocessing) by name
        return (get_loss, (self.name,)) if LOSSES.get(self.name) is self else super().__reduce__()


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


# Relativistic GANs (Jolicoeur-Martineau 2019): D estimates how much more realistic real data are than fakes. On pairs
# (RSGAN, eq. 4-5: C(x_r) - C(x_f) for a real and a fake of the same index) or against the other batch's mean (RaGAN,
# eq. 11: C(x_r) - E C(x_f) and C(x_f) - E C(x_r)); G's loss is D's with real and fake swapped. f1(t) = softplus(-t)
# (SGAN), (t - 1)^2 (LSGAN), relu(1 - t) (hinge), with f2(t) = f1(-t). The average variants are halved as in the
# author's code (AlexiaJM/RelativisticGAN: `errD = (... + ...)/2`); the paired ones are not, as there.
RELATIVISTIC_F = {"": lambda t: F.softplus(-t), "_ls": lambda t: (t - 1.0) ** 2, "_hinge": lambda t: F.relu(1.0 - t)}


def relativistic_paired(f: Callable[[Tensor], Tensor]) -> tuple[Callable, Callable]:
    def d(real: Tensor, fake: Tensor) -> Tensor:
        return f(real - fake).mean()

    def g(fake: Tensor, real: Tensor) -> Tensor:
        return f(fake - real).mean()
    return d, g


def relativistic_average(f: Callable[[Tensor], Tensor]) -> tuple[Callable, Callable]:
    def d(real: Tensor, fake: Tensor) -> Tensor:
        return 0.5 * (f(real - fake.mean()).mean() + f(-(fake - real.mean())).mean())

    def g(fake: Tensor, real: Tensor) -> Tensor:
        return d(fake, real)
    return d, g


def relativistic_losses() -> dict[str, AdversarialLoss]:
    losses = {}
    for suffix, f in RELATIVISTIC_F.items():
        losses[f"relativistic{suffix}"] = AdversarialLoss(f"relativistic{suffix}", *relativistic_paired(f),
                                                          probabilistic=False, relativistic=True, paired=True)
        losses[f"relativistic_average{suffix}"] = AdversarialLoss(f"relativistic_average{suffix}",
                                                                  *relativistic_average(f), probabilistic=False,
                                                                  relativistic=True)
    return losses


@dataclass(frozen=True)
class FDivergence:
    """An f-divergence D_f(P||Q) = E_Q[f(p/q)] as an adversarial loss: f-GAN (Nowozin, Cseke & Tomioka 2016).

    D's raw output v goes through the output activation g_f into the domain of the Fenchel conjugate f* (Table 6),
    T = g_f(v), and D maximises the variational lower bound (Eq. 6)

        F(T) = E_P[g_f(V(x))] - E_Q[f*(g_f(V(G(z))))] <= D_f(P||Q),

    with equality at the optimal critic T* = f'(p/q): D's loss is -F. f*(g_f(v)) is written out in closed form
    (`activated_conjugate`), never as f* applied to g_f(v): the composition cancels exponentials against logarithms
    (GAN: -log(1 - sigmoid(v)) = softplus(v); reverse KL: -1 - log(exp(-v)) = v - 1) that overflow, underflow or
    round to log(0) one by one at large |v|. What stays exponential is the value itself (KL's exp(v - 1) and squared
    Hellinger's expm1(v) on fakes, exp(-v) in the reverse KL, Neyman and Hellinger activations): finite in float32
    for |v| < 88.

    G's loss is -E_Q[g_f(V(G(z)))]: G maximises E_Q[g_f(v)], the alternative of the paper's section 3.2 to
    minimising F, i.e. Goodfellow et al.'s non-saturating heuristic for any f (for the GAN divergence it is exactly
    their -log D(G(z))). Chosen because its gradient g_f'(v) tends to 1 or more where D rejects the samples
    (v -> -inf) for every divergence here but total variation, while minimising F's -E_Q[f*(g_f(v))] saturates there
    for KL, squared Hellinger, Jensen-Shannon and GAN (for GAN it is the minimax log(1 - D(G(z)))). Total variation's
    g_f = tanh / 2 saturates at both ends whichever G loss (there f*(g_f(v)) = g_f(v): the two are one): its bound
    approaches the divergence only as |v| -> inf.
    """

    name: str  # the loss name, model.loss=<name>
    f: Callable[[Tensor], Tensor]  # the generator function of the density ratio u = p/q: convex (f_gan's f(1) = -log 4)
    activation: Callable[[Tensor], Tensor]  # g_f: R -> dom f*, onto
    conjugate: Callable[[Tensor], Tensor]  # f*(t) = sup_u (u t - f(u)), on dom f*
    activated_conjugate: Callable[[Tensor], Tensor]  # f*(g_f(v)) in closed form: no cancellation at any v
    optimal_logit: Callable[[Tensor], Tensor]  # u = p/q -> the v with g_f(v) = f'(u), i.e. the optimal critic T*
    domain: tuple[float, float]  # the range of g_f, an open interval (low, high): dom f* or its interior (TV)
    probabilistic: bool = False  # whether sigmoid(v) is D's probability (GAN divergence: exp(g_f(v)) = sigmoid(v))

    def d(self, real: Tensor, fake: Tensor) -> Tensor:
        return self.activated_conjugate(fake).mean() - self.activation(real).mean()  # -F

    def g(self, fake: Tensor) -> Tensor:
        return -self.activation(fake).mean()

    def adversarial_loss(self) -> AdversarialLoss:
        return AdversarialLoss(self.name, self.d, self.g, self.probabilistic)

    def __reduce__(self):  # its functions are lambdas: pickled (DDP spawn, multiprocessing) by name
        return f_divergence, (self.name,)


LOG2, INF = math.log(2.0), math.inf
# Table 6 of the paper: g_f, f* and f*(g_f(v)) as derived from them; f and the optimal logits from Table 1 and f'.
F_DIVERGENCES = {div.name: div for div in (
    FDivergence("f_kl", f=lambda u: torch.xlogy(u, u), activation=lambda v: v,
                conjugate=lambda t: torch.exp(t - 1), activated_conjugate=lambda v: torch.exp(v - 1),
                optimal_logit=lambda u: 1 + torch.log(u), domain=(-INF, INF)),
    FDivergence("f_reverse_kl", f=lambda u: -torch.log(u), activation=lambda v: -torch.exp(-v),
                conjugate=lambda t: -1 - torch.log(-t), activated_conjugate=lambda v: v - 1,
                optimal_logit=torch.log, domain=(-INF, 0.0)),
    FDivergence("f_pearson", f=lambda u: (u - 1) ** 2, activation=lambda v: v,
                conjugate=lambda t: t**2 / 4 + t, activated_conjugate=lambda v: v**2 / 4 + v,
                optimal_logit=lambda u: 2 * (u - 1), domain=(-INF, INF)),
    # 1 - exp(-v) = -expm1(-v); f*(g_f(v)) = 2 - 2 sqrt(exp(-v)) = -2 expm1(-v / 2)
    FDivergence("f_neyman", f=lambda u: (1 - u) ** 2 / u, activation=lambda v: -torch.expm1(-v),
                conjugate=lambda t: 2 - 2 * torch.sqrt(1 - t), activated_conjugate=lambda v: -2 * torch.expm1(-v / 2),
                optimal_logit=lambda u: 2 * torch.log(u), domain=(-INF, 1.0)),
    # squared Hellinger; f*(g_f(v)) = (1 - exp(-v)) / exp(-v) = expm1(v)
    FDivergence("f_hellinger", f=lambda u: (torch.sqrt(u) - 1) ** 2, activation=lambda v: -torch.expm1(-v),
                conjugate=lambda t: t / (1 - t), activated_conjugate=torch.expm1,
                optimal_logit=lambda u: 0.5 * torch.log(u), domain=(-INF, 1.0)),
    # f is twice the Jensen-Shannon divergence (Table 1); f*(g_f(v)) = -log(2 - 2 sigmoid(v)) = softplus(v) - log 2
    FDivergence("f_jensen_shannon", f=lambda u: torch.xlogy(u, u) - torch.xlogy(u + 1, (u + 1) / 2),
                activation=lambda v: LOG2 - F.softplus(-v), conjugate=lambda t: -torch.log(2 - torch.exp(t)),
                activated_conjugate=lambda v: F.softplus(v) - LOG2, optimal_logit=torch.log, domain=(-INF, LOG2)),
    # g_f(v) = log sigmoid(v); f*(g_f(v)) = -log(1 - sigmoid(v)) = softplus(v): D's loss is minimax_d
    FDivergence("f_gan", f=lambda u: torch.xlogy(u, u) - torch.xlogy(u + 1, u + 1),
                activation=lambda v: -F.softplus(-v), conjugate=lambda t: -torch.log(-torch.expm1(t)),
                activated_conjugate=F.softplus, optimal_logit=torch.log, domain=(-INF, 0.0), probabilistic=True),
    # total variation 1/2 sum |p - q|: g_f(v) = tanh(v) / 2, f*(t) = t on |t| <= 1/2. f'(u) = sign(u - 1) / 2 lies on
    # the boundary of dom f*, so T* = +-1/2 is the limit v -> +-inf (0 where p = q): atanh(sign(u - 1)) gives it.
    FDivergence("f_total_variation", f=lambda u: 0.5 * torch.abs(u - 1), activation=lambda v: 0.5 * torch.tanh(v),
                conjugate=lambda t: t, activated_conjugate=lambda v: 0.5 * torch.tanh(v),
                optimal_logit=lambda u: torch.atanh(torch.sign(u - 1)), domain=(-0.5, 0.5)),
)}


def f_divergence(name: str) -> FDivergence:
    return F_DIVERGENCES[name]


LOSSES = {
    "minimax": AdversarialLoss("minimax", minimax_d, minimax_g, probabilistic=True),
    "non_saturating": AdversarialLoss("non_saturating", minimax_d, non_saturating_g, probabilistic=True),
    "wasserstein": AdversarialLoss("wasserstein", wasserstein_d, wasserstein_g, probabilistic=False),
    "hinge": AdversarialLoss("hinge", hinge_d, wasserstein_g, probabilistic=False),
    "least_squares": AdversarialLoss("least_squares", least_squares_d, least_squares_g, probabilistic=False),
    **{name: div.adversarial_loss() for name, div in F_DIVERGENCES.items()},
    **relativistic_losses(),  # relativistic{,_ls,_hinge}, relativistic_average{,_ls,_hinge}
}


Critic = Callable[[Tensor], Tensor]


@torch.compiler.disable  # model.compile=step: a compiled graph cannot be differentiated twice; this runs eagerly
def _input_gradient_norm(critic: Critic, x: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    # A network compiled in place (model.compile=networks) cannot be differentiated twice: run its eager forward.
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
