"""StyleGAN2 as stylegan2-ada-pytorch (commit d72cc7d) runs it: the resampling convolutions against a transcription of
its `torch_utils/ops/conv2d_resample.py` (borders included), and one EMA update of G per training iteration."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import compose_config
from gan.nets.stylegan import EqualConv2d, ModulatedLayer, demodulation, modulated_conv2d, upsample
from gan.train import load_checkpoint, train

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["model=stylegan2", "data.image_size=8", "data.batch_size=8", "model.latent_dim=16", "model.generator.w_dim=16",
        "model.generator.mapping_layers=2", "model.generator.channel_base=64", "model.generator.channel_max=8",
        "model.discriminator.channel_base=64", "model.discriminator.channel_max=8"]


# ---------------------------------------------------------------- the reference, transcribed (pure torch)


def setup_filter(taps=(1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """`torch_utils/ops/upfirdn2d.py` setup_filter, lines 96-116 (4 taps: not separable; normalised, gain 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f.ger(f)
    return f / f.sum()


def upfirdn2d_ref(x, f, up=1, down=1, padding=(0, 0, 0, 0), gain=1):
    """`torch_utils/ops/upfirdn2d.py` _upfirdn2d_ref, lines 169-208 (square factors, 2-D filter, flip_filter=False)."""
    n, c, h, w = x.shape
    padx0, padx1, pady0, pady1 = padding
    x = x.reshape([n, c, h, 1, w, 1])  # upsample by inserting zeros
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape([n, c, h * up, w * up])
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])  # pad or crop
    x = x[:, :, max(-pady0, 0): x.shape[2] - max(-pady1, 0), max(-padx0, 0): x.shape[3] - max(-padx1, 0)]
    f = (f * gain ** (f.ndim / 2)).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, f[None, None].repeat([c, 1, 1, 1]), groups=c)
    return x[:, :, ::down, ::down]  # downsample by throwing away pixels


def conv2d_wrapper(x, w, stride=1, padding=0, transpose=False, flip_weight=True):
    """`torch_utils/ops/conv2d_resample.py` _conv2d_wrapper, lines 29-54 (groups 1; the cuDNN workaround of lines
    38-50 only changes the memory format)."""
    if not flip_weight:
        w = w.flip([2, 3])
    op = F.conv_transpose2d if transpose else F.conv2d
    return op(x, w, stride=stride, padding=padding)


def conv2d_resample_ref(x, w, f, up=1, down=1, padding=0, flip_weight=True):
    """`torch_utils/ops/conv2d_resample.py` conv2d_resample, lines 59-154 (groups 1, symmetric padding)."""
    out_channels, in_channels, kh, kw = w.shape
    fh, fw = f.shape
    px0 = px1 = py0 = py1 = padding
    if up > 1:  # lines 95-99
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:  # lines 100-104
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    if kw == 1 and kh == 1 and (down > 1 and up == 1):  # lines 107-110
        x = upfirdn2d_ref(x, f, down=down, padding=(px0, px1, py0, py1))
        return conv2d_wrapper(x, w, flip_weight=flip_weight)
    if down > 1 and up == 1:  # lines 119-122
        x = upfirdn2d_ref(x, f, padding=(px0, px1, py0, py1))
        return conv2d_wrapper(x, w, stride=down, flip_weight=flip_weight)
    if up > 1:  # lines 125-142 (groups 1, down 1)
        w = w.transpose(0, 1)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = conv2d_wrapper(x, w, stride=up, padding=[pyt, pxt], transpose=True, flip_weight=not flip_weight)
        return upfirdn2d_ref(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up**2)
    assert px0 == px1 and py0 == py1 and px0 >= 0  # lines 145-147
    return conv2d_wrapper(x, w, padding=[py0, px0], flip_weight=flip_weight)


# ---------------------------------------------------------------- our layers against it


