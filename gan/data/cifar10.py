"""CIFAR-10 from the python pickles in `<root>/cifar-10-batches-py/` (torchvision's layout)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from gan.data.datamodule import ImageDataModule, holdout
from gan.errors import UserError

FOLDER = "cifar-10-batches-py"
FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
VAL_SIZE = 5_000  # the last images of the training batches


class CIFAR10DataModule(ImageDataModule):
    """32x32 RGB, 10 classes: train = data_batch_1..5 minus the last 5,000 images (val), test = test_batch."""

    def load_split(self, split: str):
        folder = self.root_dir / FOLDER
        paths = [folder / name for name in FILES]
        self.require(lambda: [p for p in paths if not p.is_file()], "CIFAR-10",
                     f"{folder}/{{{','.join(FILES)}}} (cifar-10-python.tar.gz extracted)", "CIFAR10")
        batches = [read_batch(p) for p in (paths[-1:] if split == "test" else paths[:-1])]
        images = torch.from_numpy(np.concatenate([images for images, _ in batches]))
        labels = torch.from_numpy(np.concatenate([labels for _, labels in batches]))
        if split != "test":
            images, labels = holdout(split, images, labels, VAL_SIZE)
        return self.prepared(images, labels)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickle {b'data': uint8 [N, 3072] (R, G, B planes, row-major), b'labels': N ints} -> ([N, 3, 32, 32], [N])."""
    try:
        with path.open("rb") as file:
            batch = pickle.load(file, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as error:  # unpickling garbage raises anything from UnpicklingError to KeyError
        raise UserError(f"{path} is not a CIFAR-10 python batch (a pickled dict with b'data' uint8 [N, 3072] and "
                        f"b'labels'): {type(error).__name__}: {error}. Delete {path.parent} and download again "
                        f"(data.download=true).") from error
    if len(images) != len(labels):
        raise UserError(f"{path} holds {len(images)} images but {len(labels)} labels: it is corrupt. "
                        f"Delete {path.parent} and download again (data.download=true).")
    return images, labels
