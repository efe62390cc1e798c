"""One evaluation of a generator: fresh samples -> features -> (gathered over ranks) -> values with provenance."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch_fidelity

from gan.errors import UserError
from gan.kinds import EvalRequest, kind_of
from gan.metrics import scores
from gan.metrics.backbone import Backbone, build_backbone, resolve_backbone
from gan.metrics.distributed import gather_rows, rank_and_world_size, rank_zero_first
from gan.metrics.memorization import memorization_summary, nearest_distances
from gan.metrics.quantize import to_uint8
from gan.metrics.real_data import load_tensors
from gan.metrics.reference import Reference, load_reference, reference_key
from gan.metrics.toy import NUM_SAMPLES as TOY_NUM_SAMPLES
from gan.metrics.toy import toy_metrics
from gan.metrics.translation import REF_REAL, Judges, partner_split
from gan.storage import cache_key, save_json

METRICS = ("fid", "is", "kid", "pr", "memorization", "ppl")
DEFAULT_METRICS = ("fid", "is", "kid", "pr")
TOY_VALUES = ("modes", "high_quality", "reverse_kl")
REF_REAL_VERSION = 1  # bump when the real-data reference values are computed differently: old cache files are ignored


@dataclass
class Evaluation:
    values: dict[str, float]
    provenance: dict[str, Any]
    distributions: dict[str, Any] = field(default_factory=dict)
    samples: torch.Tensor | None = None  # all ranks' generated samples, when asked for
    labels: torch.Tensor | None = None
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)  # translations: inputs, outputs, labels, attributes

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "provenance": self.provenance, "distributions": self.distributions}


class Evaluator:
    """Evaluates generators of one datamodule; holds the backbone and the reference statistics per split.

    Under DDP every rank calls `evaluate` with its module: each draws its share of the samples from
    its own seed, the features (or distances) are gathered, and every rank computes the same values
    (so that all ranks agree on which checkpoint is best).

    Every value comes with its real-data reference `ref_real/<value>` (the ceiling a reader compares with): as many
    real images of the partner split (train; val when train is evaluated) scored exactly as the generated samples
    are, against the same real images of the evaluated split. Real vs real FID, KID and precision/recall, real
    data's IS (the classifier score with the classifier backbone) and diversity (about 1); for 2-D toy data the
    real points' modes, % high quality and reverse KL. Computed once per split, sample count and seed and cached on
    disk next to the reference statistics.
    """

    def __init__(self, datamodule, names: Sequence[str] = DEFAULT_METRICS, backbone: str = "auto",
                 num_samples: int = 2000, toy_num_samples: int = TOY_NUM_SAMPLES, seed: int = 0,
                 cache_dir: str | Path = ".cache", inception_weights: str | None = None,
                 classifier: dict | None = None, batch_size: int = 250, kid_subsets: int = scores.KID_SUBSETS,
                 device: torch.device | str | None = None):
        unknown = [n for n in names if n not in METRICS]
        if unknown or not names:
            raise UserError(f"Unknown metric name(s) {unknown or list(names)}. Expected a non-empty list from "
                            f"{', '.join(METRICS)}, e.g. metrics=[fid,is,kid,pr].")
        if int(num_samples) < 2 or int(toy_num_samples) < 2:
            raise UserError(f"An evaluation needs at least 2 generated samples, got num_samples={num_samples}, "
                            f"toy_num_samples={toy_num_samples}. Use e.g. num_samples=2000 (10000 for reported numbers).")
        self.datamodule, self.names = datamodule, list(names)
        self.backbone_name = resolve_backbone(backbone, datamodule)
        self.num_samples = int(toy_num_samples if self.toy else num_samples)
        self.seed, self.cache_dir, self.batch_size = int(seed), Path(cache_dir).expanduser(), int(batch_size)
        self.inception_weights, self.classifier_hparams = inception_weights, dict(classifier or {})
        self.kid_subsets = int(kid_subsets)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._backbone: Backbone | None = None
        self._references: dict[tuple[str, int], Reference] = {}
        self._train_images: torch.Tensor | None = None
        self._real_rows: dict[tuple[str, int, int], tuple[dict[str, float], dict[str, Any]]] = {}
        self._judges: Judges | None = None  # translation models' classifiers and feature spaces

    @property
    def toy(self) -> bool:
        return self.backbone_name == "toy"

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = build_backbone(self.backbone_name, self.datamodule, self.device, self.cache_dir,
                                            self.inception_weights, self.classifier_hparams)
        return self._backbone

    def reference(self, split: str, num_samples: int | None = None) -> Reference:
        """Real features of (up to) `num_samples` images of `split`, from the disk cache when it has them."""
        key = (split, int(num_samples or self.num_samples))
        if key not in self._references:
            self._references[key] = load_reference(self.datamodule, split, self.backbone, key[1],
                                                   self.cache_dir, self.batch_size)
        return self._references[key]

    def judges(self) -> Judges:
        """The classifiers and feature spaces of the image-to-image metrics (gan.metrics.translation), built once."""
        if self._judges is None:
            self._judges = Judges(self.datamodule, lambda: self.backbone, self.cache_dir, self.classifier_hparams,
                                  self.batch_size, self.device)
        return self._judges

    # ---- generation -------------------------------------------------------------------------------
    def evaluate(self, module, split: str = "val", seed: int | None = None, ema: bool | None = None,
                 ckpt: str | None = None, num_samples: int | None = None, keep_samples: bool = False,
                 truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> Evaluation:
        """Score `module` on `split` with the evaluation suite of its kind (gan.kinds): for a generator, this rank's
        share of `num_samples` fresh samples against up to as many real images of `split`.
        `truncation_psi` != 1: samples with the truncation trick (models that offer it), recorded."""
        request = EvalRequest(split=split, seed=self.seed if seed is None else int(seed),
                              num_samples=self.num_samples if num_samples is None or self.toy else int(num_samples),
                              ema=ema, ckpt=ckpt, keep_samples=keep_samples, truncation_psi=truncation_psi,
                              truncation_cutoff=truncation_cutoff)
        return kind_of(module).evaluate(self, module, request)

    # ---- scoring ----------------------------------------------------------------------------------
    def score(self, fake: torch.Tensor, split: str, seed: int, context: dict[str, Any] | None = None,
              num_real: int | None = None) -> Evaluation:
        """Values of this rank's generated samples `fake`, together with the other ranks', against `split`."""
        num_real = int(num_real or self.num_samples)
        if self.toy:
            values, provenance, distributions = self._score_toy(fake, split, num_real)
        else:
            values, provenance, distributions = self._score_images(fake, split, seed, num_real)
        provenance.update(self.run_provenance(split, seed, list(TOY_VALUES) if self.toy else self.names))
        provenance.update(context or {})
        return Evaluation(values, provenance, distributions)

    def run_provenance(self, split: str, seed: int, metrics: list[str]) -> dict[str, Any]:
        return {
            "dataset": self.datamodule.name, "split": split, "seed": seed, "metrics": metrics,
            "world_size": rank_and_world_size()[1], "torch_fidelity": torch_fidelity.__version__,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ckpt": None, "g_iter": None, "ema": None,  # what was evaluated: filled in by `evaluate` (context)
        }

    def _score_images(self, fake: torch.Tensor, split: str, seed: int, num_real: int):
        features = self.backbone.features(fake, self.batch_size)
        pool = gather_rows(features["pool"], self.device)
        logits = gather_rows(features["logits"], self.device) if "is" in self.names else None
        reference = self.reference(split, num_real)
        values, extra = self._image_values(pool, logits, reference, seed, strict=True)
        provenance = {**self.backbone.provenance(), "image_size": int(self.datamodule.shape[-1]),
                      "num_real": reference.num_real, "num_fake": len(pool),
                      "reference_key": cache_key(reference.key), **extra}
        distributions = {}
        if "memorization" in self.names:
            memorization, distributions = self._memorization(fake, split, num_real)
            values.update(memorization)
        real_values, real_provenance = self._image_real_rows(split, seed, num_real)
        values.update(real_values)
        provenance.update(real_provenance)
        return values, provenance, distributions

    def _image_values(self, pool: torch.Tensor, logits: torch.Tensor | None, reference: Reference, seed: int,
                      strict: bool) -> tuple[dict[str, float], dict[str, Any]]:
        """FID, IS, KID, precision/recall and diversity of the features `pool` (and `logits`) against `reference`.
        With `strict`, too few samples for precision/recall is an error; otherwise it is left out."""
        values: dict[str, float] = {}
        provenance: dict[str, Any] = {}
        if "fid" in self.names:
            values["fid"] = scores.frechet_distance(scores.gaussian_statistics(pool), reference.stats)
        if "is" in self.names and logits is not None:
            values.update(scores.inception_score(logits, seed))
            provenance["is_splits"] = min(scores.IS_SPLITS, len(pool))
        if "kid" in self.names:
            kid = scores.kernel_distance(pool, reference.features, seed, self.kid_subsets)
            provenance.update(kid_subset_size=kid.pop("kid_subset_size"), kid_subsets=self.kid_subsets)
            values.update(kid)
        if "pr" in self.names:
            if min(len(pool), reference.num_real) > scores.PR_NEIGHBORHOOD:
                values.update(scores.precision_recall(pool, reference.features))
                provenance["pr_neighborhood"] = scores.PR_NEIGHBORHOOD
            elif strict:
                raise UserError(f"Precision/recall with k={scores.PR_NEIGHBORHOOD} needs more than "
                                f"{scores.PR_NEIGHBORHOOD} samples per set, got {len(pool)} generated and "
                                f"{reference.num_real} real. Increase num_samples or drop pr from the metrics.")
        values["diversity"] = scores.mean_pairwise_distance(pool) / reference.diversity
        return values, provenance

    def _image_real_rows(self, split: str, seed: int, num_real: int) -> tuple[dict[str, float], dict[str, Any]]:
        """`ref_real/<value>`: real images of the partner split scored as if generated (see the class docstring);
        memoised, and cached on disk as a small JSON file."""
        memo = (split, int(num_real), int(seed))
        if memo in self._real_rows:
            return self._real_rows[memo]
        partner = partner_split(split)
        reference = self.reference(split, num_real)
        # as many real images as generated samples (FID's bias depends on the sample count), when the split has them
        n = min(int(num_real), len(self.datamodule.dataset(partner)))
        if n < 2:
            self._real_rows[memo] = ({}, {"ref_real": f"none: the {partner} split has {n} image(s)"})
            return self._real_rows[memo]
        key = {"reference": cache_key(reference.key),
               "partner": reference_key(self.datamodule, partner, self.backbone, n),
               "names": sorted(name for name in self.names if name not in ("memorization", "ppl")), "seed": int(seed),
               "kid_subsets": self.kid_subsets, "version": REF_REAL_VERSION}
        path = (self.cache_dir / "reference" /
                f"ref_real-{self.datamodule.name}-{split}-vs-{partner}-n{n}-s{int(seed)}-{cache_key(key)}.json")

        def load_or_compute() -> dict[str, float]:
            if path.is_file():
                try:
                    return json.loads(path.read_text())["values"]
                except (ValueError, KeyError):
                    pass  # a damaged cache file is recomputed
            images, _ = load_tensors(self.datamodule.dataset(partner), n, uint8=True)
            features = self.backbone.features(images, self.batch_size)
            values, _ = self._image_values(features["pool"], features["logits"], reference, int(seed), strict=False)
            save_json({"key": key, "values": values}, path)
            return values

        values = rank_zero_first(load_or_compute)
        provenance = {"ref_real": f"{n} real images of the {partner} split scored as generated samples are, against "
                                  f"{reference.num_real} of the {split} split (same backbone, seed and settings)",
                      "ref_real_num": n, "ref_real_split": partner}
        rank = {k: i for i, k in enumerate(("fid", "is", "is_std", "kid", "kid_std", "precision", "recall"))}
        rows = {f"{REF_REAL}/{k}": values[k] for k in sorted(values, key=lambda k: (rank.get(k, len(rank)), k))}
        self._real_rows[memo] = (rows, provenance)
        return self._real_rows[memo]

    def _memorization(self, fake: torch.Tensor, split: str, num_real: int):
        if self._train_images is None:  # the images the model trained on (data.train_limit's subset, if any)
            train = self.datamodule.dataset("train")
            self._train_images = load_tensors(train, uint8=True)[0]
            subset = self.datamodule.train_indices(len(train))
            if subset is not None:
                self._train_images = self._train_images[subset]
        fake_distances = gather_rows(nearest_distances(to_uint8(fake), self._train_images, device=self.device), self.device)
        held_out = load_tensors(self.datamodule.dataset(split), num_real, uint8=True)[0]
        real_distances = nearest_distances(held_out, self._train_images, device=self.device)
        return memorization_summary(fake_distances, real_distances)

    def _score_toy(self, fake: torch.Tensor, split: str, num_real: int):
        from gan.data.toy import mixture

        points = gather_rows(fake.double(), self.device)
        means, std = mixture(self.datamodule.name)
        real, _ = load_tensors(self.datamodule.dataset(split), num_real)
        values: dict[str, float] = dict(toy_metrics(points, means, std))
        values["diversity"] = scores.mean_pairwise_distance(points) / scores.mean_pairwise_distance(real)
        provenance = {"backbone": "toy", "weights_sha256": None, "resize": None, "image_size": None,
                      "num_real": len(real), "num_fake": len(points), "mixture_std": std}
        memo = (split, int(num_real), 0)
        if memo not in self._real_rows:  # the partner split's real points, scored as generated points are
            partner = partner_split(split)
            partner_points, _ = load_tensors(self.datamodule.dataset(partner), len(real))
            partner_points = partner_points.double()
            reference = dict(toy_metrics(partner_points, means, std))
            reference["diversity"] = scores.mean_pairwise_distance(partner_points) / scores.mean_pairwise_distance(real)
            self._real_rows[memo] = ({f"{REF_REAL}/{k}": v for k, v in reference.items()},
                                     {"ref_real": f"{len(partner_points)} real points of the {partner} split scored as "
                                                  f"generated points are", "ref_real_num": len(partner_points),
                                      "ref_real_split": partner})
        values.update(self._real_rows[memo][0])
        provenance.update(self._real_rows[memo][1])
        return values, provenance, {}


def sample_seed(seed: int, rank: int) -> int:
    """Distinct sample streams per rank and per evaluation seed."""
    return int(seed) * 1_000_003 + int(rank)


@torch.no_grad()
def generate(module, n: int, seed: int, batch_size: int = 250, ema: bool | None = None, **sample_options):
    """(samples on the CPU, labels or None): `n` samples drawn by `module.sample` with a private generator.

    The generator is seeded here, so training randomness is untouched and the samples depend only on `seed`.
    The model decides what it draws (a conditional model, uniformly random labels, returned as `y`);
    `sample_options` (truncation) go to `module.sample`.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = [module.sample(min(batch_size, n - start), generator=generator, ema=ema, **sample_options)
               for start in range(0, n, batch_size)]
    if not batches:
        return torch.empty(0), None
    samples = torch.cat([b["x"].float().cpu() for b in batches])
    labels = torch.cat([b["y"].cpu() for b in batches]) if "y" in batches[0] else None
    return samples, labels
