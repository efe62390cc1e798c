"""Mode-collapse metrics of the 2-D Gaussian mixtures (VEEGAN / PacGAN protocol).

A sample is high quality when it lies within 3 standard deviations of its nearest mean; a mode is
captured when it is the nearest mean of at least one high-quality sample. The reverse KL compares
the histogram of the samples' nearest modes (all samples) with the uniform mixture weights:
KL(q || p) = sum_k q_k log(q_k K), 0 for a perfect spread, log K when every sample sits in one mode.
"""

from __future__ import annotations

import math

import torch

NUM_SAMPLES = 2500
QUALITY_STDS = 3.0


def toy_metrics(samples: torch.Tensor, means: torch.Tensor, std: float) -> dict[str, float]:
    """{"modes": captured modes, "high_quality": % of samples within 3 std, "reverse_kl": KL(q || uniform)}."""
    samples, means = samples.detach().double().cpu(), means.double().cpu()
    distance, nearest = torch.cdist(samples, means).min(dim=1)
    good = distance <= QUALITY_STDS * std
    q = torch.bincount(nearest, minlength=len(means)).double() / len(samples)
    present = q > 0
    reverse_kl = float((q[present] * (q[present] * len(means)).log()).sum())
    return {
        "modes": int(torch.unique(nearest[good]).numel()),
        "high_quality": 100.0 * float(good.double().mean()),
        "reverse_kl": max(reverse_kl, 0.0) if math.isfinite(reverse_kl) else reverse_kl,
    }
