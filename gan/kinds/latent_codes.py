"""Generators with interpretable latent codes (InfoGAN): noise -> image, plus what the codes learned.

Besides the image suite (gan.kinds.image: FID, IS, ... each with its real-data row), an evaluation adds:

- `code_accuracy`: Q's most likely value of the first categorical code on the split's real images, matched one to
  one with the true classes (the matching that maximises agreement, Hungarian algorithm), as the fraction of images
  whose matched code is their class: the paper's "5% error rate in classifying MNIST digits". Beside it
  `ref_real/code_accuracy`, the supervised classifier of the classifier backbone on the same images (the ceiling),
  `ref_kmeans/code_accuracy`, k-means on the pixels with as many clusters, matched the same way (a plain unsupervised
  baseline), and `ref_chance/code_accuracy`, uniformly random codes matched the same way (the floor);
- `mi_categorical`, `mi_continuous`: the lower bounds L_I = H(c) + E log Q(c | G(z, c)) in nats on fresh samples,
  at most sum log K for the categorical codes (recorded as `mi_categorical_max`); the continuous codes' H is that of
  U(-1, 1), log 2 a code, so their bound can be negative where Q's Gaussian is wide.

Grids: the square of samples, and one grid per code varying it along each row (the model's `extra_grids`).
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from gan.errors import UserError
from gan.kinds import EvalRequest, register
from gan.kinds.image import ImageGenerator, NoiseToImage

MI_BATCH = 500


@runtime_checkable
class CodedGenerator(ImageGenerator, Protocol):
    categorical_codes: tuple  # the size of each categorical code
    continuous_codes: int

    def infer_codes(self, x: torch.Tensor):
        """Q(c | x) of images in [-1, 1]: `.logits` (a list, one [N, K] per categorical code) and
        `.log_likelihood(categorical, continuous)`."""


def matched_accuracy(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of cluster ids against labels under the one-to-one matching of clusters to labels that maximises it
    (scipy's Hungarian algorithm on the contingency table); unmatched clusters count as wrong."""
    from scipy.optimize import linear_sum_assignment

    table = np.zeros((int(clusters.max()) + 1, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(table, (clusters, labels), 1)
    rows, columns = linear_sum_assignment(table, maximize=True)
    return float(table[rows, columns].sum() / len(labels))


@register
class LatentCodes(NoiseToImage):
    name = "latent_codes"
    protocol = CodedGenerator

    def add_values(self, evaluator, module, request: EvalRequest, evaluation) -> None:
        values, provenance = evaluation.values, evaluation.provenance
        values.update(mutual_information(module, request))
        provenance["mi_categorical_max"] = sum(math.log(k) for k in module.categorical_codes)
        provenance["mi_units"] = "nats"
        if module.categorical_codes:
            accuracy, notes = code_accuracy(evaluator, module, request)
            values.update(accuracy)
            provenance.update(notes)


def mutual_information(module, request: EvalRequest) -> dict[str, float]:
    """The lower bounds on I(c; G(z, c)) over `num_samples` fresh samples drawn with the evaluation's seed."""
    generator = torch.Generator().manual_seed(request.seed)
    log_cat, log_cont, n = 0.0, 0.0, request.num_samples
    for start in range(0, n, MI_BATCH):
        samples = module.sample(min(MI_BATCH, n - start), generator=generator, ema=request.ema)
        cat, cont = module.infer_codes(samples["x"]).log_likelihood(samples["categorical"].to(samples["x"].device),
                                                                     samples["continuous"].to(samples["x"]))
        log_cat, log_cont = log_cat + float(cat.double().sum()), log_cont + float(cont.double().sum())
    return {"mi_categorical": sum(math.log(k) for k in module.categorical_codes) + log_cat / n,
            "mi_continuous": module.continuous_codes * math.log(2) + log_cont / n}


def code_accuracy(evaluator, module, request: EvalRequest) -> tuple[dict[str, float], dict]:
    """`code_accuracy` and its reference rows on (up to `num_samples` of) the split's labelled real images; none for
    data without class labels."""
    from sklearn.cluster import KMeans

    from gan.metrics.real_data import labelled_dataset, load_tensors

    try:
        dataset, num_classes = labelled_dataset(evaluator.datamodule, request.split)
    except UserError:
        return {}, {"code_accuracy": f"not computed: dataset '{evaluator.datamodule.name}' has no class labels"}
    x, y = load_tensors(dataset, request.num_samples)
    labels, k = y.numpy(), module.categorical_codes[0]
    codes = torch.cat([module.infer_codes(chunk).logits[0].argmax(1).cpu() for chunk in x.split(MI_BATCH)]).numpy()
    pixels = x.flatten(1).double().numpy()
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=request.seed).fit_predict(pixels)
    chance = np.random.default_rng(request.seed).integers(k, size=len(labels))
    values = {"code_accuracy": matched_accuracy(codes, labels),
              "ref_kmeans/code_accuracy": matched_accuracy(kmeans, labels),
              "ref_chance/code_accuracy": matched_accuracy(chance, labels)}
    if evaluator.backbone_name == "classifier":
        logits = evaluator.backbone.features(x, evaluator.batch_size)["logits"]
        values["ref_real/code_accuracy"] = float((logits.argmax(1) == y).double().mean())
    notes = {"code_accuracy_images": len(labels), "code_accuracy_classes": num_classes,
             "code_accuracy_matching": "one-to-one, Hungarian (scipy linear_sum_assignment), first categorical code"}
    return values, notes
