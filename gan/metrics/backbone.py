"""The feature space the image metrics live in: which backbone a dataset uses, built through torch-fidelity."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch_fidelity import FeatureExtractorBase
from torch_fidelity.utils import create_feature_extractor

from gan.errors import UserError
from gan.metrics import feature_extractor_classifier as classifier
from gan.metrics import feature_extractor_inception as inception
from gan.metrics.classifier_training import classifier_weights
from gan.metrics.distributed import rank_zero_first
from gan.metrics.quantize import to_uint8
from gan.storage import sha256_file

BACKBONES = ("inception", "classifier", "toy", "oracle")
TEXT_BACKBONE = "oracle"  # token sequences of SeqGAN's oracle: scored by its likelihood (gan.metrics.text), no features


def resolve_backbone(name: str, datamodule) -> str:
    """`auto` -> the dataset's own choice (`data.backbone`); checks that the backbone fits the data."""
    setting = "metrics.backbone"
    if name == "auto":
        name, setting = datamodule.backbone, "data.backbone"
        if name not in BACKBONES:
            raise UserError(
                f"data.backbone={name} of dataset '{datamodule.name}' is not a feature backbone. Expected one of "
                f"{', '.join(BACKBONES)}: metrics.backbone=auto uses the dataset's data.backbone. Set it in "
                f"conf/data/{datamodule.name}.yaml or on the command line (data.backbone=<name>), or choose the "
                f"backbone of this run with metrics.backbone=<name>."
            )
    elif name not in BACKBONES:
        raise UserError(f"Unknown metrics.backbone={name}. Expected one of auto, {', '.join(BACKBONES)}.")
    text = datamodule.backbone == TEXT_BACKBONE  # the dataset declares its sequences as text
    if text != (name == TEXT_BACKBONE):
        raise UserError(f"{setting}={name} does not fit dataset '{datamodule.name}': oracle token sequences use backbone "
                        f"{TEXT_BACKBONE} (NLL_oracle, NLL_test) and only they do. Use metrics.backbone=auto.")
    if text:
        return name
    toy = len(datamodule.shape) == 1
    if toy != (name == "toy"):
        fitting = "toy" if toy else "inception or classifier"
        instead = f"Set {setting} to {fitting}" + (" or use metrics.backbone=auto." if setting == "metrics.backbone" else ".")
        raise UserError(
            f"{setting}={name} does not fit dataset '{datamodule.name}' of shape {list(datamodule.shape)}: "
            f"2-D toy data uses backbone toy (modes, % high quality, reverse KL), images use inception or classifier. "
            f"{instead}"
        )
    return name


@dataclass
class Backbone:
    """A torch-fidelity feature extractor with the layer names and the protocol facts that go into provenance."""

    name: str
    extractor: FeatureExtractorBase
    pool_layer: str  # features for FID, KID, precision/recall, diversity
    logits_layer: str  # for IS
    weights_sha256: str
    resize: str
    device: torch.device
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 250) -> dict[str, torch.Tensor]:
        """{"pool": [N, D], "logits": [N, K]} float32 on the CPU, for images in [-1, 1] (or already uint8)."""
        out: dict[str, list[torch.Tensor]] = {"pool": [], "logits": []}
        for chunk in images.split(batch_size):
            x = chunk if chunk.dtype == torch.uint8 else to_uint8(chunk)
            if self.name == "inception" and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            pool, logits = self.extractor(x.to(self.device))
            out["pool"].append(pool.float().cpu())
            out["logits"].append(logits.float().cpu())
        return {k: torch.cat(v) for k, v in out.items()}

    def provenance(self) -> dict[str, Any]:
        return {"backbone": self.name, "weights_sha256": self.weights_sha256, "resize": self.resize,
                "quantization": "uint8", "feature_layer": self.pool_layer, **self.info}


def build_backbone(name: str, datamodule, device: torch.device | str = "cpu", cache_dir: str | Path = ".cache",
                   inception_weights: str | Path | None = None, classifier_hparams: dict | None = None) -> Backbone:
    """The backbone `name` (inception or classifier) for this dataset, on `device`, ready to extract features."""
    device = torch.device(device)
    if name == "inception":
        weights = rank_zero_first(lambda: inception.inception_weights_path(inception_weights))
        extractor_name, layers, resize = inception.NAME, (inception.POOL, inception.LOGITS), inception.RESIZE
    elif name == "classifier":
        weights = rank_zero_first(lambda: classifier_weights(datamodule, cache_dir, classifier_hparams))
        extractor_name, layers = classifier.NAME, (classifier.FEATURES, classifier.LOGITS)
        resize = f"none-{datamodule.shape[-2]}x{datamodule.shape[-1]}"
    else:
        raise UserError(f"build_backbone: backbone {name} has no feature extractor (expected inception or classifier).")
    extractor = create_feature_extractor(extractor_name, list(layers), cuda=device.type == "cuda", verbose=False,
                                         feature_extractor_weights_path=str(weights)).to(device)
    info = {"classifier_test_accuracy": round(float(extractor.test_accuracy), 5)} if name == "classifier" else {}
    return Backbone(name, extractor, layers[0], layers[1], sha256_file(weights), resize, device, info)
