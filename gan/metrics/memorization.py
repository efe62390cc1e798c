"""Memorisation check: how close generated samples lie to their nearest training image, against held-out real images.

Distances are root-mean-square pixel differences in [-1, 1] (L2 / sqrt(pixels)), so they read the
same at any resolution. Each image is also compared with the horizontally flipped training set,
since a flipped copy is still a copy. A generator that copies its training data has generated
samples much closer to the training set than held-out real images are: `memorization_ratio`
(median generated / median held-out) well below 1 and `memorization_copies` (the share of generated
samples closer than the 1st percentile of held-out distances; about 0.01 when nothing is copied)
well above 0.01.
"""

from __future__ import annotations

import torch

from gan.metrics.quantize import from_uint8

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def nearest_distances(queries: torch.Tensor, references: torch.Tensor, flip: bool = True, batch_size: int = 1024,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """RMS distance from every query to its nearest reference (or flipped reference), float64 on the CPU.

    Images may be uint8 or [-1, 1] floats; references are converted chunk by chunk to bound memory.
    """
    def flat(x: torch.Tensor) -> torch.Tensor:
        return (from_uint8(x) if x.dtype == torch.uint8 else x.float()).to(device).flatten(1)

    chunks = [references.split(batch_size * 4)] + ([[r.flip(-1) for r in references.split(batch_size * 4)]] if flip else [])
    out = []
    for query in queries.split(batch_size):
        q = flat(query)
        nearest = torch.full((len(q),), float("inf"), device=device)
        for ref in (r for group in chunks for r in group):
            nearest = torch.minimum(nearest, torch.cdist(q, flat(ref)).min(dim=1).values)
        out.append(nearest.double().cpu())
    return torch.cat(out) / references[0].numel() ** 0.5


def quantiles(distances: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(distances, torch.tensor(QUANTILES, dtype=distances.dtype))
    return {f"q{round(100 * p):02d}": float(v) for p, v in zip(QUANTILES, q)}


def memorization_summary(fake_distances: torch.Tensor, real_distances: torch.Tensor) -> tuple[dict[str, float], dict]:
    """(scalar values, distributions) from the nearest-training-image distances of generated and held-out images."""
    fake_median, real_median = float(fake_distances.median()), float(real_distances.median())
    threshold = float(torch.quantile(real_distances, 0.01))
    values = {
        "memorization_median": fake_median,
        "memorization_real_median": real_median,
        "memorization_ratio": fake_median / real_median if real_median > 0 else float("nan"),
        "memorization_copies": float((fake_distances < threshold).double().mean()),
    }
    distributions = {"nearest_train_distance": {"generated": quantiles(fake_distances),
                                                "held_out_real": quantiles(real_distances),
                                                "metric": "rms pixel distance in [-1,1], with horizontal flips"}}
    return values, distributions
