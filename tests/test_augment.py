"""DiffAugment and ADA (gan.augment): each transform against the official semantics, shapes and gradients; D sees
only augmented images in every loss of every noise -> image GAN; ADA's p moves towards the target, clamps, is
logged and resumes exactly; ADA does not leak (a generator trained against it is not taught the augmentation)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import assert_same, compose_config, final_state
from gan.augment import ADA_TRANSFORMS, AdaptiveAugment, DiffAugment, parse_policy
from gan.errors import UserError
from gan.train import load_checkpoint, train

TINY_DCGAN = ["model=dcgan", "data=digits", "data.image_size=8", "data.batch_size=8", "model.latent_dim=8",
              "model.generator.dcgan.width=8", "model.discriminator.dcgan.width=8"]
TINY = {  # the smallest networks of each family built on GANModule
    "dcgan": TINY_DCGAN,
    "wgan_gp": ["model=wgan_gp", *TINY_DCGAN[1:], "model.arch=dcgan"],
    "sngan": ["model=sngan", *TINY_DCGAN[1:], "model.arch=dcgan"],
    "acgan": ["model=acgan", *TINY_DCGAN[1:]],
    "progan": ["model=progan", "data.image_size=8", "data.batch_size=8", "model.latent_dim=8",
               "model.generator.channel_base=32", "model.generator.channel_max=8",
               "model.discriminator.channel_base=32", "model.discriminator.channel_max=8"],
    "stylegan2": ["model=stylegan2", "data.image_size=8", "data.batch_size=8", "model.latent_dim=16",
                  "model.generator.w_dim=16", "model.generator.mapping_layers=2", "model.generator.channel_base=64",
                  "model.generator.channel_max=8", "model.discriminator.channel_base=64",
                  "model.discriminator.channel_max=8", "model.r1_every=2"],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def shifted(x: torch.Tensor, dy: int, dx: int, mode: str) -> torch.Tensor:
    """out[i, j] = x[i + dy, j + dx], by padding and slicing (independent of gan.augment's gather)."""
    h, w = x.shape[-2:]
    m = max(abs(dy), abs(dx), 1)
    padded = F.pad(x, [m] * 4, mode="constant" if mode == "zeros" else "reflect")
    return padded[..., m + dy:m + dy + h, m + dx:m + dx + w]


# ---------------------------------------------------------------- DiffAugment


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_every_diffaugment_policy_keeps_the_shape_passes_gradients_and_repeats_with_the_seed(policy):
    x = torch.randn(6, 3, 16, 12, requires_grad=True)
    augment = DiffAugment(policy)
    out = augment(x, rng(1))
    assert out.shape == x.shape and not torch.equal(out, x)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any(dim=(1, 2, 3)).all()  # every image's input gets one
    assert torch.equal(augment(x, rng(1)), out) and not torch.equal(augment(x, rng(2)), out)


def test_color_is_the_official_brightness_then_saturation_then_contrast():
    x = torch.randn(5, 3, 4, 4)
    b, s, c = torch.rand(3, 5, generator=rng(3)).view(3, 5, 1, 1, 1)  # the three draws, in the official order
    expected = x + (b - 0.5)
    expected = (expected - expected.mean(1, keepdim=True)) * (2 * s) + expected.mean(1, keepdim=True)
    expected = (expected - expected.mean((1, 2, 3), keepdim=True)) * (c + 0.5) + expected.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(DiffAugment("color")(x, rng(3)), expected, atol=1e-6)


def test_translation_shifts_by_at_most_an_eighth_of_the_size_with_zeros_shifted_in():
    x = torch.arange(1.0, 257.0).view(1, 1, 16, 16).repeat(64, 1, 1, 1)  # no zeros: every pixel identifiable
    out = DiffAugment("translation")(x, rng())
    shifts = []
    for image in out:
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(image, shifted(x[0], dy, dx, "zeros"))]
        assert len(matches) == 1
        shifts += matches
    assert len(set(shifts)) > 10  # of the 25 shifts of up to 16 / 8 = 2 pixels


