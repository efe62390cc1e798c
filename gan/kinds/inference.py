"""Generators with an encoder (BiGAN, ALI): noise -> image, and image -> latent code.

Besides the image suite (gan.kinds.image: FID, IS, ... each with its real-data row; the mode metrics on 2-D data), an
evaluation adds:

- `probe_accuracy`: a linear probe, multinomial logistic regression (scikit-learn, L2, C = 1) on standardised features,
  fitted on E(x) of up to PROBE_IMAGES labelled images of the partner split (train; val when train is evaluated) and
  scored on up to `num_samples` images of the evaluated split. Beside it the same probe on `ref_pixels/` (the raw
  pixels: a plain baseline), on `ref_random/` (the features of E's architecture at a fresh random initialisation: the
  floor) and, with the classifier backbone, `ref_real/` (the supervised digit classifier on the same images: the
  ceiling). BiGAN's paper scores its MNIST features by 1-nearest-neighbour accuracy instead. Data without class labels
  (the toy mixtures) get no probe, and a note in the provenance saying so;
- `recon_l1`: mean |x - G(E(x))| over the same evaluated images (pixels in [-1, 1], or the points' coordinates), z
  drawn from q(z | x) with the evaluation's seed for a stochastic encoder, beside `ref_shuffled/recon_l1`, |x - x'|
  for x' another image of the split: what a reconstruction that ignores its input scores.

Grids: the square of samples and, for images, `reconstructions/`: rows of fixed validation images, each followed by
the row of their reconstructions.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gan.errors import UserError
from gan.kinds import EvalRequest, register
from gan.kinds.image import ImageGenerator, NoiseToImage

PROBE_IMAGES = 5000  # labelled images the probe is fitted on, at most
PROBE_ITERATIONS = 1000  # lbfgs iterations
BATCH = 500


@runtime_checkable
class InferenceGenerator(ImageGenerator, Protocol):
    def encode(self, x: Tensor, ema: bool | None = None, generator: torch.Generator | None = None,
               encoder: nn.Module | None = None) -> Tensor:
        """E's code [N, latent] of images in [-1, 1] (a stochastic encoder's mean, or a draw with `generator`);
        `encoder`: another network of E's architecture."""

    def reconstruct(self, x: Tensor, ema: bool | None = None, generator: torch.Generator | None = None) -> Tensor:
        """G(E(x))."""

    def reinitialized_encoder(self, seed: int) -> nn.Module:
        """E's architecture with freshly initialised parameters."""


@register
class Inference(NoiseToImage):
    name = "inference"
    protocol = InferenceGenerator

    def add_values(self, evaluator, module, request: EvalRequest, evaluation) -> None:
        for values, notes in (probe_accuracy(evaluator, module, request),
                              reconstruction_error(evaluator, module, request)):
            evaluation.values.update(values)
            evaluation.provenance.update(notes)

    def write_samples(self, grid, trainer, module, path: Path) -> dict[str, Path]:
        written = super().write_samples(grid, trainer, module, path)
        if len(trainer.datamodule.shape) > 1:
            images, columns = reconstruction_grid(module, trainer.datamodule, grid.size, grid.generator())
            file = path.parent / "reconstructions" / path.with_suffix(".png").name
            file.parent.mkdir(exist_ok=True)
            grid.save_grid(images, columns, file)
            written["reconstructions"] = file
        return written


def reconstruction_grid(module, datamodule, size: int, generator: torch.Generator) -> tuple[Tensor, int]:
    """(images, columns): rows of fixed validation images (the metrics' fixed subset), each followed by a row of their
    reconstructions."""
    from gan.metrics.real_data import load_tensors

    columns = max(1, round(size**0.5))
    real = load_tensors(datamodule.dataset("val"), max(1, columns // 2) * columns)[0]
    columns = min(columns, len(real))
    rows = len(real) // columns
    real = real[:rows * columns]
    pairs = torch.stack([real, module.reconstruct(real, generator=generator).float().cpu()])
    return pairs.view(2, rows, columns, *real.shape[1:]).transpose(0, 1).flatten(0, 2), columns


def batched(function, x: Tensor) -> Tensor:
    return torch.cat([function(chunk).float().cpu() for chunk in x.split(BATCH)])


def reconstruction_error(evaluator, module, request: EvalRequest) -> tuple[dict[str, float], dict]:
    from gan.metrics.real_data import load_tensors

    x = load_tensors(evaluator.datamodule.dataset(request.split), request.num_samples)[0]
    generator = torch.Generator().manual_seed(request.seed)
    reconstructions = batched(lambda chunk: module.reconstruct(chunk, request.ema, generator), x)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(request.seed))
    values = {"recon_l1": mean_l1(x, reconstructions),
              "ref_shuffled/recon_l1": mean_l1(x[order], x[order.roll(1)])}
    return values, {"recon_l1_images": len(x)}


def mean_l1(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().mean())


def probe_accuracy(evaluator, module, request: EvalRequest) -> tuple[dict[str, float], dict]:
    """`probe_accuracy` and its reference rows; none for data without class labels."""
    from gan.metrics.real_data import labelled_dataset, load_tensors
    from gan.metrics.translation import partner_split

    fit_split = partner_split(request.split)
    try:
        fit_set, _ = labelled_dataset(evaluator.datamodule, fit_split)
        test_set, num_classes = labelled_dataset(evaluator.datamodule, request.split)
    except UserError:
        return {}, {"probe_accuracy": f"not computed: dataset '{evaluator.datamodule.name}' has no class labels"}
    fit_x, fit_y = load_tensors(fit_set, PROBE_IMAGES)
    x, y = load_tensors(test_set, request.num_samples)
    random_encoder = module.reinitialized_encoder(request.seed)

    def probe(features) -> float:
        return linear_probe(batched(features, fit_x), fit_y, batched(features, x), y)

    values = {"probe_accuracy": probe(lambda chunk: module.encode(chunk, request.ema)),
              "ref_pixels/probe_accuracy": probe(lambda chunk: chunk.flatten(1)),
              "ref_random/probe_accuracy": probe(lambda chunk: module.encode(chunk, encoder=random_encoder))}
    if evaluator.backbone_name == "classifier":
        logits = evaluator.backbone.features(x, evaluator.batch_size)["logits"]
        values["ref_real/probe_accuracy"] = float((logits.argmax(1).cpu() == y).double().mean())
    notes = {"probe": "multinomial logistic regression (scikit-learn lbfgs, L2, C=1) on standardised features",
             "probe_fit_images": f"{len(fit_x)} of the {fit_split} split", "probe_images": len(x),
             "probe_classes": num_classes, "probe_random_encoder_seed": request.seed}
    return values, notes


def linear_probe(fit_x: Tensor, fit_y: Tensor, x: Tensor, y: Tensor) -> float:
    """Accuracy on (x, y) of a logistic regression fitted on (fit_x, fit_y), features standardised on fit_x."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_ITERATIONS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the accuracy is what is reported, converged or not
        probe.fit(fit_x.double().numpy(), fit_y.numpy())
    return float(probe.score(x.double().numpy(), y.numpy()))
