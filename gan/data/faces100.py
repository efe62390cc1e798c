"""The 100 faces of scikit-image's `lfw_subset`: the "100-shot" setting of DiffAugment (Zhao et al. 2020), offline."""

from __future__ import annotations

import numpy as np
import torch

from gan.data.datamodule import ImageDataModule, package_file

NUM_FACES = 100  # lfw_subset.npy holds 200 25x25 crops: the first 100 are faces, the other 100 are not


class Faces100DataModule(ImageDataModule):
    """100 grey 25x25 faces from Labeled Faces in the Wild, values in [0, 1], resized to `image_size`; unlabelled.

    Read from the file scikit-image ships, `skimage/data/lfw_subset.npy`, without importing scikit-image. In the
    100-shot setting all 100 images are training data, and DiffAugment reports FID against the training set: so
    val and test are the same 100 images. FID on either split measures the distance to the training images
    themselves (and the real-vs-real reference row, train against val, is 0 by construction).
    """

    default_channels = 1

    def load_split(self, split: str):
        path = package_file("skimage", "data/lfw_subset.npy", "scikit-image", self.name)
        faces = torch.from_numpy(np.load(path)[:NUM_FACES]).float().unsqueeze(1) * 255
        return self.prepared(faces, torch.full((NUM_FACES,), -1))
