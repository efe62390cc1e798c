"""Image-to-image models: paired (pix2pix), unpaired (CycleGAN) and attribute (StarGAN) translation.

Each kind translates a fixed subset of a split's records (`datamodule.eval_tensors`) and measures what its paper
reports, each value beside its `ref_real/` and `ref_identity/` rows (the metrics, the judges and the conventions are
gan.metrics.translation's); its grid shows one validation input per row followed by what the model makes of it
(`grid_columns`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from gan.kinds import EvalRequest, Kind, reference_table, register
from gan.metrics.quantize import from_uint8
from gan.metrics.translation import (DATA_RANGE, FLIP_PROBABILITY, REF_IDENTITY, REF_REAL, Judges, attribute_accuracy,
                                     class_accuracy, frechet, labels_known, mean, partner_split, pixel_l1, private_rng,
                                     psnr, ssim, target_attributes, translate)


@runtime_checkable
class Translator(Protocol):
    name: str
    g_iter: int
    eval_dropout: bool  # whether translating keeps dropout active (pix2pix's noise), recorded
    eval_batch_stats: bool  # whether translating normalises with the batch's statistics (pix2pix's test batch), recorded

    def translate(self, x: torch.Tensor, *condition) -> torch.Tensor:
        """Translations in [-1, 1] of the images `x` (CycleGAN: and a direction "ab" | "ba"; StarGAN: target attrs)."""

    def grid_columns(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """One row of a sample grid: the input first, then what the model makes of it."""


class TranslationKind(Kind):
    protocol = Translator
    eval_fields: ClassVar[tuple[str, ...]]  # the fields of eval_tensors its values read
    value_keys: ClassVar[tuple[str, ...]]
    monitor_value: ClassVar[str]
    target_field: ClassVar[str] = "b"  # the eval_tensors field holding real target-domain images

    def monitor(self, evaluator) -> str:
        return self.monitor_value

    def evaluate(self, evaluator, module, request: EvalRequest):
        from gan.metrics.distributed import rank_and_world_size
        from gan.metrics.evaluator import Evaluation, sample_seed

        judges = evaluator.judges()
        data = judges.datamodule.eval_tensors(request.split, int(request.num_samples))
        run = {"batch_size": judges.batch_size, "device": judges.device}
        with private_rng(module.device, sample_seed(request.seed, rank_and_world_size()[0])):
            values, arrays = self.translations(module, data, judges, request, run)
        memo = (self.name, request.split, int(request.num_samples), int(request.seed))
        if memo not in judges.references:
            real, identity = self.reference_values(data, judges, request)
            judges.references[memo] = {**{f"{REF_REAL}/{k}": v for k, v in real.items()},
                                       **{f"{REF_IDENTITY}/{k}": v for k, v in identity.items()}}
        values.update(judges.references[memo])
        provenance = {**self.provenance(module, data, judges, request.split, values),
                      **evaluator.run_provenance(request.split, request.seed, [k for k in self.value_keys if k in values]),
                      **self.context(module, request)}
        evaluation = Evaluation(values, provenance)
        if request.keep_samples:
            evaluation.arrays = arrays
            evaluation.samples = from_uint8(next(iter(arrays.values())))
            evaluation.labels = next(v for k, v in arrays.items() if k.startswith("labels"))
        return evaluation

    def translations(self, module, data, judges: Judges, request: EvalRequest, run) -> tuple[dict, dict]:
        """(values, arrays for the samples file, the translations first) of the model's outputs on `data`."""
        raise NotImplementedError

    def reference_values(self, data, judges: Judges, request: EvalRequest) -> tuple[dict, dict]:
        """(real, identity): the values on real target images and on the identity mapping (output = input)."""
        raise NotImplementedError

    def provenance(self, module, data, judges: Judges, split: str, values: dict[str, float]) -> dict[str, Any]:
        space = judges.space("b")
        images = data[self.target_field]
        p: dict[str, Any] = {
            **space.provenance(), "image_size": int(judges.datamodule.shape[-1]), "translation": self.name,
            "num_fake": len(images), "num_real": len(images),
            "pixel_metrics": f"uint8-quantised outputs in [-1, 1]; L1 mean abs; torchmetrics PSNR/SSIM per image, "
                             f"data_range {DATA_RANGE}, averaged",
            "ref_real_fid": f"{split} vs {partner_split(split)} (real target images, as many as evaluated)",
            "eval_dropout": bool(module.eval_dropout),
            "eval_batch_stats": bool(module.eval_batch_stats),
        }
        if any(k.startswith("class_accuracy") for k in values):
            judge = judges.target_classes()
            p.update(class_classifier_sha256=judge.weights_sha256,
                     class_classifier_test_accuracy=round(judge.test_accuracy, 5))
        smallest = min(len(data[name]) for name in ("a", "b", "x") if name in data)
        feature_dim = int(judges.real_features("b", split, self.target_field, len(images)).shape[1])
        if smallest <= feature_dim:
            p["fid_warning"] = (f"{smallest} samples for {feature_dim}-d features: the covariances are singular, so "
                                f"FID is only a rough guide here (read it against its ref_real row)")
        return p

    # ---- samples and gan.evaluate ----------------------------------------------------------------------------
    def write_samples(self, grid, trainer, module, path: Path) -> dict[str, Path]:
        """One validation input per row, followed by what the model makes of it (`module.grid_columns`)."""
        path = path.with_suffix(".png")
        rows = max(1, round(grid.size**0.5))
        inputs = {k: from_uint8(v) if v.dtype == torch.uint8 else v
                  for k, v in trainer.datamodule.eval_tensors("val", limit=rows).items()}
        columns = [c.float().cpu() for c in module.grid_columns(inputs)]
        channels = max(c.shape[1] for c in columns)
        columns = [c.expand(-1, channels, -1, -1) for c in columns]  # grayscale inputs beside colour outputs
        grid.save_grid(torch.stack(columns, dim=1).flatten(0, 1), len(columns), path)
        return {"samples": path}

    def format_table(self, evaluation) -> str:
        """One row per value, beside the same metric on real target images and on the identity mapping."""
        p, values = evaluation.provenance, evaluation.values
        records = (f"{p['num_records_a']} A + {p['num_records_b']} B records" if "num_records_a" in p
                   else f"{p['num_fake']} records")
        header = (f"{p['dataset']} / {p['split']} split, {p['translation']} translation, {records}, backbone "
                  f"{p['backbone']} (weights {p['weights_sha256']}, resize {p['resize']}), seed {p['seed']}, "
                  f"g_iter {p['g_iter']}, eval_dropout {p['eval_dropout']}, eval_batch_stats {p['eval_batch_stats']}")
        notes = [f"  real: the metric on real target images (FID: {p['ref_real_fid']}); identity: output = input"]
        if "fid_warning" in p:
            notes.append(f"  note: {p['fid_warning']}")
        rows = reference_table(values, [(REF_REAL, "real"), (REF_IDENTITY, "identity")])
        return "\n".join([header, *rows, *notes])

    def sample_arrays(self, evaluation) -> dict[str, Any]:
        """The translations as `arr_0` (A->B for CycleGAN) and, named as in `Evaluation.arrays`, the inputs, the other
        direction, the source labels and the target attributes."""
        import numpy as np

        main = next(iter(evaluation.arrays))
        arrays = {("arr_0" if name == main else name): value.permute(0, 2, 3, 1).numpy() if value.dim() == 4
                  else value.numpy() for name, value in evaluation.arrays.items()}
        if "attribute_names" in evaluation.provenance:
            arrays["attribute_names"] = np.array(evaluation.provenance["attribute_names"])
        return arrays


