"""The datamodule base every dataset shares: splits, checks, the resumable infinite training stream, image helpers."""

from __future__ import annotations

import importlib.util
import numbers
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from gan.data.cache import decoded_images
from gan.errors import UserError
from gan.metrics.quantize import from_uint8

SPLITS = ("train", "val", "test")
TRAIN_LIMIT_SEED = 0  # the fixed order data.train_limit takes its first N from: the same images for every run seed


class GANDataModule(pl.LightningDataModule):
    """A dataset as three splits of (x, y) pairs: x float32 in [-1, 1] with exactly `shape`, y int64 (-1 unlabelled).

    Subclasses implement `load_split`. Labels are served only when `num_classes` is set, so a labelled
    dataset can be used unconditionally by setting `data.num_classes=null`. `train_limit` (a count N, or a
    fraction in (0, 1]) trains on a fixed part of the training split only (`train_indices`); every split as read
    (val, test, the classifier backbone's training data) stays whole.
    """

    served_fields: ClassVar[tuple[str, ...]] = ("x",)  # the fields of a training batch, besides the labels `y`
    labels_in_batch: ClassVar[bool] = True  # whether a labelled run's batches carry `y`

    def __init__(self, name: str, shape: Sequence[int], num_classes: int | None, batch_size: int,
                 num_workers: int = 0, seed: int = 0, train_limit: int | float | None = None, backbone: str = "inception"):
        super().__init__()
        if int(batch_size) < 1:
            raise UserError(f"data.batch_size must be at least 1, got {batch_size}. Set data.batch_size=64 (or any positive integer).")
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.train_limit = checked_train_limit(train_limit)
        self.backbone = backbone  # the feature space its metrics use by default (metrics.backbone=auto)
        self._datasets: dict[str, Dataset] = {}
        self.minibatches_consumed = 0  # position of the training stream, checkpointed with the datamodule
        self.minibatches_per_item = 1

    @classmethod
    def fields_served(cls, num_classes: int | None) -> tuple[str, ...]:
        """The named fields of a training batch, for a run with `num_classes` (None: unlabelled); what a model's kind
        needs is checked against them before training (gan.kinds.check_fields)."""
        return cls.served_fields + (("y",) if num_classes is not None and cls.labels_in_batch else ())

    @property
    def batch_fields(self) -> tuple[str, ...]:
        return self.fields_served(self.num_classes)

    def settings_from_data(self) -> dict:
        """data.<key> values the data itself determines, known after `setup` (the number of domain folders): where the
        config leaves one null, the run takes it from here (gan.train.build), so the model is sized by the data."""
        return {}

    def load_split(self, split: str) -> Dataset:
        """Read one split from disk (or memory) as a Dataset of (x, y) pairs."""
        raise NotImplementedError

    def dataset(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise UserError(f"Unknown data split '{split}' for dataset '{self.name}'. Expected one of {', '.join(SPLITS)}.")
        if split not in self._datasets:
            data = self.load_split(split)
            if len(data) == 0:
                raise UserError(f"The '{split}' split of dataset '{self.name}' is empty: it holds no samples. "
                                f"Add more data (an image folder sends about 5% of its files each to val and test, so a few "
                                f"images can leave those empty) or use a split that has samples.")
            self._datasets[split] = data
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        train = self.dataset("train")
        x, _ = train[0]
        if tuple(x.shape) != self.shape:
            raise UserError(f"Dataset '{self.name}' yields samples of shape {tuple(x.shape)}, but data.shape is {list(self.shape)}. "
                            f"data.shape must equal [channels, image_size, image_size] of the prepared images: remove the "
                            f"data.shape override, or change data.channels / data.image_size instead.")
        if len(train) < self.batch_size:
            raise UserError(f"The training split of '{self.name}' has {len(train)} samples, fewer than data.batch_size="
                            f"{self.batch_size}. Use a smaller data.batch_size or more data.")
        self.train_indices(len(train))  # a bad data.train_limit fails here, before training starts
        if self.num_classes is not None:
            labels = getattr(train, "labels", None)
            if labels is None or int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
                raise UserError(f"data.num_classes={self.num_classes}, but dataset '{self.name}' has no class labels in "
                                f"0..{self.num_classes - 1}. Set data.num_classes=null for unlabelled data, or the true number of classes.")

    def train_dataloader(self) -> DataLoader:
        """An endless stream, one item per training iteration: the model's `batches_per_iteration` minibatches
        stacked, as named fields. It starts where the datamodule's checkpointed position says."""
        train = self.on_device(self.dataset("train"))
        return self.loader(Batches(train, self.fields), self.stream(len(train)))

    def on_device(self, split: Dataset) -> Dataset:
        """An in-memory split copied once to the accelerator the trainer runs on, when batches are read in this
        process (num_workers=0): each batch is then indexed on the device and Lightning's transfer is a no-op.
        On the CPU, with loader workers, or for file-backed splits, the split as it is."""
        device = data_device(self.trainer, self.num_workers, split)
        return split if device is None else split.to(device)

    def stream(self, split_size: int, seed_offset: int = 0) -> "InfiniteBatchSampler":
        """Index batches over the training items of a split of `split_size` (all, or `train_indices`) from the
        stream's checkpointed position, one item per iteration (this rank's share under DDP). Unpaired data draws
        each domain from a stream of its own seed offset."""
        trainer = self.trainer
        module = trainer.lightning_module if trainer is not None else None
        self.minibatches_per_item = 1 if module is None else module.batches_per_iteration
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        subset = self.train_indices(split_size)
        return InfiniteBatchSampler(split_size if subset is None else len(subset), self.batch_size,
                                    self.seed + seed_offset, self.minibatches_consumed, rank, world_size,
                                    self.minibatches_per_item, subset)

    def train_indices(self, split_size: int) -> torch.Tensor | None:
        """The items of a training split of `split_size` that the model trains on, sorted: None (all) without
        data.train_limit; else the first N (the limit, or round(fraction * split_size), at least 1) of a fixed
        permutation seeded by TRAIN_LIMIT_SEED, not by the run's seed. So every seed trains on the same images, a
        smaller limit's images lie inside a larger one's, and a split stored in class order is sampled evenly."""
        limit = self.train_limit
        if limit is None:
            return None
        if isinstance(limit, int) and limit > split_size:
            raise UserError(f"data.train_limit={limit} is more than the {split_size} samples of the training split of "
                            f"'{self.name}'. Use at most {split_size}, a fraction in (0, 1] such as 0.1, or null for all.")
        count = limit if isinstance(limit, int) else max(1, round(limit * split_size))
        if count < self.batch_size:
            raise UserError(f"data.train_limit={limit} leaves {count} of the {split_size} training samples of "
                            f"'{self.name}', fewer than data.batch_size={self.batch_size}. Use a larger limit or a "
                            f"smaller data.batch_size.")
        order = torch.randperm(split_size, generator=torch.Generator().manual_seed(TRAIN_LIMIT_SEED))
        return order[:count].sort().values

    def loader(self, batches: Dataset, sampler: Sampler) -> DataLoader:
        """batch_size=None: each sampler item (indices) is fetched whole, by tensor indexing for in-memory splits."""
        return DataLoader(batches, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=False)

    def fields(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """A training batch's named fields: `x`, and `y` when the run uses labels."""
        return {"x": x} if self.num_classes is None else {"x": x, "y": y}

    # The stream's position counts the minibatches the model consumed: Lightning fetches ahead, so a count
    # of what the loader produced would run past what a checkpoint's weights have seen.
    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is not None and self.trainer.training:
            self.minibatches_consumed += self.minibatches_per_item
        return batch

    def state_dict(self) -> dict:
        return {"minibatches_consumed": self.minibatches_consumed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.minibatches_consumed = int(state_dict["minibatches_consumed"])

    def pairs(self, data: torch.Tensor, labels: torch.Tensor) -> "TensorPairs":
        """An in-memory split whose labels are hidden (-1) when the run is unconditional."""
        labels = labels.to(torch.int64)
        return TensorPairs(data, labels if self.num_classes is not None else torch.full_like(labels, -1))


def checked_train_limit(value) -> int | float | None:
    """data.train_limit as given: None, a count (int >= 1) or a fraction (float in (0, 1]); else a UserError."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)) and 0 < value <= 1:
        return float(value)
    raise UserError(f"data.train_limit={value!r} is not a number of training samples (an integer >= 1, e.g. 500) "
                    f"nor a fraction of the training split (a float in (0, 1], e.g. 0.1). Use null to train on all of it.")


def draw_key(seed: int, rank: int, position: int) -> int:
    """The seed of the random draws (flips, crops) of a stream's item: a hash of (stream seed, process rank, position
    in minibatches), so the draws follow the checkpointed stream position and never repeat across items, ranks or domains."""
    return int(np.random.SeedSequence([seed % 2 ** 64, rank, position]).generate_state(1, np.uint64)[0])


def mirrored(images: torch.Tensor, key: int) -> torch.Tensor:
    """[N, C, H, W] images, each flipped horizontally with probability 1/2 by a draw seeded with `key`."""
    flips = torch.rand(len(images), generator=torch.Generator().manual_seed(key)) < 0.5
    return torch.where(flips.to(images.device).view(-1, *[1] * (images.dim() - 1)), images.flip(-1), images)


def data_device(trainer, num_workers: int, split: Dataset) -> torch.device | None:
    """The device to hold `split` on for training, or None to leave it where it is: the trainer's accelerator, for
    a split of tensors (in memory, or memory-mapped from the decoded-image cache) read without loader workers that
    fits in a quarter of the device's free memory."""
    if trainer is None or num_workers or not isinstance(split, TensorPairs):
        return None
    device = trainer.strategy.root_device
    if device.type == "cpu" or device == split.data.device:
        return None
    if device.type == "cuda" and split.nbytes > torch.cuda.mem_get_info(device)[0] // 4:
        return None
    return device


class InfiniteBatchSampler(Sampler):
    """Yields index batches forever: pass p is a permutation seeded with `seed + p`, cut into full global batches.

    A global batch holds batch_size * world_size indices; rank r takes its r-th slice, so the ranks' batches
    are disjoint and together equal the single-process stream with the global batch size. `start` skips
    that many global batches, so a resumed run continues the exact stream of an uninterrupted one. Each
    item stacks `per_item` consecutive batches (one training iteration's minibatches).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int = 0, rank: int = 0,
                 world_size: int = 1, per_item: int = 1, subset: torch.Tensor | None = None):
        global_batch = batch_size * world_size
        if num_samples < global_batch:
            raise UserError(f"The training split has {num_samples} samples, fewer than one global batch of {global_batch} "
                            f"(data.batch_size={batch_size} x {world_size} processes). Use a smaller data.batch_size or more data.")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.rank, self.world_size, self.per_item = start, rank, world_size, per_item
        self.subset = subset  # the dataset indices the stream's 0..num_samples-1 stand for; None: themselves

    def batches(self) -> Iterator[list[int]]:
        global_batch = self.batch_size * self.world_size
        batches_per_pass = self.num_samples // global_batch
        pass_index, first = divmod(self.start, batches_per_pass)
        while True:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + pass_index))
            order = (order if self.subset is None else self.subset[order]).tolist()
            for b in range(first, batches_per_pass):
                lo = b * global_batch + self.rank * self.batch_size
                yield order[lo:lo + self.batch_size]
            pass_index, first = pass_index + 1, 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        while True:
            yield [i for _ in range(self.per_item) for i in next(batches)]


class Batches(Dataset):
    """A split read a batch of indices at a time, as the named fields `fields(x, y)` makes."""

    def __init__(self, split: Dataset, fields: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]):
        self.split, self.fields = split, fields

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        if isinstance(self.split, TensorPairs):
            return self.fields(*self.split.batch(indices))
        xs, ys = zip(*(self.split[i] for i in indices))
        return self.fields(torch.stack(xs), torch.stack(ys))


class TensorPairs(Dataset):
    """A whole split in memory; uint8 images become [-1, 1] floats on access, float data (toy points) pass through."""

    def __init__(self, data: torch.Tensor, labels: torch.Tensor):
        self.data, self.labels = data, labels

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(i)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.data[indices]
        return (from_uint8(x) if x.dtype == torch.uint8 else x), self.labels[indices]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.labels.nbytes

    def to(self, device: torch.device) -> "TensorPairs":
        return TensorPairs(self.data.to(device), self.labels.to(device))


class ImageFiles(Dataset):
    """Image files decoded per item: centre square crop (side `crop`, or the largest), resize, unlabelled.
    `ImageDataModule.decoded` serves them decoded once instead (gan.data.cache)."""

    def __init__(self, paths: Sequence[Path], image_size: int, channels: int, crop: int | None = None):
        self.paths, self.image_size, self.channels, self.crop = list(paths), image_size, channels, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return from_uint8(self.image(i)), torch.tensor(-1)

    def image(self, i: int) -> torch.Tensor:
        """Item i as uint8 [channels, image_size, image_size]."""
        pixels = centre_square(read_image(self.paths[i], self.channels), self.crop)
        return prepare_images(pixels[None], self.image_size, self.channels)[0]


def read_image(path: Path, channels: int) -> torch.Tensor:
    """An image file as uint8 [channels, H, W], converted by PIL to RGB (3 channels) or L (1)."""
    with Image.open(path) as image:
        image = image.convert("RGB" if channels == 3 else "L")
    width, height = image.size
    return torch.from_numpy(np.asarray(image).copy()).reshape(height, width, -1).permute(2, 0, 1)


def centre_square(pixels: torch.Tensor, crop: int | None = None) -> torch.Tensor:
    """The centred square of side `crop` (clamped to the shorter side; None: the largest) of [..., H, W]."""
    height, width = pixels.shape[-2:]
    side = min(width, height, crop or width)
    top, left = (height - side) // 2, (width - side) // 2
    return pixels[..., top:top + side, left:left + side]


def prepare_images(images: torch.Tensor, image_size: int, channels: int, chunk: int = 2048) -> torch.Tensor:
    """[N, C, H, W] with values in 0..255 -> uint8 [N, channels, image_size, image_size] (antialiased bilinear)."""
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma, the weights PIL uses for convert("L")
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True)
    if images.shape[-2:] != (image_size, image_size):
        images = torch.cat([F.interpolate(part.float(), size=(image_size, image_size), mode="bilinear",
                                          antialias=True, align_corners=False)
                            for part in images.split(chunk)])
    return images.round().clamp(0, 255).to(torch.uint8) if images.is_floating_point() else images.to(torch.uint8).contiguous()


class ImageDataModule(GANDataModule):
    """Images read from `root` (optionally downloaded there) and prepared to `channels` x `image_size`^2.

    `mirror`: each training image is flipped horizontally with probability 1/2 (ProGAN's and StyleGAN's
    `mirror_augment`), on the batch as the model consumes it, by a draw keyed by the stream's position; evaluation
    reads `dataset(split)` and is never flipped. Image-to-image data flips by its own `data.flip` instead.
    """

    image_sizes: Sequence[int] | None = None  # the sizes a subclass supports; None: any
    default_image_size, default_channels = 32, 3

    def __init__(self, name: str, shape: Sequence[int], num_classes: int | None, batch_size: int,
                 num_workers: int = 0, seed: int = 0, root: str | None = None, download: bool = False,
                 image_size: int | None = None, channels: int | None = None, train_limit: int | None = None,
                 backbone: str = "inception", cache_dir: str | None = None, mirror: bool = False):
        super().__init__(name, shape, num_classes, batch_size, num_workers, seed, train_limit, backbone)
        if not isinstance(mirror, bool):
            raise UserError(f"data.mirror must be true or false for '{name}', got {mirror!r}.")
        if mirror and self.served_fields != ("x",):
            raise UserError(f"data.mirror=true is for datasets of single images; '{name}' serves "
                            f"{', '.join(self.served_fields)}. Image-to-image data flips with data.flip=true instead.")
        self.mirror = mirror
        self.cache_dir = cache_dir  # where image files are decoded once (gan.data.cache); None: decode per access
        image_size = self.default_image_size if image_size is None else image_size
        channels = self.default_channels if channels is None else channels
        if int(channels) not in (1, 3):
            raise UserError(f"data.channels must be 1 (grayscale) or 3 (RGB) for '{name}', got {channels}.")
        if int(image_size) < 1 or (self.image_sizes is not None and int(image_size) not in self.image_sizes):
            allowed = ", ".join(map(str, self.image_sizes)) if self.image_sizes else "a positive integer"
            raise UserError(f"data.image_size={image_size} is not supported for '{name}'; use {allowed}.")
        self.root, self.download = root, bool(download)
        self.image_size, self.channels = int(image_size), int(channels)

    # After on_before_batch_transfer has counted the batch, so a batch's flips are keyed by the position of its
    # first minibatch, the checkpointed count: a resumed run draws the same flips as an uninterrupted one.
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not self.mirror or self.trainer is None or not self.trainer.training:
            return batch
        position = self.minibatches_consumed - self.minibatches_per_item
        return batch | {"x": mirrored(batch["x"], draw_key(self.seed, self.trainer.global_rank, position))}

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before setup, so a download never runs twice at once.
        if self.download:
            self.dataset("train")

    @property
    def root_dir(self) -> Path:
        if self.root is None:
            raise UserError(f"No data folder given for '{self.name}' (data.root is null). Pass data.root=/path/to/data, "
                            f"the folder that holds (or will hold, with data.download=true) the dataset's files.")
        return Path(self.root).expanduser()

    def require(self, missing: Callable[[], list[Path]], title: str, layout: str, torchvision_name: str, **options) -> None:
        """Return when `missing()` is empty; else download with torchvision (data.download=true) or raise a UserError."""
        if missing() and self.download:
            import torchvision.datasets

            try:
                getattr(torchvision.datasets, torchvision_name)(str(self.root_dir), download=True, **options)
            except Exception as error:  # anything from URLError to gdown's own errors
                raise UserError(f"Downloading {title} into {self.root_dir} failed ({type(error).__name__}: {error}). "
                                f"The expected layout is {layout}. Check the internet connection, or fetch the files by "
                                f"hand, place them there and run with data.download=false.") from error
        gone = missing()
        if gone:
            raise UserError(f"{title} was not found: {gone[0]} does not exist. The expected layout is {layout}. "
                            f"Run once with data.download=true on a machine with internet access, or copy the files there "
                            f"by hand; data.root=/path/to/data points the loader at another folder.")

    def decoded(self, files: ImageFiles) -> Dataset:
        """Image files as an in-memory split memory-mapped from the decoded cache under `cache_dir` (written on
        first use), or decoded per access when there is no cache_dir."""
        if self.cache_dir is None or len(files) == 0:
            return files
        return self.pairs(decoded_images(files, self.cache_dir), torch.full((len(files),), -1))

    def prepared(self, images: torch.Tensor, labels: torch.Tensor) -> "TensorPairs":
        """In-memory split from [N, C, H, W] images with values in 0..255."""
        return self.pairs(prepare_images(images, self.image_size, self.channels), labels)


def holdout(split: str, images: torch.Tensor, labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official training set's last `size` items are val, the rest train."""
    keep = slice(None, -size) if split == "train" else slice(-size, None)
    return images[keep], labels[keep]


def package_file(package: str, relative: str, pip_name: str, dataset: str) -> Path:
    """A data file that an installed pip package ships, found without importing the package (`relative` to its
    folder), or a UserError that names the package to install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"data={dataset} reads {package}/{relative}, a file shipped by the pip package '{pip_name}', "
                        f"which is not installed. Run `pip install {pip_name}` (`make install` installs it).")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise UserError(f"data={dataset} reads {path}, but the installed '{pip_name}' does not ship that file. "
                        f"Install a version that does: `pip install --upgrade {pip_name}`.")
    return path
