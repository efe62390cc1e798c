"""pix2pix's aligned layout: `<root>/{train,val,test}/` images that hold the pair A | B side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from gan.data.datamodule import prepare_images, read_image
from gan.data.folder import hash_percent, image_files
from gan.data.translation import PairedDataModule, Records
from gan.errors import UserError

LAYOUT = ("<root>/train/, <root>/val/ and <root>/test/ holding .jpg/.png images, each a pair side by side "
          "(A on the left, B on the right, width = 2 x height); val/ and test/ are optional")
SOURCE = ("junyanz/pytorch-CycleGAN-and-pix2pix's `bash ./datasets/download_pix2pix_dataset.sh facades` "
          "(or cityscapes, maps, edges2shoes, edges2handbags, night2day) downloads one into ./datasets/<name>")
HELD_OUT = {"val": (0, 5), "test": (5, 10)}  # percent of the hash range of train/ taken when the folder is missing


class AlignedDataModule(PairedDataModule):
    """Pairs read from side-by-side images; each half is resized to image_size. Training pairs are jittered like
    junyanz's (resized to data.load_size, one random image_size crop and flip for both halves: `Jitter`).

    A missing val/ or test/ folder is replaced by a held-out 5% of train/, chosen by a stable hash of each file's path
    relative to train/ (the rule of the image-folder dataset): fixed, independent of the seed, and a file keeps its
    split as train/ grows. Many pix2pix datasets ship only train/ and val/ (maps, cityscapes, edges2shoes): their val/
    is then val and test is held out of train/.
    """

    default_image_size = 256

    def load_split(self, split: str) -> "AlignedFiles":
        if self.root is None:
            raise UserError(f"No dataset folder given for '{self.name}' (data.root is null). Pass data.root=/path/to/facades, "
                            f"a folder in pix2pix's aligned layout: {LAYOUT}. To get one: {SOURCE}.")
        root = self.root_dir
        train = root / "train"
        if not train.is_dir():
            raise UserError(f"The aligned dataset was not found: {train} does not exist. The expected layout is {LAYOUT}. "
                            f"To get one: {SOURCE}; then pass data.root=/path/to/that/folder.")
        folder = root / split
        if split != "train" and folder.is_dir():
            files = self.pictures(folder)
        else:
            missing = [s for s in HELD_OUT if not (root / s).is_dir()]
            bounds = [HELD_OUT[s] for s in missing if split == "train" or s == split]
            held = lambda path: any(lo <= hash_percent(path.relative_to(train).as_posix()) < hi for lo, hi in bounds)
            files = [p for p in self.pictures(train) if held(p) != (split == "train")]
        return AlignedFiles(files, self.image_size, self.channels, self.direction == "BtoA")

    def pictures(self, folder: Path) -> list[Path]:
        files = image_files(folder)
        if not files:
            raise UserError(f"{folder} holds no images (looked for .jpg/.png and other image files at any depth). "
                            f"The expected layout is {LAYOUT}. Put the paired images there or pass data.root=/path/to/dataset.")
        for path in files:
            with Image.open(path) as image:
                width, height = image.size
            if width != 2 * height:
                raise UserError(f"{path} is {width}x{height} pixels, but an aligned pair must be twice as wide as high "
                                f"(A on the left, B on the right, width = 2 x height). Replace or remove this file; "
                                f"unpaired domains belong in the unaligned layout (data=unaligned, trainA/ and trainB/).")
        return files


class AlignedFiles(Records):
    """Side-by-side images decoded per record into {"a", "b"} (swapped when `reverse`); labels unknown (-1)."""

    x_field = "b"

    def __init__(self, paths: Sequence[Path], image_size: int, channels: int, reverse: bool):
        super().__init__(torch.full((len(paths),), -1), show_labels=False)
        self.paths, self.image_size, self.channels, self.reverse = list(paths), image_size, channels, reverse

    def at_size(self, size: int) -> "AlignedFiles":
        return self if size == self.image_size else AlignedFiles(self.paths, size, self.channels, self.reverse)

    def records(self, indices) -> dict[str, torch.Tensor]:
        pairs = [self.halves(int(i)) for i in indices]
        left, right = (torch.stack(side) for side in zip(*pairs))
        a, b = (right, left) if self.reverse else (left, right)
        return {"a": a, "b": b, "label": self.true_labels[torch.as_tensor(indices, dtype=torch.int64)]}

    def halves(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = read_image(self.paths[i], self.channels)
        half = pixels.shape[-1] // 2
        return tuple(prepare_images(side[None], self.image_size, self.channels)[0]
                     for side in (pixels[..., :half], pixels[..., half:]))