def test_cutout_zeroes_one_square_of_half_the_size_clipped_at_the_border():
    out = DiffAugment("cutout")(torch.ones(64, 1, 16, 16), rng())
    sizes = set()
    for image in out[:, 0]:
        rows, cols = (image == 0).any(1).nonzero().flatten(), (image == 0).any(0).nonzero().flatten()
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()  # one rectangle...
        assert (image == 0).sum() == len(rows) * len(cols) and (image[image != 0] == 1).all()  # ...the rest untouched
        assert 4 <= len(rows) <= 8 and 4 <= len(cols) <= 8  # 8x8 with its centre inside the image
        sizes.add((len(rows), len(cols)))
    assert (8, 8) in sizes and len(sizes) > 1


@pytest.mark.parametrize("policy", ["color,zoom", "", "color,color", "Color"])
def test_unknown_or_repeated_policy_names_are_refused(policy):
    with pytest.raises(UserError, match="model.augment_policy"):
        parse_policy(policy)


def test_policy_from_the_config_a_string_or_a_list(tmp_path):
    assert parse_policy(["translation", "color"]) == ("translation", "color")
    module = instantiate(compose_config(tmp_path, *TINY_DCGAN, "model.augment=diffaugment",
                                        "model.augment_policy='cutout,color'").model)
    assert module.augment_pipe.policy == ("cutout", "color")


def test_ada_applies_the_configured_transforms_only(tmp_path):
    module = instantiate(compose_config(tmp_path, *TINY_DCGAN, "model.augment=ada",
                                        "model.ada_transforms=brightness").model)
    assert module.augment_pipe.transforms == ("brightness",)
    module.augment_pipe.p.fill_(1.0)
    x = torch.randn(32, 1, 8, 8)
    shift = module.augment_pipe(x, torch.Generator().manual_seed(0)) - x
    # brightness alone: one amount added to every pixel of an image, no pixel moved
    assert shift.flatten(1).std(dim=1).max() < 1e-6 and shift.abs().max() > 0
    default = instantiate(compose_config(tmp_path, *TINY_DCGAN, "model.augment=ada").model)
    assert default.augment_pipe.transforms == ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                                               "brightness", "contrast", "lumaflip", "hue", "saturation")  # 'bgc'


@pytest.mark.parametrize("override,match", [
    ("model.augment=flip", "model.augment must be one of none, diffaugment, ada"),
    ("model.augment_policy='color,zoom'", "model.augment_policy"),
    ("model.ada_target=1.5", "model.ada_target"), ("model.ada_interval=0", "model.ada_interval"),
    ("model.ada_kimg=0", "model.ada_kimg"), ("model.ada_transforms=[xflip,zoom]", "model.ada_transforms"),
    ("model.ada_transforms=[]", "model.ada_transforms"),
])
def test_bad_augment_settings_give_a_clear_error(hydra_run_dir, override, match):
    with pytest.raises(UserError, match=match):
        train(compose_config(hydra_run_dir, *TINY_DCGAN, "model.augment=ada", override))
    assert not hydra_run_dir.exists()


# ---------------------------------------------------------------- what D sees, in every model


def d_inputs(module) -> list[torch.Tensor]:
    seen = []
    module.discriminator.register_forward_pre_hook(lambda net, args, kwargs=None: seen.append(args[0].detach()))
    return seen


@pytest.mark.parametrize("model", list(TINY))
def test_d_sees_only_augmented_real_and_fake_images_in_every_loss(tmp_path, model):
    """Cutout zeroes a square of every image D judges: real images of ones, generated images, the regulariser's
    inputs, G's fakes; without augmentation generated images have hardly any pixel exactly 0."""
    overrides = [*TINY[model], "model.augment=diffaugment", "model.augment_policy=cutout"]
    if model in ("dcgan", "sngan", "acgan"):
        overrides += ["model.regularizer=r1", "model.reg_weight=1"]
    module = instantiate(compose_config(tmp_path, *overrides).model)
    seen = d_inputs(module)
    batch = {"x": torch.ones(8, 1, 8, 8), "y": torch.arange(8) % 10}
    losses = [module.discriminator_loss(batch)]
    if module.reg_every > 1:
        losses.append(module.lazy_regularization(batch))
    d_calls = len(seen)
    assert d_calls >= 3  # real, fake, and the regulariser's (R1 on real, GP on interpolates)
    losses.append(module.generator_loss(batch))
    assert len(seen) == d_calls + 1
    minimum = 1 if model == "progan" else 4  # ProGAN starts at 4x4: a 2x2 square, clipped to 1 pixel at worst
    assert all(((x == 0).flatten(1).sum(1) >= minimum).all() for x in seen)
    sum(losses).backward()  # G's loss reaches G through the augmentation
    assert all(torch.isfinite(p.grad).all() for p in module.generator.parameters() if p.grad is not None)
    assert any(p.grad.abs().sum() > 0 for p in module.generator.parameters() if p.grad is not None)
    plain = instantiate(compose_config(tmp_path, *TINY[model]).model)
    seen = d_inputs(plain)
    plain.generator_loss(batch)
    assert ((seen[0] == 0).flatten(1).sum(1) < minimum).any()


