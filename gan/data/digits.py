"""The 8x8 UCI handwritten digits shipped inside scikit-learn: the embedded dataset that works offline."""

from __future__ import annotations

import torch

from gan.data.datamodule import ImageDataModule

SPLIT_SEED = 0  # fixed so that val/test never change with the run's seed
FRACTIONS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}


class DigitsDataModule(ImageDataModule):
    """1,797 images in 10 classes, values 0..16 scaled to [0, 1]; stratified 80/10/10 split. Needs no files."""

    image_sizes = (8, 16, 32, 64)
    default_channels = 1

    def load_split(self, split: str):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images).float().unsqueeze(1) * (255 / 16)
        labels = torch.from_numpy(digits.target)
        index = stratified_indices(labels, *FRACTIONS[split])
        return self.prepared(images[index], labels[index])


def stratified_indices(labels: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Indices of the [lo, hi) fraction of every class, after a fixed shuffle within the class."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    chosen = []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        chosen.append(members[round(lo * len(members)):round(hi * len(members))])
    return torch.cat(chosen).sort().values
