"""Train small CNN classifiers of a dataset deterministically, once per cache key: the classifier backbone (the digit
class of the target images) and the judges of the translation metrics (another domain's classes, binary attributes)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

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
    arch = {"channels": channels, "image_size": height, "num_classes": num_classes, "width": hp["width"]}
    return cached_classifier(cache_dir, datamodule.name, key, arch, hp,
                             lambda: (*load_tensors(train, uint8=True), *load_tensors(test, uint8=True)),
                             description=f"Classifier backbone for '{datamodule.name}'")


def cached_classifier(cache_dir: str | Path, name: str, key: dict[str, Any], arch: dict[str, Any], hp: dict[str, Any],
                      data: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
                      multilabel: bool = False, description: str = "Classifier") -> Path:
    """Path of the classifier cached under `key`, training it first on `data()` = (train images, train targets,
    test images, test targets) when the cache has none (uint8 images; class indices, or 0/1 float vectors when
    `multilabel`). The file holds the architecture, the weights and the test accuracy (multi-label: the mean over
    attributes of each attribute's accuracy, the per-attribute accuracies in `attribute_accuracy`)."""
    path = Path(cache_dir) / "classifiers" / f"{name}-{arch['image_size']}px-{cache_key(key)}.pt"
    if path.exists():
        return path
    train_images, train_targets, test_images, test_targets = data()
    net = train_classifier(arch, train_images, train_targets, hp, multilabel)
    saved = {"arch": arch, "state_dict": net.state_dict(), "key": key}
    if multilabel:
        per_attribute = attribute_accuracies(net, test_images, test_targets)
        saved.update(test_accuracy=sum(per_attribute) / len(per_attribute), attribute_accuracy=per_attribute,
                     multilabel=True)
    else:
        saved["test_accuracy"] = test_accuracy(net, test_images, test_targets)
    save_torch(saved, path)
    message = f"{description}: test accuracy {saved['test_accuracy']:.2%} (cached at {path})"
    log.info(message)
    print(message)
    return path


def train_classifier(arch: dict[str, Any], images: torch.Tensor, labels: torch.Tensor, hp: dict[str, Any],
                     multilabel: bool = False) -> ClassifierNet:
    """Adam with a cosine schedule in a fixed order from a fixed seed, deterministic kernels, one CPU thread.

    Cross-entropy on class indices; with `multilabel`, binary cross-entropy per output on 0/1 `labels` [N, K].

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
                loss = (F.binary_cross_entropy_with_logits(logits, labels[batch].float()) if multilabel
                        else F.cross_entropy(logits, labels[batch]))
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


@torch.no_grad()
def attribute_accuracies(net: ClassifierNet, images: torch.Tensor, attrs: torch.Tensor, batch_size: int = 1000) -> list[float]:
    """Per attribute, the fraction of images whose 0/1 value a multi-label classifier (logit > 0) gets right."""
    correct = sum(((net(from_uint8(x))[1] > 0) == (a > 0.5)).sum(0) for x, a in zip(images.split(batch_size), attrs.split(batch_size)))
    return (correct.double() / len(images)).tolist()
