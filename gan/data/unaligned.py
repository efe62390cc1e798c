"""CycleGAN's unaligned layout: `<root>/{trainA,trainB,testA,testB}/`, two domains without pairs."""

from __future__ import annotations

from pathlib import Path

from gan.data.folder import hash_percent, image_files
from gan.data.translation import ImageRecords, UnpairedDataModule
from gan.errors import UserError

LAYOUT = ("<root>/trainA/, <root>/trainB/, <root>/testA/ and <root>/testB/, each a folder of .jpg/.png images of "
          "one domain (the two domains need not have the same number of images, and no image has a partner)")
SOURCE = ("junyanz/pytorch-CycleGAN-and-pix2pix's `bash ./datasets/download_cyclegan_dataset.sh horse2zebra` "
          "(or apple2orange, summer2winter_yosemite, monet2photo, ...) downloads one into ./datasets/<name>")
VAL_PERCENT = 5


class UnalignedDataModule(UnpairedDataModule):
    """Two image domains, each centre-cropped to a square and resized. Training images are jittered like junyanz's
    (resized to data.load_size, a random image_size crop and flip drawn for each image of each domain: `Jitter`).

    val holds out a fixed 5% of trainA/ and of trainB/: the files whose stable hash of their path relative to the domain
    folder falls below 5 (the image-folder dataset's rule), independent of the seed, so a file keeps its split as the
    folder grows. test is testA/ and testB/.
    """

    default_image_size = 256

    def load_domains(self, split: str) -> tuple[ImageRecords, ImageRecords]:
        if self.root is None:
            raise UserError(f"No dataset folder given for '{self.name}' (data.root is null). Pass "
                            f"data.root=/path/to/horse2zebra, a folder in CycleGAN's unaligned layout: {LAYOUT}. To get one: {SOURCE}.")
        return tuple(ImageRecords(self.domain_files(split, domain), self.image_size, self.channels) for domain in "AB")

    def domain_files(self, split: str, domain: str) -> list[Path]:
        folder = self.root_dir / f"{'test' if split == 'test' else 'train'}{domain}"
        if not folder.is_dir():
            raise UserError(f"The unaligned dataset was not found: {folder} does not exist. The expected layout is "
                            f"{LAYOUT}. To get one: {SOURCE}; then pass data.root=/path/to/that/folder.")
        files = image_files(folder)
        if not files:
            raise UserError(f"{folder} holds no images (looked for .jpg/.png and other image files at any depth). "
                            f"The expected layout is {LAYOUT}. Put the domain's images there or pass data.root=/path/to/dataset.")
        if split == "test":
            return files
        held = lambda path: hash_percent(path.relative_to(folder).as_posix()) < VAL_PERCENT
        return [p for p in files if held(p) == (split == "val")]
