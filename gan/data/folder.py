"""Any folder of images (searched recursively), split 90/5/5 by a stable hash of each file's relative path."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

from PIL import Image

from gan.data.datamodule import ImageDataModule, ImageFiles
from gan.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SPLIT_BOUNDS = {"train": (0, 90), "val": (90, 95), "test": (95, 100)}  # percent of the hash range


class FolderDataModule(ImageDataModule):
    """Unlabelled images: centre-cropped to a square and resized; a file keeps its split as the folder grows."""

    default_image_size = 64

    @cached_property
    def files(self) -> list[Path]:
        """Every image under root, sorted; each header opened once so a broken file fails here, not mid-training."""
        if self.root is None:
            raise UserError("No image folder given (data.root is null). Pass data.root=/path/to/images, a folder whose "
                            f"images (any depth; {' '.join(EXTENSIONS)}) are the training data.")
        root = self.root_dir
        if not root.is_dir():
            raise UserError(f"The image folder {root} does not exist or is not a folder. Pass data.root=/path/to/images.")
        files = image_files(root)
        if not files:
            raise UserError(f"The image folder {root} holds no images: looked recursively for files ending in "
                            f"{', '.join(EXTENSIONS)} (any case). Put images there or pass data.root=/path/to/images.")
        return files

    def load_split(self, split: str):
        lo, hi = SPLIT_BOUNDS[split]
        chosen = [p for p in self.files if lo <= hash_percent(p.relative_to(self.root_dir).as_posix()) < hi]
        return self.decoded(ImageFiles(chosen, self.image_size, self.channels))


def hash_percent(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100


def image_files(folder: Path) -> list[Path]:
    """Every image under `folder` (any depth), sorted; each header opened once so a broken file fails here, not mid-training."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    for path in files:
        try:
            Image.open(path).close()
        except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
            raise UserError(f"{path} cannot be read as an image ({type(error).__name__}: {error}). "
                            f"Delete or replace this file, or move it out of {folder}.") from error
    return files
