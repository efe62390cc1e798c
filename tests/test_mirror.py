"""data.mirror: a random horizontal flip (p = 1/2) of the training images of the noise->image datasets.

The defaults follow the reference configs (read in the official repositories):
- tkarras/progressive_growing_of_gans config.py (commit 2504c3f): the celebahq and celeba lines (and every LSUN line)
  set `train.mirror_augment = True`; the cifar10, cifar100, svhn and mnist lines do not.
- NVlabs/stylegan2-ada-pytorch train.py (commit d72cc7d): `--mirror` "Enable dataset x-flips [default: false]"; its
  examples use --mirror=1 for FFHQ (StyleGAN2 config F) and MetFaces, and train CIFAR-10 with `--cfg=cifar --cond=1`,
  without it. NVlabs/stylegan2-ada README's paper commands agree: AFHQ Dog, MetFaces, FFHQ with --mirror=1;
  class-conditional CIFAR-10 `--cfg=cifar --aug=ada` without (its pickle, cifar10c-cifar-ada-best-fid.pkl, has no
  "-mirror" in its name, unlike afhqdog-mirror-paper512-ada.pkl).
- mit-han-lab/data-efficient-gans DiffAugment-stylegan2/run_low_shot.py (commit 0b63395): `--mirror-augment`
  defaults to True for the 100-shot sets (faces100 is that setting).
Digits are never mirrored: a mirrored digit is another shape.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from conftest import CONF, compose_config
from gan.data.datamodule import ImageDataModule, draw_key, mirrored
from gan.data.digits import DigitsDataModule
from gan.data.digits_translation import DigitsAttributesDataModule
from gan.errors import UserError
from gan.metrics.real_data import load_tensors

REFERENCE = {"celeba": True, "folder": True, "faces100": True,  # ProGAN CelebA / LSUN, StyleGAN2-ADA FFHQ, DiffAugment
             "cifar10": False,  # ProGAN's cifar10 line, StyleGAN2-ADA's CIFAR-10 commands
             "digits": False, "mnist": False, "mnist5k": False, "fashion_mnist": False}  # digits (ProGAN's mnist line)
SEED = 5


def digits(mirror: bool) -> DigitsDataModule:
    return DigitsDataModule(name="digits", shape=(1, 8, 8), num_classes=None, batch_size=16, seed=SEED,
                            image_size=8, mirror=mirror)


class Recorder(pl.LightningModule):
    """Keeps every training batch as the model receives it (after the datamodule's transfer hooks)."""

    batches_per_iteration = 2  # two minibatches per item: a batch's flips are keyed by its first one's position

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["x"].clone())

    def configure_optimizers(self):
        return None


def train(dm: DigitsDataModule, items: int, start: int = 0) -> list[torch.Tensor]:
    """The batches a real Lightning fit of `items` iterations feeds the model, from minibatch position `start`."""
    dm.load_state_dict({"minibatches_consumed": start})
    model = Recorder()
    pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=items, logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               num_sanity_val_steps=0).fit(model, datamodule=dm)
    assert dm.minibatches_consumed == start + items * Recorder.batches_per_iteration
    return model.seen


def asymmetric_images(n: int) -> torch.Tensor:
    """n distinct images none of which equals its mirror image."""
    return torch.arange(n * 2 * 3 * 4, dtype=torch.float32).reshape(n, 2, 3, 4)


def flipped_rows(original: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Which images of `out` are the mirror images of `original`'s (each must be one or the other)."""
    same = (out == original).flatten(1).all(1)
    flipped = (out == original.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ flipped)
    return flipped


def test_flips_about_half_and_are_fixed_by_the_key():
    images = asymmetric_images(64)
    draws = torch.stack([flipped_rows(images, mirrored(images, draw_key(SEED, 0, p))) for p in range(300)])
    assert abs(draws.float().mean().item() - 0.5) < 0.02  # 19,200 draws: 5 standard deviations is 0.018
    assert torch.equal(flipped_rows(images, mirrored(images, draw_key(SEED, 0, 7))), draws[7])  # same seed, position
    assert len({tuple(d.tolist()) for d in draws}) == len(draws)  # each position draws its own flips
    assert not torch.equal(flipped_rows(images, mirrored(images, draw_key(SEED + 1, 0, 0))), draws[0])
    assert not torch.equal(flipped_rows(images, mirrored(images, draw_key(SEED, 1, 0))), draws[0])  # ranks differ


def test_a_training_run_mirrors_its_batches_and_a_resumed_run_repeats_the_flips():
    plain = train(digits(mirror=False), 6)
    seen = train(digits(mirror=True), 6)
    flips = []
    for item, (original, batch) in enumerate(zip(plain, seen)):
        assert original.shape == (32, 1, 8, 8)
        assert torch.equal(batch, mirrored(original, draw_key(SEED, 0, 2 * item)))
        flips.append(flipped_rows(original, batch) & ~(original == original.flip(-1)).flatten(1).all(1))
    share = torch.cat(flips).float().mean().item()
    assert 0.3 < share < 0.7  # 192 images: about half are mirrored
    resumed = train(digits(mirror=True), 3, start=6)  # a run restored at the checkpointed position of item 3
    for original, again in zip(seen[3:], resumed):
        assert torch.equal(original, again)


def test_evaluation_data_is_never_flipped():
    mirroring, plain = digits(mirror=True), digits(mirror=False)
    train(mirroring, 2)
    for split in ("train", "val", "test"):  # what the metrics' real images and reference statistics read
        assert torch.equal(load_tensors(mirroring.dataset(split), uint8=True)[0],
                           load_tensors(plain.dataset(split), uint8=True)[0])
    batch, trainer = {"x": asymmetric_images(8)}, mirroring.trainer
    for mode in ("validating", "testing", "sanity_checking"):  # outside training the hook passes batches through
        setattr(trainer, mode, True)
        assert not trainer.training and mirroring.on_after_batch_transfer(batch, 0)["x"] is batch["x"]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_each_image_config_mirrors_as_its_reference(name):
    cfg = compose_config(Path("unused"), f"data={name}", fast=False)
    assert OmegaConf.load(CONF / "data" / f"{name}.yaml").mirror is REFERENCE[name]  # set in the YAML, not defaulted
    assert cfg.data.mirror is REFERENCE[name]


def test_every_noise_to_image_config_sets_mirror_and_the_others_have_none():
    import hydra.utils

    for path in sorted((CONF / "data").glob("*.yaml")):
        data = OmegaConf.load(path)
        target = hydra.utils.get_class(data._target_)
        single_images = issubclass(target, ImageDataModule) and target.served_fields == ("x",)
        assert ("mirror" in data) == single_images, path.name
        if single_images:
            assert path.stem in REFERENCE, f"{path.name}: add its reference's mirror setting to REFERENCE"


def test_mirror_must_be_a_bool_and_is_refused_for_image_to_image_data():
    with pytest.raises(UserError, match="data.mirror must be true or false"):
        DigitsDataModule(name="digits", shape=(1, 8, 8), num_classes=None, batch_size=4, image_size=8, mirror="yes")
    with pytest.raises(UserError, match="data.flip=true instead"):
        DigitsAttributesDataModule(name="digits_attributes", shape=(3, 16, 16), num_classes=None, batch_size=4, channels=3,
                                   image_size=16, load_size=16, flip=False, mirror=True)
