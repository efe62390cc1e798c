"""Text-to-image metrics: does a generated image show what its caption says? (the suite is gan.kinds.text_to_image's)

On a fixed subset of a split's records (`datamodule.eval_tensors`), one image is generated from each record's first
caption, and judged by classifiers trained on the real training split:

- `class_accuracy`: the dataset's digit classifier (the classifier backbone's weights) finds the caption's class;
- `<attribute>_accuracy` (thickness, slant, size for digits_captions): a CNN trained on the real training images to
  predict each attribute word (one output per word, binary cross-entropy on the one-hot words; the prediction is
  the most likely word of each attribute) finds the caption's word;
- `heldout_<value>`: the same on the records whose word combination was held out of training (data's HELD_OUT);
- `fid`: generated images against as many real images of the partner split (the ceiling's reference), in the
  dataset's backbone.

Each value sits beside its ceiling `ref_real/<key>` (the judges on the real images with their own captions; FID of
the split's real images against as many of the partner split's) and its floor `ref_shuffled/<key>` (the real images
judged against the captions of a shuffled permutation of the records: what ignoring the caption scores). Data without
class or attribute labels (CUB, COCO) gets FID only.
"""
from __future__ import annotations

from typing import Any

import torch

from gan.metrics.classifier_training import ARCH_VERSION, cached_classifier
from gan.metrics.distributed import rank_zero_first
from gan.metrics.real_data import fingerprint
from gan.metrics.translation import (MAX_TRAIN_RECORDS, Judge, Judges, class_accuracy, frechet, labels_known,
                                     load_judge, partner_split)

REF_REAL, REF_SHUFFLED = "ref_real", "ref_shuffled"
HELD_OUT_PREFIX = "heldout_"
JUDGE_VERSION = 1  # bump when the attribute judge's data or recipe changes


def one_hot_words(attrs: torch.Tensor, words: dict[str, tuple[str, ...]]) -> torch.Tensor:
    """float [N, sum of word counts]: each attribute's word index as a one-hot block, attributes in order."""
    return torch.cat([torch.nn.functional.one_hot(attrs[:, k], len(w)).float() for k, w in enumerate(words.values())], 1)


def predicted_words(logits: torch.Tensor, words: dict[str, tuple[str, ...]]) -> torch.Tensor:
    """int64 [N, A]: per attribute, the word whose output is largest."""
    out, start = [], 0
    for choices in words.values():
        out.append(logits[:, start:start + len(choices)].argmax(1))
        start += len(choices)
    return torch.stack(out, 1)


def attribute_judge(judges: Judges) -> Judge:
    """The attribute classifier of a caption dataset, trained on its real training split once (cached on disk)."""
    dm = judges.datamodule
    words = dm.attribute_words
    splits = {split: dm.dataset(split) for split in ("train", "test")}
    outputs = sum(len(w) for w in words.values())
    key = {"dataset": dm.name, "role": "caption_attributes", "shape": list(dm.shape), "words": words,
           **{split: fingerprint(records) for split, records in splits.items()}, "hparams": judges.hparams,
           "max_train_records": MAX_TRAIN_RECORDS, "version": ARCH_VERSION, "judge_version": JUDGE_VERSION}
    channels, height, _ = dm.shape
    arch = {"channels": channels, "image_size": height, "num_classes": outputs, "width": judges.hparams["width"]}

    def data():
        train, test = (dm.eval_tensors(split, MAX_TRAIN_RECORDS) for split in ("train", "test"))
        return train["x"], one_hot_words(train["attrs"], words), test["x"], one_hot_words(test["attrs"], words)

    path = rank_zero_first(lambda: cached_classifier(judges.cache_dir, f"{dm.name}-attributes", key, arch, judges.hparams,
                                                     data, multilabel=True,
                                                     description=f"Caption attribute classifier for '{dm.name}'"))
    return load_judge(path, judges.device)


def consistency(images: torch.Tensor, labels: torch.Tensor, attrs: torch.Tensor, judges: Judges,
                attribute_logits=None) -> dict[str, float]:
    """class_accuracy and <attribute>_accuracy of uint8 `images` against the caption's `labels` and `attrs`."""
    values: dict[str, float] = {}
    if not len(images) or not labels_known(labels):
        return values
    values["class_accuracy"] = class_accuracy(judges.target_classes().logits(images, judges.batch_size), labels)
    words = judges.datamodule.attribute_words
    if words:
        logits = attribute_logits if attribute_logits is not None else attribute_judge(judges).logits(images, judges.batch_size)
        hits = (predicted_words(logits, words) == attrs).double().mean(0)
        values.update({f"{name}_accuracy": float(hit) for name, hit in zip(words, hits)})
    return values


def with_held_out(images: torch.Tensor, data: dict[str, torch.Tensor], labels: torch.Tensor, attrs: torch.Tensor,
                  judges: Judges) -> dict[str, float]:
    """`consistency` on all records and, as heldout_<key>, on those of held-out word combinations."""
    values = consistency(images, labels, attrs, judges)
    mask = data["heldout"]
    if values and bool(mask.any()):
        held = consistency(images[mask], labels[mask], attrs[mask], judges)
        values.update({f"{HELD_OUT_PREFIX}{k}": v for k, v in held.items()})
    return values


def reference_rows(data: dict[str, torch.Tensor], judges: Judges, split: str, seed: int) -> dict[str, float]:
    """The ceiling (real images, own captions) and floor (real images, shuffled captions) of every value."""
    real = data["x"]
    rows = {f"{REF_REAL}/fid": frechet(judges.real_features("b", split, "x", len(real)),
                                       judges.real_features("b", partner_split(split), "x", len(real)))}
    rows.update({f"{REF_REAL}/{k}": v for k, v in with_held_out(real, data, data["label"], data["attrs"], judges).items()})
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(int(seed)))
    shuffled = with_held_out(real, data, data["label"][order], data["attrs"][order], judges)
    rows.update({f"{REF_SHUFFLED}/{k}": v for k, v in shuffled.items()})
    return rows


def provenance(judges: Judges, data: dict[str, torch.Tensor], values: dict[str, float]) -> dict[str, Any]:
    p: dict[str, Any] = {"num_records": len(data["x"]), "num_heldout_records": int(data["heldout"].sum())}
    if "class_accuracy" in values:
        judge = judges.target_classes()
        p.update(class_classifier_sha256=judge.weights_sha256,
                 class_classifier_test_accuracy=round(judge.test_accuracy, 5))
    if any(k.endswith("_accuracy") and k != "class_accuracy" and not k.startswith(HELD_OUT_PREFIX) for k in values):
        judge = attribute_judge(judges)
        p.update(attribute_classifier_sha256=judge.weights_sha256,
                 attribute_classifier_test_accuracy=round(judge.test_accuracy, 5),
                 attribute_words=judges.datamodule.attribute_words)
    else:
        p["caption_consistency"] = ("none: the data has no class or attribute labels, so only FID is computed "
                                    "(caption consistency needs judges trained on labelled images)")
    return p
