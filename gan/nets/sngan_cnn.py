"""SNGAN's "standard CNN" (Miyato et al. 2018, Table 3), for 32x32 and any square power-of-two size >= 8.

G: z -> dense 4x4x(8W) -> BN, ReLU -> [4x4 stride-2 deconv, BN, ReLU] halving channels -> 3x3 conv, tanh.
D: [3x3 stride-1 conv, 4x4 stride-2 conv] with W, 2W, 4W channels, LeakyReLU(0.1) -> 3x3 conv (8W) -> dense.
W = 64 as published (G 512-256-128-64, D 64-...-512 at 32x32). With `concat` conditioning the one-hot label
joins z and the image planes; `projection`/`acgan` condition D through the shared head.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

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
from gan.nets.dcgan import upsamplings


class SNGANCNNGenerator(nn.Module):
    def __init__(self, shape, latent_dim: int, width: int, num_classes: int | None = None,
                 conditioning: str = "none"):
        super().__init__()
        self.num_classes = num_classes if validate_conditioning(conditioning, num_classes) != "none" else None
        n_up = upsamplings(shape, "SNGAN CNN")
        self.channels = width * 2**n_up
        self.dense = nn.Sequential(nn.Linear(latent_dim + (self.num_classes or 0), 16 * self.channels),
                                   nn.Unflatten(1, (self.channels, 4, 4)), nn.BatchNorm2d(self.channels), nn.ReLU())
        layers, channels = [], self.channels
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1), nn.BatchNorm2d(channels // 2), nn.ReLU()]
            channels //= 2
        layers += [nn.Conv2d(channels, shape[0], 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        labels = one_hot(y, self.num_classes)
        if labels is not None:
            z = torch.cat([z, labels], dim=1)
        return self.net(self.dense(z))


class SNGANCNNDiscriminator(nn.Module):
    def __init__(self, shape, width: int, norm: str, pack: int = 1, num_classes: int | None = None,
                 conditioning: str = "none", minibatch_kernels: int = 0):
        super().__init__()
        check_choice("model.discriminator.norm", norm, NORMS)
        self.conditioning = validate_conditioning(conditioning, num_classes)
        self.num_classes = num_classes
        channels = shape[0] * pack + (num_classes if self.conditioning == "concat" else 0)
        layers = []
        for stage in range(upsamplings(shape, "SNGAN CNN")):
            out = width * 2**stage
            for conv in (nn.Conv2d(channels, out, 3, 1, 1), nn.Conv2d(out, out, 4, 2, 1)):
                # no normalisation on the input layer, as in DCGAN and SNGAN's batch/layer-norm baselines
                layers += [sn(conv, norm), nn.Identity() if not layers else norm_2d(norm, conv.out_channels),
                           nn.LeakyReLU(0.1)]
            channels = out
        layers += [sn(nn.Conv2d(channels, channels * 2, 3, 1, 1), norm), norm_2d(norm, channels * 2),
                   nn.LeakyReLU(0.1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = DiscriminatorHead(channels * 2 * 16, num_classes, self.conditioning, norm, minibatch_kernels)

    def forward(self, x: Tensor, y: Tensor | None = None, return_class_logits: bool = False):
        if self.conditioning == "concat":
            x = concat_label_maps(x, y, self.num_classes)
        return self.head(self.features(x), y, return_class_logits)
