"""StarGAN's networks (Choi et al. 2018; yunjey/stargan `model.py`).

Generator(x, c): the target-domain vector c (one-hot, or the multi-hot CelebA attributes) is replicated over the
image and joins its channels; then 7x7 conv 64, two 4x4 stride-2 down-samplings, 6 residual blocks, two 4x4
stride-2 transposed convolutions, 7x7 conv, Tanh. Zero padding, no biases, instance norm with affine parameters
and running statistics, as the reference (in eval mode it therefore normalises with the running statistics).
Images that do not halve exactly twice down to 2x2 use fewer down-samplings (see `exact_halvings`).

Discriminator(x) -> (out_src, out_cls): a stack of 4x4 stride-2 convolutions (channels doubling from `width`,
uncapped: 2048 at the sixth) with LeakyReLU(0.01) and no norm, then two heads on the last feature map: a 3x3
convolution giving the real/fake map out_src [N, 1, h, w], and a convolution as large as that map giving the
domain logits out_cls [N, num_domains]. The reference's 6 down-samplings bring 128 px to 2x2; smaller images
stop at 1x1 (3 at 8 px, 4 at 16 px).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from gan.errors import UserError
from gan.nets.translation_resnet import EncoderResidualDecoder, exact_halvings
from gan.nets.unet import check_image_size


def _instance_norm(channels: int) -> nn.Module:
    """Per-image statistics at training and at test time. The reference code builds its instance norm with running
    statistics but never leaves train mode, so it never uses them; here samples are drawn in eval mode, where
    running statistics would replace the per-image ones (and, early in training, wreck every translation)."""
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


def check_num_domains(num_domains) -> int:
    if isinstance(num_domains, bool) or not isinstance(num_domains, int) or num_domains < 1:
        raise UserError(f"StarGAN's networks are sized by the number of attributes or domains, data.num_attributes, "
                        f"but it is {num_domains!r}. Set data.num_attributes to the number of attributes (CelebA: the "
                        f"length of data.attributes) or of domain sub-folders (data=domain_folder).")
    return num_domains


class StarGANGenerator(nn.Module):
    def __init__(self, channels: int, num_domains: int, image_size: int, width: int, n_blocks: int, n_down: int):
        super().__init__()
        num_domains = check_num_domains(num_domains)
        check_image_size(image_size, "StarGAN generator")
        self.n_down = exact_halvings(image_size, n_down, smallest=2)
        self.net = EncoderResidualDecoder(
            channels + num_domains, channels, width, self.n_down, n_blocks, norm=_instance_norm,
            bias=False, output_bias=False, padding_mode="zeros", sampling_kernel=4)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        domain_planes = c.to(x)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.net(torch.cat([x, domain_planes], dim=1))


class StarGANDiscriminator(nn.Module):
    def __init__(self, channels: int, num_domains: int, image_size: int, width: int, n_down: int):
        super().__init__()
        num_domains = check_num_domains(num_domains)
        check_image_size(image_size, "StarGAN discriminator")
        self.n_down = exact_halvings(image_size, n_down, smallest=1)
        layers = []
        for level in range(self.n_down):
            outputs = width * 2**level
            layers += [nn.Conv2d(channels, outputs, 4, 2, 1), nn.LeakyReLU(0.01)]
            channels = outputs
        self.features = nn.Sequential(*layers)
        self.real_fake = nn.Conv2d(channels, 1, 3, 1, 1, bias=False)
        self.domain_classifier = nn.Conv2d(channels, num_domains, image_size >> self.n_down, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.real_fake(h), self.domain_classifier(h).flatten(1)
