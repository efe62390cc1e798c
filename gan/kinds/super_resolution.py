"""Super-resolution (SRGAN): models that upscale low-resolution images `scale` times.

The suite, on a fixed subset of `num_samples` records of a split (`datamodule.eval_tensors`: lr, hr, label):
- `psnr_y`, `ssim_y`: PSNR and SSIM of the SR output against the HR image on the luminance channel with `scale`
  border pixels cropped (the SR convention; gan.metrics.super_resolution.CONVENTIONS), from uint8-quantised outputs;
- `fid`: Frechet distance of the SR outputs to as many HR images of the partner split (train; val when train is
  evaluated) in the dataset's backbone: the same reference as the real row's, so SR, bicubic and HR compare (against
  the very HR images it reconstructs, an output would be scored on a sample the real row cannot use);
- `class_accuracy`: the dataset's digit classifier (trained on the HR images) still recognises the SR output.

Every value stands beside two reference rows: `ref_bicubic/` (the floor: bicubic upsampling of the LR inputs) and
`ref_real/` (the ceiling: the HR images themselves: real-vs-real FID of the split's HR images against as many of the
partner split's, as gan.metrics.translation does, and the classifier's accuracy on HR; PSNR / SSIM of HR against
itself are inf / 1 by definition and not stored). The best checkpoint is selected by `fid`: the adversarial stage
trades PSNR for realism (the paper's point), so selecting by PSNR would keep the MSE-pretrained SRResNet instead.

The grid shows one validation record per row: LR (nearest-neighbour enlarged), bicubic, SR, HR.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from gan.errors import UserError
from gan.kinds import EvalRequest, reference_table, register
from gan.kinds.translation import TranslationKind
from gan.metrics.quantize import from_uint8
from gan.metrics.super_resolution import BICUBIC, CONVENTIONS, bicubic_up, psnr_y, ssim_y
from gan.metrics.translation import (REF_REAL, Judges, class_accuracy, frechet, labels_known, mean, partner_split,
                                     private_rng, translate)

REF_BICUBIC = "ref_bicubic"


@runtime_checkable
class SuperResolver(Protocol):
    name: str
    g_iter: int
    scale: int  # the upscaling factor: outputs are scale x the LR input's sides
    content_used: str  # the content loss the model trained with (recorded with every evaluation)

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        """SR images in [-1, 1], [N, C, h * scale, w * scale], of LR images [N, C, h, w] in [-1, 1]."""

    def grid_columns(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """One row of a sample grid at HR size: LR (enlarged), bicubic, SR, HR."""


@register
class SuperResolution(TranslationKind):
    """SRGAN's suite; the sample grid and the samples file are the translation kinds' (one record per row;
    `arr_0` the SR outputs, then lr, bicubic, hr, labels)."""

    name = "super_resolution"
    protocol = SuperResolver
    fields = ("lr", "hr")
    value_keys = ("psnr_y", "ssim_y", "fid", "class_accuracy")
    monitor_value = "fid"
    target_field = "hr"

    def evaluate(self, evaluator, module, request: EvalRequest):
        from gan.metrics.distributed import rank_and_world_size
        from gan.metrics.evaluator import Evaluation, sample_seed

        judges = evaluator.judges()
        dm = judges.datamodule
        if int(dm.scale) != int(module.scale):
            raise UserError(f"Model {module.name} upscales x{module.scale}, but data={dm.name} pairs LR and HR images "
                            f"at x{dm.scale}. Evaluate it on data of its own scale (data.scale={module.scale}).")
        data = dm.eval_tensors(request.split, int(request.num_samples))
        with private_rng(module.device, sample_seed(request.seed, rank_and_world_size()[0])):
            sr = translate(module.upscale, data["lr"], batch_size=judges.batch_size, device=judges.device,
                           out_shape=tuple(data["hr"].shape[1:]))
        bicubic = bicubic_up(data["lr"], dm.scale)
        values = self.values(sr, data, judges, request.split, dm.scale)
        memo = (self.name, request.split, int(request.num_samples), int(request.seed))
        if memo not in judges.references:
            judges.references[memo] = {
                **{f"{REF_BICUBIC}/{k}": v for k, v in self.values(bicubic, data, judges, request.split,
                                                                   dm.scale).items()},
                **{f"{REF_REAL}/{k}": v for k, v in self.real_values(data, judges, request.split).items()}}
        values.update(judges.references[memo])
        provenance = {**self.provenance(module, data, judges, request.split, values),
                      **evaluator.run_provenance(request.split, request.seed, [k for k in self.value_keys if k in values]),
                      **self.context(module, request)}
        evaluation = Evaluation(values, provenance)
        if request.keep_samples:
            evaluation.arrays = {"sr": sr, "lr": data["lr"], "bicubic": bicubic, "hr": data["hr"],
                                 "labels": data["label"]}
            evaluation.samples, evaluation.labels = from_uint8(sr), data["label"]
        return evaluation

    @staticmethod
    def values(out: torch.Tensor, data: dict[str, torch.Tensor], judges: Judges, split: str,
               scale: int) -> dict[str, float]:
        """The values of uint8 outputs `out` at HR size: PSNR / SSIM against the records' HR images, FID against the
        partner split's."""
        hr = data["hr"]
        values = {"psnr_y": mean(psnr_y(out, hr, scale)), "ssim_y": mean(ssim_y(out, hr, scale)),
                  "fid": frechet(judges.features("b", out),
                                 judges.real_features("b", partner_split(split), "hr", len(hr)))}
        if labels_known(data["label"]):
            values["class_accuracy"] = class_accuracy(judges.target_classes().logits(out, judges.batch_size),
                                                      data["label"])
        return values

    @staticmethod
    def real_values(data: dict[str, torch.Tensor], judges: Judges, split: str) -> dict[str, float]:
        """The ceiling: HR images scored as outputs are (FID: against the partner split's HR images)."""
        n = len(data["hr"])
        real = {"fid": frechet(judges.real_features("b", split, "hr", n),
                               judges.real_features("b", partner_split(split), "hr", n))}
        if labels_known(data["label"]):
            real["class_accuracy"] = class_accuracy(judges.target_classes().logits(data["hr"], judges.batch_size),
                                                    data["label"])
        return real

    def provenance(self, module, data, judges: Judges, split: str, values: dict[str, float]) -> dict[str, Any]:
        dm, space, n = judges.datamodule, judges.space("b"), len(data["hr"])
        p: dict[str, Any] = {
            **space.provenance(), **dm.provenance(), "image_size": int(dm.shape[-1]), "translation": self.name,
            "num_fake": n, "num_real": n, "pixel_metrics": CONVENTIONS.replace("`scale`", str(dm.scale)),
            "bicubic": f"ref_bicubic: the LR inputs upsampled x{dm.scale} by {BICUBIC}",
            "fid_reference": f"{partner_split(split)} split's HR images (as many as evaluated), for every row",
            "ref_real": f"the HR images: FID {split} vs {partner_split(split)} HR images (as many as evaluated); "
                        f"PSNR-Y / SSIM-Y of HR are inf / 1 by definition (not stored)",
            "content_used": str(module.content_used),
        }
        if "class_accuracy" in values:
            judge = judges.target_classes()
            p.update(class_classifier_sha256=judge.weights_sha256,
                     class_classifier_test_accuracy=round(judge.test_accuracy, 5))
        feature_dim = int(judges.real_features("b", split, "hr", n).shape[1])
        if n <= feature_dim:
            p["fid_warning"] = (f"{n} samples for {feature_dim}-d features: the covariances are singular, so FID is "
                                f"only a rough guide here (read it against its ref_real row)")
        return p

    def format_table(self, evaluation) -> str:
        """One row per value: value | bicubic | HR."""
        p, values = evaluation.provenance, evaluation.values
        header = (f"{p['dataset']} / {p['split']} split, x{p['scale']} super-resolution, {p['num_fake']} records, "
                  f"backbone {p['backbone']} (weights {p['weights_sha256']}, resize {p['resize']}), seed {p['seed']}, "
                  f"g_iter {p['g_iter']}, content loss {p['content_used']}")
        notes = [f"  bicubic: {p['bicubic']}", f"  HR: {p['ref_real']}", f"  {p['pixel_metrics']}"]
        if "fid_warning" in p:
            notes.append(f"  note: {p['fid_warning']}")
        rows = reference_table(values, [(REF_BICUBIC, "bicubic"), (REF_REAL, "HR")],
                               fallback={f"{REF_REAL}/psnr_y": "inf", f"{REF_REAL}/ssim_y": "1"})  # by definition
        return "\n".join([header, *rows, *notes])
