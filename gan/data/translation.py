"""What every image-to-image dataset shares: splits as records of named fields, the three batch contracts, eval_tensors.

A record holds uint8 images [C, H, W], float 0/1 attribute vectors and an int64 `label` (the digit class of the
embedded sets, -1 where unknown). Training batches carry the named fields a model consumes, images as [-1, 1] floats:

- paired (pix2pix):     {"a": source, "b": target}
- unpaired (CycleGAN):  {"a": domain A, "b": domain B}, drawn from two independent resumable streams
- attributes (StarGAN): {"x": images, "attrs": float32 [N, K] of 0/1}

Training images are jittered like the reference code's (`Jitter`: resize to `load_size`, random crop to
`image_size`, random horizontal flip; the same draw for both images of a pair), with draws keyed by the stream's
position, so a resumed run sees the same crops and flips. Evaluation data is never jittered.

Labels never enter a training batch: they are for evaluation, through `eval_tensors(split)`. Read as an (x, y)
dataset, `dataset(split)` yields the TARGET images (paired: b; unpaired: domain B; attributes: x) with their label
when `num_classes` is set (-1 otherwise), so the base class's checks and the real-image metrics work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gan.data.datamodule import ImageDataModule, ImageFiles, InfiniteBatchSampler, draw_key, prepare_images
from gan.errors import UserError
from gan.metrics.quantize import from_uint8
from gan.metrics.real_data import subset_indices

EVAL_CHUNK = 256  # records decoded per loader item by eval_tensors
# Pass p of a stream is permutation seed + offset + p: a large offset for domain B keeps its passes from ever
# repeating domain A's (offset 1 would make B's pass p the permutation of A's pass p + 1).
DOMAIN_B_SEED_OFFSET = 1_000_003


class Records(Dataset):
    """A split as records of named fields; as an (x, y) dataset, item i is (its `x_field` image in [-1, 1], its label).

    `labels` are the labels the (x, y) view shows: the true ones when `show_labels`, else -1 (an unconditional run).
    """

    x_field = "x"

    def __init__(self, true_labels: torch.Tensor, show_labels: bool):
        self.true_labels = true_labels.to(torch.int64)
        self.labels = self.true_labels if show_labels else torch.full_like(self.true_labels, -1)

    def __len__(self) -> int:
        return len(self.true_labels)

    def records(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The records at `indices`, each field stacked along a new first dimension; always includes `label`."""
        raise NotImplementedError

    def at_size(self, size: int) -> "Records":
        """The same records with images decoded at `size` (the jitter's load size). In memory: the stored images,
        which `Jitter` resizes when their size differs."""
        return self

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return from_uint8(self.records([i])[self.x_field][0]), self.labels[i]


class TensorRecords(Records):
    """A whole split in memory: `fields` of equal length (uint8 images, float attributes, int64 `label`)."""

    def __init__(self, fields: dict[str, torch.Tensor], show_labels: bool, x_field: str = "x"):
        super().__init__(fields["label"], show_labels)
        self.fields, self.x_field = fields, x_field

    def records(self, indices) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return {name: values[index] for name, values in self.fields.items()}


class ImageRecords(Records):
    """Image files decoded per record (centre square of side `crop` or the largest, resized), `attrs` optional, labels unknown."""

    def __init__(self, paths: Sequence[Path], image_size: int, channels: int, crop: int | None = None,
                 attrs: torch.Tensor | None = None):
        self.files = ImageFiles(paths, image_size, channels, crop)
        super().__init__(torch.full((len(self.files),), -1), show_labels=False)
        self.attrs = attrs

    @property
    def paths(self) -> list[Path]:
        return self.files.paths

    def at_size(self, size: int) -> "ImageRecords":
        files = self.files
        return self if size == files.image_size else ImageRecords(files.paths, size, files.channels, files.crop, self.attrs)

    def records(self, indices) -> dict[str, torch.Tensor]:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        fields = {"x": torch.stack([self.files.image(int(i)) for i in indices]), "label": self.true_labels[indices]}
        if self.attrs is not None:
            fields["attrs"] = self.attrs[indices]
        return fields


