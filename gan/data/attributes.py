"""Images with binary attributes for StarGAN: CelebA's 40 attributes, or one domain per sub-folder (one-hot)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import torch

from gan.data.celeba import CelebADataModule
from gan.data.folder import SPLIT_BOUNDS, hash_percent, image_files
from gan.data.translation import AttributeDataModule, ImageRecords
from gan.errors import UserError

STARGAN_ATTRIBUTES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")  # Choi et al. 2018, CelebA


class CelebAAttributesDataModule(AttributeDataModule, CelebADataModule):
    """CelebA faces (torchvision's layout and official partition) with the chosen columns of list_attr_celeba.txt as 0/1.

    Preprocessed like StarGAN: centre crop 178 (the 178x218 face becomes its centred 178x178 square), then resize to
    image_size (antialiased bilinear; StarGAN uses 128). Training images are flipped at random like StarGAN's
    (data.flip; yunjey/stargan data_loader.py: RandomHorizontalFlip in train mode only).
    """

    default_image_size = 128

    def __init__(self, *args, attributes: Sequence[str] = STARGAN_ATTRIBUTES, crop: int = 178, **kwargs):
        super().__init__(*args, crop=crop, **kwargs)
        self.attribute_names = [str(a) for a in attributes]
        if not self.attribute_names:
            raise UserError(f"data.attributes is empty for '{self.name}': StarGAN needs at least one attribute to translate. "
                            f"Pass e.g. data.attributes=[{','.join(STARGAN_ATTRIBUTES)}] (the paper's five).")

    @property
    def table_path(self) -> Path:
        return self.root_dir / "celeba" / "list_attr_celeba.txt"

    def load_split(self, split: str) -> ImageRecords:
        folder = self.root_dir / "celeba"
        expected = [folder / "img_align_celeba", folder / "list_eval_partition.txt", self.table_path]
        self.require(lambda: [p for p in expected if not p.exists()], "CelebA with attributes",
                     f"{expected[0]}/000001.jpg ..., {expected[1]} (lines '000001.jpg 0', 0/1/2 = train/val/test) and "
                     f"{expected[2]} (line 1 the image count, line 2 the 40 attribute names, then lines "
                     f"'000001.jpg -1 1 ...' with one -1/1 per attribute)", "CelebA", split="all")
        paths = CelebADataModule.load_split(self, split).paths
        names, rows, values = self.table
        absent = [p.name for p in paths if p.name not in rows]
        if absent:
            raise UserError(f"{absent[0]} is in the '{split}' partition but has no line in {self.table_path} ({len(absent)} "
                            f"images have none). The file is incomplete: delete it and download again (data.download=true).")
        columns = [names.index(a) for a in self.attribute_names]
        attrs = (values[[rows[p.name] for p in paths]][:, columns] > 0).float()  # CelebA's -1/1 as 0/1
        return ImageRecords(paths, self.image_size, self.channels, self.crop, attrs=attrs)

    @cached_property
    def table(self) -> tuple[list[str], dict[str, int], torch.Tensor]:
        """(attribute names, image name -> row, int8 [N, 40] of -1/1), checked line by line."""
        path = self.table_path
        lines = path.read_text().splitlines()
        corrupt = ("The file is corrupt: delete it and download again (data.download=true). The format is line 1 the "
                   "image count, line 2 the attribute names, then '<image name>' and one -1 or 1 per attribute per line.")
        if len(lines) < 2 or not lines[0].strip().isdigit():
            raise UserError(f"{path}, line 1: expected the number of images, got '{lines[0] if lines else ''}'. {corrupt}")
        names = lines[1].split()
        unknown = [a for a in self.attribute_names if a not in names]
        if unknown:
            raise UserError(f"Unknown CelebA attribute '{unknown[0]}' in data.attributes. The attributes of {path} are: "
                            f"{', '.join(names)}. Names are case-sensitive; StarGAN's five are "
                            f"data.attributes=[{','.join(STARGAN_ATTRIBUTES)}].")
        rows, values = {}, []
        for number, line in enumerate(lines[2:], 3):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != len(names) + 1 or any(v not in ("-1", "1") for v in fields[1:]):
                raise UserError(f"{path}, line {number}: expected an image name and {len(names)} values of -1 or 1, "
                                f"got '{line.strip()}'. {corrupt}")
            rows[fields[0]] = len(values)
            values.append([int(v) for v in fields[1:]])
        if len(values) != int(lines[0]):
            raise UserError(f"{path} announces {int(lines[0])} images on line 1 but lists {len(values)}. {corrupt}")
        return names, rows, torch.tensor(values, dtype=torch.int8).reshape(-1, len(names))


class DomainFolderDataModule(AttributeDataModule):
    """`<root>/<domain>/` folders of images, one domain each (sorted by name); attrs is the one-hot domain vector.

    Each domain is split 90/5/5 by a stable hash of the file's path relative to root (the image-folder dataset's
    rule): fixed, independent of the seed. Images are centre-cropped to a square (side `crop`, or the largest) and resized.
    """

    default_image_size = 128

    def __init__(self, *args, crop: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.crop = None if crop is None else int(crop)

    @cached_property
    def attribute_names(self) -> list[str]:
        layout = "<root>/<domain>/*.jpg: one sub-folder of images per domain (e.g. <root>/happy/, <root>/sad/), at least two"
        if self.root is None:
            raise UserError(f"No dataset folder given for '{self.name}' (data.root is null). Pass data.root=/path/to/domains, "
                            f"a folder in the layout {layout}.")
        root = self.root_dir
        if not root.is_dir():
            raise UserError(f"The domain folder {root} does not exist or is not a folder. The expected layout is {layout}. "
                            f"Pass data.root=/path/to/domains.")
        domains = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(domains) < 2:
            found = f"only '{domains[0]}'" if domains else "none"
            raise UserError(f"{root} holds {found} of the at least two domain sub-folders a domain translation needs. "
                            f"The expected layout is {layout}. Add a sub-folder per domain.")
        return domains

    @cached_property
    def domain_files(self) -> list[list[Path]]:
        files = [image_files(self.root_dir / domain) for domain in self.attribute_names]
        for domain, found in zip(self.attribute_names, files):
            if not found:
                raise UserError(f"The domain folder {self.root_dir / domain} holds no images (looked for .jpg/.png and other "
                                f"image files at any depth). Every sub-folder of {self.root_dir} is a domain: put its images "
                                f"there, or move the folder out of {self.root_dir}.")
        return files

    def load_split(self, split: str) -> ImageRecords:
        lo, hi = SPLIT_BOUNDS[split]
        paths, domains = [], []
        for k, files in enumerate(self.domain_files):
            chosen = [p for p in files if lo <= hash_percent(p.relative_to(self.root_dir).as_posix()) < hi]
            paths += chosen
            domains += [k] * len(chosen)
        attrs = torch.nn.functional.one_hot(torch.tensor(domains, dtype=torch.int64), len(self.attribute_names)).float()
        return ImageRecords(paths, self.image_size, self.channels, self.crop, attrs=attrs)
