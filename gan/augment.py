"""Differentiable augmentations of what the discriminator sees: DiffAugment (Zhao et al. 2020) and ADA (Karras et
al. 2020).

`GANModule.critic` augments every image before D judges it: real and generated, in D's loss, in G's loss, and
inside the regularisers, whose input gradients flow back through the augmentation to the un-augmented image (R1 and
the gradient penalty as in stylegan2-ada-pytorch's loss). Since D only ever sees augmented images, G is trained to
match the augmented data distribution; that teaches G the data itself only when the augmentation does not "leak":

- DiffAugment augments every image, always (its transforms only rarely change what G learns: the paper's claim,
  Section 3, for translation and cutout of at most the sizes below and the colour ops).
- ADA applies each transform to each image independently with probability p < 1, so the identity keeps a point
  mass and every augmented distribution determines the one it came from (the paper's non-leaking condition);
  p adapts to how much D overfits: r_t = E[sign(D(augmented real))], accumulated over `interval` iterations, moves
  p by sign(r_t - target) * (images shown in them) / (kimg * 1000), clamped below at 0 (not above: the reference).
  Its transforms are stylegan2-ada-pytorch's AugmentPipe ('bgc' by default): pixel blitting, general geometric
  transforms as one 3x3 matrix per image applied by its sym6-filtered resampling, and colour as one 4x4 matrix.

All randomness comes from the torch.Generator passed in (the model's checkpointed `rng`), drawn on its device (the
CPU) and moved to the images': a resumed run repeats its augmentations exactly. Images are [N, C, H, W] in [-1, 1].
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import UserError, positive_float, positive_int
from gan.models.core import host_values

AUGMENTS = ("none", "diffaugment", "ada")


# ---- drawing per-image parameters ----------------------------------------------------------------------


def per_image(values: Tensor, x: Tensor) -> Tensor:
    """[N] parameters as [N, 1, 1, 1] on the images' device and dtype."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def uniform(rng: torch.Generator, x: Tensor) -> Tensor:
    return per_image(torch.rand(len(x), generator=rng), x)


def translate(x: Tensor, dy: Tensor, dx: Tensor, padding: str) -> Tensor:
    """out[n, :, i, j] = x[n, :, i + dy[n], j + dx[n]] for integer [N] shifts; outside the image: zeros
    (`padding="zeros"`) or the mirror image without repeating the edge (`"reflect"`). A gather: differentiable."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) + dy.to(x.device)[:, None]  # [N, H]
    cols = torch.arange(w, device=x.device) + dx.to(x.device)[:, None]  # [N, W]
    if padding == "reflect":
        rows, cols = reflect(rows, h), reflect(cols, w)
    out = x.gather(2, rows.clamp(0, h - 1)[:, None, :, None].expand(n, c, h, w))
    out = out.gather(3, cols.clamp(0, w - 1)[:, None, None, :].expand(n, c, h, w))
    if padding == "zeros":
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        out = out * inside[:, None].to(x.dtype)
    return out


def reflect(index: Tensor, size: int) -> Tensor:
    """Indices mirrored into [0, size) as torch's "reflect" padding (..., 2, 1, 0, 1, 2, ...)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


# ---- DiffAugment: the official DiffAugment_pytorch.py, drawing from `rng` -----------------------------------


def rand_brightness(x: Tensor, rng: torch.Generator) -> Tensor:
    return x + (uniform(rng, x) - 0.5)


def rand_saturation(x: Tensor, rng: torch.Generator) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (uniform(rng, x) * 2) + mean


def rand_contrast(x: Tensor, rng: torch.Generator) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (uniform(rng, x) + 0.5) + mean


def rand_translation(x: Tensor, rng: torch.Generator, ratio: float = 0.125) -> Tensor:
    """A shift of up to 1/8 of the image size in each direction, uniform over the integers, zeros shifted in."""
    shift_y, shift_x = int(x.shape[2] * ratio + 0.5), int(x.shape[3] * ratio + 0.5)
    dy = torch.randint(-shift_y, shift_y + 1, (len(x),), generator=rng)
    dx = torch.randint(-shift_x, shift_x + 1, (len(x),), generator=rng)
    return translate(x, dy, dx, "zeros")