# ---------------------------------------------------------------- ADA


def test_ada_p_rises_while_d_overfits_falls_otherwise_and_never_goes_below_0():
    pipe = AdaptiveAugment(target=0.6, interval=4, kimg=1)  # 1000 images take p from 0 to 1
    pipe.observe(torch.tensor([2.0, 0.5, 3.0, 0.1]))  # D is sure every real image is real: r_t = 1
    assert pipe.adjust(images=250).item() == 1.0 and pipe.p.item() == pytest.approx(0.25)
    pipe.observe(torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0]))
    assert pipe.adjust(images=100).item() == pytest.approx(0.2) and pipe.p.item() == pytest.approx(0.15)
    assert pipe.adjust(images=100).item() == 0 and pipe.p.item() == pytest.approx(0.15)  # nothing observed: no move
    pipe.observe(-torch.ones(8))
    pipe.adjust(images=1000)
    assert pipe.p.item() == 0.0
    for _ in range(3):
        pipe.observe(torch.ones(8))
        pipe.adjust(images=600)
    assert pipe.p.item() == pytest.approx(1.8)  # no clamp above, as stylegan2-ada-pytorch (tests/test_ada_bgc.py)


def test_ada_with_p_0_leaves_images_unchanged_and_with_p_1_changes_them():
    x = torch.randn(16, 3, 8, 8)
    assert torch.equal(AdaptiveAugment(p=0.0)(x, rng()), x)
    assert (AdaptiveAugment(p=1.0)(x, rng()) != x).flatten(1).any(1).all()


@pytest.mark.parametrize("name", list(ADA_TRANSFORMS))
def test_every_ada_transform_is_differentiable(name):
    x = torch.randn(16, 3, 8, 8, requires_grad=True)
    out = AdaptiveAugment(transforms=(name,), p=1.0)(x, rng())
    assert out.shape == x.shape and not torch.equal(out, x)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any(dim=(1, 2, 3)).all()


def test_ada_blits_pixels_flips_rotations_and_reflected_integer_translations():
    x = torch.randn(1, 1, 16, 16).expand(200, -1, -1, -1)
    flips = AdaptiveAugment(transforms=("xflip",), p=0.5)(x, rng())
    flipped = torch.tensor([torch.equal(i, x[0].flip(2)) for i in flips])
    assert all(f or torch.equal(i, x[0]) for f, i in zip(flipped, flips))
    assert 0.15 < flipped.float().mean() < 0.35  # p / 2
    rotations = AdaptiveAugment(transforms=("rotate90",), p=1.0)(x, rng())
    turns = [[k for k in range(4) if torch.equal(i, x[0].rot90(k, (1, 2)))] for i in rotations]
    assert all(len(k) == 1 for k in turns) and {k[0] for k in turns} == {0, 1, 2, 3}
    shifts = AdaptiveAugment(transforms=("xint",), p=1.0)(x, rng())
    for image in shifts:  # up to 16 / 8 = 2 pixels, reflected at the border
        assert sum(torch.equal(image, shifted(x[0], dy, dx, "reflect")) for dy in range(-2, 3) for dx in range(-2, 3)) == 1


def test_ada_keeps_the_identity_the_most_likely_outcome_below_p_1():
    """Non-leaking (Karras et al. 2020, Section 2.2): the blitting transforms at p = 0.7 give the unaugmented image
    more often than any other of the 4 x 2 x 25 outcomes."""
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(4000, -1, -1, -1)
    out = AdaptiveAugment(transforms=("xflip", "rotate90", "xint"), p=0.7)(x, rng())
    outcomes, counts = out.flatten(1).unique(dim=0, return_counts=True)
    assert torch.equal(outcomes[counts.argmax()], x[0].flatten())


