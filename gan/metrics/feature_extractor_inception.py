"""torch-fidelity's TF-compatible Inception-v3 ("inception-v3-compat"), with its weights found offline or a clear error."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch.hub import download_url_to_file
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from gan.errors import UserError

NAME = "inception-v3-compat"
POOL, LOGITS = "2048", "logits_unbiased"  # torch-fidelity's layers for FID/KID/PR and for IS
WEIGHTS_FILENAME = Path(urlparse(URL_INCEPTION_V3).path).name  # weights-inception-2015-12-05-6726825d.pth
RESIZE = "tf1-bilinear-299"  # torch-fidelity's TF1-compatible bilinear resize, after uint8 quantisation


def score_later_hint() -> str:
    """The way out when the weights cannot be had now: train without in-training metrics, score the run later."""
    return (f"Or train now without in-training metrics (metrics=none; checkpoints are still written) and score the run "
            f"later where the weights are available: python -m gan.evaluate ckpt=<run dir or .ckpt> "
            f"inception_weights=/path/to/{WEIGHTS_FILENAME}")


def hub_weights_path() -> Path:
    """Where torch.hub (and so torch-fidelity) keeps the downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def inception_weights_path(weights: str | Path | None = None) -> Path:
    """The weights file to use: `weights` when given, else the torch hub cache, downloading it there if possible."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(
                f"metrics.inception_weights={weights} does not exist. Expected torch-fidelity's Inception-v3 weights "
                f"file {WEIGHTS_FILENAME} (from {URL_INCEPTION_V3}). Point metrics.inception_weights at that file, or "
                f"use metrics.backbone=classifier (a classifier trained on the dataset itself; digits, MNIST, "
                f"Fashion-MNIST and CIFAR-10). {score_later_hint()}."
            )
        return path
    path = hub_weights_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_url_to_file(URL_INCEPTION_V3, str(path), progress=False)
        except Exception as error:  # URLError offline, HTTPError, timeouts, ...
            raise UserError(
                f"The Inception-v3 weights for FID/IS/KID are not available offline and could not be downloaded "
                f"({type(error).__name__}: {error}). Download {URL_INCEPTION_V3} on a machine with internet access "
                f"and put the file {WEIGHTS_FILENAME} at {path} (the torch hub cache; set TORCH_HOME to move it), "
                f"or pass metrics.inception_weights=/path/to/{WEIGHTS_FILENAME}. Alternatively use "
                f"metrics.backbone=classifier, a classifier trained on the dataset itself (digits, MNIST, "
                f"Fashion-MNIST, CIFAR-10), whose values are not comparable with published Inception numbers. "
                f"{score_later_hint()}."
            ) from None
    return path
