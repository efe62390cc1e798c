"""Reference (real-data) features and statistics, cached on disk under a key of everything that affects them.

The key holds the dataset and the contents of the split, the image shape, the backbone and the hash
of its weights, its feature layer and preprocessing, and the number of real samples; the file is
written atomically, so a second evaluation (or another rank) reads it instead of recomputing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan.checkpoints import load as load_file
from gan.metrics.backbone import Backbone
from gan.metrics.distributed import rank_zero_first
from gan.metrics.real_data import SUBSET_SEED, fingerprint, load_tensors
from gan.metrics.scores import gaussian_statistics, mean_pairwise_distance
from gan.storage import cache_key, save_torch

VERSION = 2  # bump when the stored contents change (2: the FID statistics stored as tensors, not numpy arrays)


@dataclass
class Reference:
    key: dict[str, Any]
    path: Path
    features: torch.Tensor  # [num_real, D] float32, for KID and precision/recall
    stats: dict[str, np.ndarray]  # float64 mean and covariance, for FID
    diversity: float  # mean pairwise feature distance of the real images
    from_cache: bool = False

    @property
    def num_real(self) -> int:
        return len(self.features)


def reference_key(datamodule, split: str, backbone: Backbone, num_samples: int) -> dict[str, Any]:
    dataset = datamodule.dataset(split)
    return {"dataset": datamodule.name, "split": split, "data": fingerprint(dataset), "shape": list(datamodule.shape),
            "backbone": backbone.name, "weights_sha256": backbone.weights_sha256, "feature_layer": backbone.pool_layer,
            "preprocessing": f"uint8+{backbone.resize}", "num_real": min(int(num_samples), len(dataset)),
            "subset_seed": SUBSET_SEED, "version": VERSION}


def reference_path(cache_dir: str | Path, key: dict[str, Any]) -> Path:
    name = f"{key['dataset']}-{key['split']}-{key['backbone']}-n{key['num_real']}-{cache_key(key)}.pt"
    return Path(cache_dir) / "reference" / name


def load_reference(datamodule, split: str, backbone: Backbone, num_samples: int, cache_dir: str | Path,
                   batch_size: int = 250) -> Reference:
    """The cached reference for this split and backbone; rank 0 computes it when missing, the other ranks wait."""
    key = reference_key(datamodule, split, backbone, num_samples)
    path = reference_path(cache_dir, key)

    def load_or_compute() -> Reference:
        if path.exists():
            saved = load_file(path, cache=True)
            stats = {name: value.numpy() for name, value in saved["stats"].items()}
            return Reference(saved["key"], path, saved["features"], stats, saved["diversity"], from_cache=True)
        computed = compute_reference(datamodule, split, backbone, key, path, batch_size)
        # Tensors, not numpy arrays: the file then loads with torch.load(weights_only=True) (gan.checkpoints).
        save_torch({"key": key, "features": computed.features, "diversity": computed.diversity,
                    "stats": {name: torch.from_numpy(value) for name, value in computed.stats.items()}}, path)
        return computed

    return rank_zero_first(load_or_compute)


def compute_reference(datamodule, split: str, backbone: Backbone, key: dict[str, Any], path: Path,
                      batch_size: int) -> Reference:
    images, _ = load_tensors(datamodule.dataset(split), key["num_real"], uint8=True)
    features = backbone.features(images, batch_size)["pool"]
    return Reference(key, path, features, gaussian_statistics(features), mean_pairwise_distance(features))
