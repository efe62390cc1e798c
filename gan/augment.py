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
  p by sign(r_t - target) * (images shown in them) / (kimg * 1000), clamped to [0, 1].

All randomness comes from the torch.Generator passed in (the model's checkpointed `rng`), drawn on its device (the
CPU) and moved to the images': a resumed run repeats its augmentations exactly. Images are [N, C, H, W] in [-1, 1].
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from gan.errors import UserError, positive_float, positive_int

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


# ---- ADA: stylegan2-ada-pytorch's pixel blitting and colour transforms ('bc' without the RGB-only ones) ---------


def ada_xflip(x: Tensor, rng: torch.Generator, p: Tensor) -> Tensor:
    """Applied with probability p: a coin flip between the image and its mirror image."""
    chosen = (uniform(rng, x) < p) & (uniform(rng, x) < 0.5)
    return torch.where(chosen, x.flip(3), x)


def ada_rotate90(x: Tensor, rng: torch.Generator, p: Tensor) -> Tensor:
    """Applied with probability p: a rotation by 0, 90, 180 or 270 degrees (only 0 or 180 for non-square images)."""
    turns = torch.randint(0, 4, (len(x),), generator=rng)
    turns = per_image(turns, x).where(uniform(rng, x) < p, 0)
    square = x.shape[2] == x.shape[3]
    if not square:
        turns = turns - turns.remainder(2)
    out = x
    for k in (1, 2, 3) if square else (2,):
        out = torch.where(turns == k, x.rot90(k, dims=(2, 3)), out)
    return out


def ada_xint(x: Tensor, rng: torch.Generator, p: Tensor, max_shift: float = 0.125) -> Tensor:
    """Applied with probability p: an integer translation of up to 1/8 of the size, reflecting at the border."""
    t = (torch.rand(len(x), 2, generator=rng) * 2 - 1) * max_shift
    t = t.to(x.device) * (torch.rand(len(x), 1, generator=rng).to(x.device) < p)
    dy, dx = (t[:, 0] * x.shape[2]).round().long(), (t[:, 1] * x.shape[3]).round().long()
    return translate(x, dy, dx, "reflect")


def ada_brightness(x: Tensor, rng: torch.Generator, p: Tensor, std: float = 0.2) -> Tensor:
    b = per_image(torch.randn(len(x), generator=rng) * std, x)
    return torch.where(uniform(rng, x) < p, x + b, x)


def ada_contrast(x: Tensor, rng: torch.Generator, p: Tensor, std: float = 0.5) -> Tensor:
    c = per_image(torch.exp2(torch.randn(len(x), generator=rng) * std), x)
    return torch.where(uniform(rng, x) < p, x * c, x)


def ada_saturation(x: Tensor, rng: torch.Generator, p: Tensor, std: float = 1.0) -> Tensor:
    """Scales each pixel's colour away from the grey axis (its channel mean); the identity on greyscale images."""
    s = per_image(torch.exp2(torch.randn(len(x), generator=rng) * std), x)
    mean = x.mean(dim=1, keepdim=True)
    return torch.where(uniform(rng, x) < p, mean + (x - mean) * s, x)


ADA_TRANSFORMS: dict[str, Callable[[Tensor, torch.Generator, Tensor], Tensor]] = {
    "xflip": ada_xflip, "rotate90": ada_rotate90, "xint": ada_xint,
    "brightness": ada_brightness, "contrast": ada_contrast, "saturation": ada_saturation,
}


class AdaptiveAugment(nn.Module):
    """ADA's pipeline with its probability p (a buffer: checkpointed with the weights) and the running sum and count
    of sign(D(real)) since the last adjustment (buffers too, so a run resumed mid-interval adjusts as one that
    was not stopped)."""

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 500,
                 transforms: str | Sequence[str] = tuple(ADA_TRANSFORMS), p: float = 0.0):
        super().__init__()
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target < 1:
            raise UserError(f"model.ada_target is the value of E[sign(D(real))] that ADA holds D at, in [0, 1) (the "
                            f"paper: 0.6), got {target!r}.")
        names = split_names(transforms)
        if not names or len(set(names)) != len(names) or any(name not in ADA_TRANSFORMS for name in names):
            raise UserError(f"model.ada_transforms must name each of {', '.join(ADA_TRANSFORMS)} at most once (the "
                            f"paper's pixel blitting and colour groups: all six), got {transforms!r}. Leave out the "
                            f"ones that change what an image shows, e.g. model.ada_transforms=[xint,brightness,contrast] "
                            f"for digits, where a flip or a 90-degree turn turns a 6 into a 9.")
        self.target, self.transforms = float(target), tuple(names)
        self.interval = positive_int("model.ada_interval", interval)
        self.kimg = positive_float("model.ada_kimg", kimg)
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("signs", torch.zeros(2))  # sum of sign(D(real)), number of D outputs

    def forward(self, x: Tensor, rng: torch.Generator) -> Tensor:
        for name in self.transforms:
            x = ADA_TRANSFORMS[name](x, rng, self.p)
        return x

    @torch.no_grad()
    def observe(self, real_logits: Tensor) -> None:
        """D's outputs on (augmented) real images in a discriminator step."""
        self.signs[0] += real_logits.detach().float().sign().sum()
        self.signs[1] += real_logits.numel()

    @torch.no_grad()
    def adjust(self, images: int) -> Tensor | None:
        """After `images` real images were shown: p += sign(r_t - target) * images / (kimg * 1000), in [0, 1].
        Returns r_t (None when D judged no real image since the last adjustment)."""
        total, count = self.signs
        if count == 0:
            return None
        r_t = total / count
        self.p.copy_((self.p + torch.sign(r_t - self.target) * images / (self.kimg * 1000)).clamp(0, 1))
        self.signs.zero_()
        return r_t

    def extra_repr(self) -> str:
        return f"target={self.target}, interval={self.interval}, kimg={self.kimg}, transforms={','.join(self.transforms)}"


def make_augment(kind: str, policy: str | Sequence[str], ada_target: float, ada_interval: int,
                 ada_kimg: float, ada_transforms: str | Sequence[str] = tuple(ADA_TRANSFORMS)) -> nn.Module | None:
    """The pipeline `model.augment` names (None for `none`); every setting is checked, used or not."""
    if kind not in AUGMENTS:
        raise UserError(f"model.augment must be one of {', '.join(AUGMENTS)} (DiffAugment: Zhao et al. 2020; ADA: "
                        f"Karras et al. 2020), got {kind!r}.")
    diffaugment = DiffAugment(policy)
    ada = AdaptiveAugment(ada_target, ada_interval, ada_kimg, ada_transforms)
    return {"none": None, "diffaugment": diffaugment, "ada": ada}[kind]
