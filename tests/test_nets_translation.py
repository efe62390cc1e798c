"""The image-to-image networks (pix2pix U-Net and PatchGAN, CycleGAN ResNet generator, StarGAN G and D): shapes and
ranges from 8-px digits up, parameter counts of the reference implementations at full size, the U-Net's skip
connections and dropout, the PatchGAN's receptive field, StarGAN's domain input, and bad input."""
from __future__ import annotations

import functools
import inspect

import pytest
import torch
from torch import nn

from conftest import model_settings
from gan.errors import UserError
from gan.nets.patchgan import PatchGANDiscriminator
from gan.nets.stargan import StarGANDiscriminator, StarGANGenerator
from gan.nets.translation_resnet import TranslationResNetGenerator
from gan.nets.unet import UNetGenerator

PAPER_DATA = {"pix2pix": "aligned", "cyclegan": "unaligned", "stargan": "celeba_attributes"}  # 256, 256, 128 px


@functools.cache
def yaml_settings(model: str, role: str) -> dict:
    return model_settings(model, role, f"data={PAPER_DATA[model]}")


def network(cls, model: str, role: str, *args, **given) -> nn.Module:
    """`cls` as conf/model/<model>.yaml builds it under `role` on the paper's data (pix2pix: aligned 256 px photos,
    CycleGAN: unaligned 256 px, StarGAN: CelebA's 5 attributes at 128 px), with the arguments given on top."""
    positional = list(inspect.signature(cls).parameters)[:len(args)]
    settings = {key: value for key, value in yaml_settings(model, role).items() if key not in positional}
    return cls(*args, **{**settings, **given})


unet = functools.partial(network, UNetGenerator, "pix2pix", "generator")
patchgan = functools.partial(network, PatchGANDiscriminator, "pix2pix", "discriminator")  # batch norm
cyclegan_patchgan = functools.partial(network, PatchGANDiscriminator, "cyclegan", "d_a")  # instance norm
resnet_generator = functools.partial(network, TranslationResNetGenerator, "cyclegan", "g_ab")
stargan_generator = functools.partial(network, StarGANGenerator, "stargan", "generator")
stargan_discriminator = functools.partial(network, StarGANDiscriminator, "stargan", "discriminator")


def images(channels: int, size: int, n: int = 2) -> torch.Tensor:
    return torch.rand(n, channels, size, size) * 2 - 1


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- shapes and ranges


@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_generators_keep_the_image_shape_in_tanh_range(size, channels):
    x = images(channels, size)
    domains = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 1]])
    outputs = {
        "unet": unet(channels, channels, size, width=8)(x),
        "resnet": resnet_generator(channels, channels, size, width=8)(x),
        "stargan": stargan_generator(channels, 5, size, width=8, n_blocks=2)(x, domains),
    }
    for name, y in outputs.items():
        assert y.shape == x.shape, name
        assert y.abs().max() <= 1 and y.std() > 0, name


@pytest.mark.parametrize("size", [8, 16])
def test_generators_map_between_channel_counts(size):
    """pix2pix maps e.g. grey edges to colour photos."""
    x = images(1, size)
    assert unet(1, 3, size, width=8)(x).shape == (2, 3, size, size)
    assert resnet_generator(1, 3, size, width=8)(x).shape == (2, 3, size, size)


@pytest.mark.parametrize("size, n_layers, side", [(8, 1, 2), (16, 2, 2), (32, 3, 2), (64, 3, 6)])
@pytest.mark.parametrize("channels", [1, 3])
def test_patchgan_gives_a_logit_map_with_as_many_layers_as_fit(size, n_layers, side, channels):
    pair = torch.cat([images(channels, size), images(channels, size)], dim=1)
    discriminator = patchgan(2 * channels, size, width=8)
    assert discriminator.n_layers == n_layers
    assert discriminator(pair).shape == (2, 1, side, side)


@pytest.mark.parametrize("size, n_down, side", [(8, 3, 1), (16, 4, 1), (32, 5, 1), (128, 6, 2)])
@pytest.mark.parametrize("channels", [1, 3])
def test_stargan_discriminator_gives_a_real_fake_map_and_domain_logits(size, n_down, side, channels):
    discriminator = stargan_discriminator(channels, 5, size, width=4)
    assert discriminator.n_down == n_down
    out_src, out_cls = discriminator(images(channels, size))
    assert out_src.shape == (2, 1, side, side)
    assert out_cls.shape == (2, 5)


# ---------------------------------------------------------------- the reference implementations' sizes


# junyanz/pytorch-CycleGAN-and-pix2pix prints "[Network G] Total number of parameters : 54.414 M" (unet_256) and
# "[Network D] ... : 2.769 M" (basic D of pix2pix, 6 input channels), both with batch norm, under which the reference
# drops conv biases; CycleGAN's instance-norm networks keep them. yunjey/stargan prints "The number of parameters:
# 8430528" (G) and "44762048" (D, 128 px, 5 CelebA attributes). The exact counts are those of the reference code.
REFERENCE_COUNTS = [
    ("pix2pix unet_256", unet, 54_413_955),
    ("pix2pix basic D", patchgan, 2_768_705),
    ("CycleGAN resnet_9blocks", resnet_generator, 11_378_179),
    ("CycleGAN resnet_6blocks at 128 px", lambda: resnet_generator(image_size=128), 7_837_699),
    ("CycleGAN basic D", cyclegan_patchgan, 2_764_737),
    ("StarGAN G", stargan_generator, 8_430_528),
    ("StarGAN D", stargan_discriminator, 44_762_048),
]


@pytest.mark.parametrize("build, expected", [(b, e) for _, b, e in REFERENCE_COUNTS],
                         ids=[name for name, _, _ in REFERENCE_COUNTS])
