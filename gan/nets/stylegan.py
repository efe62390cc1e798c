"""Style-based generators and their discriminator: StyleGAN (Karras et al. 2019) and StyleGAN2 (Karras et al. 2020).

The generator is a mapping network z -> w (8 fully connected layers whose learning rate is 0.01 of the rest,
through the equalised learning rate) and a synthesis network that starts from a learned constant and takes one w
per layer ("styles"), with per-layer noise inputs whose strength is learned:

- `synthesis="adain"` (StyleGAN): conv -> noise -> bias, leaky ReLU -> instance norm -> AdaIN with the layer's style
  (scale, bias); one toRGB at the output (progressive growing is left out: every resolution trains from the start);
- `synthesis="modulated"` (StyleGAN2): the style scales the conv weights per sample, which are then demodulated to
  unit norm per output channel; skip architecture (every resolution's toRGB output, upsampled, is summed).

The discriminator is StyleGAN2's residual one (`architecture="resnet"`) or the ProGAN/StyleGAN one (`"orig"`), both
ending in minibatch standard deviation, a 3x3 conv and two dense layers. Resampling uses the [1, 3, 3, 1] low-pass
filter of both papers, as a depthwise (transposed) convolution, zero padded; a convolution that resamples pads once,
before both operations (`conv2d_resample`, as stylegan2-ada-pytorch's), so its borders are the reference's. Every
layer has an equalised learning rate (weights ~ N(0, 1) scaled at run time by He's constant) and leaky ReLU(0.2)
times sqrt(2).

Channels per resolution follow stylegan2-ada-pytorch: min(channel_base // resolution, channel_max).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import UserError, positive_float, positive_int

SYNTHESES = ("adain", "modulated")
DISCRIMINATORS = ("resnet", "orig")
LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' magnitude through leaky ReLU(0.2), as both papers


def lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


# ---------------------------------------------------------------- equalised learning rate


class EqualLinear(nn.Module):
    """Dense layer with an equalised learning rate: the stored weight ~ N(0, 1 / lr_mul) is multiplied by
    lr_mul / sqrt(fan_in) at run time (the bias by lr_mul), so the effective weight starts as He's N(0, 1/fan_in)
    and Adam's steps, which are scale-free in the stored weight, move it lr_mul / sqrt(fan_in) times as far."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.weight_gain, self.lr_mul, self.activation = lr_mul / math.sqrt(in_features), lr_mul, activation

    def effective_weight(self) -> Tensor:
        return self.weight * self.weight_gain

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.effective_weight(), self.bias * self.lr_mul)
        return lrelu(x) if self.activation else x


