"""Image-to-image sets built deterministically from scikit-learn's 8x8 digits: embedded, so CPU runs need no download.

Every set keeps the splits of the `digits` dataset (a fixed, stratified 80/10/10), draws nothing from the run's seed,
and keeps each image's digit class as its hidden `label` (for evaluation, not in the training batch). The styles are
applied at the prepared size (image_size), after the 8x8 digit is resized.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gan.data.datamodule import prepare_images
from gan.data.digits import FRACTIONS, stratified_indices
from gan.data.translation import AttributeDataModule, PairedDataModule, TensorRecords, UnpairedDataModule
from gan.errors import UserError

INK_THRESHOLD = 127  # a pixel brighter than this is ink when outlines are drawn
INK = (255, 140, 0)  # digits_styles' domain B: thick orange strokes
TINT = (1.0, 0.35, 0.35)  # digits_attributes' `tinted`: green and blue dimmed, the image turns red
ATTRIBUTES = ("thick", "inverted", "tinted")
ATTRIBUTE_SEED = 0  # attribute vectors are part of the dataset: fixed, independent of the run's seed
DIGITS_COUNT = 1797  # images in scikit-learn's copy of the UCI digits
# digits_styles draws its two domains from disjoint halves of each split (stratified, like the splits themselves).
HALVES = {"train": ((0.0, 0.4), (0.4, 0.8)), "val": ((0.8, 0.85), (0.85, 0.9)), "test": ((0.9, 0.95), (0.95, 1.0))}


def digits(image_size: int, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The [lo, hi) fraction of every class: (uint8 [N, 1, image_size, image_size], labels, indices into load_digits())."""
    from sklearn.datasets import load_digits

    data = load_digits()
    labels = torch.from_numpy(data.target).to(torch.int64)
    index = stratified_indices(labels, lo, hi)
    images = torch.from_numpy(data.images[index.numpy()]).float().unsqueeze(1) * (255 / 16)
    return prepare_images(images, image_size, 1), labels[index], index


def edge_map(gray: torch.Tensor) -> torch.Tensor:
    """Binary outlines (0 or 255) of uint8 [N, 1, H, W] digits: the ink (> INK_THRESHOLD) minus its 3x3 erosion.

    One pixel wide at every image size; the world outside the image counts as background.
    """
    ink = (gray > INK_THRESHOLD).float()
    eroded = -F.max_pool2d(-F.pad(ink, (1, 1, 1, 1)), 3, stride=1)
    return ((ink - eroded) > 0).to(torch.uint8) * 255


def thicken(images: torch.Tensor) -> torch.Tensor:
    """Strokes dilated by one pixel: the 3x3 maximum (bright ink on a dark background)."""
    return F.max_pool2d(images.float(), 3, stride=1, padding=1).to(torch.uint8)


def scale_channels(images: torch.Tensor, factors) -> torch.Tensor:
    """[N, 1 or 3, H, W] uint8 -> [N, 3, H, W], channel c multiplied by factors[c]."""
    factors = torch.tensor(factors, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() * factors).round().clamp(0, 255).to(torch.uint8)


def render_attributes(gray: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1, H, W] digits with attrs [N, 3] (thick, inverted, tinted; 0/1) -> uint8 [N, 3, H, W], applied in that order."""
    thick, inverted, tinted = (attrs[:, k].bool().view(-1, 1, 1, 1) for k in range(3))
    images = torch.where(thick, thicken(gray), gray)
    images = torch.where(inverted, 255 - images, images).expand(-1, 3, -1, -1)
    return torch.where(tinted, scale_channels(images, TINT), images)


def attribute_assignment(count: int) -> torch.Tensor:
    """float [count, 3] of 0/1, one row per image of load_digits(), each attribute on with probability 1/2."""
    return (torch.rand(count, len(ATTRIBUTES), generator=torch.Generator().manual_seed(ATTRIBUTE_SEED)) < 0.5).float()


def require_colour(datamodule) -> None:
    if datamodule.channels != 3:
        raise UserError(f"data.channels={datamodule.channels} does not fit '{datamodule.name}': its images are in colour. "
                        f"Use data.channels=3 (or remove the override).")


class DigitsEdgesDataModule(PairedDataModule):
    """Paired: A = the digit's edge map (its binary outline), B = the digit (AtoB draws digits from their outlines)."""

    image_sizes = (8, 16, 32)
    default_image_size, default_channels = 16, 1

    def load_split(self, split: str) -> TensorRecords:
        gray, labels, _ = digits(self.image_size, *FRACTIONS[split])
        edges, plain = (prepare_images(images, self.image_size, self.channels) for images in (edge_map(gray), gray))
        return TensorRecords(self.oriented(edges, plain) | {"label": labels}, self.num_classes is not None, x_field="b")


class DigitsStylesDataModule(UnpairedDataModule):
    """Unpaired: A = plain gray digits (as RGB), B = thickened digits drawn in orange, from disjoint halves of each split."""

    image_sizes = (8, 16, 32)
    default_image_size, default_channels = 16, 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        require_colour(self)

    def load_domains(self, split: str) -> tuple[TensorRecords, TensorRecords]:
        (gray_a, labels_a, _), (gray_b, labels_b, _) = (digits(self.image_size, lo, hi) for lo, hi in HALVES[split])
        show = self.num_classes is not None
        return (TensorRecords({"x": gray_a.expand(-1, 3, -1, -1).contiguous(), "label": labels_a}, show),
                TensorRecords({"x": scale_channels(thicken(gray_b), [c / 255 for c in INK]), "label": labels_b}, show))


class DigitsAttributesDataModule(AttributeDataModule):
    """Multi-label like CelebA: every digit with 3 binary attributes (thick, inverted, tinted) from a fixed draw per image."""

    image_sizes = (8, 16, 32)
    default_image_size, default_channels = 16, 3
    attribute_names = list(ATTRIBUTES)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        require_colour(self)

    def load_split(self, split: str) -> TensorRecords:
        gray, labels, index = digits(self.image_size, *FRACTIONS[split])
        attrs = attribute_assignment(DIGITS_COUNT)[index]
        return TensorRecords({"x": render_attributes(gray, attrs), "attrs": attrs, "label": labels}, self.num_classes is not None)
