"""The 32x32 ResNet of WGAN-GP (Gulrajani et al. 2017, CIFAR-10) and SNGAN (Miyato et al. 2018, Table 4).

G: z -> dense 4x4xW -> residual up-blocks (BN, ReLU, nearest x2, 3x3 conv, twice) -> BN, ReLU, 3x3 conv, tanh.
D: an "optimised" first down-block, residual down-blocks to 8x8, two plain blocks, ReLU, global pooling, the shared
   head. Published widths: D 128; G 128 (WGAN-GP) or 256 (SNGAN). The official codes differ in D's last two steps:
   sngan_projection (dis_models/snresnet_32.py) sums, `h = F.sum(h, axis=(2, 3))`, into an output layer without bias,
   `SNLinear(ch, 1, ..., nobias=True)`; improved_wgan_training (gan_cifar_resnet.py) averages,
   `tf.reduce_mean(output, axis=[2,3])`, into `lib.ops.linear.Linear(...)` with its default bias: `pooling` and
   `output_bias` choose.
Other square power-of-two sizes keep the design: G up-samples from 4x4, D down-samples to 8x8.
Conditioning: with `concat` the one-hot label joins z (G) and the image planes (D); with `projection` or `acgan`
G uses categorical conditional batch norm (Miyato & Koyama 2018) and D conditions through its head.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
from gan.nets.dcgan import upsamplings


def _xavier(layer: nn.Module, gain: float) -> nn.Module:
    """The SNGAN/Mimicry initialisation: Xavier-uniform, gain sqrt(2) inside residual branches, 1 elsewhere."""
    weight = layer.parametrizations.weight.original if hasattr(layer, "parametrizations") else layer.weight
    nn.init.xavier_uniform_(weight, gain)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class; plain batch norm when unconditional."""

    def __init__(self, channels: int, num_classes: int | None):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=not num_classes)
        if num_classes:
            self.gain, self.shift = nn.Embedding(num_classes, channels), nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.shift.weight)
        self.conditional = bool(num_classes)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = self.bn(x)
        if self.conditional:
            h = h * self.gain(y)[:, :, None, None] + self.shift(y)[:, :, None, None]
        return h


class GeneratorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_classes: int | None):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_channels, num_classes)
        self.conv1 = _xavier(nn.Conv2d(in_channels, out_channels, 3, 1, 1), math.sqrt(2))
        self.bn2 = ConditionalBatchNorm2d(out_channels, num_classes)
        self.conv2 = _xavier(nn.Conv2d(out_channels, out_channels, 3, 1, 1), math.sqrt(2))
        self.shortcut = _xavier(nn.Conv2d(in_channels, out_channels, 1), 1.0)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class DiscriminatorBlock(nn.Module):
    """Pre-activation residual block; `first` is SNGAN's optimised block that reads the image itself."""

    def __init__(self, in_channels: int, out_channels: int, down: bool, norm: str, first: bool = False):
        super().__init__()
        self.first, self.down = first, down
        self.norm1 = nn.Identity() if first else norm_2d(norm, in_channels)
        self.conv1 = sn(_xavier(nn.Conv2d(in_channels, out_channels, 3, 1, 1), math.sqrt(2)), norm)
        self.norm2 = norm_2d(norm, out_channels)
        self.conv2 = sn(_xavier(nn.Conv2d(out_channels, out_channels, 3, 1, 1), math.sqrt(2)), norm)
        learnable = first or down or in_channels != out_channels
        self.shortcut = sn(_xavier(nn.Conv2d(in_channels, out_channels, 1), 1.0), norm) if learnable else None

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(self.norm1(x))
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.shortcut is None:
            return h + x
        if self.first:  # pool first: the 1x1 conv then runs at a quarter of the cost, as in SNGAN
            return h + self.shortcut(F.avg_pool2d(x, 2) if self.down else x)
        shortcut = self.shortcut(x)
        return h + (F.avg_pool2d(shortcut, 2) if self.down else shortcut)


class ResNetGenerator(nn.Module):
    def __init__(self, shape, latent_dim: int, width: int, num_classes: int | None = None,
                 conditioning: str = "none"):
        super().__init__()
        conditioning = validate_conditioning(conditioning, num_classes)
        self.concat_classes = num_classes if conditioning == "concat" else None
        bn_classes = num_classes if conditioning in ("projection", "acgan") else None
        self.width = width
        self.dense = _xavier(nn.Linear(latent_dim + (self.concat_classes or 0), 4 * 4 * width), 1.0)
        self.blocks = nn.ModuleList(GeneratorBlock(width, width, bn_classes)
                                    for _ in range(upsamplings(shape, "ResNet")))
        self.bn = nn.BatchNorm2d(width)
        self.to_image = _xavier(nn.Conv2d(width, shape[0], 3, 1, 1), 1.0)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        labels = one_hot(y, self.concat_classes)
        if labels is not None:
            z = torch.cat([z, labels], dim=1)
        h = self.dense(z).view(-1, self.width, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return self.to_image(F.relu(self.bn(h))).tanh()


POOLINGS = ("sum", "mean")


class ResNetDiscriminator(nn.Module):
    def __init__(self, shape, width: int, norm: str, pooling: str, output_bias: bool, pack: int = 1,
                 num_classes: int | None = None, conditioning: str = "none", minibatch_kernels: int = 0):
        super().__init__()
        check_choice("model.discriminator.norm", norm, NORMS)
        self.pooling = check_choice("model.discriminator.resnet.pooling", pooling, POOLINGS)
        if not isinstance(output_bias, bool):
            raise UserError(f"model.discriminator.resnet.output_bias is true or false, got {output_bias!r}.")
        self.conditioning = validate_conditioning(conditioning, num_classes)
        self.num_classes = num_classes
        n_down = upsamplings(shape, "ResNet") - 1  # to 8x8
        in_channels = shape[0] * pack + (num_classes if self.conditioning == "concat" else 0)
        blocks = [DiscriminatorBlock(in_channels, width, n_down > 0, norm, first=True)]
        blocks += [DiscriminatorBlock(width, width, True, norm) for _ in range(n_down - 1)]
        blocks += [DiscriminatorBlock(width, width, False, norm) for _ in range(2)]
        self.features = nn.Sequential(*blocks)
        self.head = DiscriminatorHead(width, num_classes, self.conditioning, norm, minibatch_kernels)
        if not output_bias:  # the head is every architecture's; only this D may go without the bias
            self.head.adversarial.register_parameter("bias", None)
        for layer in (self.head.adversarial, self.head.embed, self.head.classifier):
            if layer is not None:
                _xavier(layer, 1.0)

    def forward(self, x: Tensor, y: Tensor | None = None, return_class_logits: bool = False):
        if self.conditioning == "concat":
            x = concat_label_maps(x, y, self.num_classes)
        h = F.relu(self.features(x))
        h = h.sum(dim=(2, 3)) if self.pooling == "sum" else h.mean(dim=(2, 3))
        return self.head(h, y, return_class_logits)