def rand_cutout(x: Tensor, rng: torch.Generator, ratio: float = 0.5) -> Tensor:
    """A square of half the image size set to zero, its centre uniform over the image (clipped at the border)."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - size_y % 2), (n, 1), generator=rng).to(x.device) - size_y // 2
    left = torch.randint(0, w + (1 - size_x % 2), (n, 1), generator=rng).to(x.device) - size_x // 2
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + size_y)  # [N, H]
    in_cols = (cols >= left) & (cols < left + size_x)  # [N, W]
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


POLICIES: dict[str, tuple[Callable[[Tensor, torch.Generator], Tensor], ...]] = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def split_names(names: str | Sequence[str] | None) -> list[str]:
    """"a,b" or a list -> the stripped, non-empty names."""
    names = names.split(",") if isinstance(names, str) else list(names) if names is not None else []
    return [str(name).strip() for name in names if str(name).strip()]


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """"color,translation,cutout" (or a list) -> the names, in the order they are applied."""
    names = split_names(policy)
    unknown = [name for name in names if name not in POLICIES]
    if unknown or not names or len(set(names)) != len(names):
        raise UserError(f"model.augment_policy must name each of {', '.join(POLICIES)} at most once, comma-separated "
                        f"(the DiffAugment paper: color,translation,cutout), got {policy!r}. On the command line "
                        f"quote it: 'model.augment_policy=\"color,cutout\"', or give a list: "
                        f"model.augment_policy=[color,cutout].")
    return tuple(names)


class DiffAugment(nn.Module):
    """Every image gets every transform of the policy, each with fresh random parameters."""

    def __init__(self, policy: str | Sequence[str] = "color,translation,cutout"):
        super().__init__()
        self.policy = parse_policy(policy)

    def forward(self, x: Tensor, rng: torch.Generator) -> Tensor:
        for name in self.policy:
            for transform in POLICIES[name]:
                x = transform(x, rng)
        return x.contiguous()

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy)}"


# ---- ADA: stylegan2-ada-pytorch's AugmentPipe, pipeline 'bgc' ------------------------------------------------------
# Transcribed from NVlabs/stylegan2-ada-pytorch (commit d72cc7d), `training/augment.py` (cited as augment.py:LINE) and
# `train.py`. Every transform is drawn per image, as there, with probability p, in the reference's order; the draws are
# the reference's, one for one, from the generator passed in.

BLIT = ("xflip", "rotate90", "xint")  # pixel blitting: integer moves of the pixel grid
GEOM = ("scale", "rotate", "aniso", "xfrac")  # general geometric transformations
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
ADA_TRANSFORMS = BLIT + GEOM + COLOR  # the reference's order of application (augment.py:196-350)
# train.py:279, augpipe_specs['bgc'] (train.py:265: the default `--augpipe`): every one of the twelve above.
BGC = ADA_TRANSFORMS

# Strengths: the AugmentPipe defaults, augment.py:119-121 (none is changed by train.py).
XINT_MAX = 0.125  # integer translation, uniform in +-this fraction of the size
SCALE_STD = 0.2  # isotropic scaling: log2-normal with this std
ROTATE_MAX = 1.0  # arbitrary rotation, uniform in +-pi * this
ANISO_STD = 0.2  # anisotropic scaling: log2-normal
XFRAC_STD = 0.125  # fractional translation: normal, in fractions of the size
BRIGHTNESS_STD = 0.2  # added to every channel: normal
CONTRAST_STD = 0.5  # multiplies every channel: log2-normal
HUE_MAX = 1.0  # rotation around the luma axis, uniform in +-pi * this
SATURATION_STD = 1.0  # scales the colour away from the luma axis: log2-normal
# The low-pass filter of the geometric resampling (augment.py:35, 167): the sym6 wavelet's, 12 taps.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633, 0.4910559419267466,
        0.787641141030194, 0.3379294217276218, -0.07263752278646252, -0.021060292512300564, 0.04472490177066578,
        0.0017677118642428036, -0.007800708325034148)
LUMA_AXIS = (3 ** -0.5, 3 ** -0.5, 3 ** -0.5, 0.0)  # augment.py:328


def matrices(*rows: Sequence[Tensor | float], n: int) -> Tensor:
    """[n, R, C] from rows of scalars or [n] tensors (augment.py:43, `matrix`)."""
    return torch.stack([torch.stack([torch.as_tensor(e, dtype=torch.float32).expand(n) for e in row], -1)
                        for row in rows], -2)


def translate2d(tx: Tensor | float, ty: Tensor | float, n: int) -> Tensor:
    return matrices([1, 0, tx], [0, 1, ty], [0, 0, 1], n=n)


def scale2d(sx: Tensor | float, sy: Tensor | float, n: int) -> Tensor:
    return matrices([sx, 0, 0], [0, sy, 0], [0, 0, 1], n=n)


def rotate2d(theta: Tensor, n: int) -> Tensor:
    return matrices([theta.cos(), -theta.sin(), 0], [theta.sin(), theta.cos(), 0], [0, 0, 1], n=n)


def rotate3d(v: Tensor, theta: Tensor, n: int) -> Tensor:
    """Rotation by theta around the unit axis v[:3] (augment.py:90)."""
    vx, vy, vz = (float(e) for e in v[:3])
    s, c = theta.sin(), theta.cos()
    cc = 1 - c
    return matrices([vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                    [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                    [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                    [0, 0, 0, 1], n=n)


def with_probability(rng: torch.Generator, p: float, value: Tensor, identity: float) -> Tensor:
    """`value` where a fresh uniform draw per image is below p, else the identity's value (the reference's
    `torch.where(torch.rand(...) < multiplier * p, value, identity)`, with the draw shaped [N] + ones)."""
    keep = torch.rand(value.shape[:1] + (1,) * (value.dim() - 1), generator=rng) < p
    return torch.where(keep, value, torch.full_like(value, identity))


def geometry(n: int, height: int, width: int, enabled: Sequence[str], p: float, rng: torch.Generator) -> Tensor:
    """The inverse homogeneous 2-D transform of every image, output pixel -> input pixel in pixel units around the
    image centre (x right, y down): augment.py:192-263, the same draws in the same order."""
    g_inv = torch.eye(3).expand(n, 3, 3)
    if "xflip" in enabled:  # augment.py:196-202
        i = with_probability(rng, p, torch.floor(torch.rand(n, generator=rng) * 2), 0)
        g_inv = g_inv @ scale2d(1 / (1 - 2 * i), 1, n)
    if "rotate90" in enabled:  # augment.py:204-210
        i = with_probability(rng, p, torch.floor(torch.rand(n, generator=rng) * 4), 0)
        g_inv = g_inv @ rotate2d(torch.pi / 2 * i, n)  # rotate2d_inv(-pi/2 * i)
    if "xint" in enabled:  # augment.py:212-218
        t = with_probability(rng, p, (torch.rand(n, 2, generator=rng) * 2 - 1) * XINT_MAX, 0)
        g_inv = g_inv @ translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height), n)
    if "scale" in enabled:  # augment.py:224-230
        s = with_probability(rng, p, torch.exp2(torch.randn(n, generator=rng) * SCALE_STD), 1)
        g_inv = g_inv @ scale2d(1 / s, 1 / s, n)
    p_rot = host_values(1 - torch.sqrt((1 - torch.tensor(p)).clamp(0, 1)))  # augment.py:233: P(pre or post rotation) = p
    if "rotate" in enabled:  # augment.py:232-239, before the anisotropic scaling
        theta = with_probability(rng, p_rot, (torch.rand(n, generator=rng) * 2 - 1) * torch.pi * ROTATE_MAX, 0)
        g_inv = g_inv @ rotate2d(theta, n)  # rotate2d_inv(-theta)
    if "aniso" in enabled:  # augment.py:241-247
        s = with_probability(rng, p, torch.exp2(torch.randn(n, generator=rng) * ANISO_STD), 1)
        g_inv = g_inv @ scale2d(1 / s, s, n)
    if "rotate" in enabled:  # augment.py:249-255, after it
        theta = with_probability(rng, p_rot, (torch.rand(n, generator=rng) * 2 - 1) * torch.pi * ROTATE_MAX, 0)
        g_inv = g_inv @ rotate2d(theta, n)
    if "xfrac" in enabled:  # augment.py:257-263
        t = with_probability(rng, p, torch.randn(n, 2, generator=rng) * XFRAC_STD, 0)
        g_inv = g_inv @ translate2d(-t[:, 0] * width, -t[:, 1] * height, n)
    return g_inv


def upfirdn2d(x: Tensor, f: Tensor, up: int = 1, down: int = 1, padding: Sequence[int] = (0, 0, 0, 0),
              flip_filter: bool = False, gain: float = 1.0) -> Tensor:
    """Upsample (zeros inserted), pad or crop ([x0, x1, y0, y1]), convolve with the separable 1-D filter f along
    both axes, downsample: torch_utils/ops/upfirdn2d.py `_upfirdn2d_ref`, the reference's plain-PyTorch version."""
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    f = (f * gain ** 0.5).to(x.dtype)
    if not flip_filter:
        f = f.flip(0)
    f = f[None, None].repeat(c, 1, 1)
    x = F.conv2d(x, f.unsqueeze(2), groups=c)
    x = F.conv2d(x, f.unsqueeze(3), groups=c)
    return x[:, :, ::down, ::down]