class RecordBatches(Dataset):
    """Fetches the records of one index list as stored (uint8 images): what `eval_tensors` decodes, never jittered."""

    def __init__(self, records: Records):
        self.split = records

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self.split.records(indices)


@dataclass(frozen=True)
class Jitter:
    """The reference code's training transform: resize to `load_size`, crop a random `crop_size` square, flip
    horizontally with probability 1/2 (junyanz/pytorch-CycleGAN-and-pix2pix data/base_dataset.py get_params and
    get_transform, preprocess 'resize_and_crop'; yunjey/stargan data_loader.py RandomHorizontalFlip)."""

    load_size: int
    crop_size: int
    flip: bool

    @property
    def active(self) -> bool:
        return self.flip or self.load_size != self.crop_size

    def draw(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tops, lefts, flips) of `count` images: offsets uniform in 0..load_size - crop_size, flips with p = 1/2."""
        margin = self.load_size - self.crop_size
        tops = torch.randint(0, margin + 1, (count,), generator=generator)
        lefts = torch.randint(0, margin + 1, (count,), generator=generator)
        flips = torch.rand(count, generator=generator) < 0.5 if self.flip else torch.zeros(count, dtype=torch.bool)
        return tops, lefts, flips

    def apply(self, images: torch.Tensor, draw: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """uint8 [N, C, H, W] images (resized to load_size first when they are not) cropped and flipped by `draw`."""
        if images.shape[-1] != self.load_size or images.shape[-2] != self.load_size:
            images = prepare_images(images, self.load_size, images.shape[1])
        size, out = self.crop_size, []
        for image, top, left, flip in zip(images, *(t.tolist() for t in draw)):
            crop = image[:, top:top + size, left:left + size]
            out.append(crop.flip(-1) if flip else crop)
        return torch.stack(out)

    def fields(self, fields: dict[str, torch.Tensor], key: int) -> dict[str, torch.Tensor]:
        """`fields` with every image field (uint8 [N, C, H, W]) jittered by ONE draw per record, so the two images of
        a pair get the same crop and flip (junyanz data/aligned_dataset.py: get_params once per pair); `key` seeds it."""
        images = [name for name, value in fields.items() if value.dtype == torch.uint8 and value.dim() == 4]
        if not self.active or not images:
            return fields
        draw = self.draw(len(fields[images[0]]), torch.Generator().manual_seed(key))
        return {name: self.apply(value, draw) if name in images else value for name, value in fields.items()}


class KeyedStreams(Sampler):
    """Zips index streams that share a position (one per domain) and gives each item the jitter key of every stream:
    yields ((key, indices), ...). Item k of a stream started at `start` is minibatch position start + k * per_item,
    so a resumed stream draws the same keys as an uninterrupted one."""

    def __init__(self, *streams: InfiniteBatchSampler):
        self.streams = streams

    def __iter__(self) -> Iterator[tuple[tuple[int, list[int]], ...]]:
        first = self.streams[0]
        for k, items in enumerate(zip(*self.streams)):
            position = first.start + k * first.per_item
            yield tuple((draw_key(s.seed, s.rank, position), indices) for s, indices in zip(self.streams, items))


class TrainingBatches(Dataset):
    """The training batch of one KeyedStreams item: `fields` of each split's records, jittered by the item's keys.
    One split: its `fields` (paired, attributes); two (unpaired): {"a": domain A images, "b": domain B images}."""

    def __init__(self, splits: Sequence[Records], fields: Sequence[str], jitter: Jitter):
        self.splits, self.fields, self.jitter = list(splits), tuple(fields), jitter

    def __len__(self) -> int:
        return len(self.splits[-1])

    def __getitem__(self, item: tuple[tuple[int, list[int]], ...]) -> dict[str, torch.Tensor]:
        if len(self.splits) == 1:
            (key, indices), = item
            fetched = self.splits[0].records(indices)
            chosen = self.jitter.fields({name: fetched[name] for name in self.fields}, key)
        else:
            chosen = {name: self.jitter.fields({"x": split.records(indices)["x"]}, key)["x"]
                      for name, split, (key, indices) in zip(self.fields, self.splits, item)}
        return {name: training_field(value) for name, value in chosen.items()}


def training_field(values: torch.Tensor) -> torch.Tensor:
    """uint8 images -> [-1, 1] float32; attribute vectors -> float32; labels stay int64."""
    if values.dtype == torch.uint8:
        return from_uint8(values)
    return values.float() if values.is_floating_point() else values


class TranslationDataModule(ImageDataModule):
    """Image-to-image data: `load_split` returns Records; batches are `train_fields`; `eval_tensors` serves the metrics."""

    train_fields: tuple[str, ...] = ()
    labels_in_batch = False  # labels are for evaluation only (eval_tensors)

    def __init__(self, *args, load_size: int, flip: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self._eval: dict[tuple[str, int | None], dict[str, torch.Tensor]] = {}
        if isinstance(load_size, bool) or not isinstance(load_size, int) or load_size < self.image_size:
            raise UserError(f"data.load_size={load_size!r} must be an integer of at least data.image_size="
                            f"{self.image_size} for '{self.name}': training images are resized to load_size, then a "
                            f"random image_size square is cropped (junyanz: 286 for 256). Set data.load_size="
                            f"{self.image_size} for no random crop.")
        if not isinstance(flip, bool):
            raise UserError(f"data.flip must be true or false for '{self.name}', got {flip!r}.")
        self.jitter = Jitter(load_size, self.image_size, flip)

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train")
        batches = TrainingBatches([train.at_size(self.jitter.load_size)], self.train_fields, self.jitter)
        return self.loader(batches, KeyedStreams(self.stream(len(train))))

    def eval_tensors(self, split: str, limit: int | None = None) -> dict[str, torch.Tensor]:
        """The whole split (or a fixed subset of `limit` records per domain) in memory, for evaluation only.

        Images are uint8 [N, C, H, W]. The subset is the metrics' real-data subset (the first `limit` of a fixed,
        seed-independent permutation, so limit=1000 lies inside limit=2000). File datasets decode the chosen
        records once per (split, limit) and keep them: pass a `limit` for large datasets such as CelebA.
        """
        key = (split, None if limit is None else int(limit))
        if key not in self._eval:
            self._eval[key] = self.evaluation_records(split, key[1])
        return self._eval[key]

    def evaluation_records(self, split: str, limit: int | None) -> dict[str, torch.Tensor]:
        return self.gather(self.dataset(split), limit)

    def gather(self, records: Records, limit: int | None) -> dict[str, torch.Tensor]:
        """Every field of the chosen records of one split, decoded in chunks (by `num_workers` processes)."""
        indices = subset_indices(len(records), limit).tolist()
        if isinstance(records, TensorRecords):
            return records.records(indices)
        chunks = [indices[i:i + EVAL_CHUNK] for i in range(0, len(indices), EVAL_CHUNK)]
        loader = DataLoader(RecordBatches(records), sampler=chunks, batch_size=None, num_workers=self.num_workers)
        parts = list(loader)
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


class PairedDataModule(TranslationDataModule):
    """Aligned pairs: batches {"a": source, "b": target}; `direction=BtoA` swaps the two. eval: a, b, label."""

    train_fields = ("a", "b")
    served_fields = ("a", "b", "paired")  # "paired": a[i] and b[i] show the same content (what pix2pix needs)

    def __init__(self, *args, direction: str = "AtoB", **kwargs):
        super().__init__(*args, **kwargs)
        if direction not in ("AtoB", "BtoA"):
            raise UserError(f"data.direction={direction} is not a translation direction for '{self.name}'. Use "
                            f"data.direction=AtoB (translate the first image of each pair into the second) or BtoA.")
        self.direction = direction

    def oriented(self, first: torch.Tensor, second: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"a": source, "b": target} of the dataset's (first, second) images, in the configured direction."""
        return {"a": first, "b": second} if self.direction == "AtoB" else {"a": second, "b": first}


