"""A small CNN classifier of the dataset itself as a torch-fidelity feature extractor ("gan-classifier").

TF-GAN calls FID in its feature space the "Frechet classifier distance" and IS on its logits the
"classifier score". The weights file (written by `gan.metrics.classifier_training`) holds the
architecture, so `torch_fidelity.calculate_metrics(feature_extractor="gan-classifier",
feature_extractor_weights_path=...)` works with it as well.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from gan.checkpoints import load as load_file
from gan.metrics.quantize import from_uint8

NAME = "gan-classifier"
FEATURES = "features"  # 128-d penultimate layer, before its ReLU (no dead dimensions in the covariance)
LOGITS = "logits"


class ClassifierNet(nn.Module):
    """Strided convolutions down to at most 4x4, then two linear layers; sized for 8..64 px images."""

    def __init__(self, channels: int, image_size: int, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        stride = 2 if image_size >= 16 else 1
        layers, size, c = [nn.Conv2d(channels, width, 3, stride, 1), nn.ReLU()], -(-image_size // stride), width
        while size > 4:
            layers += [nn.Conv2d(c, min(2 * c, 4 * width), 3, 2, 1), nn.ReLU()]
            c, size = min(2 * c, 4 * width), -(-size // 2)
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.embed = nn.Linear(4 * c, feature_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(self.body(x))
        return features, self.head(features)


class FeatureExtractorClassifier(FeatureExtractorBase):
    """uint8 [N, C, H, W] in, (features, logits) out, at the dataset's own resolution (no resize)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError("The classifier feature extractor needs feature_extractor_weights_path (see gan.metrics.classifier_training)")
        saved = load_file(feature_extractor_weights_path, cache=True)
        self.arch, self.test_accuracy = saved["arch"], saved["test_accuracy"]
        self.net = ClassifierNet(**self.arch)
        self.net.load_state_dict(saved["state_dict"])
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"Expecting uint8 images [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
        features, logits = self.net(from_uint8(x))
        out = {FEATURES: features, LOGITS: logits}
        return tuple(out[name] for name in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return FEATURES, LOGITS

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": LOGITS, "fid": FEATURES, "kid": FEATURES, "prc": FEATURES}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)


if NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(NAME, FeatureExtractorClassifier)
