"""2-D Gaussian mixtures of the mode-collapse benchmarks (VEEGAN/PacGAN): ring of 8 and grid of 25."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from gan.data.datamodule import GANDataModule
from gan.errors import UserError

SPLIT_SIZES = {"train": 100_000, "val": 10_000, "test": 10_000}
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}  # fixed: every run sees the same points


def mixture(name: str) -> tuple[torch.Tensor, float]:
    """(means [K, 2], std) of an equal-weight isotropic Gaussian mixture."""
    if name == "ring":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([angles.cos(), angles.sin()], 1).float(), 0.01
    if name == "grid":
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        return torch.cartesian_prod(axis, axis), 0.05
    raise UserError(f"Unknown toy mixture '{name}'. Expected data.name=ring (8 Gaussians on the unit circle, std 0.01) "
                    f"or data.name=grid (25 Gaussians on {{-4,-2,0,2,4}}^2, std 0.05).")


class ToyDataModule(GANDataModule):
    """Raw 2-D coordinates (not rescaled); y is the mode index when num_classes is set, else -1."""

    def __init__(self, name: str, shape: Sequence[int], num_classes: int | None, batch_size: int,
                 num_workers: int = 0, seed: int = 0, train_limit: int | None = None, backbone: str = "toy"):
        super().__init__(name, shape, num_classes, batch_size, num_workers, seed, train_limit, backbone)
        self.means, self.std = mixture(name)

    def load_split(self, split: str):
        generator = torch.Generator().manual_seed(SPLIT_SEEDS[split])
        modes = torch.randint(len(self.means), (SPLIT_SIZES[split],), generator=generator)
        points = self.means[modes] + self.std * torch.randn(len(modes), 2, generator=generator)
        return self.pairs(points, modes)
