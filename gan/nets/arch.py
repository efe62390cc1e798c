"""Architectures by name, so that a model config switches G and D together with one key (`model.arch=cnn`).

Kurach et al. (2019) vary the architecture independently of loss, regulariser and normalisation; here every
architecture takes the same arguments (the data shape, the latent size, conditioning, D's normalisation and
packing). Settings that only one architecture has are given per architecture, e.g.
`model.generator.resnet.width=128`; only the selected architecture's entry is used.
"""
from __future__ import annotations

from typing import Mapping

from torch import nn

from gan.errors import UserError
from gan.nets.conditioning import check_choice
from gan.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gan.nets.mlp import MLPDiscriminator, MLPGenerator
from gan.nets.resnet import ResNetDiscriminator, ResNetGenerator
from gan.nets.sngan_cnn import SNGANCNNDiscriminator, SNGANCNNGenerator

GENERATORS = {"mlp": MLPGenerator, "dcgan": DCGANGenerator, "cnn": SNGANCNNGenerator, "resnet": ResNetGenerator}
DISCRIMINATORS = {"mlp": MLPDiscriminator, "dcgan": DCGANDiscriminator, "cnn": SNGANCNNDiscriminator,
                  "resnet": ResNetDiscriminator}


def _settings(arch: str, per_arch: Mapping, role: str) -> dict:
    check_choice("model.arch", arch, tuple(GENERATORS))
    unknown = set(per_arch) - set(GENERATORS)
    if unknown:
        raise UserError(f"model.{role} has settings for unknown architectures {sorted(unknown)}; settings are "
                        f"grouped by architecture ({', '.join(GENERATORS)}), e.g. model.{role}.resnet.width=128.")
    return dict(per_arch.get(arch) or {})


def generator(arch: str, shape, latent_dim: int, num_classes: int | None, conditioning: str,
              **per_arch: Mapping) -> nn.Module:
    settings = _settings(arch, per_arch, "generator")
    return GENERATORS[arch](shape=shape, latent_dim=latent_dim, num_classes=num_classes, conditioning=conditioning,
                            **settings)


def discriminator(arch: str, shape, norm: str, pack: int, num_classes: int | None, conditioning: str,
                  minibatch_kernels: int, **per_arch: Mapping) -> nn.Module:
    settings = _settings(arch, per_arch, "discriminator")
    if minibatch_kernels and (conditioning != "none" or isinstance(minibatch_kernels, bool)
                              or not isinstance(minibatch_kernels, int) or minibatch_kernels < 0):
        raise UserError(f"model.discriminator.minibatch_kernels is the number of minibatch-discrimination kernels "
                        f"(Salimans et al. 2016 used 100), an integer >= 0 for an unconditional D; got "
                        f"{minibatch_kernels!r} with model.conditioning={conditioning}. Use e.g. 100 without "
                        f"conditioning, or 0 to leave the layer out.")
    return DISCRIMINATORS[arch](shape=shape, norm=norm, pack=pack, num_classes=num_classes,
                                conditioning=conditioning, minibatch_kernels=minibatch_kernels, **settings)