class EqualConv2d(nn.Module):
    """Convolution with an equalised learning rate and 'same' padding; `down`: with a [1, 3, 3, 1] low-pass
    downsampling by 2 (`conv2d_resample`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: bool = False, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.activation, self.down = activation, down

    def forward(self, x: Tensor) -> Tensor:
        x = conv2d_resample(x, self.weight * self.weight_gain, down=self.down)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        return lrelu(x) if self.activation else x


def _lowpass(x: Tensor, gain: float) -> Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype, device=x.device)
    f = torch.outer(f, f) / f.sum() ** 2 * gain
    return f.expand(x.shape[1], 1, 4, 4)


def upsample(x: Tensor) -> Tensor:
    """2x upsampling with the [1, 3, 3, 1] filter (bilinear in the interior), zero padded."""
    return F.conv_transpose2d(x, _lowpass(x, 4.0), stride=2, padding=1, groups=x.shape[1])


def conv2d_resample(x: Tensor, weight: Tensor, up: bool = False, down: bool = False) -> Tensor:
    """Correlation with `weight` [O, I, k, k] (odd k; with `up`, convolution: the reference's weight orientation)
    and 'same' padding k // 2, with 2x up- or downsampling by the [1, 3, 3, 1] filter, padded once at the start and
    not between the two operations, as stylegan2-ada-pytorch's `torch_utils/ops/conv2d_resample.py` (its padding
    adjustment, lines 94-104, then its paths):

    - up (lines 124-139, with the flip_weight=False of `training/networks.py` SynthesisLayer): a transposed stride-2
      convolution with the weight, unflipped, then the filter (gain 4) on its output padded by k // 2 + 3 - k;
    - down, k > 1 (lines 118-122): the filter on the input padded by k // 2 + 1, then a stride-2 convolution;
    - down, 1x1 (lines 106-110): the filter, padded by 1, at stride 2, then the 1x1 convolution.
    """
    k = weight.shape[-1]
    if up:
        pad = k // 2 + 3 - k  # the reference's px0 = px1 after its adjustment for the transposed convolution
        if k < 3 or pad < 0:
            raise ValueError(f"conv2d_resample upsamples with kernels of size 3 or 5 only, got {k}")
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        return F.conv2d(x, _lowpass(x, 4.0), padding=pad, groups=x.shape[1])
    if down:
        x = F.conv2d(x, _lowpass(x, 1.0), padding=k // 2 + 1, stride=2 if k == 1 else 1, groups=x.shape[1])
        return F.conv2d(x, weight, stride=1 if k == 1 else 2)
    return F.conv2d(x, weight, padding=k // 2)


def channel_plan(key: str, resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """{resolution: channels} for 4, 8, ..., resolution; `key` names the network's settings in errors."""
    base, most = positive_int(f"{key}.channel_base", channel_base), positive_int(f"{key}.channel_max", channel_max)
    plan = {4 * 2**i: min(base // (4 * 2**i), most) for i in range(int(math.log2(resolution)) - 1)}
    if plan[resolution] < 1:
        raise UserError(f"{key}.channel_base={channel_base} leaves no channels at {resolution}x{resolution} (channels "
                        f"at resolution r: min(channel_base // r, channel_max)). Set it to at least {resolution}.")
    return plan


def check_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(channels, resolution) of square images whose side is a power of two >= 8."""
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 8 or shape[1] & (shape[1] - 1):
        raise UserError(f"StyleGAN networks make square images whose side is a power of two of at least 8, but the "
                        f"data has shape {tuple(shape)} (channels, height, width). Set e.g. `data.image_size=16`, 32 "
                        f"or 64; 2-D toy data needs MLP networks (`model=gan`).")
    return int(shape[0]), int(shape[1])


# ---------------------------------------------------------------- mapping network


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z -> w: pixel norm of z, then `layers` dense layers with leaky ReLU at `lr_mul` times the learning rate.
    Keeps the running mean of w (`w_avg`, updated in training, as the papers) for the truncation trick."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, layers: int = 8, lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * layers
        self.net = nn.Sequential(*(EqualLinear(a, b, lr_mul=lr_mul, activation=True) for a, b in zip(dims, dims[1:])))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False) -> Tensor:
        """ws [N, num_ws, w_dim]: the same w for every layer, the first `truncation_cutoff` (all: None) of them
        pulled towards w_avg: w_avg + psi (w - w_avg); psi = 1 leaves w as it is. `update_w_avg` (training): move
        w_avg towards this batch's mean w by 1 - w_avg_beta."""
        w = self.net(normalize_2nd_moment(z))
        if update_w_avg:
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = torch.lerp(self.w_avg, ws[:, :cutoff], truncation_psi)
        return ws


# ---------------------------------------------------------------- synthesis layers


def demodulation(weight: Tensor, styles: Tensor, eps: float = 1e-8) -> Tensor:
    """[N, O]: 1 / sqrt(sum_ik (s_i w_ijk)^2 + eps), one coefficient per sample and output channel, computed as
    s^2 @ (sum_k w_ijk^2)^T without forming the per-sample weights."""
    return (styles.square() @ weight.square().sum(dim=(2, 3)).t()).add(eps).rsqrt()


def modulated_weights(weight: Tensor, styles: Tensor, demodulate: bool = True) -> Tensor:
    """StyleGAN2's per-sample weights [N, O, I, k, k]: w'_ijk = s_i w_ijk, then (demodulation) divided by
    sqrt(sum_ik w'_ijk^2 + eps), so that every output channel's weights have unit L2 norm."""
    w = weight[None] * styles[:, None, :, None, None]
    return w * demodulation(weight, styles)[:, :, None, None, None] if demodulate else w


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, up: bool = False) -> Tensor:
    """The convolution with `modulated_weights` (`up`: with 2x upsampling, `conv2d_resample`), computed as
    stylegan2-ada-pytorch does in training: scale the input channels by the styles, convolve with the shared weights,
    scale the output channels by the demodulation coefficients (the same linear map as a grouped convolution with
    per-sample weights, and faster)."""
    x = conv2d_resample(x * styles[:, :, None, None], weight, up=up)
    return x * demodulation(weight, styles)[:, :, None, None] if demodulate else x


class NoiseInput(nn.Module):
    """Adds single-channel Gaussian noise per pixel, scaled by a learned strength (per channel in StyleGAN, one
    scalar in StyleGAN2), initialised to zero."""

    def __init__(self, resolution: int, channels: int = 1):
        super().__init__()
        self.resolution = resolution
        self.strength = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor, noise: Tensor | None) -> Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
        return x + noise * self.strength