class AttributeDataModule(TranslationDataModule):
    """Images with binary attribute vectors: batches {"x": images, "attrs": float32 [N, K] of 0/1}. eval: x, attrs, label.

    Subclasses set `attribute_names` (K names, in the order of the attrs columns) when they read their data.
    """

    train_fields = served_fields = ("x", "attrs")
    attribute_names: list[str]

    def __init__(self, *args, num_attributes: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected_attributes = num_attributes  # what the config sized the networks by (data.num_attributes)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.expected_attributes is not None and self.expected_attributes != self.num_attributes:
            raise UserError(f"data.num_attributes={self.expected_attributes}, but dataset '{self.name}' has "
                            f"{self.num_attributes} attributes or domains ({', '.join(self.attribute_names)}). Set "
                            f"data.num_attributes={self.num_attributes}: the networks are sized by it.")

    def settings_from_data(self) -> dict:
        return {"num_attributes": self.num_attributes}

    @property
    def num_attributes(self) -> int:
        self.dataset("train")  # attribute names are known once the data has been read
        return len(self.attribute_names)


class UnpairedDataModule(TranslationDataModule):
    """Two domains without pairs, A and B of any sizes: batches {"a", "b"} from two independent, resumable streams.

    `dataset(split)` is domain B (the target), carrying domain A as its `domain_a`; `domains(split)` gives both.
    eval: a, b, a_label, b_label.
    """

    served_fields = ("a", "b", "unpaired")  # "unpaired": two domains of any sizes, labelled per domain (CycleGAN)

    def load_domains(self, split: str) -> tuple[Records, Records]:
        raise NotImplementedError

    def load_split(self, split: str) -> Records:
        a, b = self.load_domains(split)
        for domain, records in (("A", a), ("B", b)):
            if len(records) == 0:
                raise UserError(f"Domain {domain} of the '{split}' split of dataset '{self.name}' is empty: it holds no "
                                f"images. Add images to that domain (val holds out about 5% of each training domain, "
                                f"so a domain of a few images can leave it empty) or use a split that has samples.")
        b.domain_a = a  # cached with B by the base class, so both domains live (and are reset) together
        return b

    def domains(self, split: str) -> tuple[Records, Records]:
        b = self.dataset(split)
        return b.domain_a, b

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        a, _ = self.domains("train")
        if len(a) < self.batch_size:
            raise UserError(f"Domain A of the training split of '{self.name}' has {len(a)} images, fewer than "
                            f"data.batch_size={self.batch_size}. Use a smaller data.batch_size or more data.")

    def train_dataloader(self) -> DataLoader:
        a, b = self.domains("train")
        # Two streams that share the checkpointed position (so resuming restores both) but no permutation; each
        # domain is jittered by its own draws (junyanz data/unaligned_dataset.py: one transform call per image).
        sampler = KeyedStreams(self.stream(len(a), 0), self.stream(len(b), DOMAIN_B_SEED_OFFSET))
        size = self.jitter.load_size
        return self.loader(TrainingBatches([a.at_size(size), b.at_size(size)], ("a", "b"), self.jitter), sampler)

    def evaluation_records(self, split: str, limit: int | None) -> dict[str, torch.Tensor]:
        a, b = (self.gather(records, limit) for records in self.domains(split))
        return {"a": a["x"], "b": b["x"], "a_label": a["label"], "b_label": b["label"]}
