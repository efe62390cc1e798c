"""Image-to-image translation metrics (pix2pix, CycleGAN, StarGAN), each next to its real and identity reference rows.

The suites of the three kinds of translation model are gan.kinds.translation's; the pieces they use are here.

What is measured, on a fixed subset of `num_samples` records of a split (`datamodule.eval_tensors`):

- paired (pix2pix): `l1`, `psnr`, `ssim` of the translations G(a) against the ground truth b; `fid` of G(a) against
  the b of the same records; `class_accuracy`: a digit classifier of the target domain still recognises the digit
  (pix2pix's "FCN score" idea: a classifier of the content must still find it after translation).
- unpaired (CycleGAN): `fid_ab` (G(a) vs the split's B), `fid_ba` (F(b) vs the split's A), `class_accuracy_ab`,
  `class_accuracy_ba` (classifiers of each target domain), `cycle_l1` (mean of |F(G(a)) - a| and |G(F(b)) - b|).
- attributes (StarGAN): every attribute of each record flipped with probability 1/2 (a generator seeded by the
  evaluation seed) gives its target vector; `attribute_accuracy` (a multi-label classifier's per-attribute accuracy
  against the targets, averaged over attributes: StarGAN's protocol), `class_accuracy`, `cycle_l1` (translated back
  to the source attributes) and `fid` against the real images of the partner split (see below).

Every value has reference rows, `ref_real/<key>` and `ref_identity/<key>`: the same metric on real data (a
classifier's accuracy on the real target images; FID of the split's real target images against as many real target
images of the partner split, `train`, or `val` when train is evaluated) and on the identity mapping (output = input),
whose FID, class accuracy and cycle L1 show what doing nothing scores. The attribute FID compares with the partner
split's images, not the split's own: against the very images it was given, the identity would score FID 0.

Conventions: translations are quantised to uint8 (as if saved to PNG and read back) before every metric, so the
values are those of the saved samples; L1 is in [-1, 1] units (pix2pix's loss); PSNR and SSIM are torchmetrics' on
[-1, 1] images with data_range 2.0, per image, averaged over images (a perfect translation has PSNR inf). Under DDP
each rank translates a contiguous share of the records and the translations are gathered, so every rank computes the
same values. Translation randomness (pix2pix's dropout) comes from a private seeded stream, not the training one.

The judges: the digit classifier of a target domain is the dataset's classifier backbone (`classifier_weights`, trained
on `dataset(split)`, the target images); CycleGAN's B->A direction is judged by a classifier trained on domain A (and,
with the classifier backbone, its FID lives in that classifier's feature space); the attribute classifier is a
multi-label CNN of the same architecture trained on the train split's (x, attrs). All are cached on disk under a key of
everything that affects them; their held-out accuracies go into the provenance. Class accuracies are skipped when the
records have no digit labels (label -1: photographs).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch_fidelity.utils import create_feature_extractor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gan.checkpoints import load as load_file
from gan.errors import UserError
from gan.metrics import feature_extractor_classifier as classifier
from gan.metrics import scores
from gan.metrics.backbone import Backbone
from gan.metrics.classifier_training import ARCH_VERSION, DEFAULT_HPARAMS, cached_classifier, classifier_weights
from gan.metrics.distributed import gather_rows, rank_and_world_size, rank_zero_first
from gan.metrics.feature_extractor_classifier import ClassifierNet
from gan.metrics.quantize import from_uint8, to_uint8
from gan.metrics.real_data import KNOWN_NUM_CLASSES
from gan.storage import sha256_file, sha256_tensors

REF_REAL, REF_IDENTITY = "ref_real", "ref_identity"
DATA_RANGE = 2.0  # PSNR and SSIM on [-1, 1] images
FLIP_PROBABILITY = 0.5  # of each attribute, for the target vectors
MAX_TRAIN_RECORDS = 10000  # the judges of large datasets (CelebA) train on this fixed subset of the train split
JUDGE_VERSION = 1  # bump when a judge's data or recipe changes: old cache entries are then ignored


# ---- pure functions: uint8 images in, values out -------------------------------------------------------------------
def pixel_l1(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per image, mean |fake - real| in [-1, 1] units (pix2pix's L1) of uint8 images [N, C, H, W]."""
    return (from_uint8(fake) - from_uint8(real)).abs().flatten(1).mean(1)