class ModulatedLayer(nn.Module):
    """StyleGAN2 synthesis layer: modulated/demodulated conv [with 2x upsampling] -> noise -> bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise = NoiseInput(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.up = up

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up)
        return lrelu(self.noise(x, noise) + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """1x1 conv to image channels, modulated (no demodulation) in StyleGAN2, a plain equalised conv in StyleGAN."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int | None):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0) if w_dim else None
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        if self.affine is None:
            x = F.conv2d(x, self.weight * self.weight_gain)
        else:
            x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return x + self.bias[None, :, None, None]


class AdaINLayer(nn.Module):
    """StyleGAN synthesis layer: [upsample] -> conv (none for the constant) -> noise -> bias, leaky ReLU ->
    instance norm -> AdaIN: x * (1 + scale(w)) + bias(w)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 conv: bool = True):
        super().__init__()
        self.conv = EqualConv2d(in_channels, out_channels, 3, bias=False) if conv else None
        self.noise = NoiseInput(resolution, out_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.style = EqualLinear(w_dim, 2 * out_channels)
        self.up = up

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        if self.up:
            x = upsample(x)
        if self.conv is not None:
            x = self.conv(x)
        x = lrelu(self.noise(x, noise) + self.bias[None, :, None, None])
        x = F.instance_norm(x, eps=1e-8)
        scale, bias = self.style(w)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + bias


# ---------------------------------------------------------------- synthesis networks


class Synthesis(nn.Module):
    """ws [N, num_ws, w_dim] (+ optional noise maps, one per layer) -> images in [-1, 1]-ish (no tanh, as the
    papers). Two layers per resolution (the constant's block: one conv), so num_ws = 2 log2(resolution) - 2."""

    def __init__(self, shape: Sequence[int], w_dim: int, channel_base: int, channel_max: int, kind: str):
        super().__init__()
        if kind not in SYNTHESES:
            raise UserError(f"model.generator.synthesis={kind!r}: expected adain (StyleGAN) or modulated (StyleGAN2).")
        image_channels, resolution = check_shape(shape)
        plan = channel_plan("model.generator", resolution, channel_base, channel_max)
        self.kind, self.resolution = kind, resolution
        self.const = nn.Parameter(torch.ones(plan[4], 4, 4) if kind == "adain" else torch.randn(plan[4], 4, 4))
        layers, to_rgb = [], []
        for res, channels in plan.items():
            if kind == "adain":
                first = AdaINLayer(plan[4], channels, w_dim, res, conv=False) if res == 4 else \
                    AdaINLayer(plan[res // 2], channels, w_dim, res, up=True)
                layers += [first, AdaINLayer(channels, channels, w_dim, res)]
            else:
                if res > 4:
                    layers.append(ModulatedLayer(plan[res // 2], channels, w_dim, res, up=True))
                layers.append(ModulatedLayer(channels, channels, w_dim, res))
                to_rgb.append(ToRGB(channels, image_channels, w_dim))
        if kind == "adain":
            to_rgb.append(ToRGB(plan[resolution], image_channels, None))
        self.layers, self.to_rgb = nn.ModuleList(layers), nn.ModuleList(to_rgb)
        self.num_ws = 2 * int(math.log2(resolution)) - 2

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """One noise map per layer, from `generator` (for reproducible grids); on the CPU."""
        return [torch.randn(n, 1, layer.noise.resolution, layer.noise.resolution, generator=generator)
                for layer in self.layers]

    def forward(self, ws: Tensor, noise: Sequence[Tensor] | None = None) -> Tensor:
        noise = [None] * len(self.layers) if noise is None else [m.to(ws) for m in noise]
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        if self.kind == "adain":
            for i, layer in enumerate(self.layers):
                x = layer(x, ws[:, i], noise[i])
            return self.to_rgb[0](x)
        # skip generator: layer i reads w_i; each resolution's toRGB reads the w of the next resolution's first layer
        image, i = None, 0
        for rgb in self.to_rgb:
            if image is not None:
                x, i = self.layers[i](x, ws[:, i], noise[i]), i + 1
            x, i = self.layers[i](x, ws[:, i], noise[i]), i + 1
            y = rgb(x, ws[:, i])
            image = y if image is None else upsample(image) + y
        return image


class StyleGenerator(nn.Module):
    """mapping (z -> ws) + synthesis (ws -> image). `forward(z)` maps and synthesises with random noise; the model
    calls the two parts itself for style mixing, truncation and fixed noise."""

    def __init__(self, shape: Sequence[int], latent_dim: int, w_dim: int, mapping_layers: int, mapping_lr_mul: float,
                 w_avg_beta: float, channel_base: int, channel_max: int, synthesis: str):
        super().__init__()
        self.synthesis = Synthesis(shape, positive_int("model.generator.w_dim", w_dim), channel_base, channel_max,
                                   synthesis)
        if not 0 <= w_avg_beta < 1:
            raise UserError(f"model.generator.w_avg_beta must lie in [0, 1) (the papers: 0.995), got {w_avg_beta}.")
        self.mapping = MappingNetwork(positive_int("model.latent_dim", latent_dim), w_dim, self.synthesis.num_ws,
                                      positive_int("model.generator.mapping_layers", mapping_layers),
                                      positive_float("model.generator.mapping_lr_mul", mapping_lr_mul), w_avg_beta)
        self.z_dim, self.num_ws = latent_dim, self.synthesis.num_ws

    def forward(self, z: Tensor, y: Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> Tensor:
        return self.synthesis(self.mapping(z, truncation_psi, truncation_cutoff))


# ---------------------------------------------------------------- discriminator


def minibatch_stddev(x: Tensor, group_size: int = 4, num_channels: int = 1) -> Tensor:
    """Appends the standard deviation of each feature over groups of `group_size` samples (ProGAN; StyleGAN2's
    version with `num_channels` feature groups), averaged to one value per group and channel group. A batch that
    `group_size` does not divide uses the largest group size that divides it (gcd)."""
    n, c, h, w = x.shape
    g = math.gcd(group_size, n)
    y = x.reshape(g, -1, num_channels, c // num_channels, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # [n/g, F, c/F, h, w]
    y = y.mean(dim=(2, 3, 4)).reshape(-1, num_channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """conv 3x3 -> conv 3x3 with 2x downsampling; `resnet`: plus a 1x1 downsampled skip, the sum scaled by
    sqrt(1/2) (StyleGAN2)."""

    def __init__(self, in_channels: int, out_channels: int, resnet: bool):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation=True)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation=True, down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True) if resnet else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(self.conv0(x))
        return y if self.skip is None else (self.skip(x) + y) * math.sqrt(0.5)


class StyleDiscriminator(nn.Module):
    """fromRGB -> blocks down to 4x4 -> minibatch stddev -> conv 3x3 -> dense -> dense to one logit."""

    def __init__(self, shape: Sequence[int], channel_base: int, channel_max: int, architecture: str,
                 mbstd_group_size: int, mbstd_channels: int):
        super().__init__()
        if architecture not in DISCRIMINATORS:
            raise UserError(f"model.discriminator.architecture={architecture!r}: expected resnet (StyleGAN2) or orig "
                            f"(ProGAN/StyleGAN).")
        image_channels, resolution = check_shape(shape)
        plan = channel_plan("model.discriminator", resolution, channel_base, channel_max)
        self.mbstd_group_size = positive_int("model.discriminator.mbstd_group_size", mbstd_group_size)
        self.mbstd_channels = positive_int("model.discriminator.mbstd_channels", mbstd_channels)
        if plan[4] % self.mbstd_channels:
            raise UserError(f"model.discriminator.mbstd_channels={mbstd_channels} must divide the {plan[4]} channels "
                            f"at 4x4.")
        self.from_rgb = EqualConv2d(image_channels, plan[resolution], 1, activation=True)
        self.blocks = nn.Sequential(*(DiscriminatorBlock(plan[res], plan[res // 2], architecture == "resnet")
                                      for res in sorted(plan, reverse=True) if res > 4))
        c = plan[4]
        self.conv = EqualConv2d(c + self.mbstd_channels, c, 3, activation=True)
        self.fc = EqualLinear(c * 16, c, activation=True)
        self.out = EqualLinear(c, 1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        x = self.blocks(self.from_rgb(x))
        x = self.conv(minibatch_stddev(x, self.mbstd_group_size, self.mbstd_channels))
        return self.out(self.fc(x.flatten(1))).squeeze(1)
