"""BEGAN's networks (Berthelot, Schumm & Metz 2017, section 3.5 and figure 1; carpedm20/BEGAN-tensorflow `models.py`).

D is an autoencoder. Encoder: a 3x3 conv to n maps, then per scale two 3x3 convs at n, 2n, 3n, ... maps, each scale
but the last ending in a 3x3 stride-2 conv (the paper's sub-sampling) to the next width; an FC layer maps the last
base x base maps to the embedding h (N_h values). Decoder: an FC layer from h to base x base x n maps, then per scale
two 3x3 convs at n maps, each scale but the last followed by nearest-neighbour upsampling x2, and a final 3x3 conv to
the image's channels. Every conv but the last is followed by an ELU; the FC layers have no non-linearity (section
3.5). G has the decoder's architecture with its own weights, reading z in place of h.

The paper's base is 8 (images of 8 x 2^k pixels: 32 = 8 x 4, 64 = 8 x 8); 28 px MNIST starts from 7 x 7 (28 = 7 x 4).
Left out, as the paper calls them optional (section 3.5.1): the skip connections that feed the upsampled h to every
decoder scale. No output activation, as the reference (its tanh is commented out); weights keep PyTorch's default
initialisation (the paper gives none).
"""
from __future__ import annotations

from torch import Tensor, nn

from gan.errors import UserError


def stages(shape) -> tuple[int, int]:
    """(base side, number of scales): side = base x 2^(scales - 1), base 8 (the paper) or 7 (28 px MNIST)."""
    if len(shape) == 3 and shape[1] == shape[2] and shape[1] >= 8:
        for base in (8, 7):
            ratio = shape[1] // base
            if shape[1] == base * ratio and ratio & (ratio - 1) == 0:  # a power of two
                return base, ratio.bit_length()
    raise UserError(f"BEGAN's networks make square images whose side is 8 x 2^k (8, 16, 32, 64, 128: the paper's "
                    f"decoder starts from 8x8 maps and doubles them) or 7 x 2^k (14, 28, 56: MNIST's 28 starts from "
                    f"7x7), but the data has shape {list(shape)}. Use data.image_size=16, 32 or 64 (data=digits: 8, "
                    f"16, 32 or 64), or data=mnist5k at 28.")


def conv_elu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.ELU()]


class BEGANDecoder(nn.Module):
    """An embedding [N, input_dim] -> images [N, C, H, W]: D's decoder, and G."""

    def __init__(self, shape, input_dim: int, width: int):
        super().__init__()
        self.base, scales = stages(shape)
        self.input_dim, self.width = input_dim, width
        self.fc = nn.Linear(input_dim, width * self.base * self.base)
        layers = []
        for i in range(scales):
            layers += conv_elu(width, width) + conv_elu(width, width)
            if i < scales - 1:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers.append(nn.Conv2d(width, shape[0], 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(self.fc(h).view(-1, self.width, self.base, self.base))


class BEGANEncoder(nn.Module):
    """Images [N, C, H, W] -> the embedding h [N, hidden]."""

    def __init__(self, shape, hidden: int, width: int):
        super().__init__()
        base, scales = stages(shape)
        layers = conv_elu(shape[0], width)
        for i in range(scales):
            maps = width * (i + 1)  # the maps grow linearly with each sub-sampling
            layers += conv_elu(maps, maps) + conv_elu(maps, maps)
            if i < scales - 1:
                layers += conv_elu(maps, maps + width, stride=2)
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(width * scales * base * base, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.net(x))


class BEGANGenerator(BEGANDecoder):
    """G: z [N, latent_dim] -> images, the decoder's architecture (its own weights)."""

    def __init__(self, shape, latent_dim: int, width: int):
        super().__init__(shape, latent_dim, width)
        self.latent_dim = latent_dim

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return super().forward(z)


class BEGANDiscriminator(nn.Module):
    """D: the autoencoder, images -> their reconstructions D(v) (BEGAN's loss reads |v - D(v)|)."""

    def __init__(self, shape, width: int, hidden: int):
        super().__init__()
        self.encoder = BEGANEncoder(shape, hidden, width)
        self.decoder = BEGANDecoder(shape, hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))
