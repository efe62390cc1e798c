"""Improved GAN's techniques (Salimans et al. 2016, section 3), the parts GANModule composes:

- feature matching (3.1): G's objective is ||E f(x) - E f(G(z))||^2 over D's features f, the input of D's output head;
  as openai/improved-gan (`loss_gen = T.mean(T.square(mom_gen - mom_real))`) the squares are averaged;
- minibatch discrimination (3.2): a D layer, gan.nets.conditioning.MinibatchDiscrimination
  (model.discriminator.minibatch_kernels);
- historical averaging (3.3): each player's loss gains ||theta - (1/t) sum_i theta[i]||^2, the average kept on the
  device over the player's parameters after each of its steps (the initial ones counted first);
- one-sided label smoothing (3.4): D's target for real data is 1 - smoothing, fakes keep 0;
- virtual batch norm (3.5): G's batch-norm layers normalise each sample with the statistics of a reference batch of
  latents, drawn once and kept (a checkpointed buffer), and of the sample itself (`VirtualBatchNorm`); the reference
  batch goes through G with every batch, so its statistics follow G's current weights, as in the paper.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import UserError
from gan.losses import AdversarialLoss
from gan.nets.conditioning import DiscriminatorHead


def smoothed_d(real: Tensor, fake: Tensor, smoothing: float) -> Tensor:
    """Binary cross-entropy with target 1 - smoothing for real logits, 0 for fake ones."""
    return ((1 - smoothing) * F.softplus(-real) + smoothing * F.softplus(real)).mean() + F.softplus(fake).mean()


def one_sided_smoothing(loss: AdversarialLoss, smoothing: float) -> AdversarialLoss:
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise UserError(f"model.label_smoothing is the amount taken off D's target for real data (the paper: 0.1, "
                        f"targets 0.9), a number in [0, 1); got {smoothing!r}. Use e.g. model.label_smoothing=0.1.")
    if not smoothing:
        return loss
    if loss.name not in ("minimax", "non_saturating"):
        raise UserError(f"model.label_smoothing smooths the targets of D's cross-entropy, but model.loss={loss.name} "
                        f"has none. Use model.loss=non_saturating or minimax with it, or model.label_smoothing=0.")
    return replace(loss, name=f"{loss.name}+smoothing", d=partial(smoothed_d, smoothing=float(smoothing)))


def head_input(discriminator: nn.Module, judge: Callable[[], Tensor]) -> Tensor:
    """What D's output head reads while `judge()` runs D: its features, for feature matching."""
    seen = []
    handle = discriminator.head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        judge()
    finally:
        handle.remove()
    return seen[0]


def check_feature_matching(discriminator: nn.Module) -> None:
    if not isinstance(getattr(discriminator, "head", None), DiscriminatorHead):
        raise UserError(f"model.feature_matching=true matches the statistics of D's features (what its output head "
                        f"reads), but this D ({type(discriminator).__name__}) has no such head. Use an architecture "
                        f"that has one (model.arch=mlp, dcgan, cnn or resnet), or model.feature_matching=false.")


def feature_matching_loss(real_features: Tensor, fake_features: Tensor) -> Tensor:
    return (fake_features.float().mean(0) - real_features.detach().float().mean(0)).square().mean()


class HistoricalAverage(nn.Module):
    """The running mean of a set of parameters, as buffers (checkpointed: a resumed run continues it)."""

    def __init__(self, parameters: Iterable[nn.Parameter]):
        super().__init__()
        self.tracked = list(parameters)
        for i, p in enumerate(self.tracked):
            self.register_buffer(f"mean{i}", p.detach().clone())
        self.register_buffer("count", torch.ones(()))

    def means(self) -> list[Tensor]:
        return [getattr(self, f"mean{i}") for i in range(len(self.tracked))]

    def penalty(self) -> Tensor:
        return sum((p - mean).square().sum() for p, mean in zip(self.tracked, self.means()))

    @torch.no_grad()
    def update(self) -> None:
        self.count += 1
        for p, mean in zip(self.tracked, self.means()):
            mean.add_((p - mean) / self.count)


class VirtualBatchNorm(nn.Module):
    """Batch norm over a reference batch and the sample (Salimans et al. 2016, 3.5). The input's first `reference`
    rows are the reference batch: they are normalised with their own statistics (over the batch and, for maps, the
    pixels); every other row x with the mixture (1 - c) stats(reference) + c stats(x), c = 1 / (reference + 1), of the
    means and mean squares (openai/improved-gan's `new_coeff = 1. / (batch_size + 1.)`). The affine weight and bias
    are those of the batch-norm layer it replaces."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm, reference: int):
        super().__init__()
        self.reference, self.eps = reference, norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: Tensor) -> Tensor:
        pixels = tuple(range(2, x.dim()))
        ref = x[:self.reference]
        ref_mean, ref_sq = ref.mean((0, *pixels), keepdim=True), ref.square().mean((0, *pixels), keepdim=True)
        own = x[self.reference:]
        c = 1.0 / (self.reference + 1)
        own_mean = (1 - c) * ref_mean + c * (own.mean(pixels, keepdim=True) if pixels else own)
        own_sq = (1 - c) * ref_sq + c * (own.square().mean(pixels, keepdim=True) if pixels else own.square())
        mean = torch.cat([ref_mean.expand_as(ref), own_mean.expand_as(own)])
        var = torch.cat([(ref_sq - ref_mean.square()).expand_as(ref), (own_sq - own_mean.square()).expand_as(own)])
        shape = (1, -1, *[1] * len(pixels))
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


class VirtualBatchNormGenerator(nn.Module):
    """G with its batch-norm layers made virtual: each call runs the fixed reference latents beside the batch (first)
    and returns the batch's outputs only."""

    def __init__(self, generator: nn.Module, reference_latents: Tensor):
        super().__init__()
        norms = [(parent, name, child) for parent in generator.modules() for name, child in parent.named_children()
                 if isinstance(child, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            raise UserError(f"model.virtual_batch_norm replaces G's batch norm, but this G "
                            f"({type(generator).__name__}) has none. Use a G with batch norm (model.arch=dcgan), or "
                            f"model.virtual_batch_norm=0.")
        for parent, name, child in norms:
            setattr(parent, name, VirtualBatchNorm(child, len(reference_latents)))
        self.generator = generator
        self.register_buffer("reference_latents", reference_latents)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.generator(torch.cat([self.reference_latents.to(z), z]), y)[len(self.reference_latents):]
