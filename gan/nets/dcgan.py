"""DCGAN (Radford et al. 2015): strided (transposed) convolutions, BN in G, LeakyReLU(0.2) in D,
weights drawn from N(0, 0.02) as published. Square images whose side is 4..7 times a power of two, >= 8: the
published 64x64 (4x4 -> 64), 32x32, and MNIST's own 28x28 (7x7 -> 14 -> 28, as DCGAN-tensorflow's MNIST model)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gan.errors import UserError
from gan.nets.conditioning import (
    NORMS,
    DiscriminatorHead,
    check_choice,
    concat_label_maps,
    norm_2d,
    one_hot,
    sn,
    validate_conditioning,
)


def upsamplings(shape, networks: str = "DCGAN") -> int:
    """Number of stride-2 stages between 4x4 and the image; the image must be square with side 2^k >= 8."""
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 8 or shape[1] & (shape[1] - 1):
        raise UserError(
            f"{networks} networks make square images whose side is a power of two of at least 8, but the data has "
            f"shape {tuple(shape)} (channels, height, width). Set a supported size, e.g. `data.image_size=32` "
            f"or `data.image_size=64`; for 2-D toy data use MLP networks (`model=gan`, or `model.arch=mlp`)."
        )
    return int(math.log2(shape[1])) - 2


def stages(shape, networks: str = "DCGAN") -> tuple[int, int]:
    """(base, n): the image side is base * 2^n with base in 4..7 and n >= 1; G starts from base x base maps and D
    ends on them. Power-of-two sides give base 4, as `upsamplings`; 28 gives 7 x 2^2."""
    side = shape[1] if len(shape) == 3 and shape[1] == shape[2] else 0
    base, n = side, 0
    while base >= 8 and base % 2 == 0:
        base, n = base // 2, n + 1
    if n == 0 or not 4 <= base <= 7:
        raise UserError(
            f"{networks} networks make square images whose side is 4, 5, 6 or 7 times a power of two and at least 8 "
            f"(e.g. 28, 32, 64), but the data has shape {tuple(shape)} (channels, height, width). Set a supported "
            f"size, e.g. `data.image_size=32`; for 2-D toy data use MLP networks (`model=gan`, or `model.arch=mlp`)."
        )
    return base, n


def dcgan_init(module: nn.Module) -> None:
    """The published initialisation: conv/linear weights ~ N(0, 0.02), BN scale ~ N(1, 0.02), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, shape, latent_dim: int, width: int, num_classes: int | None = None,
                 conditioning: str = "none"):
        super().__init__()
        self.num_classes = num_classes if validate_conditioning(conditioning, num_classes) != "none" else None
        base, n_up = stages(shape)
        channels = width * 2 ** (n_up - 1)
        layers = [nn.ConvTranspose2d(latent_dim + (self.num_classes or 0), channels, base, 1, 0, bias=False),
                  nn.BatchNorm2d(channels), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(True)]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, shape[0], 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        labels = one_hot(y, self.num_classes)
        if labels is not None:
            z = torch.cat([z, labels], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    def __init__(self, shape, width: int, norm: str, pack: int = 1, num_classes: int | None = None,
                 conditioning: str = "none", minibatch_kernels: int = 0):
        super().__init__()
        check_choice("model.discriminator.norm", norm, NORMS)
        self.conditioning = validate_conditioning(conditioning, num_classes)
        self.num_classes = num_classes
        base, n_down = stages(shape)
        in_channels = shape[0] * pack + (num_classes if self.conditioning == "concat" else 0)
        layers = [sn(nn.Conv2d(in_channels, width, 4, 2, 1), norm), nn.LeakyReLU(0.2, True)]
        channels = width
        for _ in range(n_down - 1):
            layers += [sn(nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=norm not in ("batch",)), norm),
                       norm_2d(norm, channels * 2), nn.LeakyReLU(0.2, True)]
            channels *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        # A linear layer over the final base x base maps is the paper's 4x4 valid convolution to one logit.
        self.head = DiscriminatorHead(channels * base * base, num_classes, self.conditioning, norm, minibatch_kernels)
        dcgan_init(self)

    def forward(self, x: Tensor, y: Tensor | None = None, return_class_logits: bool = False):
        if self.conditioning == "concat":
            x = concat_label_maps(x, y, self.num_classes)
        return self.head(self.features(x), y, return_class_logits)
