"""MNIST and Fashion-MNIST from torchvision's on-disk layout: `<root>/<MNIST|FashionMNIST>/raw/*-ubyte[.gz]`."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from gan.data.datamodule import ImageDataModule, holdout
from gan.errors import UserError

VAL_SIZE = 5_000  # the last images of the training file
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class MNISTDataModule(ImageDataModule):
    """28x28 grayscale digits, 10 classes: train = training file minus its last 5,000 (val), test = t10k file."""

    folder = "MNIST"  # torchvision's class name, which is also its folder under root
    default_channels = 1

    def load_split(self, split: str):
        raw = self.root_dir / self.folder / "raw"
        stems = [raw / name for pair in FILES.values() for name in pair]
        self.require(lambda: [p for p in stems if find_idx(p) is None], self.folder,
                     f"{raw}/{{{','.join(p.name for p in stems)}}} (each may also be .gz)", self.folder)
        images_path, labels_path = (find_idx(raw / name) for name in FILES["test" if split == "test" else "train"])
        images = torch.from_numpy(read_idx(images_path, ndim=3)).unsqueeze(1)
        labels = torch.from_numpy(read_idx(labels_path, ndim=1))
        if len(images) != len(labels):
            raise UserError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels. "
                            f"One of them is truncated or from another dataset: delete both and download again.")
        if split != "test":
            images, labels = holdout(split, images, labels, VAL_SIZE)
        return self.prepared(images, labels)


class FashionMNISTDataModule(MNISTDataModule):
    """Zalando's Fashion-MNIST: same format and splits as MNIST, under `<root>/FashionMNIST/raw/`."""

    folder = "FashionMNIST"


def find_idx(path: Path) -> Path | None:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte idx file (magic 0x0000 0x08 ndim, big-endian int32 sizes, then the bytes)."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise UserError(f"Cannot read {path} ({error}): the file is corrupt. Delete it and download it again "
                        f"(data.download=true).") from error
    header = 4 + 4 * ndim
    sizes = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)) if len(data) >= header else ()
    if data[:4] != bytes([0, 0, 8, ndim]) or len(data) != header + int(np.prod(sizes)):
        raise UserError(f"{path} is not a valid idx file of unsigned bytes with {ndim} dimension(s) (expected magic number "
                        f"0x000008{ndim:02x}, {header} header bytes, then the data): it is corrupt or truncated. "
                        f"Delete it and download it again (data.download=true).")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(sizes)
