"""The pix2pix U-Net generator (Isola et al. 2017; junyanz/pytorch-CycleGAN-and-pix2pix `UnetGenerator`),
and the choices every image-to-image network shares (image size check, feature norm, conv biases).

Encoder C64-C128-C256-C512-C512-...: 4x4 stride-2 convolutions with LeakyReLU(0.2), down to 1x1, so the number
of levels is log2(image_size) (8 at 256 px as `unet_256`, 4 at 16 px, 3 at 8 px); channels stop growing at
8 x width. Decoder: ReLU, 4x4 stride-2 transposed convolutions, each output concatenated with the mirrored
encoder output (the skip connections), Tanh at the end.

Dropout(0.5) in the three innermost decoder blocks is the paper's only noise source: pix2pix samples with it on,
so it is an `nn.Dropout` that model code can keep in training mode at evaluation. Its placement follows the
paper and its Lua code (the first three decoder blocks, fewer when the U-Net has fewer levels); junyanz's PyTorch
port puts it in the 8 x width blocks after the innermost one, so it has 3 at 256 px but 2 at 128 and none at 32.
Parameters are the same either way.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from gan.errors import UserError
from gan.nets.conditioning import check_choice, norm_2d
from gan.nets.dcgan import dcgan_init

TRANSLATION_NORMS = ("batch", "instance", "none")


def translation_norm(kind: str, channels: int) -> nn.Module:
    """junyanz's choices: batch norm, or instance norm with neither affine parameters nor running statistics."""
    return nn.InstanceNorm2d(channels) if kind == "instance" else norm_2d(kind, channels)


def conv_bias(norm: str) -> bool:
    """The reference drops conv biases under batch norm, whose shift replaces them, and keeps them under instance
    norm (affine=False). It decides once per network, so even the convolutions that no norm follows lose their
    bias under batch norm: kept as is, so that parameter counts and checkpoints line up with the reference."""
    return norm != "batch"


def check_image_size(image_size: int, network: str, power_of_two: bool = False) -> int:
    supported = image_size >= 8 and not (power_of_two and image_size & (image_size - 1))
    if not supported:
        side = "a power of two of at least 8" if power_of_two else "at least 8 pixels"
        raise UserError(
            f"The {network} needs square images whose side is {side}, but data.image_size={image_size}. "
            f"Set data.image_size to 8, 16, 32, 64, 128 or 256 (the papers train on 256x256 crops, StarGAN on "
            f"128x128 faces)."
        )
    return image_size


class UNetGenerator(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, image_size: int, width: int, norm: str, dropout: float):
        super().__init__()
        check_choice("model.generator.norm", norm, TRANSLATION_NORMS)
        self.levels = check_image_size(image_size, "pix2pix U-Net", power_of_two=True).bit_length() - 1
        innermost = self.levels - 1
        channels = [width * min(2**level, 8) for level in range(self.levels)]
        bias = conv_bias(norm)

        self.encoder = nn.ModuleList()
        for level in range(self.levels):
            layers = [nn.LeakyReLU(0.2)] if level else []  # the image itself is not activated
            layers.append(nn.Conv2d(channels[level - 1] if level else in_channels, channels[level], 4, 2, 1, bias=bias))
            # No norm on the image's layer (as DCGAN) nor at 1x1, where one sample (pix2pix trains with batch 1)
            # has no spread to normalise and would become all zeros.
            if 0 < level < innermost:
                layers.append(translation_norm(norm, channels[level]))
            self.encoder.append(nn.Sequential(*layers))

        self.decoder = nn.ModuleList()
        for level in reversed(range(self.levels)):
            inputs = channels[level] * (1 if level == innermost else 2)  # the innermost level has no skip to join
            outputs = channels[level - 1] if level else out_channels
            to_image = level == 0  # the output layer keeps its bias in the reference
            layers = [nn.ReLU(), nn.ConvTranspose2d(inputs, outputs, 4, 2, 1, bias=bias or to_image)]
            if to_image:
                layers.append(nn.Tanh())
            else:
                layers.append(translation_norm(norm, outputs))
                if dropout and innermost - level < 3:
                    layers.append(nn.Dropout(dropout))
            self.decoder.append(nn.Sequential(*layers))
        dcgan_init(self)  # junyanz's `init_type=normal`: N(0, 0.02) weights, BN scale N(1, 0.02)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for down in self.encoder:
            x = down(x)
            skips.append(x)
        x = skips.pop()  # the 1x1 code starts the decoder
        for up in self.decoder:
            x = up(x)
            if skips:
                x = torch.cat([skips.pop(), x], dim=1)  # skip first, as the reference: same weight layout
        return x
