"""Train the classifier backbone on a dataset's labelled training split, deterministically, once per cache key."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gan.metrics.feature_extractor_classifier import ClassifierNet
from gan.metrics.quantize import from_uint8
from gan.metrics.real_data import fingerprint, labelled_dataset, load_tensors
from gan.storage import cache_key, save_torch

log = logging.getLogger(__name__)

ARCH_VERSION = 2  # bump when ClassifierNet or the training recipe changes: old cache entries are then ignored
DEFAULT_HPARAMS = {"epochs": 20, "max_steps": 3000, "batch_size": 64, "lr": 2e-3, "width": 32, "seed": 0}


def classifier_weights(datamodule, cache_dir: str | Path, hparams: dict[str, Any] | None = None) -> Path:
    """Path of the trained classifier for this dataset, training it first when the cache has none.

    The key covers the dataset's name, image shape, the contents of its train and test splits,
    the hyperparameters and the recipe version; the file also stores the test accuracy.
    """
    hp = {**DEFAULT_HPARAMS, **dict(hparams or {})}
    train, num_classes = labelled_dataset(datamodule, "train")
    test, _ = labelled_dataset(datamodule, "test")
    channels, height, _ = datamodule.shape
    key = {"dataset": datamodule.name, "shape": list(datamodule.shape), "num_classes": num_classes,
           "train": fingerprint(train), "test": fingerprint(test), "hparams": hp, "version": ARCH_VERSION}
    path = Path(cache_dir) / "classifiers" / f"{datamodule.name}-{height}px-{cache_key(key)}.pt"
    if path.exists():
        return path
    arch = {"channels": channels, "image_size": height, "num_classes": num_classes, "width": hp["width"]}
    net = train_classifier(arch, *load_tensors(train, uint8=True), hp)
    accuracy = test_accuracy(net, *load_tensors(test, uint8=True))
    save_torch({"arch": arch, "state_dict": net.state_dict(), "test_accuracy": accuracy, "key": key}, path)
    message = f"Classifier backbone for '{datamodule.name}': test accuracy {accuracy:.2%} (cached at {path})"
    log.info(message)
    print(message)
    return path


def train_classifier(arch: dict[str, Any], images: torch.Tensor, labels: torch.Tensor, hp: dict[str, Any]) -> ClassifierNet:
    """Adam with a cosine schedule in a fixed order from a fixed seed, deterministic kernels, one CPU thread.

    One thread makes the weights independent of the machine's core count (float sums do not get
    re-associated), and is also the fastest for a network this small, by far on a loaded machine.
    """
    steps_per_epoch = max(1, len(images) // hp["batch_size"])
    steps = min(hp["max_steps"], hp["epochs"] * steps_per_epoch)
    order_rng = torch.Generator().manual_seed(hp["seed"])
    was_deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hp["seed"])
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        try:
            net = ClassifierNet(**arch).train()
            optimizer = torch.optim.Adam(net.parameters(), lr=hp["lr"])
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
            order = torch.empty(0, dtype=torch.long)
            for _ in range(steps):
                if len(order) < hp["batch_size"]:
                    order = torch.randperm(len(images), generator=order_rng)
                batch, order = order[:hp["batch_size"]], order[hp["batch_size"]:]
                _, logits = net(from_uint8(images[batch]))
                loss = F.cross_entropy(logits, labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(threads)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def test_accuracy(net: ClassifierNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    correct = sum(int((net(from_uint8(x))[1].argmax(1) == y).sum()) for x, y in zip(images.split(batch_size), labels.split(batch_size)))
    return correct / len(images)
