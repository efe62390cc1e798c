"""Text-to-image models (GAN-INT-CLS): images generated from captions.

Evaluation (gan.metrics.captions): one image from the first caption of each record of a fixed subset of a split
(`datamodule.eval_tensors`), noise from the evaluation seed; FID in the dataset's backbone against as many real images
of the partner split (train; val when train is evaluated: the ceiling's reference too), and caption consistency (class and attribute accuracy of judges trained on the real training split, on
all records and on the held-out word combinations), each beside its ceiling (real images with their own captions) and
floor (real images with shuffled captions). Grids: one validation caption per row with several noise draws, and an
interpolation between pairs of captions (the captions are written beside them as a .txt file).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from gan.kinds import EvalRequest, Kind, reference_table, register
from gan.metrics.captions import REF_REAL, REF_SHUFFLED, attribute_judge, provenance, reference_rows, with_held_out
from gan.metrics.quantize import from_uint8
from gan.metrics.translation import frechet, partner_split, translate

INTERPOLATION_STEPS = 8  # columns of the interpolation grid


@runtime_checkable
class TextToImageGenerator(Protocol):
    name: str
    g_iter: int
    latent_dim: int

    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               tokens: torch.Tensor | None = None, embedding: torch.Tensor | None = None,
               z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"x": images in [-1, 1]} of the captions `tokens` [N, L] (or their embeddings), noise `z` or drawn."""

    def interpolation(self, first: torch.Tensor, second: torch.Tensor, z: torch.Tensor, steps: int) -> torch.Tensor:
        """Per row, images of the caption embedding walked from `first` to `second` in `steps` steps, z fixed."""

    def uses_ema(self, ema: bool | None) -> bool:
        """Whether `sample(ema=ema)` draws from an EMA copy of the generator."""


@register
class TextToImage(Kind):
    name = "text_to_image"
    fields = ("x", "tokens")
    protocol = TextToImageGenerator

    def monitor(self, evaluator) -> str:
        return "fid"

    def prepare(self, evaluator) -> None:
        """The backbone and, for data with attribute words, the attribute judge: trained before training starts."""
        evaluator.backbone
        if evaluator.datamodule.attribute_words:
            attribute_judge(evaluator.judges())

    def evaluate(self, evaluator, module, request: EvalRequest):
        from gan.metrics.evaluator import Evaluation, sample_seed

        judges = evaluator.judges()
        dm = judges.datamodule
        data = dm.eval_tensors(request.split, int(request.num_samples))
        z = torch.randn(len(data["x"]), module.latent_dim, generator=torch.Generator().manual_seed(
            sample_seed(request.seed, 0)))  # one noise per record whatever the number of ranks: same samples under DDP
        fake = translate(lambda _, tokens, noise: module.sample(tokens=tokens, z=noise, ema=request.ema)["x"],
                         data["x"], data["tokens"], z, batch_size=judges.batch_size, device=judges.device)
        n = len(fake)
        # against the partner split's real images, as the ceiling row is: not the images of the captions it was given
        values = {"fid": frechet(judges.features("b", fake), judges.real_features("b", partner_split(request.split),
                                                                                  "x", n))}
        values.update(with_held_out(fake, data, data["label"], data["attrs"], judges))
        memo = (self.name, request.split, n, int(request.seed))
        if memo not in judges.references:
            judges.references[memo] = reference_rows(data, judges, request.split, request.seed)
        values.update({k: v for k, v in judges.references[memo].items() if k.split("/", 1)[1] in values})
        space = judges.space("b")
        p = {**space.provenance(), "image_size": int(dm.shape[-1]), "num_fake": n, "num_real": n,
             "ref_real_fid": f"{request.split} vs {partner_split(request.split)} (real images, as many as evaluated)",
             "fid_reference": f"{partner_split(request.split)} split's real images (as many as evaluated), every row",
             "ref_shuffled": f"real images judged against the captions of a permutation seeded with {request.seed}",
             "ema": module.uses_ema(request.ema), **provenance(judges, data, values),
             **evaluator.run_provenance(request.split, request.seed, [k for k in values if "/" not in k]),
             **self.context(module, request)}
        evaluation = Evaluation(values, p)
        if request.keep_samples:
            evaluation.samples = from_uint8(fake)
            evaluation.labels = data["label"]
            evaluation.arrays = {"images": fake, "captions": dm.eval_captions(request.split, int(request.num_samples)),
                                 "labels": data["label"], "attrs": data["attrs"], "heldout": data["heldout"]}
        return evaluation

    # ---- samples --------------------------------------------------------------------------------------------
    def write_samples(self, grid, trainer, module, path: Path) -> dict[str, Path]:
        """One validation caption per row, several noise draws along it; the interpolation grid walks from each
        row's caption to the next row's; `<iter>.txt` lists the row captions."""
        path = path.with_suffix(".png")
        rows = max(1, round(grid.size ** 0.5))
        columns = max(1, grid.size // rows)
        dm = trainer.datamodule
        data = dm.eval_tensors("val", rows)
        rows = len(data["tokens"])
        generator = grid.generator()
        z = torch.randn(rows * columns, module.latent_dim, generator=generator)
        images = module.sample(tokens=data["tokens"].repeat_interleave(columns, 0), z=z)["x"].float().cpu()
        grid.save_grid(images, columns, path)
        captions = dm.eval_captions("val", rows)
        text = path.with_suffix(".txt")
        text.write_text("".join(f"row {i + 1}: {c}\n" for i, c in enumerate(captions)))
        second = data["tokens"].roll(-1, 0)
        walk = module.interpolation(data["tokens"], second, torch.randn(rows, module.latent_dim, generator=generator),
                                    INTERPOLATION_STEPS).float().cpu()
        extra = path.parent / "interpolation" / path.name
        extra.parent.mkdir(exist_ok=True)
        grid.save_grid(walk, INTERPOLATION_STEPS, extra)
        return {"samples": path, "interpolation": extra, "captions": text}

    # ---- gan.evaluate ---------------------------------------------------------------------------------------
    def format_table(self, evaluation) -> str:
        p, values = evaluation.provenance, evaluation.values
        header = (f"{p['dataset']} / {p['split']} split, {p['num_records']} captions ({p['num_heldout_records']} of "
                  f"held-out word combinations), backbone {p['backbone']} (weights {p['weights_sha256']}, resize "
                  f"{p['resize']}), seed {p['seed']}, g_iter {p['g_iter']}")
        notes = [f"  ceiling: real images with their own captions (FID: {p['ref_real_fid']}); floor: "
                 f"{p['ref_shuffled']}"]
        if "caption_consistency" in p:
            notes.append(f"  note: {p['caption_consistency']}")
        rows = reference_table(values, [(REF_REAL, "ceiling"), (REF_SHUFFLED, "floor")])
        return "\n".join([header, *rows, *notes])

    def sample_arrays(self, evaluation) -> dict[str, Any]:
        """`arr_0`: uint8 [N, H, W, C] generated images; `captions` (strings), `labels`, `attrs`, `heldout`."""
        import numpy as np

        arrays = evaluation.arrays
        out = {"arr_0": arrays["images"].permute(0, 2, 3, 1).numpy(), "captions": np.array(arrays["captions"])}
        out.update({k: arrays[k].numpy() for k in ("labels", "attrs", "heldout")})
        if "attribute_words" in evaluation.provenance:
            out["attribute_names"] = np.array(list(evaluation.provenance["attribute_words"]))
        return out
