"""ADA's default pipeline 'bgc' (gan.augment) against NVlabs/stylegan2-ada-pytorch (commit d72cc7d), whose lines are
cited as train.py:LINE, augment.py:LINE (training/augment.py) and training_loop.py:LINE: the default transform list,
the strengths, each geometric transform's matrix and warp of a known image, the colour matrices, and p's update."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import model_config
from gan.augment import (ADA_TRANSFORMS, BGC, BLIT, COLOR, GEOM, AdaptiveAugment, colour, geometry, resample,
                         rotate2d, scale2d, translate2d)
import gan.augment as augment

pytestmark = pytest.mark.usefixtures("one_thread")

# train.py:279, augpipe_specs['bgc'], the default of --augpipe (train.py:264-265)
REFERENCE_BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
                     lumaflip=1, hue=1, saturation=1)
V = torch.tensor([1.0, 1, 1, 0]) / math.sqrt(3)  # augment.py:328, the luma axis
WARP_TOLERANCE = 0.05  # a resampled smooth image in [-1, 1] against its analytic warp: the sym6 phase and ripple


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- the defaults


def test_the_default_transforms_are_the_reference_bgc_spec_in_its_order():
    assert BGC == tuple(name for name, on in REFERENCE_BGC.items() if on) == ADA_TRANSFORMS
    assert BLIT + GEOM + COLOR == BGC
    assert tuple(model_config("dcgan").ada_transforms) == BGC  # conf/model/_augment.yaml
    assert AdaptiveAugment().transforms == BGC
    # a subset in any order is applied in the reference's order
    assert AdaptiveAugment(transforms="hue,xint,scale").transforms == ("xint", "scale", "hue")


def test_the_strengths_are_the_reference_augment_pipe_defaults():
    # augment.py:119-121: xint_max=0.125, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
    # brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1; augment.py:35 and 167: sym6
    assert (augment.XINT_MAX, augment.SCALE_STD, augment.ROTATE_MAX, augment.ANISO_STD, augment.XFRAC_STD) == (
        0.125, 0.2, 1, 0.2, 0.125)
    assert (augment.BRIGHTNESS_STD, augment.CONTRAST_STD, augment.HUE_MAX, augment.SATURATION_STD) == (0.2, 0.5, 1, 1)
    assert len(augment.SYM6) == 12 and sum(augment.SYM6) == pytest.approx(2 ** 0.5)  # an orthogonal wavelet's low-pass
    assert sum(a * b for a, b in zip(augment.SYM6, augment.SYM6)) == pytest.approx(1)


# ---------------------------------------------------------------- geometry: the matrices from the draws


def reference_draws(name: str, n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """The inverse matrix the reference builds for `name` alone at p = 1 (every `rand < p` true), its draws replayed
    from the same generator: augment.py:196-263, with scale2d_inv(a, b) = diag(1/a, 1/b), rotate2d_inv(t) =
    rotate2d(-t), translate2d_inv(a, b) = translate2d(-a, -b)."""
    g = rng(seed)
    if name == "xflip":  # augment.py:197-202
        i = torch.floor(torch.rand(n, generator=g) * 2)
        torch.rand(n, generator=g)
        return scale2d(1 / (1 - 2 * i), 1, n)
    if name == "rotate90":  # augment.py:205-210: rotate2d_inv(-pi / 2 * i)
        i = torch.floor(torch.rand(n, generator=g) * 4)
        torch.rand(n, generator=g)
        return rotate2d(math.pi / 2 * i, n)
    if name == "xint":  # augment.py:213-218
        t = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.125
        torch.rand(n, 1, generator=g)
        return translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h), n)
    if name in ("scale", "aniso"):  # augment.py:225-230, 242-247
        s = torch.exp2(torch.randn(n, generator=g) * 0.2)
        torch.rand(n, generator=g)
        return scale2d(1 / s, 1 / s if name == "scale" else s, n)
    if name == "rotate":  # augment.py:233-255: p_rot = 1 - sqrt(1 - 1) = 1, pre- and post-rotation both applied
        pre = (torch.rand(n, generator=g) * 2 - 1) * math.pi
        torch.rand(n, generator=g)
        post = (torch.rand(n, generator=g) * 2 - 1) * math.pi
        torch.rand(n, generator=g)
        return rotate2d(pre, n) @ rotate2d(post, n)
    assert name == "xfrac"  # augment.py:258-263
    t = torch.randn(n, 2, generator=g) * 0.125
    torch.rand(n, 1, generator=g)
    return translate2d(-t[:, 0] * w, -t[:, 1] * h, n)


@pytest.mark.parametrize("name", BLIT + GEOM)
def test_each_geometric_draw_at_p_1_builds_the_reference_matrix(name):
    built = geometry(6, 16, 12, (name,), 1.0, rng(4))
    assert torch.allclose(built, reference_draws(name, 6, 16, 12, seed=4), atol=1e-6)
    assert (built != torch.eye(3)).flatten(1).any(1).any()


def test_rotation_probability_is_split_between_pre_and_post_rotation():
    """augment.py:233: p_rot = 1 - sqrt(1 - p), so P(pre or post) = 1 - (1 - p_rot)^2 = p."""
    n, p = 20000, 0.36
    g_inv = geometry(n, 8, 8, ("rotate",), p, rng(1))
    rotated = (g_inv != torch.eye(3)).flatten(1).any(1).float().mean().item()
    assert rotated == pytest.approx(p, abs=0.015)
    both = geometry(n, 8, 8, ("rotate",), 0.0, rng(1))
    assert torch.equal(both, torch.eye(3).expand(n, 3, 3))


# ---------------------------------------------------------------- geometry: the warps of a known image


def smooth(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """An asymmetric, band-limited test image as a function of the centred pixel coordinates (x right, y down)."""
    return 0.5 * torch.sin(0.35 * x + 0.2) + 0.3 * torch.cos(0.25 * y - 0.1) + 0.2 * torch.sin(0.15 * (x + 2 * y))


def centred(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    return xs, ys


def known_image(h: int = 33, w: int = 33, channels: int = 1) -> torch.Tensor:
    return smooth(*centred(h, w)).expand(1, channels, h, w).clone()


def analytic_warp(g_inv: torch.Tensor, h: int = 33, w: int = 33, border: float = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """out(p) = image(g_inv p) by hand, and where g_inv p lies `border` pixels inside the image (reflection and the
    filters' support aside)."""
    xs, ys = centred(h, w)
    sx = g_inv[0, 0] * xs + g_inv[0, 1] * ys + g_inv[0, 2]
    sy = g_inv[1, 0] * xs + g_inv[1, 1] * ys + g_inv[1, 2]
    inside = (sx.abs() <= (w - 1) / 2 - border) & (sy.abs() <= (h - 1) / 2 - border)
    return smooth(sx, sy), inside


def test_a_90_degree_rotation_of_an_asymmetric_image_resampled_equals_the_hand_rotated_image():
    x = known_image()
    turned = resample(x, rotate2d(torch.tensor([math.pi / 2]), 1))[0, 0]
    by_hand = x[0, 0].rot90(1, (0, 1))  # out[i, j] = x[j, W-1-i]: the inverse map (x, y) -> (y, -x) of g_inv
    _, inside = analytic_warp(rotate2d(torch.tensor([math.pi / 2]), 1)[0])
    assert (turned - by_hand)[inside].abs().max() < WARP_TOLERANCE
    assert (turned - by_hand.rot90(2, (0, 1)))[inside].abs().max() > 0.3  # the other direction is far off


def test_an_integer_translation_resampled_is_the_shifted_image_exactly():
    x = torch.randn(2, 3, 20, 20)  # not smooth: an even shift of the 2x upsampled grid involves no interpolation
    moved = resample(x, translate2d(-3.0, 2.0, 2))  # out(x, y) = in(x - 3, y + 2)
    assert torch.allclose(moved[:, :, 0:18, 3:20], x[:, :, 2:20, 0:17], atol=1e-5)
    assert torch.allclose(moved[:, :, 0:18, 0:3], x[:, :, 2:20, [3, 2, 1]], atol=1e-5)  # reflected at the border


def test_a_scale_of_2_keeps_the_centre_pixel_and_halves_every_distance_from_it():
    x = known_image(33, 33)
    g_inv = scale2d(0.5, 0.5, 1)  # scale2d_inv(2, 2): out(p) = in(p / 2)
    zoomed = resample(x, g_inv)[0, 0]
    expected, inside = analytic_warp(g_inv[0])
    assert inside.all()  # a zoom in samples the central half only
    assert (zoomed - expected).abs().max() < WARP_TOLERANCE
    assert (zoomed[16, 16] - x[0, 0, 16, 16]).abs() < WARP_TOLERANCE


@pytest.mark.parametrize("name", GEOM)
def test_each_geometric_transform_at_p_1_with_its_draw_equals_the_hand_computed_affine_warp(name):
    x = known_image().expand(4, 1, 33, 33)
    out = AdaptiveAugment(transforms=(name,), p=1.0)(x, rng(7))
    g_inv = reference_draws(name, 4, 33, 33, seed=7)
    for image, matrix in zip(out[:, 0], g_inv):
        expected, inside = analytic_warp(matrix)
        assert inside.float().mean() > 0.1
        assert (image - expected)[inside].abs().max() < WARP_TOLERANCE
    assert (out - x).abs().max() > 0.1


def test_blit_transforms_alone_move_pixels_exactly_where_the_reference_resampling_blurs_a_flip():
    """A difference from the reference that stays: a pipeline of blitting transforms only is an exact gather; the
    reference resamples it, which for an integer translation is exact but for a flip (the asymmetric sym6 filter
    mirrored) changes a random image by up to ~0.1."""
    x = torch.randn(1, 1, 24, 24)
    flipped = AdaptiveAugment(transforms=("xflip",), p=1.0)(x.expand(16, 1, 24, 24), rng(0))
    assert all(torch.equal(image, x[0]) or torch.equal(image, x[0].flip(2)) for image in flipped)
    assert (resample(x, scale2d(-1.0, 1.0, 1)) - x.flip(3)).abs().max() > 1e-2
    shift = translate2d(2.0, -1.0, 1)
    assert torch.allclose(resample(x, shift), augment.blit(x, shift), atol=1e-5)


# ---------------------------------------------------------------- colour


def rotate3d_reference(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """augment.py:90-99 (rotate3d), transcribed."""
    vx, vy, vz = v[0], v[1], v[2]
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    rows = [[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0 * s],
            [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0 * s],
            [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0 * s],
            [0 * s, 0 * s, 0 * s, 1 + 0 * s]]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def reference_colour(name: str, n: int, seed: int) -> torch.Tensor:
    g = rng(seed)
    eye = torch.eye(4).expand(n, 4, 4)
    if name == "brightness":  # augment.py:312-317: translate3d(b, b, b)
        b = torch.randn(n, generator=g) * 0.2
        m = eye.clone()
        m[:, :3, 3] = b[:, None]
        return m
    if name == "contrast":  # augment.py:320-325: scale3d(c, c, c)
        c = torch.exp2(torch.randn(n, generator=g) * 0.5)
        return torch.diag_embed(torch.stack([c, c, c, torch.ones(n)], -1))
    if name == "lumaflip":  # augment.py:330-334: I - 2 v v^T i, Householder
        i = torch.floor(torch.rand(n, 1, 1, generator=g) * 2)
        return torch.eye(4) - 2 * V.outer(V) * i
    if name == "hue":  # augment.py:338-342: rotate3d(v, theta)
        theta = (torch.rand(n, generator=g) * 2 - 1) * math.pi
        return rotate3d_reference(V, theta)
    assert name == "saturation"  # augment.py:346-350
    s = torch.exp2(torch.randn(n, 1, 1, generator=g) * 1.0)
    return V.outer(V) + (torch.eye(4) - V.outer(V)) * s


@pytest.mark.parametrize("name", COLOR)
def test_each_colour_matrix_at_p_1_is_the_reference_formula_and_is_applied_to_rgb_as_an_affine_map(name):
    matrix, unchanged = colour(8, 3, (name,), 1.0, rng(2))
    expected = reference_colour(name, 8, seed=2)
    assert torch.allclose(matrix, expected, atol=1e-6)
    x = torch.randn(8, 3, 5, 4)
    out = AdaptiveAugment(transforms=(name,), p=1.0)(x, rng(2))
    by_hand = torch.einsum("nij,njhw->nihw", expected[:, :3, :3], x) + expected[:, :3, 3, None, None]
    assert torch.allclose(out, by_hand, atol=1e-5)
    assert torch.equal(out[unchanged], x[unchanged]) and not unchanged.all()


def test_hue_rotation_by_2_pi_is_the_identity_and_keeps_luma():
    full_turn = rotate3d_reference(V, torch.tensor([2 * math.pi]))[0]
    assert torch.allclose(full_turn, torch.eye(4), atol=1e-6)
    assert torch.allclose(augment.rotate3d(V, torch.tensor([2 * math.pi]), 1)[0], torch.eye(4), atol=1e-6)
    matrix, _ = colour(16, 3, ("hue",), 1.0, rng(3))
    assert torch.allclose(V @ matrix, V.expand(16, 4), atol=1e-6)  # a rotation around the luma axis


def test_greyscale_gets_brightness_contrast_and_a_negative_for_the_luma_flip_but_no_hue_or_saturation():
    """augment.py:336, 344: hue and saturation need more than one channel (and draw nothing otherwise); 361-363:
    greyscale takes the mean of the matrix rows, so the Householder luma flip is x -> -x."""
    x = torch.randn(64, 1, 6, 6)
    assert torch.equal(AdaptiveAugment(transforms=("hue", "saturation"), p=1.0)(x, rng()), x)
    g = rng(5)
    AdaptiveAugment(transforms=("hue", "saturation"), p=1.0)(x, g)
    assert torch.equal(g.get_state(), rng(5).get_state())
    flipped = AdaptiveAugment(transforms=("lumaflip",), p=1.0)(x, rng(5))
    negated = torch.tensor([torch.allclose(a, -b, atol=1e-6) for a, b in zip(flipped, x)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(flipped, x)])
    assert (negated ^ kept).all() and 0.3 < negated.float().mean() < 0.7


# ---------------------------------------------------------------- p


def test_p_is_clamped_below_at_0_only_as_the_reference_adjust():
    """training_loop.py:314-315: p = max(p + sign(r_t - target) * images / (kimg * 1000), 0)."""
    pipe, p = AdaptiveAugment(target=0.6, kimg=1), 0.0
    for sign, images in [(1, 700), (1, 700), (-1, 300), (-1, 2000), (-1, 10), (1, 400)]:
        pipe.observe(torch.full((4,), float(sign)))
        pipe.adjust(images)
        p = max(p + sign * images / 1000, 0.0)
        assert pipe.p.item() == pytest.approx(p) and pipe.p.item() >= 0
    assert p == pytest.approx(0.4)


def test_p_above_1_applies_every_transform_as_p_1_does():
    x = torch.randn(8, 3, 16, 16)
    assert torch.equal(AdaptiveAugment(p=1.7)(x, rng(3)), AdaptiveAugment(p=1.0)(x, rng(3)))


# ---------------------------------------------------------------- randomness and gradients


def test_every_draw_comes_from_the_generator_passed_in():
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    out = AdaptiveAugment(p=0.8)(x, rng(11))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(AdaptiveAugment(p=0.8)(x, rng(11)), out)
    assert not torch.equal(AdaptiveAugment(p=0.8)(x, rng(12)), out)


def test_bgc_passes_second_order_gradients_for_r1():
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    pipe = AdaptiveAugment(p=1.0)
    assert torch.autograd.gradgradcheck(lambda image: pipe(image, rng(1)).square(), (x,), atol=1e-5)