@register
class PairedTranslation(TranslationKind):
    """pix2pix: `l1`, `psnr`, `ssim` of G(a) against the ground truth b, `fid` against the b of the same records,
    `class_accuracy` of a classifier of the target domain."""

    name = "paired"
    fields = ("a", "b", "paired")
    value_keys = ("l1", "psnr", "ssim", "fid", "class_accuracy")
    monitor_value = "fid"

    def translations(self, module, data, judges, request, run):
        out = translate(module.translate, data["a"], **run)
        arrays = {"translations": out, "inputs": data["a"], "targets": data["b"], "labels": data["label"]}
        return self.values(out, data, judges, request.split), arrays

    @staticmethod
    def values(out, data, judges: Judges, split: str) -> dict[str, float]:
        b, n = data["b"], len(data["b"])
        values = {"l1": mean(pixel_l1(out, b)), "psnr": mean(psnr(out, b)), "ssim": mean(ssim(out, b)),
                  "fid": frechet(judges.features("b", out), judges.real_features("b", split, "b", n))}
        if labels_known(data["label"]):
            values["class_accuracy"] = class_accuracy(judges.target_classes().logits(out, judges.batch_size),
                                                      data["label"])
        return values

    def reference_values(self, data, judges, request):
        split, b = request.split, data["b"]
        real = {"fid": frechet(judges.real_features("b", split, "b", len(b)),
                               judges.real_features("b", partner_split(split), "b", len(b)))}
        if labels_known(data["label"]):
            real["class_accuracy"] = class_accuracy(judges.target_classes().logits(b, judges.batch_size), data["label"])
        return real, self.values(data["a"], data, judges, split)


