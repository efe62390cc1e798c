"""The PatchGAN discriminator of pix2pix and CycleGAN (Isola et al. 2017; junyanz `NLayerDiscriminator`).

C64-C128-C256-C512 with 4x4 kernels: `n_layers` stride-2 convolutions (channels doubling, capped at 8 x width),
one stride-1 convolution, then a stride-1 convolution to one channel: a map of logits [N, 1, h, w], each judging
one patch of the input. LeakyReLU(0.2); no norm on the layer that reads the image. pix2pix feeds the
concatenated (input, output) pair, so `in_channels` is then twice the image channels.

n stride-2 layers see patches of 9 * 2^n - 2 pixels: the default n_layers=3 is the paper's 70x70 PatchGAN
(`basic`), with a 30x30 map at 256 px. The map must stay at least 1x1, which takes an image of 3 * 2^n pixels,
so smaller images use fewer stride-2 layers: 16-px images use 2 (34x34 patches, a 2x2 map), 8-px images 1
(16x16 patches, a 2x2 map). A patch larger than the image still sees all of it, through the zero padding.
"""
from __future__ import annotations

from torch import Tensor, nn

from gan.nets.conditioning import check_choice, sn
from gan.nets.dcgan import dcgan_init
from gan.nets.unet import TRANSLATION_NORMS, check_image_size, conv_bias, translation_norm

PATCHGAN_NORMS = (*TRANSLATION_NORMS, "spectral")


class PatchGANDiscriminator(nn.Module):
    def __init__(self, in_channels: int, image_size: int, width: int, n_layers: int, norm: str):
        super().__init__()
        check_choice("model.discriminator.norm", norm, PATCHGAN_NORMS)
        # The map is floor(size / 2^n) - 2 wide (two 4x4 stride-1 layers follow), so n may grow while 3 * 2^n <= size.
        fitting = (check_image_size(image_size, "PatchGAN discriminator") // 3).bit_length() - 1
        self.n_layers = min(n_layers, fitting)
        self.receptive_field = 9 * 2**self.n_layers - 2
        bias = conv_bias(norm)
        layers, channels = [], in_channels
        for layer in range(self.n_layers + 1):
            outputs = width * min(2**layer, 8)
            stride = 2 if layer < self.n_layers else 1
            normalised = layer > 0  # not the layer that reads the image, which keeps its bias in the reference
            layers.append(sn(nn.Conv2d(channels, outputs, 4, stride, 1, bias=bias or not normalised), norm))
            if normalised:
                layers.append(translation_norm(norm, outputs))
            layers.append(nn.LeakyReLU(0.2))
            channels = outputs
        layers.append(sn(nn.Conv2d(channels, 1, 4, 1, 1), norm))
        self.net = nn.Sequential(*layers)
        dcgan_init(self)  # junyanz's `init_type=normal`

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
