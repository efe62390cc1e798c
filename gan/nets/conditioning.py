"""The pieces every architecture shares: D normalisation, label conditioning and the D output head.

A discriminator is `features(x) -> h` followed by `DiscriminatorHead(h, y)`, so the conditioning
schemes of the literature apply to any architecture:
- `concat` (Mirza & Osindero 2014): one-hot labels join the input (G: the latent; D: the image).
- `projection` (Miyato & Koyama 2018): logit = psi(h) + <embed(y), h>.
- `acgan` (Odena et al. 2017): an auxiliary classifier head on h besides the adversarial logit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gan.errors import UserError

CONDITIONINGS = ("none", "concat", "projection", "acgan")
NORMS = ("none", "batch", "layer", "spectral")


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UserError(f"Unknown {option}={value!r}. Available: {', '.join(choices)}.")
    return value


def norm_2d(kind: str, channels: int) -> nn.Module:
    """Feature normalisation after a D layer; spectral normalisation acts on weights instead (see `sn`)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # normalises over (C, H, W) per sample, i.e. layer norm
    return nn.Identity()


def norm_1d(kind: str, features: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(features)
    if kind == "layer":
        return nn.LayerNorm(features)
    return nn.Identity()


def sn(layer: nn.Module, norm: str) -> nn.Module:
    return spectral_norm(layer) if norm == "spectral" else layer


def one_hot(y: Tensor | None, num_classes: int | None) -> Tensor | None:
    if y is None or not num_classes:
        return None
    return F.one_hot(y, num_classes).float()


def concat_label_maps(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Append one-hot label planes to an image batch (or one-hot entries to a vector batch)."""
    labels = F.one_hot(y, num_classes).to(x)
    if x.dim() > 2:
        labels = labels[:, :, None, None].expand(-1, -1, *x.shape[2:])
    return torch.cat([x, labels], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016, section 3.2: M_i = h_i T (B kernels of C dimensions), c_b(x_i, x_j) =
    exp(-||M_i,b - M_j,b||_1), o(x_i)_b = sum over the other samples j of c_b(x_i, x_j), plus a bias; returns [h, o]
    for the next layer. As openai/improved-gan (`MinibatchLayer`: C = 5, T ~ N(0, 0.05^2), b initialised at -1, the
    sample itself left out of its sum)."""

    def __init__(self, features: int, kernels: int, kernel_dim: int = 5):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(features, kernels * kernel_dim) * 0.05)
        self.b = nn.Parameter(torch.full((kernels,), -1.0))

    def forward(self, h: Tensor) -> Tensor:
        m = (h @ self.T).view(-1, self.kernels, self.kernel_dim)
        distances = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # [N, N, B]
        o = torch.exp(-distances).sum(dim=1) - 1.0  # exp(0) = 1: the sample's own term
        return torch.cat([h, o + self.b], dim=1)


class DiscriminatorHead(nn.Module):
    def __init__(self, features: int, num_classes: int | None, conditioning: str, norm: str,
                 minibatch_kernels: int = 0):
        super().__init__()
        self.conditioning = conditioning
        if minibatch_kernels:  # model.discriminator.minibatch_kernels: Improved GAN's minibatch discrimination
            self.minibatch = MinibatchDiscrimination(features, minibatch_kernels)
            features += minibatch_kernels
        else:
            self.minibatch = None
        self.adversarial = sn(nn.Linear(features, 1), norm)
        self.embed = sn(nn.Embedding(num_classes, features), norm) if conditioning == "projection" else None
        self.classifier = sn(nn.Linear(features, num_classes), norm) if conditioning == "acgan" else None

    def forward(self, h: Tensor, y: Tensor | None, return_class_logits: bool = False):
        if self.minibatch is not None:
            h = self.minibatch(h)
        logits = self.adversarial(h).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(y) * h).sum(dim=1)
        if return_class_logits:
            return logits, self.classifier(h)
        return logits


def validate_conditioning(conditioning: str, num_classes: int | None) -> str:
    check_choice("model.conditioning", conditioning, CONDITIONINGS)
    if conditioning != "none" and not num_classes:
        raise UserError(
            f"model.conditioning={conditioning} needs labelled data, but this dataset has no labels "
            "(data.num_classes is null). Use a labelled dataset (data=digits, mnist, fashion_mnist or cifar10) "
            "or an unconditional model."
        )
    return conditioning