@register
class UnpairedTranslation(TranslationKind):
    """CycleGAN: `fid_ab` (G(a) vs the split's B), `fid_ba` (F(b) vs the split's A), `class_accuracy_ab`,
    `class_accuracy_ba` (classifiers of each target domain), `cycle_l1` (mean of |F(G(a)) - a| and |G(F(b)) - b|)."""

    name = "unpaired"
    fields = ("a", "b", "unpaired")
    value_keys = ("fid_ab", "fid_ba", "class_accuracy_ab", "class_accuracy_ba", "cycle_l1")
    monitor_value = "fid_ab"

    def translations(self, module, data, judges, request, run):
        ab = translate(lambda x: module.translate(x, "ab"), data["a"], **run)
        ba = translate(lambda x: module.translate(x, "ba"), data["b"], **run)
        aba = translate(lambda x: module.translate(x, "ba"), ab, **run)
        bab = translate(lambda x: module.translate(x, "ab"), ba, **run)
        arrays = {"translations_ab": ab, "inputs_ab": data["a"], "labels_ab": data["a_label"],
                  "translations_ba": ba, "inputs_ba": data["b"], "labels_ba": data["b_label"]}
        return self.values(ab, ba, aba, bab, data, judges, request.split), arrays

    @staticmethod
    def values(ab, ba, aba, bab, data, judges: Judges, split: str) -> dict[str, float]:
        a, b = data["a"], data["b"]
        values = {"fid_ab": frechet(judges.features("b", ab), judges.real_features("b", split, "b", len(b))),
                  "fid_ba": frechet(judges.features("a", ba), judges.real_features("a", split, "a", len(a)))}
        if labels_known(data["a_label"]) and labels_known(data["b_label"]):
            values["class_accuracy_ab"] = class_accuracy(judges.target_classes().logits(ab, judges.batch_size),
                                                         data["a_label"])
            values["class_accuracy_ba"] = class_accuracy(judges.domain_a_classes().logits(ba, judges.batch_size),
                                                         data["b_label"])
        values["cycle_l1"] = (mean(pixel_l1(aba, a)) + mean(pixel_l1(bab, b))) / 2
        return values

    def reference_values(self, data, judges, request):
        split, partner, a, b = request.split, partner_split(request.split), data["a"], data["b"]
        identity = self.values(a, b, a, b, data, judges, split)
        real = {"fid_ab": frechet(judges.real_features("b", split, "b", len(b)),
                                  judges.real_features("b", partner, "b", len(b))),
                "fid_ba": frechet(judges.real_features("a", split, "a", len(a)),
                                  judges.real_features("a", partner, "a", len(a)))}
        if "class_accuracy_ab" in identity:
            real["class_accuracy_ab"] = class_accuracy(judges.target_classes().logits(b, judges.batch_size),
                                                       data["b_label"])
            real["class_accuracy_ba"] = class_accuracy(judges.domain_a_classes().logits(a, judges.batch_size),
                                                       data["a_label"])
        return real, identity

    def provenance(self, module, data, judges, split, values):
        p = super().provenance(module, data, judges, split, values)
        space, space_a = judges.space("b"), judges.space("a")
        p.update(num_records_a=len(data["a"]), num_records_b=len(data["b"]), num_fake=len(data["a"]),
                 fid_ba_space={"backbone": space_a.name, "weights_sha256": space_a.weights_sha256,
                               "domain": "A" if space_a is not space else "B (the dataset's backbone)"})
        if any(k.startswith("class_accuracy") for k in values):
            judge_a = judges.domain_a_classes()
            p.update(class_classifier_a_sha256=judge_a.weights_sha256,
                     class_classifier_a_test_accuracy=round(judge_a.test_accuracy, 5))
        return p


