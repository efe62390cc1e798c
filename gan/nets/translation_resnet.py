"""The ResNet generator of CycleGAN (Zhu et al. 2017, after Johnson et al. 2016; junyanz `ResnetGenerator`), and the
encoder / residual blocks / decoder stack it shares with StarGAN's generator.

c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-C, Tanh: 7x7 convolutions with reflection padding,
3x3 stride-2 convolutions down and transposed convolutions up, residual blocks of two reflection-padded 3x3
convolutions, instance norm without affine parameters (as the reference code; `norm=batch` or `none` also work), ReLU.
n_blocks defaults to the paper's choice by image size: 9 from 256 px, 6 below.
n_down (2 in the paper) is the most down-samplings used: each must halve the side exactly, so that the output has
the input's size, and the bottleneck must stay at least 2x2, which the residual blocks' reflection padding needs.
Hence 2 for every power-of-two image from 8 px (bottleneck 2x2 at 8 px), fewer for e.g. 10 px (1) or 9 px (0).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn

from gan.nets.conditioning import check_choice
from gan.nets.dcgan import dcgan_init
from gan.nets.unet import TRANSLATION_NORMS, check_image_size, conv_bias, translation_norm

Norm = Callable[[int], nn.Module]


def exact_halvings(side: int, most: int, smallest: int) -> int:
    """How many of at most `most` stride-2 stages fit: each halves the side exactly and leaves `smallest` or more."""
    halvings = 0
    while halvings < most and side % 2 == 0 and side // 2 >= smallest:
        side //= 2
        halvings += 1
    return halvings


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: Norm, bias: bool, padding_mode: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=bias, padding_mode=padding_mode), norm(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=bias, padding_mode=padding_mode), norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class EncoderResidualDecoder(nn.Sequential):
    """Johnson et al.'s image transformation network, with what CycleGAN and StarGAN set differently as arguments:
    the norm, the biases of the normalised and of the output convolutions, the padding of the 7x7 and residual
    convolutions, and the kernel of the stride-2 (transposed) convolutions, 3 (CycleGAN; the transposed ones then
    add an output row and column so that the size doubles exactly) or 4 (StarGAN)."""

    def __init__(self, in_channels: int, out_channels: int, width: int, n_down: int, n_blocks: int, *,
                 norm: Norm, bias: bool, output_bias: bool, padding_mode: str, sampling_kernel: int):
        layers = [nn.Conv2d(in_channels, width, 7, 1, 3, bias=bias, padding_mode=padding_mode), norm(width), nn.ReLU()]
        channels = width
        for _ in range(n_down):
            layers += [nn.Conv2d(channels, channels * 2, sampling_kernel, 2, 1, bias=bias),
                       norm(channels * 2), nn.ReLU()]
            channels *= 2
        layers += [ResidualBlock(channels, norm, bias, padding_mode) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [nn.ConvTranspose2d(channels, channels // 2, sampling_kernel, 2, 1,
                                          output_padding=sampling_kernel % 2, bias=bias),
                       norm(channels // 2), nn.ReLU()]
            channels //= 2
        layers += [nn.Conv2d(channels, out_channels, 7, 1, 3, bias=output_bias, padding_mode=padding_mode), nn.Tanh()]
        super().__init__(*layers)


class TranslationResNetGenerator(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, image_size: int, width: int, n_blocks: int | None,
                 norm: str, n_down: int = 2):
        super().__init__()
        check_choice("model.generator.norm", norm, TRANSLATION_NORMS)
        check_image_size(image_size, "CycleGAN ResNet generator")
        self.n_blocks = (9 if image_size >= 256 else 6) if n_blocks is None else n_blocks
        self.n_down = exact_halvings(image_size, n_down, smallest=2)
        self.net = EncoderResidualDecoder(
            in_channels, out_channels, width, self.n_down, self.n_blocks, norm=partial(translation_norm, norm),
            bias=conv_bias(norm), output_bias=True, padding_mode="reflect", sampling_kernel=3)
        dcgan_init(self)  # junyanz's `init_type=normal`

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