def test_full_size_networks_have_the_reference_parameter_counts(build, expected):
    with torch.device("meta"):  # shapes only: no memory, no time
        assert parameter_count(build()) == expected


# ---------------------------------------------------------------- U-Net


def test_unet_skip_connections_carry_local_detail_past_the_bottleneck():
    """With the 1x1 code held fixed, a change of the top-left pixel still reaches the output through the skip
    connections, and only nearby: the bottom-right pixel depends on it through the code alone. (Double precision:
    the N(0, 0.02) initial weights shrink changes to 1e-7 through the skips and 1e-10 through the code.)"""
    generator = unet(1, 1, 16, width=8).double().eval()
    x = images(1, 16, n=1).double()
    touched = x.clone()
    touched[..., 0, 0] += 1.0
    free_change = generator(touched) - generator(x)

    held = []

    def hold_the_code(module, inputs, code):  # the first forward's 1x1 code, for every later forward
        held.append(code)
        return held[0]

    generator.encoder[-1].register_forward_hook(hold_the_code)
    fixed_change = generator(touched) - generator(x)

    assert fixed_change[..., :4, :4].abs().max() > 0
    assert fixed_change[..., -1, -1].abs() == 0
    assert free_change[..., -1, -1].abs() > 0


@pytest.mark.parametrize("size, blocks", [(8, 2), (16, 3), (256, 3)])
def test_unet_dropout_sits_in_the_innermost_decoder_blocks(size, blocks):
    with torch.device("meta"):
        generator = unet(1, 1, size)
    with_dropout = [i for i, up in enumerate(generator.decoder) if any(isinstance(m, nn.Dropout) for m in up)]
    assert with_dropout == list(range(blocks))


def test_unet_dropout_is_noise_in_training_and_kept_on_for_pix2pix_sampling():
    generator = unet(1, 1, 16, width=8)
    x = images(1, 16, n=4)
    assert not torch.equal(generator(x), generator(x))
    generator.eval()
    assert torch.equal(generator(x), generator(x))
    for module in generator.modules():  # pix2pix's test time: batch norm frozen, dropout on
        if isinstance(module, nn.Dropout):
            module.train()
    assert not torch.equal(generator(x), generator(x))

    deterministic = unet(1, 1, 16, width=8, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in deterministic.modules())
    assert torch.equal(deterministic(x), deterministic(x))


# ---------------------------------------------------------------- PatchGAN


def measured_receptive_field(discriminator: nn.Module, size: int) -> int:
    """Rows of the input that move the central logit."""
    x = images(discriminator.net[0].in_channels, size, n=1).double().requires_grad_()
    logits = discriminator.double().eval()(x)
    logits[0, 0, logits.shape[2] // 2, logits.shape[3] // 2].backward()
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("size, n_layers, patch", [(128, 3, 70), (64, 2, 34), (32, 1, 16)])
def test_patchgan_judges_patches_of_the_documented_size(size, n_layers, patch):
    discriminator = patchgan(2, size, width=4, n_layers=n_layers)
    assert discriminator.receptive_field == patch
    assert measured_receptive_field(discriminator, size) == patch


def test_patchgan_spectral_norm_acts_on_every_convolution_instead_of_feature_norm():
    discriminator = patchgan(2, 16, width=8, norm="spectral")
    convolutions = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert len(convolutions) == discriminator.n_layers + 2
    assert all(hasattr(conv, "parametrizations") for conv in convolutions)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in discriminator.modules())
    assert discriminator(images(2, 16)).shape == (2, 1, 2, 2)


# ---------------------------------------------------------------- ResNet generators


@pytest.mark.parametrize("size, requested, used", [(8, 2, 2), (8, 3, 2), (10, 2, 1), (9, 2, 0), (16, 1, 1)])
def test_resnet_generator_down_samples_only_as_far_as_the_image_halves_to_2x2(size, requested, used):
    generator = resnet_generator(1, 1, size, width=4, n_down=requested)
    assert generator.n_down == used
    assert generator(images(1, size)).shape == (2, 1, size, size)


def test_resnet_generator_uses_nine_blocks_from_256_px_and_six_below():
    with torch.device("meta"):
        assert resnet_generator(3, 3, 256).n_blocks == 9
        assert resnet_generator(3, 3, 128).n_blocks == 6
        assert resnet_generator(3, 3, 256, n_blocks=6).n_blocks == 6


def test_stargan_generator_translates_to_the_requested_domain():
    generator = stargan_generator(1, 3, 16, width=8, n_blocks=1).eval()
    x = images(1, 16, n=1)
    to_first, to_second = generator(x, torch.tensor([[1.0, 0, 0]])), generator(x, torch.tensor([[0.0, 1, 0]]))
    assert (to_first - to_second).abs().max() > 1e-4


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("build, message", [
    (lambda: unet(3, 3, 24), "power of two of at least 8, but data.image_size=24"),
    (lambda: unet(3, 3, 4), "data.image_size=4"),
    (lambda: unet(3, 3, 16, norm="layer"), "model.generator.norm='layer'"),
    (lambda: patchgan(6, 4), "at least 8 pixels"),
    (lambda: patchgan(6, 16, norm="group"), "model.discriminator.norm='group'"),
    (lambda: resnet_generator(3, 3, 16, norm="spectral"), "model.generator.norm='spectral'"),
    (lambda: stargan_generator(3, 5, 6), "data.image_size=6"),
    (lambda: stargan_discriminator(3, 5, 6), "data.image_size=6"),
])
def test_unsupported_settings_are_user_errors(build, message):
    with pytest.raises(UserError, match=message):
        build()
