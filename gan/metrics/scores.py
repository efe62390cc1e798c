"""Metric values from features, through torch-fidelity's own metric code: statistics -> value, float64.

Convention as in torch-fidelity: `fake` is the generated set, `real` the reference set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
IS_SPLITS = 10
PR_NEIGHBORHOOD = 3  # Kynkaanniemi et al. 2019
DIVERSITY_SAMPLES = 1000


def gaussian_statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    """Mean and covariance in float64 (float32 covariances make FID wrong by whole points)."""
    return fid_features_to_statistics(features.detach().cpu().double())


def frechet_distance(stats_fake: dict[str, np.ndarray], stats_real: dict[str, np.ndarray]) -> float:
    return float(fid_statistics_to_metric(stats_fake, stats_real, verbose=False)[KEY_METRIC_FID])


def kernel_distance(fake: torch.Tensor, real: torch.Tensor, seed: int, subsets: int = KID_SUBSETS) -> dict[str, float]:
    """KID (mean, std over subsets); the subset size is min(1000, n) so that small evaluations still work."""
    size = min(KID_SUBSET_SIZE, len(fake), len(real))
    out = kid_features_to_metric(fake.float(), real.float(), kid_subsets=subsets, kid_subset_size=size,
                                 rng_seed=seed, verbose=False)
    return {"kid": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD], "kid_subset_size": size}


def inception_score(logits: torch.Tensor, seed: int, splits: int = IS_SPLITS) -> dict[str, float]:
    out = isc_features_to_metric(logits, splits=min(splits, len(logits)), shuffle=True, rng_seed=seed)
    return {"is": out[KEY_METRIC_ISC_MEAN], "is_std": out[KEY_METRIC_ISC_STD]}


def precision_recall(fake: torch.Tensor, real: torch.Tensor, k: int = PR_NEIGHBORHOOD) -> dict[str, float]:
    """Improved precision and recall (k-NN manifolds of each set)."""
    out = prc_features_to_metric(fake.float(), real.float(), prc_neighborhood=k, prc_batch_size=10000,
                                 save_cpu_ram=max(len(fake), len(real)) > 5000, verbose=False)
    return {"precision": out[KEY_METRIC_PRECISION], "recall": out[KEY_METRIC_RECALL]}


def mean_pairwise_distance(features: torch.Tensor, n: int = DIVERSITY_SAMPLES) -> float:
    """Average distance between distinct samples among the first `n`: falls when the generator collapses."""
    x = features[:n].double()
    if len(x) < 2:
        return float("nan")
    return float(torch.pdist(x).mean())