def resample(x: Tensor, g_inv: Tensor) -> Tensor:
    """x warped by the per-image transforms g_inv as augment.py:269-301 does it: reflect-pad by the largest margin
    any image needs, upsample 2x with the sym6 filter, bilinear grid_sample, filter with sym6 and downsample 2x."""
    n, c, h, w = x.shape
    hz = torch.tensor(SYM6, device=x.device)
    hz = hz / hz.sum()  # upfirdn2d.setup_filter: unit gain at DC
    hz_pad = len(SYM6) // 4
    cx, cy = (w - 1) / 2, (h - 1) / 2
    corners = g_inv @ torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]]).t()  # [N, xyz, corner]
    margin = corners[:, :2, :].permute(1, 0, 2).flatten(1)
    margin = torch.cat([-margin, margin]).max(dim=1).values  # [x0, y0, x1, y1]: how far outside the image they reach
    margin = margin + torch.tensor([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2)
    margin = margin.clamp(min=0).minimum(torch.tensor([w - 1, h - 1] * 2, dtype=margin.dtype))
    mx0, my0, mx1, my1 = (int(m) for m in host_values(margin.ceil()))
    x = F.pad(x, [mx0, mx1, my0, my1], mode="reflect")
    g_inv = translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, n) @ g_inv
    x = upfirdn2d(x, hz, up=2, padding=[(len(SYM6) + 1) // 2, (len(SYM6) - 2) // 2] * 2, gain=4)  # upsample2d
    g_inv = scale2d(2, 2, n) @ g_inv @ scale2d(0.5, 0.5, n)
    g_inv = translate2d(-0.5, -0.5, n) @ g_inv @ translate2d(0.5, 0.5, n)
    shape = [n, c, (h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2]
    g_inv = scale2d(2 / x.shape[3], 2 / x.shape[2], n) @ g_inv @ scale2d(shape[3] / 2, shape[2] / 2, n)
    grid = F.affine_grid(g_inv[:, :2, :].to(device=x.device, dtype=x.dtype), shape, align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    crop = -hz_pad * 2  # downsample2d(padding=-Hz_pad*2, flip_filter=True)
    return upfirdn2d(x, hz, down=2, padding=[crop + (len(SYM6) - 1) // 2, crop + (len(SYM6) - 2) // 2] * 2,
                     flip_filter=True)


def blit(x: Tensor, g_inv: Tensor) -> Tensor | None:
    """x moved by transforms that send every pixel centre to a pixel centre (flips, quarter turns, integer shifts), as
    an exact gather with reflection at the border; None when some g_inv is not such a transform."""
    n, c, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    source = g_inv @ torch.stack([xs.flatten(), ys.flatten(), torch.ones(h * w)])  # [N, xyz, H*W]
    sx, sy = source[:, 0] + (w - 1) / 2, source[:, 1] + (h - 1) / 2
    if (sx - sx.round()).abs().max() > 1e-3 or (sy - sy.round()).abs().max() > 1e-3:
        return None
    index = reflect(sy.round().long(), h) * w + reflect(sx.round().long(), w)
    return x.flatten(2).gather(2, index.to(x.device)[:, None, :].expand(n, c, h * w)).view(n, c, h, w)


def colour(n: int, channels: int, enabled: Sequence[str], p: float, rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """The homogeneous 4x4 colour transform of every image, colour in -> colour out (augment.py:304-350, the same
    draws in the same order), and which images it leaves unchanged. Hue and saturation, as there, only for RGB
    (no draw for greyscale)."""
    eye = torch.eye(4)
    c_mat, unchanged = eye.expand(n, 4, 4), torch.ones(n, dtype=torch.bool)
    v = torch.tensor(LUMA_AXIS)
    vv = v.outer(v)
    if "brightness" in enabled:  # augment.py:311-317
        b = with_probability(rng, p, torch.randn(n, generator=rng) * BRIGHTNESS_STD, 0)
        c_mat = matrices([1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1], n=n) @ c_mat  # translate3d
        unchanged = unchanged & (b == 0)
    if "contrast" in enabled:  # augment.py:319-325
        s = with_probability(rng, p, torch.exp2(torch.randn(n, generator=rng) * CONTRAST_STD), 1)
        c_mat = matrices([s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1], n=n) @ c_mat  # scale3d
        unchanged = unchanged & (s == 1)
    if "lumaflip" in enabled:  # augment.py:327-334: a Householder reflection of the luma axis
        i = with_probability(rng, p, torch.floor(torch.rand(n, 1, 1, generator=rng) * 2), 0)
        c_mat, unchanged = (eye - 2 * vv * i) @ c_mat, unchanged & (i.flatten() == 0)
    if "hue" in enabled and channels > 1:  # augment.py:336-342: a rotation around the luma axis
        theta = with_probability(rng, p, (torch.rand(n, generator=rng) * 2 - 1) * torch.pi * HUE_MAX, 0)
        c_mat, unchanged = rotate3d(v, theta, n) @ c_mat, unchanged & (theta == 0)
    if "saturation" in enabled and channels > 1:  # augment.py:344-350
        s = with_probability(rng, p, torch.exp2(torch.randn(n, 1, 1, generator=rng) * SATURATION_STD), 1)
        c_mat, unchanged = (vv + (eye - vv) * s) @ c_mat, unchanged & (s.flatten() == 1)
    return c_mat, unchanged


def recolour(x: Tensor, c_mat: Tensor) -> Tensor:
    """augment.py:357-365: RGB through the 3x4 affine part; greyscale through the mean of its rows, so a greyscale
    image gets brightness, contrast and the luma flip (which there is x -> -x, a negative around mid-grey 0)."""
    n, c, h, w = x.shape
    c_mat = c_mat.to(device=x.device, dtype=x.dtype)
    pixels = x.reshape(n, c, h * w)
    if c == 3:
        pixels = c_mat[:, :3, :3] @ pixels + c_mat[:, :3, 3:]
    elif c == 1:
        c_mat = c_mat[:, :3, :].mean(dim=1, keepdim=True)
        pixels = pixels * c_mat[:, :, :3].sum(dim=2, keepdim=True) + c_mat[:, :, 3:]
    else:
        raise UserError(f"ADA's colour transforms are defined for RGB (3 channels) or greyscale (1) images, as in "
                        f"stylegan2-ada-pytorch; got {c} channels. Leave them out of model.ada_transforms.")
    return pixels.reshape(n, c, h, w)


def ada_augment(x: Tensor, rng: torch.Generator, p: float, enabled: Sequence[str]) -> Tensor:
    """AugmentPipe.forward (augment.py:185-365) for the transforms `enabled`, at probability p.

    Differences from the reference, none of which changes a draw: an image whose drawn transform is the identity is
    returned exactly (the reference resamples the whole batch, which changes such an image by rounding only);
    a pipeline of blitting transforms alone moves pixels by an exact gather (the reference sends them through the
    resampling, where a flip is not exact with the asymmetric sym6 filter: the test measures it); the resampling is
    the reference's `_upfirdn2d_ref` and torch's grid_sample, not its CUDA kernels."""
    n, c, h, w = x.shape
    geometric = [name for name in BLIT + GEOM if name in enabled]
    if geometric:
        g_inv = geometry(n, h, w, geometric, p, rng)
        moved = (g_inv != torch.eye(3)).flatten(1).any(1)
        if host_values(moved.any()):
            warped = None if any(name in GEOM for name in geometric) else blit(x, g_inv)
            warped = resample(x, g_inv) if warped is None else warped
            x = torch.where(moved.to(x.device).view(-1, 1, 1, 1), warped, x)
    if any(name in COLOR for name in enabled):
        c_mat, unchanged = colour(n, c, enabled, p, rng)
        if not host_values(unchanged.all()):
            x = torch.where(unchanged.to(x.device).view(-1, 1, 1, 1), x, recolour(x, c_mat))
    return x


class AdaptiveAugment(nn.Module):
    """ADA's pipeline with its probability p (a buffer: checkpointed with the weights) and the running sum and count
    of sign(D(real)) since the last adjustment (buffers too, so a run resumed mid-interval adjusts as one that
    was not stopped). The transforms are any subset of ADA_TRANSFORMS, applied in the reference's order whatever
    the order named; the default is the reference's default pipeline, 'bgc'."""

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 500,
                 transforms: str | Sequence[str] = BGC, p: float = 0.0):
        super().__init__()
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target < 1:
            raise UserError(f"model.ada_target is the value of E[sign(D(real))] that ADA holds D at, in [0, 1) (the "
                            f"paper: 0.6), got {target!r}.")
        names = split_names(transforms)
        if not names or len(set(names)) != len(names) or any(name not in ADA_TRANSFORMS for name in names):
            raise UserError(f"model.ada_transforms must name each of {', '.join(ADA_TRANSFORMS)} at most once "
                            f"(stylegan2-ada-pytorch's default pipeline 'bgc' is all twelve), got {transforms!r}. "
                            f"Leave out the ones that change what an image shows, e.g. "
                            f"model.ada_transforms=[xint,brightness,contrast] for digits, where a flip or a 90-degree "
                            f"turn turns a 6 into a 9.")
        self.target, self.transforms = float(target), tuple(name for name in ADA_TRANSFORMS if name in names)
        self.interval = positive_int("model.ada_interval", interval)
        self.kimg = positive_float("model.ada_kimg", kimg)
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("signs", torch.zeros(2))  # sum of sign(D(real)), number of D outputs
        self._host_p: float | None = None  # p as a number for the CPU-side draws, read again only after p changed
        self.register_load_state_dict_post_hook(lambda module, keys: module.forget_host_p())

    def forward(self, x: Tensor, rng: torch.Generator) -> Tensor:
        if self._host_p is None:  # after an adjustment or a loaded checkpoint only: no device read per step
            self._host_p = float(self.p)
        return ada_augment(x, rng, self._host_p, self.transforms)

    def forget_host_p(self) -> None:
        self._host_p = None

    @torch.no_grad()
    def observe(self, real_logits: Tensor) -> None:
        """D's outputs on (augmented) real images in a discriminator step."""
        self.signs[0] += real_logits.detach().float().sign().sum()
        self.signs[1] += real_logits.numel()

    @torch.no_grad()
    def adjust(self, images: int) -> Tensor:
        """After `images` real images were shown: p += sign(r_t - target) * images / (kimg * 1000), clamped below at 0
        only, as stylegan2-ada-pytorch's training_loop.py:314-315 (`.max(0)`): p may pass 1, where every transform is
        applied to every image (the draws compare with p) and p takes as long to come back below 1 as it went past.
        Returns r_t (0 when D judged no real image since the last adjustment, and p stays). All on the device: the
        transforms, drawn on the host, read p back once, at their next draw."""
        total, count = self.signs
        r_t = total / count.clamp(min=1)
        step = torch.where(count > 0, torch.sign(r_t - self.target) * images / (self.kimg * 1000), 0.0)
        self.p.copy_((self.p + step).clamp(min=0))
        self.forget_host_p()
        self.signs.zero_()
        return r_t

    def extra_repr(self) -> str:
        return f"target={self.target}, interval={self.interval}, kimg={self.kimg}, transforms={','.join(self.transforms)}"


def make_augment(kind: str, policy: str | Sequence[str], ada_target: float, ada_interval: int,
                 ada_kimg: float, ada_transforms: str | Sequence[str] = BGC) -> nn.Module | None:
    """The pipeline `model.augment` names (None for `none`); every setting is checked, used or not."""
    if kind not in AUGMENTS:
        raise UserError(f"model.augment must be one of {', '.join(AUGMENTS)} (DiffAugment: Zhao et al. 2020; ADA: "
                        f"Karras et al. 2020), got {kind!r}.")
    diffaugment = DiffAugment(policy)
    ada = AdaptiveAugment(ada_target, ada_interval, ada_kimg, ada_transforms)
    return {"none": None, "diffaugment": diffaugment, "ada": ada}[kind]
