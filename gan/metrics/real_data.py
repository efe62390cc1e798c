"""Real images for the metrics: a split (or a fixed random subset of it) as tensors, with a fingerprint."""

from __future__ import annotations

import copy

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from gan.errors import UserError
from gan.metrics.quantize import to_uint8
from gan.storage import sha256_tensors

SUBSET_SEED = 0  # the real subset is part of the protocol: it never changes with the run's seed

# Class counts of the labelled datasets, used when the run itself is unconditional (labels hidden).
# The embedded image-to-image sets keep the digit class as a hidden label (gan.data.digits_translation).
KNOWN_NUM_CLASSES = {"digits": 10, "mnist": 10, "mnist5k": 10, "fashion_mnist": 10, "cifar10": 10,
                     "digits_edges": 10, "digits_styles": 10, "digits_attributes": 10}


def subset_indices(size: int, n: int | None) -> torch.Tensor:
    """The first `n` of a fixed permutation of range(size): nested, so n=1000 is inside n=2000."""
    if n is None or n >= size:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(SUBSET_SEED))[:n].sort().values


def load_tensors(dataset: Dataset, n: int | None = None, uint8: bool = False,
                 batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of `n` samples (all when None) of a dataset of (x, y) pairs, stacked on the CPU.

    With `uint8` the images are quantised batch by batch (a quarter of the memory of floats).
    """
    indices = subset_indices(len(dataset), n)
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False, num_workers=0)
    xs, ys = zip(*[(to_uint8(x) if uint8 else x.float(), y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys).long()


def fingerprint(dataset: Dataset) -> str:
    """Cheap identity of a split's contents: its size and three of its samples (first, middle, last)."""
    picks = sorted({0, len(dataset) // 2, len(dataset) - 1})
    return f"{len(dataset)}-" + sha256_tensors(*[dataset[i][0] for i in picks])


def labelled_dataset(datamodule, split: str) -> tuple[Dataset, int]:
    """A split with its class labels, even when the run is unconditional (which hides them as -1)."""
    if datamodule.num_classes is not None:
        return datamodule.dataset(split), int(datamodule.num_classes)
    if datamodule.name not in KNOWN_NUM_CLASSES:
        raise UserError(
            f"The classifier backbone needs class labels, but dataset '{datamodule.name}' has none. It is "
            f"available for {', '.join(KNOWN_NUM_CLASSES)}. Use metrics.backbone=inception for this dataset."
        )
    # The datamodule serves labels only when num_classes is set: read the split through a labelled view.
    view = copy.copy(datamodule)
    view.num_classes, view._datasets = KNOWN_NUM_CLASSES[datamodule.name], {}
    return view.dataset(split), view.num_classes