def psnr(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per image, torchmetrics' PSNR of the [-1, 1] images (data_range 2.0); inf where the images are equal."""
    return peak_signal_noise_ratio(from_uint8(fake), from_uint8(real), data_range=DATA_RANGE, reduction="none",
                                   dim=(1, 2, 3))


def ssim(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per image, torchmetrics' SSIM of the [-1, 1] images (data_range 2.0, its 11x11 Gaussian window, sigma 1.5)."""
    return structural_similarity_index_measure(from_uint8(fake), from_uint8(real), data_range=DATA_RANGE,
                                               reduction="none")


def frechet(fake_features: torch.Tensor, real_features: torch.Tensor) -> float:
    return scores.frechet_distance(scores.gaussian_statistics(fake_features), scores.gaussian_statistics(real_features))


def class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean())


def attribute_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """StarGAN's protocol: per attribute, the fraction of images the classifier (logit > 0) finds with the target
    value; averaged over attributes."""
    return float(((logits > 0) == (targets > 0.5)).double().mean(0).mean())


def target_attributes(attrs: torch.Tensor, seed: int) -> torch.Tensor:
    """Each attribute of each row flipped with probability 1/2, by a generator seeded with `seed` alone."""
    flip = torch.rand(attrs.shape, generator=torch.Generator().manual_seed(int(seed))) < FLIP_PROBABILITY
    return torch.where(flip, 1 - attrs, attrs)


def partner_split(split: str) -> str:
    """The split whose real images are the second real sample of the real-vs-real reference (and the attribute FID)."""
    return "val" if split == "train" else "train"


def labels_known(labels: torch.Tensor) -> bool:
    return len(labels) > 0 and bool((labels >= 0).all())


def mean(values: torch.Tensor) -> float:
    return float(values.double().mean())


# ---- judges: classifiers and feature spaces -------------------------------------------------------------------------
@dataclass
class Judge:
    """A trained classifier (class logits, or one logit per attribute) with what the provenance records of it."""

    net: ClassifierNet
    path: Path
    weights_sha256: str
    test_accuracy: float
    attribute_accuracy: list[float] | None
    device: torch.device

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
        """float32 logits on the CPU of uint8 images [N, C, H, W]."""
        return torch.cat([self.net(from_uint8(chunk.to(self.device)))[1].float().cpu() for chunk in images.split(batch_size)])


def load_judge(path: Path, device: torch.device) -> Judge:
    saved = load_file(path, cache=True)
    net = ClassifierNet(**saved["arch"])
    net.load_state_dict(saved["state_dict"])
    net = net.eval().requires_grad_(False).to(device)
    return Judge(net, Path(path), sha256_file(path), float(saved["test_accuracy"]), saved.get("attribute_accuracy"), device)


def records_fingerprint(records) -> str:
    """Cheap identity of a split's records: their number and every field of three of them (first, middle, last)."""
    picks = sorted({0, len(records) // 2, len(records) - 1})
    fields = records.records(picks)
    return f"{len(records)}-" + sha256_tensors(*(fields[name] for name in sorted(fields)))


class Judges:
    """The classifiers and feature spaces one datamodule's translations are judged by, built once (cached on disk),
    and the real features and reference rows per (split, number of records), kept in memory."""

    def __init__(self, datamodule, backbone: Callable[[], Backbone], cache_dir: str | Path,
                 classifier_hparams: dict[str, Any] | None = None, batch_size: int = 250,
                 device: torch.device | str = "cpu"):
        self.datamodule, self._backbone, self.cache_dir = datamodule, backbone, Path(cache_dir)
        self.classifier_hparams = dict(classifier_hparams or {})
        self.hparams = {**DEFAULT_HPARAMS, **self.classifier_hparams}
        self.batch_size, self.device = int(batch_size), torch.device(device)
        self._judges: dict[str, Judge] = {}
        self._spaces: dict[str, Backbone] = {}
        self._features: dict[tuple, torch.Tensor] = {}
        self.references: dict[tuple, dict[str, float]] = {}

    # The digit classifier of the target domain is the classifier backbone's weights file (one training, shared).
    def target_classes(self) -> Judge:
        if "b" not in self._judges:
            path = rank_zero_first(lambda: classifier_weights(self.datamodule, self.cache_dir, self.classifier_hparams))
            self._judges["b"] = load_judge(path, self.device)
        return self._judges["b"]

    def domain_a_classes(self) -> Judge:
        """CycleGAN's B->A judge: the same recipe trained on domain A's train split (its digit labels)."""
        if "a" not in self._judges:
            dm = self.datamodule
            num_classes = dm.num_classes or KNOWN_NUM_CLASSES.get(dm.name)
            if num_classes is None:
                raise UserError(f"class_accuracy_ba needs the number of classes of dataset '{dm.name}': set "
                                f"data.num_classes or add '{dm.name}' to gan.metrics.real_data.KNOWN_NUM_CLASSES.")
            domains = {split: dm.domains(split)[0] for split in ("train", "test")}
            key = self._key("domain_a", domains, num_classes)

            def data():
                train, test = (dm.evaluation_records(split, MAX_TRAIN_RECORDS) for split in ("train", "test"))
                return train["a"], train["a_label"], test["a"], test["a_label"]

            self._judges["a"] = self._train(f"{dm.name}-domainA", key, int(num_classes), data, multilabel=False,
                                            description=f"Domain A classifier for '{dm.name}'")
        return self._judges["a"]

    def attributes(self) -> Judge:
        """StarGAN's judge: a multi-label classifier of the attributes, trained on the train split's (x, attrs)."""
        if "attributes" not in self._judges:
            dm = self.datamodule
            splits = {split: dm.dataset(split) for split in ("train", "test")}
            num_attributes = int(splits["train"].records([0])["attrs"].shape[1])
            key = self._key("attributes", splits, num_attributes)

            def data():
                train, test = (dm.evaluation_records(split, MAX_TRAIN_RECORDS) for split in ("train", "test"))
                return train["x"], train["attrs"], test["x"], test["attrs"]

            self._judges["attributes"] = self._train(f"{dm.name}-attributes", key, num_attributes, data, multilabel=True,
                                                     description=f"Attribute classifier for '{dm.name}'")
        return self._judges["attributes"]

    def _key(self, role: str, records: dict, outputs: int) -> dict[str, Any]:
        dm = self.datamodule
        return {"dataset": dm.name, "role": role, "shape": list(dm.shape), "outputs": outputs,
                **{split: records_fingerprint(r) for split, r in records.items()}, "hparams": self.hparams,
                "max_train_records": MAX_TRAIN_RECORDS, "version": ARCH_VERSION, "judge_version": JUDGE_VERSION}

    def _train(self, name: str, key: dict, outputs: int, data, multilabel: bool, description: str) -> Judge:
        channels, height, _ = self.datamodule.shape
        arch = {"channels": channels, "image_size": height, "num_classes": outputs, "width": self.hparams["width"]}
        path = rank_zero_first(lambda: cached_classifier(self.cache_dir, name, key, arch, self.hparams, data,
                                                         multilabel=multilabel, description=description))
        return load_judge(path, self.device)

    # Feature spaces for FID: the evaluator's backbone for the target domain B (and the attribute images); for domain
    # A the domain-A classifier's features when the backbone is a classifier and A has labels, else the same backbone.
    def space(self, domain: str = "b") -> Backbone:
        if domain not in self._spaces:
            target = self._backbone()
            if domain == "a" and target.name == "classifier" and self.domain_a_labelled():
                judge = self.domain_a_classes()
                extractor = create_feature_extractor(classifier.NAME, [classifier.FEATURES, classifier.LOGITS],
                                                     cuda=self.device.type == "cuda", verbose=False,
                                                     feature_extractor_weights_path=str(judge.path)).to(self.device)
                self._spaces[domain] = Backbone("classifier", extractor, classifier.FEATURES, classifier.LOGITS,
                                                judge.weights_sha256, target.resize, self.device,
                                                {"classifier_test_accuracy": round(judge.test_accuracy, 5)})
            else:
                self._spaces[domain] = target
        return self._spaces[domain]

    def domain_a_labelled(self) -> bool:
        return labels_known(self.datamodule.eval_tensors("train", 1)["a_label"])

    def features(self, domain: str, images: torch.Tensor) -> torch.Tensor:
        return self.space(domain).features(images, self.batch_size)["pool"]

    def real_features(self, domain: str, split: str, field: str, n: int) -> torch.Tensor:
        """Features of the `field` images of (up to) `n` records of `split` (memoised)."""
        key = (domain, split, field, int(n))
        if key not in self._features:
            self._features[key] = self.features(domain, self.datamodule.eval_tensors(split, int(n))[field])
        return self._features[key]


# ---- translating ----------------------------------------------------------------------------------------------------
def rank_share(n: int) -> slice:
    """This rank's contiguous share of n records: gathered in rank order, the shares give back the original order."""
    rank, world_size = rank_and_world_size()
    sizes = [n // world_size + (r < n % world_size) for r in range(world_size)]
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


@contextlib.contextmanager
def private_rng(device: torch.device, seed: int) -> Iterator[None]:
    """The model's own randomness (dropout) on `device` from `seed`, leaving the training streams untouched."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


@torch.no_grad()
def translate(fn: Callable[..., torch.Tensor], images: torch.Tensor, *conditions: torch.Tensor,
              batch_size: int = 250, device: torch.device | str = "cpu",
              out_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """uint8 outputs [N, *out_shape] of `fn` on all `images` (uint8): this rank translates its share, then all are
    gathered. `out_shape` [C, H, W] is what the kind expects of an output (default: the input's shape)."""
    share = rank_share(len(images))
    mine = images[share]
    out_shape = tuple(images.shape[1:] if out_shape is None else out_shape)
    parts = []
    for start in range(0, len(mine), batch_size):
        chunk = slice(start, start + batch_size)
        out = fn(from_uint8(mine[chunk]), *(c[share][chunk] for c in conditions))
        if out.shape != (len(mine[chunk]), *out_shape):
            raise UserError(f"The model's translate() returned images of shape {tuple(out.shape)} for inputs of shape "
                            f"{tuple(mine[chunk].shape)}: its outputs must keep the batch size and have the shape "
                            f"[C, H, W] = {list(out_shape)}.")
        parts.append(to_uint8(out.detach().float().cpu()))
    local = torch.cat(parts) if parts else torch.empty((0, *out_shape), dtype=torch.uint8)
    return gather_rows(local, device)