@pytest.mark.parametrize("kernel", [3, 1])  # DiscriminatorBlock's conv1 (3x3) and its resnet skip (1x1)
def test_downsampling_convolutions_equal_the_reference_borders_included(kernel):
    torch.manual_seed(0)
    layer = EqualConv2d(5, 6, kernel, bias=False, down=True)
    x = torch.randn(2, 5, 8, 8)
    # training/networks.py Conv2dLayer.forward, lines 161-164: w * weight_gain, padding k // 2, flip_weight (up == 1)
    expected = conv2d_resample_ref(x, layer.weight * layer.weight_gain, setup_filter(), down=2, padding=kernel // 2,
                                   flip_weight=True)
    ours = layer(x)
    assert ours.shape == expected.shape == (2, 6, 4, 4)
    assert torch.allclose(ours, expected, atol=1e-5)
    if kernel == 3:  # padding between the conv and the filter (as before) differs at the borders only
        between = F.conv2d(x, layer.weight * layer.weight_gain, padding=1)
        between = upfirdn2d_ref(between, setup_filter(), down=2, padding=(1, 1, 1, 1))
        differs = ~torch.isclose(between, expected, atol=1e-3)
        assert differs.any() and not differs[..., 1:-1, 1:-1].any()


def test_the_upsampling_modulated_convolution_equals_the_reference_borders_included():
    torch.manual_seed(0)
    layer = ModulatedLayer(5, 6, w_dim=4, resolution=8, up=True)
    with torch.no_grad():
        layer.noise.strength.fill_(0.3)
        layer.bias.normal_()
    x, w, noise = torch.randn(2, 5, 4, 4), torch.randn(2, 4), torch.randn(2, 1, 8, 8)
    styles = layer.affine(w)
    # training/networks.py modulated_conv2d, its training path (fused_modconv=False), lines 55-69: scale the input by
    # the styles, conv2d_resample with SynthesisLayer's padding 1 and flip_weight = (up == 1) = False (line 298),
    # scale by the demodulation coefficients of lines 55-58
    dcoefs = ((layer.weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    conv = conv2d_resample_ref(x * styles[:, :, None, None], layer.weight, setup_filter(), up=2, padding=1,
                               flip_weight=False) * dcoefs[:, :, None, None]
    assert conv.shape == (2, 6, 8, 8)
    assert torch.allclose(dcoefs, demodulation(layer.weight, styles), atol=1e-6)
    assert torch.allclose(modulated_conv2d(x, layer.weight, styles, up=True), conv, atol=1e-5)
    # SynthesisLayer.forward, lines 293-304: + noise * strength, + bias, lrelu with gain sqrt(2)
    expected = F.leaky_relu(conv + noise * 0.3 + layer.bias[None, :, None, None], 0.2) * math.sqrt(2)
    assert torch.allclose(layer(x, w, noise), expected, atol=1e-5)
    # upsampling first and padding again for the conv (as before, but with the reference's flipped kernel) differs
    # at the borders only
    between = F.conv2d(upsample(x * styles[:, :, None, None]), layer.weight.flip([2, 3]), padding=1)
    between = between * dcoefs[:, :, None, None]
    differs = ~torch.isclose(between, conv, atol=1e-3)
    assert differs.any() and not differs[..., 1:-1, 1:-1].any()


def test_the_skip_generators_image_upsampling_equals_the_references_upsample2d():
    # training/networks.py SynthesisBlock line 411: upfirdn2d.upsample2d(img, f), which is (upfirdn2d.py lines
    # 334-343) upfirdn2d with up 2, padding [(fw + 1) // 2, (fw - 2) // 2] per side and gain 4
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(upsample(x), upfirdn2d_ref(x, setup_filter(), up=2, padding=(2, 1, 2, 1), gain=4), atol=1e-6)


# ---------------------------------------------------------------- the EMA


def test_the_ema_of_g_is_updated_once_per_iteration_also_when_path_length_runs(tmp_path):
    # training/training_loop.py lines 269-305: the phases (Gmain, Greg, Dmain, Dreg) run, then G_ema is updated once
    run = tmp_path / "run"
    train(compose_config(run, *TINY, "model.pl_every=2", "g_iters=4"))
    _, _, module = load_checkpoint(run)
    assert module.g_iter == 4
    assert int(module.ema_generator.n_averaged) == 4  # not 6: G steps twice on iterations 0 and 2
