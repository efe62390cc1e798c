"""Progressive GAN networks (Karras et al. 2018, Table 2): G and D grow from 4x4 to the image size.

Level k works at 4 * 2^k pixels. G is a 4x4 block then one block per doubling (nearest 2x up-sampling, two 3x3
convolutions), each level with its own 1x1 toRGB; D mirrors it with a 1x1 fromRGB per level, blocks of two 3x3
convolutions and 2x average pooling, and a last 4x4 block with the minibatch standard deviation. While level k fades
in, both networks blend its path with the previous level's: (1 - alpha) * lower + alpha * higher.

Every layer has an equalised learning rate (section 4.1): weights are drawn from N(0, 1) and scaled at run time by
He's constant gain / sqrt(fan_in), so Adam's per-parameter step sizes treat every layer alike. G normalises its
latent and every feature vector to unit mean square (pixelwise feature normalisation, section 4.2). LeakyReLU(0.2)
everywhere, linear outputs. Channels at resolution r: min(channel_max, channel_base // r), as the paper's
512 up to 32x32, then halved per doubling down to 16 at 1024x1024 (channel_base 16384).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import UserError, positive_int

HE_GAIN = math.sqrt(2.0)


class EqualizedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, gain: float = HE_GAIN, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class EqualizedConv2d(nn.Module):
    """A stride-1 convolution padded to keep the size (kernel 1 or 3 here), with an equalised learning rate."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = HE_GAIN):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Each feature vector (over channels, dimension 1) scaled to unit mean square."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def minibatch_stddev(x: Tensor, group_size: int = 4, eps: float = 1e-8) -> Tensor:
    """x with one more feature map: the standard deviation of every feature at every position over a group of
    samples, averaged into one value per group and replicated over the map (section 3). As the reference code,
    sample i belongs to group i % (N / G) of G = gcd(group_size, N) samples; G = N is the paper's whole minibatch."""
    n, c, h, w = x.shape
    g = math.gcd(group_size, n)
    y = x.reshape(g, n // g, c, h, w)
    std = (y.var(dim=0, unbiased=False) + eps).sqrt().mean(dim=(1, 2, 3))  # one value per group
    return torch.cat([x, std.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)], dim=1)


def lerp(lower: Tensor, higher: Tensor, alpha: float) -> Tensor:
    return higher if alpha >= 1 else lower + alpha * (higher - lower)


def upsample(x: Tensor, factor: int = 2) -> Tensor:
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


def levels_of(shape) -> int:
    """Resolutions from 4x4 to the image size: a square image whose side is a power of two >= 4."""
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 4 or shape[1] & (shape[1] - 1):
        raise UserError(
            f"Progressive GAN networks grow from 4x4 by doubling, so images must be square with a side that is a power "
            f"of two of at least 4, but the data has shape {tuple(shape)} (channels, height, width). Set e.g. "
            f"`data.image_size=16` (digits) or `data.image_size=128` (CelebA)."
        )
    return int(math.log2(shape[1])) - 1