@register
class AttributeTranslation(TranslationKind):
    """StarGAN: every attribute of each record flipped with probability 1/2 gives its target vector;
    `attribute_accuracy` (a multi-label classifier against the targets, averaged over attributes), `class_accuracy`,
    `cycle_l1` (translated back to the source attributes) and `fid` against the partner split's real images."""

    name = "attributes"
    fields = ("x", "attrs")
    value_keys = ("attribute_accuracy", "class_accuracy", "cycle_l1", "fid")
    monitor_value = "fid"
    target_field = "x"

    def translations(self, module, data, judges, request, run):
        targets = target_attributes(data["attrs"], request.seed)
        out = translate(module.translate, data["x"], targets, **run)
        back = translate(module.translate, out, data["attrs"], **run)
        arrays = {"translations": out, "inputs": data["x"], "labels": data["label"], "target_attrs": targets,
                  "source_attrs": data["attrs"]}
        return self.values(out, back, targets, data, judges, request.split), arrays

    @staticmethod
    def values(out, back, targets, data, judges: Judges, split: str) -> dict[str, float]:
        x, n = data["x"], len(data["x"])
        values = {"attribute_accuracy": attribute_accuracy(judges.attributes().logits(out, judges.batch_size), targets)}
        if labels_known(data["label"]):
            values["class_accuracy"] = class_accuracy(judges.target_classes().logits(out, judges.batch_size),
                                                      data["label"])
        values["cycle_l1"] = mean(pixel_l1(back, x))
        values["fid"] = frechet(judges.features("b", out), judges.real_features("b", partner_split(split), "x", n))
        return values

    def reference_values(self, data, judges, request):
        split, x = request.split, data["x"]
        identity = self.values(x, x, target_attributes(data["attrs"], request.seed), data, judges, split)
        real = {"attribute_accuracy": attribute_accuracy(judges.attributes().logits(x, judges.batch_size), data["attrs"])}
        if labels_known(data["label"]):
            real["class_accuracy"] = class_accuracy(judges.target_classes().logits(x, judges.batch_size), data["label"])
        real["fid"] = frechet(judges.real_features("b", split, "x", len(x)),
                              judges.real_features("b", partner_split(split), "x", len(x)))
        return real, identity

    def provenance(self, module, data, judges, split, values):
        p = super().provenance(module, data, judges, split, values)
        judge, names = judges.attributes(), list(judges.datamodule.attribute_names)
        p.update(fid_reference=f"{partner_split(split)} split's real images", attribute_names=[str(n) for n in names],
                 attribute_flip_probability=FLIP_PROBABILITY, attribute_classifier_sha256=judge.weights_sha256,
                 attribute_classifier_test_accuracy=round(judge.test_accuracy, 5),
                 attribute_classifier_attribute_accuracy={str(n): round(a, 5) for n, a in
                                                          zip(names, judge.attribute_accuracy or [])})
        return p
