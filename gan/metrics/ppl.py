"""Perceptual path length (Karras et al. 2019, section 4.2), on the classifier backbone's features.

The protocol of stylegan2-ada-pytorch's `metrics/perceptual_path_length.py`: pairs of latents z0, z1 and t ~ U(0, 1)
(`sampling=full`) or t = 0 (`end`); in Z the path is slerp(z0, z1, t) -> slerp(z0, z1, t + eps), in W it is
lerp(w0, w1, t) -> lerp(w0, w1, t + eps); both images of a pair share their noise maps; each pair's distance is
d(G(a), G(b)) / eps^2 with eps = 1e-4; the mean is taken over the pairs between the 1st and 99th percentiles.
The papers' d is LPIPS (VGG16 features, unit-normalised per channel, squared differences): `lpips_distance`, torch-
fidelity's LPIPS-VGG16 module (its weights are downloaded once into the torch hub cache), used with the inception
backbone. Offline, `classifier_distance` is the same protocol on the squared distance of the unit-normalised
penultimate features of the dataset's classifier (`gan.metrics.feature_extractor_classifier`). Both take the float
images (no uint8 quantisation, which would erase an eps step).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from gan.errors import UserError

EPSILON = 1e-4
SPACES, SAMPLINGS = ("z", "w"), ("full", "end")


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between the directions of a and b (rows), t [N, 1]."""
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d.clamp(-1, 1))
    c = b - d * a
    c = c / c.norm(dim=-1, keepdim=True)
    out = a * torch.cos(p) + c * torch.sin(p)
    return out / out.norm(dim=-1, keepdim=True)


def classifier_distance(net: torch.nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """d(x, y) per pair: squared L2 distance of the classifier's unit-normalised features of float images."""
    def distance(x: Tensor, y: Tensor) -> Tensor:
        fx, fy = net(x)[0], net(y)[0]
        fx, fy = fx / (fx.norm(dim=1, keepdim=True) + 1e-10), fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
        return (fx - fy).square().sum(dim=1)
    return distance


CLASSIFIER_DISTANCE = ("squared L2 of unit-normalised classifier-backbone features of float images "
                       "(LPIPS in the papers)")
LPIPS_RESIZE = 64  # torch-fidelity's default for its PPL (ppl_sample_similarity_resize)
LPIPS_DISTANCE = f"LPIPS-VGG16 (torch-fidelity), float images resized to {LPIPS_RESIZE} px"


def lpips_distance(device: torch.device | str = "cpu") -> Callable[[Tensor, Tensor], Tensor]:
    """d(x, y) per pair: torch-fidelity's LPIPS-VGG16 of float images in [-1, 1] (grey images repeated to RGB)."""
    from torch_fidelity.sample_similarity_lpips import SampleSimilarityLPIPS

    try:
        lpips = SampleSimilarityLPIPS("lpips-vgg16", sample_similarity_resize=LPIPS_RESIZE).to(device)
    except OSError as error:  # urllib's URLError too: no network and nothing in the torch hub cache
        raise UserError(f"ppl with the inception backbone measures distances with LPIPS-VGG16, whose weights "
                        f"(torchvision's VGG16 and torch-fidelity's LPIPS layers) are downloaded once into the torch "
                        f"hub cache ({torch.hub.get_dir()}), but loading them failed: {error}. Run once with "
                        f"internet access, or use backbone=classifier (the same protocol on the digits classifier's "
                        f"features), or drop ppl from the metrics.") from None

    def to_rgb_255(x: Tensor) -> Tensor:
        x = (x.float() + 1) * 127.5
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def distance(x: Tensor, y: Tensor) -> Tensor:
        return lpips(to_rgb_255(x), to_rgb_255(y)).flatten()
    return distance


@torch.no_grad()
def perceptual_path_length(generator, distance: Callable[[Tensor, Tensor], Tensor], num_samples: int, seed: int,
                           space: str = "w", sampling: str = "end", epsilon: float = EPSILON, batch_size: int = 250,
                           device: torch.device | str = "cpu", distance_name: str = CLASSIFIER_DISTANCE,
                           ) -> tuple[dict[str, float], dict[str, Any]]:
    """({"ppl": mean, "ppl_std": std}, provenance) of a style generator (`mapping`, `synthesis`, `z_dim`) over
    `num_samples` pairs drawn from `seed`, without truncation."""
    rng = torch.Generator().manual_seed(int(seed))
    distances = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        z = torch.randn(2 * n, generator.z_dim, generator=rng)
        t = torch.rand(n, 1, generator=rng) * (sampling == "full")
        noise = [m.repeat(2, 1, 1, 1) for m in generator.synthesis.draw_noise(n, rng)]
        if space == "z":
            z0, z1 = z.chunk(2)
            ends = torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)])
            ws = generator.mapping(ends.to(device))
        else:
            w0, w1 = generator.mapping(z.to(device)).chunk(2)
            t = t.to(w0)[:, :, None]
            ws = torch.cat([w0.lerp(w1, t), w0.lerp(w1, t + epsilon)])
        a, b = generator.synthesis(ws, noise).chunk(2)
        distances.append((distance(a, b) / epsilon**2).cpu())
    values = torch.cat(distances).double().numpy()
    lo, hi = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="higher")
    kept = values[(lo <= values) & (values <= hi)]
    provenance = {"ppl_space": space, "ppl_sampling": sampling, "ppl_epsilon": epsilon, "ppl_num_pairs": int(num_samples),
                  "ppl_distance": distance_name,
                  "ppl_percentiles": [1, 99]}
    return {"ppl": float(kept.mean()), "ppl_std": float(kept.std())}, provenance
