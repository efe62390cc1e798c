"""Generators of images (or 2-D toy points) from noise: unconditional, class-conditional, and likelihood models.

Evaluation: fresh samples scored by the evaluator's image suite (FID, IS, KID, precision/recall, memorization; the
toy mode metrics for 2-D data), each with its real-data row; perceptual path length for models whose sampling options
include `path_length`; a likelihood model adds its bounds on log p(x). Grids: a square of samples from fixed noise
(one row per class for a conditional model; a scatter over the real points for 2-D data), plus the model's own
`extra_grids` (StyleGAN's style mixing and truncation, BigGAN's truncation, the VAE's reconstructions).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from gan.errors import UserError
from gan.kinds import EvalRequest, Kind, register, value_rows
from gan.metrics.distributed import gather_rows, rank_and_world_size

# monitor=auto: the first of these metrics that is computed (metric name -> monitored value)
MONITOR_PREFERENCE = (("fid", "fid"), ("kid", "kid"), ("is", "is"), ("pr", "precision"))
TOY_MONITOR = "reverse_kl"


@runtime_checkable
class ImageGenerator(Protocol):
    name: str
    g_iter: int
    sampling_options: frozenset  # of "truncation" (sample takes truncation_psi, truncation_cutoff), "path_length"

    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               **options) -> dict[str, torch.Tensor]:
        """{"x": images in [-1, 1] or points (, "y": their labels)}, in evaluation mode."""

    def uses_ema(self, ema: bool | None) -> bool:
        """Whether `sample(ema=ema)` draws from an EMA copy of the generator."""

    def sampling_context(self) -> dict[str, Any]:
        """What else the samples depend on, recorded with every value (ProGAN: the resolution and alpha)."""

    def extra_grids(self, generator: torch.Generator, size: int) -> dict[str, tuple[torch.Tensor, int]]:
        """The model's own further grids: name -> (images, columns)."""


@runtime_checkable
class ConditionalGenerator(ImageGenerator, Protocol):
    num_classes: int