def train_point_generator(p: float, steps: int = 400, seed: int = 0) -> tuple[float, float]:
    """A Dirac GAN (Mescheder et al. 2018) on one asymmetric 4x4 image x0: G is a learnable image started at the
    mirror image of x0, D a logistic regression with an L2 penalty (R1 of a linear D); both see x-flip-only ADA at a
    fixed p. Returns G's distance to x0 and to its mirror image."""
    generator = rng(seed)
    torch.manual_seed(seed)  # D's initial weights
    x0 = torch.tensor([-1.0, -0.5, 0.5, 1.0]).repeat(4, 1).view(1, 1, 4, 4)
    pipe = AdaptiveAugment(transforms=("xflip",), p=p)
    g = torch.nn.Parameter(x0.flip(3).clone())
    d = torch.nn.Linear(16, 1)
    opt_g, opt_d = (torch.optim.Adam(params, lr=0.01, betas=(0.5, 0.99)) for params in ([g], d.parameters()))
    for _ in range(steps):
        real, fake = (pipe(image.expand(64, -1, -1, -1), generator) for image in (x0, g.detach()))
        d_loss = F.softplus(-d(real.flatten(1))).mean() + F.softplus(d(fake.flatten(1))).mean() + d.weight.square().sum()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-d(pipe(g.expand(64, -1, -1, -1), generator).flatten(1))).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    return (g - x0).norm().item(), (g - x0.flip(3)).norm().item()


def test_a_generator_trained_against_ada_below_p_1_is_not_taught_the_flip():
    """At p = 0.6 the reals are flipped 30% of the time, a flipped G's images 70%: D tells them apart and pushes G to
    x0. At p = 1 (flip probability 1/2, leaking) the augmented distributions of x0 and its mirror are the same, and G
    stays flipped: the test can tell a leaking pipeline from a non-leaking one."""
    apart = 40**0.5  # ||x0 - flip(x0)||
    to_x0, to_mirror = train_point_generator(0.6)
    assert to_x0 < 0.2 * apart < to_mirror
    to_x0, to_mirror = train_point_generator(1.0)
    assert to_mirror < 0.2 * apart < to_x0


# ---------------------------------------------------------------- training through the composed config


@pytest.mark.parametrize("augment", ["diffaugment", "ada"])
def test_a_short_run_trains_with_each_augmentation(tmp_path, augment):
    run = tmp_path / "run"
    train(compose_config(run, *TINY_DCGAN, f"model.augment={augment}", "model.ada_interval=2", "model.ada_kimg=0.1",
                         "g_iters=6", "model.log_every=1", "model.d_lr=0.005"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "train/d_loss" in r]
    assert len(records) == 6 and all(torch.isfinite(torch.tensor([r["train/d_loss"], r["train/g_loss"]])).all()
                                     for r in records)
    _, _, module = load_checkpoint(run)
    assert module.sample(3)["x"].shape == (3, 1, 8, 8)
    if augment == "ada":  # p moves by 8 images x 2 iterations / 100 after iterations 2, 4 and 6
        p = [r["train/ada_p"] for r in records]
        assert p[:2] == [0.0, 0.0] and p[2] == p[3] and p[4] == p[5]
        steps = [round(b - a, 5) for a, b in ((p[1], p[2]), (p[3], p[4]))]
        assert all(step in (0.16, -0.16, 0.0) for step in steps) and any(steps)
        assert all((step > 0) == (r["train/ada_rt"] > 0.6) for step, r in zip(steps, (records[2], records[4]))
                   if step != 0)
    else:
        assert "train/ada_p" not in records[0]


def test_ada_stopped_mid_interval_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    args = [*TINY_DCGAN, "model.augment=ada", "model.ada_interval=3", "model.ada_kimg=0.05", "model.log_every=1",
            "model.d_lr=0.005"]  # D overfits within a few iterations: p rises 0 -> 0.48 -> 0.96
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose_config(whole, *args, "g_iters=10"))
    train(compose_config(parts, *args, "g_iters=4"))  # one iteration of the second interval accumulated
    stopped = torch.load(parts / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert stopped["augment_pipe.signs"][1] > 0  # the interval's running sign count is part of the state
    resume = {"resume": str(parts / "checkpoints" / "last.ckpt")}
    train(OmegaConf.merge(compose_config(parts, *args, "g_iters=10"), resume), ["g_iters=10"])
    state = final_state(whole)
    assert 0 < state["state_dict"]["augment_pipe.p"] < 1  # p moved, so its resume is tested
    assert_same(state, final_state(parts))
