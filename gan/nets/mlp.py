"""Fully connected networks (Goodfellow et al. 2014) for toy 2-D data and small images."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gan.nets.conditioning import (
    DiscriminatorHead,
    check_choice,
    concat_label_maps,
    norm_1d,
    one_hot,
    sn,
    validate_conditioning,
    NORMS,
)


class MLPGenerator(nn.Module):
    """z -> hidden layers -> a sample of `shape`; tanh output for images (in [-1, 1]), linear for vectors."""

    def __init__(self, shape, latent_dim: int, hidden: int, depth: int, num_classes: int | None = None,
                 conditioning: str = "none"):
        super().__init__()
        self.shape = tuple(shape)
        self.num_classes = num_classes if validate_conditioning(conditioning, num_classes) != "none" else None
        layers, width = [], latent_dim + (self.num_classes or 0)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, math.prod(self.shape)))
        if len(self.shape) > 1:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        labels = one_hot(y, self.num_classes)
        if labels is not None:
            z = torch.cat([z, labels], dim=1)
        return self.net(z).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, shape, hidden: int, depth: int, norm: str, pack: int = 1, num_classes: int | None = None,
                 conditioning: str = "none", minibatch_kernels: int = 0):
        super().__init__()
        check_choice("model.discriminator.norm", norm, NORMS)
        self.conditioning = validate_conditioning(conditioning, num_classes)
        self.num_classes = num_classes
        width = math.prod(shape) * pack + (num_classes if self.conditioning == "concat" else 0)
        layers = []
        for i in range(depth):
            layers += [sn(nn.Linear(width, hidden), norm), norm_1d(norm if i else "none", hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.head = DiscriminatorHead(width, num_classes, self.conditioning, norm, minibatch_kernels)

    def forward(self, x: Tensor, y: Tensor | None = None, return_class_logits: bool = False):
        x = x.flatten(1)
        if self.conditioning == "concat":
            x = concat_label_maps(x, y, self.num_classes)
        return self.head(self.features(x), y, return_class_logits)
