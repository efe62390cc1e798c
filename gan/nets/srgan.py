"""SRGAN's networks (Ledig et al. 2017, Figure 4): the SRResNet generator and the VGG-style discriminator."""
from __future__ import annotations

import math

from torch import Tensor, nn

from gan.errors import UserError, positive_int


class ResidualBlock(nn.Module):
    """k3n64s1 conv - BN - PReLU - k3n64s1 conv - BN, plus the block's input (Figure 4, the B residual blocks)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.PReLU(width),
                                  nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """LR [N, C, h, w] in [-1, 1] -> SR [N, C, h * scale, w * scale] in [-1, 1].

    k9n64 conv + PReLU; `num_blocks` residual blocks; k3n64 conv + BN and the long skip from the first conv's output;
    log2(scale) stages of k3n256 conv + PixelShuffle(2) + PReLU; a k9 conv to the image channels. The output is tanh:
    the paper scales HR images to [-1, 1] (sec. 3.2) and the discriminator and the metrics see images in that range, so
    a bounded output keeps G's fakes where D's real images live (a linear output would let MSE push values outside the
    range that quantisation then clips). The paper scales LR inputs to [0, 1]; here they are in [-1, 1] like every
    image of the framework, an affine change the first convolution absorbs.
    """

    def __init__(self, channels: int, scale: int, width: int, num_blocks: int):
        super().__init__()
        scale, width = positive_int("model.generator.scale", scale), positive_int("model.generator.width", width)
        if scale & (scale - 1) or scale < 2:
            raise UserError(f"SRResNet upsamples in x2 pixel-shuffle stages, so its scale must be a power of 2 (2, 4, "
                            f"8), got data.scale={scale}. Use data.scale=4 (SRGAN's) or 2.")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, 1, 4), nn.PReLU(width))
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(int(num_blocks))))
        self.tail = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width))
        self.upsample = nn.Sequential(*(layer for _ in range(int(math.log2(scale)))
                                        for layer in (nn.Conv2d(width, 4 * width, 3, 1, 1), nn.PixelShuffle(2),
                                                      nn.PReLU(width))))
        self.out = nn.Conv2d(width, channels, 9, 1, 4)

    def forward(self, lr: Tensor) -> Tensor:
        head = self.head(lr)
        return self.out(self.upsample(head + self.tail(self.blocks(head)))).tanh()


class SRGANDiscriminator(nn.Module):
    """HR images [N, C, image_size, image_size] -> logits [N] (the sigmoid lives in the BCE loss).

    Eight 3x3 convolutions of width w, w, 2w, 2w, 4w, 4w, 8w, 8w (w = 64: 64 ... 512), stride 2 on every second, batch
    norm from the second on, LeakyReLU(0.2) after each; then dense `dense` units, LeakyReLU(0.2), dense 1 (Figure 4).
    """

    def __init__(self, channels: int, image_size: int, width: int, dense: int):
        super().__init__()
        width, size = positive_int("model.discriminator.width", width), positive_int("data.crop", image_size)
        layers, c = [], channels
        for i in range(8):
            out, stride = width * 2 ** (i // 2), 1 + i % 2
            layers += [nn.Conv2d(c, out, 3, stride, 1), *([nn.BatchNorm2d(out)] if i else []), nn.LeakyReLU(0.2)]
            c, size = out, (size - 1) // stride + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * size * size, dense), nn.LeakyReLU(0.2), nn.Linear(dense, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)