@runtime_checkable
class LikelihoodGenerator(ImageGenerator, Protocol):
    def likelihood_values(self, datamodule, split: str, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
        """Bounds on log p(x) of the split's images (the VAE: ELBO, IWAE), with their provenance."""


@register
class NoiseToImage(Kind):
    name = "image"
    fields = ("x",)
    protocol = ImageGenerator

    def monitor(self, evaluator) -> str:
        if evaluator.toy:
            return TOY_MONITOR
        return next((value for name, value in MONITOR_PREFERENCE if name in evaluator.names), "fid")

    def prepare(self, evaluator) -> None:
        if not evaluator.toy:
            evaluator.backbone

    def evaluate(self, evaluator, module, request: EvalRequest):
        from gan.metrics.evaluator import generate, sample_seed

        truncation = truncation_options(module, request.truncation_psi, request.truncation_cutoff)
        ppl = path_length(evaluator, module, request) if "ppl" in evaluator.names else None
        rank, world_size = rank_and_world_size()
        n_local = request.num_samples // world_size + (rank < request.num_samples % world_size)
        fake, labels = generate(module, n_local, sample_seed(request.seed, rank), evaluator.batch_size, request.ema,
                                **truncation)
        context = {**self.context(module, request), "ema": module.uses_ema(request.ema),
                   "truncation_psi": float(truncation.get("truncation_psi", 1.0)),
                   "truncation_cutoff": truncation.get("truncation_cutoff"), **module.sampling_context()}
        evaluation = evaluator.score(fake, request.split, request.seed, context, num_real=request.num_samples)
        if ppl is not None:
            evaluation.values.update(ppl[0])
            evaluation.provenance.update(ppl[1])
        self.add_values(evaluator, module, request, evaluation)
        if request.keep_samples:
            evaluation.samples = gather_rows(fake, evaluator.device)
            evaluation.labels = None if labels is None else gather_rows(labels, evaluator.device)
        return evaluation

    def add_values(self, evaluator, module, request: EvalRequest, evaluation) -> None:
        """A sub-kind's further values of the same evaluation."""

    # ---- samples --------------------------------------------------------------------------------------------
    def write_samples(self, grid, trainer, module, path: Path) -> dict[str, Path]:
        path = path.with_suffix(".png")
        if len(trainer.datamodule.shape) == 1:
            grid.scatter(trainer.datamodule, module, path)
            return {"samples": path}
        grid.save_grid(*self.grid(module, grid.size, grid.generator()), path)
        written = {"samples": path}
        for name, (images, columns) in module.extra_grids(grid.generator(), grid.size).items():
            extra = path.parent / name / path.name
            extra.parent.mkdir(exist_ok=True)
            grid.save_grid(images, columns, extra)
            written[name] = extra
        return written

    def grid(self, module, size: int, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """(images, columns): a square of samples."""
        return module.sample(size, generator=generator)["x"].float().cpu(), max(1, round(size**0.5))

    # ---- gan.evaluate ---------------------------------------------------------------------------------------
    def format_table(self, evaluation) -> str:
        p = evaluation.provenance
        header = (f"{p['dataset']} / {p['split']} split, backbone {p['backbone']} (weights {p['weights_sha256']}, "
                  f"resize {p['resize']}), {p['num_fake']} generated vs {p['num_real']} real, seed {p['seed']}, "
                  f"g_iter {p['g_iter']}, ema {p['ema']}"
                  + (f", truncation psi {p['truncation_psi']:g} (cutoff {p['truncation_cutoff']})"
                     if p.get("truncation_psi", 1) != 1 else ""))
        return header + "\n" + value_rows(evaluation.values)

    def sample_arrays(self, evaluation) -> dict[str, Any]:
        """`arr_0`: uint8 [N, H, W, C] images (the layout other evaluators read) or float [N, 2] points; `labels`."""
        from gan.metrics.quantize import to_uint8

        samples = evaluation.samples
        arrays = {"arr_0": samples.numpy() if samples.dim() == 2 else to_uint8(samples).permute(0, 2, 3, 1).numpy()}
        if evaluation.labels is not None:
            arrays["labels"] = evaluation.labels.numpy()
        return arrays


@register
class ClassConditional(NoiseToImage):
    name = "conditional"
    fields = ("x", "y")
    protocol = ConditionalGenerator

    def grid(self, module, size: int, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """Every class in a row of its own."""
        columns = max(1, size // module.num_classes)
        samples = module.sample(generator=generator, y=torch.arange(module.num_classes).repeat_interleave(columns))
        return samples["x"].float().cpu(), columns


@register
class LikelihoodModel(NoiseToImage):
    name = "likelihood"
    protocol = LikelihoodGenerator

    def add_values(self, evaluator, module, request: EvalRequest, evaluation) -> None:
        values, provenance = module.likelihood_values(evaluator.datamodule, request.split, request.seed)
        evaluation.values.update(values)
        evaluation.provenance.update(provenance)


def truncation_options(module, psi, cutoff) -> dict[str, Any]:
    """`module.sample`'s keyword arguments for the truncation trick: none for psi = 1; a UserError for a model that
    does not offer it (it has no mapping network or latent distribution to truncate)."""
    if isinstance(psi, (int, float)) and not isinstance(psi, bool) and psi == 1:
        return {}
    if "truncation" not in module.sampling_options:
        raise UserError(f"truncation={psi}: the truncation trick draws latents nearer their mean (model=stylegan, "
                        f"stylegan2: w towards the mean w; biggan: a truncated normal z); model {module.name} has no "
                        f"mapping network or truncated latents to do it with. Leave truncation at 1 for this model.")
    return {"truncation_psi": psi, "truncation_cutoff": cutoff}


def path_length(evaluator, module, request: EvalRequest):
    """Perceptual path length (gan.metrics.ppl) of a style-based generator: LPIPS-VGG16 distances with the inception
    backbone (as the papers), the classifier's features with the classifier backbone (offline); every rank computes
    the same value from the same pairs."""
    from gan.metrics.evaluator import sample_seed
    from gan.metrics.ppl import (CLASSIFIER_DISTANCE, LPIPS_DISTANCE, classifier_distance, lpips_distance,
                                 perceptual_path_length)

    if "path_length" not in module.sampling_options:
        raise UserError(f"ppl (perceptual path length) walks the latent space of a generator with a mapping network "
                        f"(model=stylegan or stylegan2); model {module.name} has none. Drop ppl from the metrics for "
                        f"this model.")
    if evaluator.backbone_name == "classifier":
        distance, name = classifier_distance(evaluator.backbone.extractor.net), CLASSIFIER_DISTANCE
    else:
        distance, name = lpips_distance(evaluator.device), LPIPS_DISTANCE
    return perceptual_path_length(module.style_generator(request.ema), distance, request.num_samples,
                                  sample_seed(request.seed, 0), batch_size=evaluator.batch_size,
                                  device=evaluator.device, distance_name=name)
