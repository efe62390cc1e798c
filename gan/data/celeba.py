"""CelebA aligned faces from torchvision's layout: `<root>/celeba/img_align_celeba/*.jpg` + `list_eval_partition.txt`."""

from __future__ import annotations

import os

from gan.data.datamodule import ImageDataModule, ImageFiles
from gan.errors import UserError

PARTITIONS = {"train": "0", "val": "1", "test": "2"}


class CelebADataModule(ImageDataModule):
    """202,599 unlabelled 178x218 faces, centre-cropped to `crop` and resized; the official partition file splits them."""

    default_image_size = 64

    def __init__(self, *args, crop: int = 140, **kwargs):
        super().__init__(*args, **kwargs)
        self.crop = int(crop)

    def load_split(self, split: str):
        folder = self.root_dir / "celeba"
        images, partition = folder / "img_align_celeba", folder / "list_eval_partition.txt"
        self.require(lambda: [p for p in (images, partition) if not p.exists()], "CelebA",
                     f"{images}/000001.jpg ... and {partition} (lines like '000001.jpg 0', 0/1/2 = train/val/test)",
                     "CelebA", split="all")
        names = []
        for number, line in enumerate(partition.read_text().splitlines(), 1):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in PARTITIONS.values():
                raise UserError(f"{partition}, line {number}: expected '<image name> <0|1|2>', got '{line}'. "
                                f"The file is corrupt: delete {folder} and download again (data.download=true).")
            if fields[1] == PARTITIONS[split]:
                names.append(fields[0])
        present = set(os.listdir(images))
        missing = [name for name in names if name not in present]
        if missing:
            raise UserError(f"{images / missing[0]} is listed in {partition} but does not exist ({len(missing)} of the "
                            f"{len(names)} {split} images are missing). Extract img_align_celeba.zip completely into {folder}.")
        return self.decoded(ImageFiles([images / name for name in names], self.image_size, self.channels, self.crop))