def channel_counts(role: str, levels: int, channel_base: int, channel_max: int) -> list[int]:
    """Feature maps at each level's resolution r = 4 * 2^level: min(channel_max, channel_base // r), at least 1."""
    base = positive_int(f"model.{role}.channel_base", channel_base)
    most = positive_int(f"model.{role}.channel_max", channel_max)
    return [max(1, min(most, base // (4 * 2**level))) for level in range(levels)]


class ProGANGenerator(nn.Module):
    def __init__(self, shape, latent_dim: int, channel_base: int, channel_max: int):
        super().__init__()
        self.levels, self.latent_dim = levels_of(shape), positive_int("model.latent_dim", latent_dim)
        channels = channel_counts("generator", self.levels, channel_base, channel_max)
        c = channels[0]
        # The paper's 4x4 "convolution" of the 1x1 latent is a dense layer; gain sqrt(2)/4 and one bias per channel,
        # added after the reshape to 4x4, as the reference code (tkarras/progressive_growing_of_gans networks.py,
        # G_paper: `dense(...)`, `tf.reshape(x, [-1, nf(res-1), 4, 4])`, `apply_bias(x)`).
        self.dense = EqualizedLinear(latent_dim, c * 16, gain=HE_GAIN / 4, bias=False)
        self.dense_bias = nn.Parameter(torch.zeros(c))
        self.blocks = nn.ModuleList([EqualizedConv2d(c, c, 3)])
        self.blocks.extend(nn.Sequential(EqualizedConv2d(channels[k - 1], channels[k], 3),
                                         EqualizedConv2d(channels[k], channels[k], 3))
                           for k in range(1, self.levels))
        self.to_rgb = nn.ModuleList(EqualizedConv2d(channels[k], shape[0], 1, gain=1.0) for k in range(self.levels))

    @staticmethod
    def activate(x: Tensor) -> Tensor:
        return pixel_norm(F.leaky_relu(x, 0.2))

    def block(self, level: int, x: Tensor) -> Tensor:
        if level == 0:
            return self.activate(self.blocks[0](x))
        for conv in self.blocks[level]:
            x = self.activate(conv(x))
        return x

    def forward(self, z: Tensor, y: Tensor | None = None, level: int | None = None, alpha: float = 1.0) -> Tensor:
        """Images at 4 * 2^level pixels (the last level by default); `alpha` < 1 blends in the previous level."""
        level = self.levels - 1 if level is None else level
        x = self.activate(self.dense(pixel_norm(z)).reshape(z.shape[0], -1, 4, 4) + self.dense_bias[:, None, None])
        x = self.block(0, x)
        for k in range(1, level + 1):
            previous, x = x, self.block(k, upsample(x))
        image = self.to_rgb[level](x)
        if level > 0 and alpha < 1:
            image = lerp(upsample(self.to_rgb[level - 1](previous)), image, alpha)
        return image


class ProGANDiscriminator(nn.Module):
    def __init__(self, shape, channel_base: int, channel_max: int, mbstd_group: int):
        super().__init__()
        self.levels, self.mbstd_group = levels_of(shape), positive_int("model.discriminator.mbstd_group", mbstd_group)
        channels = channel_counts("discriminator", self.levels, channel_base, channel_max)
        c = channels[0]
        self.from_rgb = nn.ModuleList(EqualizedConv2d(shape[0], channels[k], 1) for k in range(self.levels))
        self.blocks = nn.ModuleList([nn.ModuleList([EqualizedConv2d(c + 1, c, 3), EqualizedLinear(c * 16, c),
                                                    EqualizedLinear(c, 1, gain=1.0)])])
        self.blocks.extend(nn.Sequential(EqualizedConv2d(channels[k], channels[k], 3),
                                         EqualizedConv2d(channels[k], channels[k - 1], 3))
                           for k in range(1, self.levels))

    def block(self, level: int, x: Tensor) -> Tensor:
        if level == 0:
            conv, dense, out = self.blocks[0]
            x = F.leaky_relu(conv(minibatch_stddev(x, self.mbstd_group)), 0.2)
            return out(F.leaky_relu(dense(x.flatten(1)), 0.2)).squeeze(1)
        for conv in self.blocks[level]:
            x = F.leaky_relu(conv(x), 0.2)
        return F.avg_pool2d(x, 2)

    def from_image(self, level: int, x: Tensor) -> Tensor:
        return F.leaky_relu(self.from_rgb[level](x), 0.2)

    def forward(self, x: Tensor, y: Tensor | None = None, alpha: float = 1.0) -> Tensor:
        """One score per image; the level is read from the image size, `alpha` < 1 blends in the previous level."""
        level = int(math.log2(x.shape[-1])) - 2
        if not 0 <= level < self.levels or x.shape[-1] != 4 * 2**level:
            raise ValueError(f"the discriminator takes images of 4 to {4 * 2 ** (self.levels - 1)} pixels, "
                             f"got {x.shape[-1]}")
        h = self.block(level, self.from_image(level, x))
        if level > 0 and alpha < 1:
            h = lerp(self.from_image(level - 1, F.avg_pool2d(x, 2)), h, alpha)
        for k in range(level - 1, -1, -1):
            h = self.block(k, h)
        return h
