"""Datamodules on small data written by the tests in each dataset's real on-disk format."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import pickle
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from gan.data.celeba import CelebADataModule
from gan.data.cifar10 import CIFAR10DataModule
from gan.data.datamodule import InfiniteBatchSampler
from gan.data.digits import DigitsDataModule, stratified_indices
from gan.data.folder import FolderDataModule
from gan.data.mnist import FashionMNISTDataModule, MNISTDataModule
from gan.data.toy import ToyDataModule, mixture
from gan.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


def common(name, shape, num_classes=None, batch_size=4, **kwargs):
    return dict(name=name, shape=shape, num_classes=num_classes, batch_size=batch_size, **kwargs)


def take(iterable, n):
    return list(itertools.islice(iterable, n))


def check_images(data, shape):
    x, y = data[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == shape
    assert -1 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_resolves_and_builds(path, tmp_path):
    cfg = OmegaConf.create({"seed": 7, "paths": {"data_dir": str(tmp_path)}, "data": OmegaConf.load(path)})
    data = OmegaConf.to_container(cfg.data, resolve=True)
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.name == data["name"] == path.stem
    assert dm.shape == tuple(data["shape"]) and all(isinstance(s, int) for s in data["shape"])
    if "image_size" in data:
        assert dm.shape == (data["channels"], data["image_size"], data["image_size"])
    assert dm.num_classes == data["num_classes"] and dm.seed == 7


# ---------------------------------------------------------------- digits


def test_digits_splits_are_stratified_disjoint_and_fixed():
    from sklearn.datasets import load_digits

    labels = torch.from_numpy(load_digits().target)
    parts = [stratified_indices(labels, lo, hi) for lo, hi in ((0, 0.8), (0.8, 0.9), (0.9, 1))]
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(1797))
    for part, fraction in zip(parts, (0.8, 0.1, 0.1)):
        counts = torch.bincount(labels[part], minlength=10).float()
        assert torch.allclose(counts, torch.bincount(labels).float() * fraction, atol=1)

    dm = DigitsDataModule(**common("digits", (1, 32, 32), 10, seed=0))
    dm.setup("fit")
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [len(p) for p in parts]
    check_images(dm.dataset("train"), (1, 32, 32))
    other_seed = DigitsDataModule(**common("digits", (1, 32, 32), 10, seed=5))
    assert torch.equal(dm.dataset("val").labels, other_seed.dataset("val").labels)
    assert torch.equal(dm.dataset("val").data, other_seed.dataset("val").data)


def test_digits_values_at_native_size_and_unlabelled():
    from sklearn.datasets import load_digits

    digits = load_digits()
    val_index = stratified_indices(torch.from_numpy(digits.target), 0.8, 0.9)
    dm = DigitsDataModule(**common("digits", (3, 8, 8), None, image_size=8, channels=3))
    x, y = dm.dataset("val")[0]
    expected = torch.from_numpy(digits.images[int(val_index[0])]).float() / 16 * 2 - 1
    assert x.shape == (3, 8, 8) and int(y) == -1
    assert torch.allclose(x, expected.expand(3, 8, 8), atol=1 / 127.5)


# ---------------------------------------------------------------- toy


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_toy_mixture_statistics(name):
    means, std = mixture(name)
    assert means.shape == ((8, 2) if name == "ring" else (25, 2))
    dm = ToyDataModule(**common(name, (2,), None, batch_size=256))
    dm.setup("fit")
    train = dm.dataset("train")
    assert len(train) == 100_000 and len(dm.dataset("val")) == len(dm.dataset("test")) == 10_000
    x, y = train[0]
    assert x.dtype == torch.float32 and x.shape == (2,) and int(y) == -1
    points = train.data
    nearest = torch.cdist(points, means).argmin(1)
    counts = torch.bincount(nearest, minlength=len(means)).float()
    assert torch.allclose(counts, torch.full_like(counts, len(points) / len(means)), rtol=0.1)
    for k in range(len(means)):
        members = points[nearest == k]
        assert torch.allclose(members.mean(0), means[k], atol=5 * std / len(members) ** 0.5)
        assert abs(members.std(0).mean().item() - std) < 0.03 * std
    assert not torch.equal(dm.dataset("val").data, points[:10_000])
    labelled = ToyDataModule(**common(name, (2,), len(means), batch_size=256, seed=3))
    assert torch.equal(labelled.dataset("train").data, points)  # independent of the run's seed
    assert torch.equal(labelled.dataset("train").labels, nearest)
    with pytest.raises(UserError, match="ring"):
        mixture("spiral")


# ---------------------------------------------------------------- MNIST / Fashion-MNIST


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_mnist(root: Path, folder: str = "MNIST", gz: bool = False, train: int = 5_010, test: int = 7):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, test)}
    for name, array in arrays.items():
        write_idx(root / folder / "raw" / name, array, gz)
    return arrays


def test_mnist_reads_idx_files_exactly(tmp_path):
    arrays = write_mnist(tmp_path)
    dm = MNISTDataModule(**common("mnist", (1, 28, 28), 10, root=str(tmp_path), image_size=28, channels=1))
    dm.setup("fit")
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [10, 5_000, 7]
    for split, images, labels, i in (("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 3),
                                     ("val", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 10 + 4),
                                     ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 6)):
        x, y = dm.dataset(split)[i - 10 if split == "val" else i]
        assert torch.equal(x[0], torch.from_numpy(arrays[images][i]).float() / 127.5 - 1)
        assert y.dtype == torch.int64 and int(y) == arrays[labels][i]


def test_fashion_mnist_reads_gz_and_resizes(tmp_path):
    write_mnist(tmp_path, "FashionMNIST", gz=True)
    dm = FashionMNISTDataModule(**common("fashion_mnist", (1, 32, 32), 10, root=str(tmp_path), image_size=32, channels=1))
    dm.setup("fit")
    check_images(dm.dataset("test"), (1, 32, 32))
    assert isinstance(dm.dataset("train").data, torch.Tensor) and dm.dataset("train").data.dtype == torch.uint8
    with pytest.raises(UserError, match=str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte")):
        MNISTDataModule(**common("mnist", (1, 32, 32), 10, root=str(tmp_path), image_size=32, channels=1)).setup("fit")


def test_mnist_missing_and_corrupt_files(tmp_path):
    make = lambda: MNISTDataModule(**common("mnist", (1, 32, 32), 10, root=str(tmp_path), image_size=32, channels=1))
    with pytest.raises(UserError, match="data.download=true") as missing:
        make().setup("fit")
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in str(missing.value)
    write_mnist(tmp_path)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])  # an images magic number on a label file
    with pytest.raises(UserError, match="not a valid idx file") as corrupt:
        make().setup("fit")
    assert str(labels) in str(corrupt.value)
    write_idx(labels, np.zeros(5_010))
    labels.write_bytes(labels.read_bytes()[:-1])  # truncated
    with pytest.raises(UserError, match="corrupt or truncated"):
        make().setup("fit")


def test_download_uses_torchvision_layout_and_reports_failure(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake_download(root, download):  # stands in for torchvision.datasets.MNIST(root, download=True)
        calls.append((root, download))
        write_mnist(Path(root))

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_download)
    dm = MNISTDataModule(**common("mnist", (1, 32, 32), 10, root=str(tmp_path), download=True))
    dm.prepare_data()
    dm.setup("fit")
    assert calls == [(str(tmp_path), True)] and len(dm.dataset("train")) == 10

    def offline(root, download):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(UserError, match="Downloading FashionMNIST into .* failed"):
        FashionMNISTDataModule(**common("fashion_mnist", (1, 32, 32), 10, root=str(tmp_path), download=True)).prepare_data()


# ---------------------------------------------------------------- CIFAR-10


def write_cifar(root: Path, per_batch: int = 1_002, test: int = 6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        batches[name] = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    return batches


def test_cifar10_reads_pickles_exactly(tmp_path):
    batches = write_cifar(tmp_path)
    dm = CIFAR10DataModule(**common("cifar10", (3, 32, 32), 10, root=str(tmp_path), image_size=32, channels=3))
    dm.setup("fit")
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [10, 5_000, 6]
    x, y = dm.dataset("train")[2]
    assert torch.equal(x, torch.from_numpy(batches["data_batch_1"][b"data"][2].reshape(3, 32, 32)).float() / 127.5 - 1)
    assert int(y) == batches["data_batch_1"][b"labels"][2]
    x, y = dm.dataset("val")[-1]
    assert torch.equal(x, torch.from_numpy(batches["data_batch_5"][b"data"][-1].reshape(3, 32, 32)).float() / 127.5 - 1)
    x, y = dm.dataset("test")[5]
    assert int(y) == batches["test_batch"][b"labels"][5] and y.dtype == torch.int64
    gray = CIFAR10DataModule(**common("cifar10", (1, 16, 16), 10, root=str(tmp_path), image_size=16, channels=1))
    check_images(gray.dataset("test"), (1, 16, 16))


def test_cifar10_missing_and_corrupt_files(tmp_path):
    make = lambda: CIFAR10DataModule(**common("cifar10", (3, 32, 32), 10, root=str(tmp_path), image_size=32, channels=3))
    with pytest.raises(UserError, match="data.download=true") as missing:
        make().setup("fit")
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in str(missing.value)
    write_cifar(tmp_path, per_batch=1_001)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match="data_batch_3 is not a CIFAR-10 python batch"):
        make().setup("fit")


# ---------------------------------------------------------------- CelebA


def face(width=40, height=50):
    """Black picture with a white 20x20 centre, so the crop size decides what the sample shows."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[height // 2 - 10:height // 2 + 10, width // 2 - 10:width // 2 + 10] = 255
    return Image.fromarray(pixels)


def write_celeba(root: Path, partitions=(0, 0, 0, 0, 0, 1, 1, 2)):
    images = root / "celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    lines = []
    for i, partition in enumerate(partitions, 1):
        face().save(images / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {partition}")
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def test_celeba_partition_crop_and_resize(tmp_path):
    write_celeba(tmp_path)
    dm = CelebADataModule(**common("celeba", (3, 8, 8), root=str(tmp_path), image_size=8, channels=3, crop=20))
    dm.setup("fit")
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [5, 2, 1]
    check_images(dm.dataset("val"), (3, 8, 8))
    x, y = dm.dataset("test")[0]
    assert int(y) == -1 and x.mean() > 0.9  # only the white centre survives the 20-pixel crop
    wide = CelebADataModule(**common("celeba", (1, 8, 8), root=str(tmp_path), image_size=8, channels=1, crop=140))
    x, _ = wide.dataset("test")[0]
    assert x.shape == (1, 8, 8) and x.mean() < -0.3  # crop clamps to the 40-pixel width: mostly black


def test_celeba_errors(tmp_path):
    make = lambda **kw: CelebADataModule(**common("celeba", (3, 8, 8), root=str(tmp_path), image_size=8, channels=3, **kw))
    with pytest.raises(UserError, match="data.download=true") as missing:
        make().setup("fit")
    assert str(tmp_path / "celeba" / "img_align_celeba") in str(missing.value)
    write_celeba(tmp_path)
    with pytest.raises(UserError, match="num_classes=null"):
        CelebADataModule(**common("celeba", (3, 8, 8), 10, root=str(tmp_path), image_size=8)).setup("fit")
    (tmp_path / "celeba" / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(UserError, match="000003.jpg is listed"):
        make().setup("fit")


# ---------------------------------------------------------------- image folder


def write_folder(root: Path, count: int = 60) -> list[str]:
    extensions = [".png", ".JPG", ".jpeg", ".bmp", ".gif", ".webp", ".TIFF"]
    names = []
    for i in range(count):
        name = f"{'ab'[i % 2]}/{'deep/' * (i % 3)}img{i}{extensions[i % len(extensions)]}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 20, 3), i * 4, np.uint8)).save(root / name)
        names.append(name)
    (root / "a" / "notes.txt").write_text("not an image")
    return names


def test_folder_recursive_hash_split(tmp_path):
    names = write_folder(tmp_path)
    dm = FolderDataModule(**common("folder", (3, 16, 16), root=str(tmp_path), image_size=16, channels=3))
    dm.setup("fit")
    assert len(dm.files) == 60
    percent = {n: int(hashlib.sha1(n.encode()).hexdigest(), 16) % 100 for n in names}
    expected = sorted(tmp_path / n for n in names if percent[n] < 90)
    assert dm.dataset("train").paths == expected
    total = len(expected)
    for split in ("val", "test"):
        try:
            total += len(dm.dataset(split))
        except UserError as error:
            assert "is empty" in str(error)
    assert total == 60
    check_images(dm.dataset("train"), (3, 16, 16))
    assert int(dm.dataset("train")[0][1]) == -1


def test_folder_centre_crops_to_square(tmp_path):
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, 10:20] = (0, 0, 255)  # blue centre square between red sides
    pixels[:, :10] = pixels[:, 20:] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    dm = FolderDataModule(**common("folder", (3, 4, 4), root=str(tmp_path), image_size=4, channels=3, batch_size=1))
    percent = int(hashlib.sha1(b"wide.png").hexdigest(), 16) % 100
    split = "train" if percent < 90 else "val" if percent < 95 else "test"
    x, _ = dm.dataset(split)[0]
    assert torch.equal(x, torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1).expand(3, 4, 4))
    for other in {"train", "val", "test"} - {split}:
        with pytest.raises(UserError, match="is empty"):
            dm.dataset(other)


def test_folder_errors(tmp_path):
    make = lambda root: FolderDataModule(**common("folder", (3, 16, 16), root=root, image_size=16, channels=3))
    with pytest.raises(UserError, match="data.root=/path/to/images"):
        make(None).setup("fit")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("no images")
    with pytest.raises(UserError, match=r"holds no images.*\.png") as empty:
        make(str(tmp_path / "empty")).setup("fit")
    assert str(tmp_path / "empty") in str(empty.value)
    write_folder(tmp_path / "images", count=5)
    (tmp_path / "images" / "b" / "x.png").write_bytes(b"\x13\x37 garbage, not a PNG" * 10)
    with pytest.raises(UserError, match="x.png cannot be read as an image") as garbage:
        make(str(tmp_path / "images")).setup("fit")
    assert str(tmp_path / "images" / "b" / "x.png") in str(garbage.value)


# ---------------------------------------------------------------- sampler and loader


def test_sampler_passes_are_seeded_permutations():
    stream = take(InfiniteBatchSampler(10, 3, seed=4), 7)
    first, second = (torch.randperm(10, generator=torch.Generator().manual_seed(s)).tolist() for s in (4, 5))
    assert stream[:3] == [first[0:3], first[3:6], first[6:9]]  # full batches only: the 10th index waits
    assert stream[3:6] == [second[0:3], second[3:6], second[6:9]]
    assert take(InfiniteBatchSampler(10, 3, seed=4), 7) == stream
    assert take(InfiniteBatchSampler(10, 3, seed=9), 7) != stream


@pytest.mark.parametrize("start", [1, 3, 8])
def test_sampler_resumes_exactly(start):
    uninterrupted = take(InfiniteBatchSampler(17, 4, seed=2), 30)
    assert take(InfiniteBatchSampler(17, 4, seed=2, start=start), 30 - start) == uninterrupted[start:]


def test_sampler_shards_global_batches_across_ranks():
    single = take(InfiniteBatchSampler(23, 6, seed=1, start=2), 12)
    ranks = [take(InfiniteBatchSampler(23, 3, seed=1, start=2, rank=r, world_size=2), 12) for r in (0, 1)]
    for global_batch, part0, part1 in zip(single, *ranks):
        assert part0 + part1 == global_batch and not set(part0) & set(part1)
    with pytest.raises(UserError, match="fewer than one global batch"):
        InfiniteBatchSampler(5, 3, seed=0, world_size=2)


def test_train_dataloader_is_infinite_named_and_resumes_from_its_own_state():
    dm = DigitsDataModule(**common("digits", (1, 16, 16), 10, batch_size=64, image_size=16, seed=3))
    dm.setup("fit")
    batches = take(dm.train_dataloader(), 30)  # 22 batches per pass: crosses into the second pass
    assert batches[0].keys() == {"x", "y"}
    x, y = batches[0]["x"], batches[0]["y"]
    assert x.shape == (64, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    train, first = dm.dataset("train"), next(iter(InfiniteBatchSampler(len(dm.dataset("train")), 64, seed=3)))
    assert torch.equal(x, torch.stack([train[i][0] for i in first])) and torch.equal(y, train.labels[first])
    resumed_dm = DigitsDataModule(**common("digits", (1, 16, 16), 10, batch_size=64, image_size=16, seed=3))
    resumed_dm.load_state_dict(dm.state_dict() | {"minibatches_consumed": 25})
    resumed = take(resumed_dm.train_dataloader(), 5)
    for a, b in zip(batches[25:], resumed):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    unlabelled = DigitsDataModule(**common("digits", (1, 16, 16), None, batch_size=64, image_size=16, seed=3))
    assert take(unlabelled.train_dataloader(), 1)[0].keys() == {"x"}


def test_an_item_of_the_stream_stacks_one_iterations_minibatches():
    plain = take(InfiniteBatchSampler(23, 3, seed=1, start=2), 6)
    stacked = take(InfiniteBatchSampler(23, 3, seed=1, start=2, per_item=2), 3)
    assert stacked == [plain[0] + plain[1], plain[2] + plain[3], plain[4] + plain[5]]


# ---------------------------------------------------------------- user errors


def test_configuration_errors():
    with pytest.raises(UserError, match=r"data.shape is \[3, 32, 32\]"):
        DigitsDataModule(**common("digits", (3, 32, 32), 10, image_size=32, channels=1)).setup("fit")
    with pytest.raises(UserError, match="batch_size must be at least 1"):
        DigitsDataModule(**common("digits", (1, 32, 32), 10, batch_size=0))
    with pytest.raises(UserError, match="fewer than data.batch_size=5000"):
        DigitsDataModule(**common("digits", (1, 32, 32), 10, batch_size=5000)).setup("fit")
    with pytest.raises(UserError, match="image_size=20 is not supported"):
        DigitsDataModule(**common("digits", (1, 20, 20), 10, image_size=20))
    with pytest.raises(UserError, match="channels must be 1"):
        DigitsDataModule(**common("digits", (2, 32, 32), 10, channels=2))
    with pytest.raises(UserError, match="Unknown data split 'training'"):
        DigitsDataModule(**common("digits", (1, 32, 32), 10)).dataset("training")
    with pytest.raises(UserError, match="no class labels in 0..4"):
        DigitsDataModule(**common("digits", (1, 32, 32), 5)).setup("fit")


# ---------------------------------------------------------------- decoded-image cache (issue 10, item 4)


def test_image_files_are_decoded_once_into_a_memory_mapped_cache(tmp_path, monkeypatch):
    import os

    from gan.data import datamodule
    from gan.data.datamodule import Batches, TensorPairs

    root, cache = tmp_path / "images", tmp_path / "cache"
    write_folder(root, count=30)
    make = lambda **kw: FolderDataModule(**common("folder", (3, 8, 8), root=str(root), image_size=8, channels=3, **kw))
    plain, cached = make(), make(cache_dir=str(cache))
    cached.setup("fit")
    train = cached.dataset("train")
    assert isinstance(train, TensorPairs) and train.data.dtype == torch.uint8 and train.data.shape[1:] == (3, 8, 8)
    [npy] = (cache / "images").glob("*.npy")  # the training split, written once
    assert isinstance(np.load(npy, mmap_mode="r"), np.memmap)
    for split in ("train", "val", "test"):  # the same images as decoding per access, batch by batch
        a, b = cached.dataset(split), plain.dataset(split)
        assert torch.equal(Batches(a, cached.fields)[list(range(len(a)))]["x"], torch.stack([x for x, _ in b]))
    for a, b in zip(take(cached.train_dataloader(), 3), take(plain.train_dataloader(), 3)):
        assert torch.equal(a["x"], b["x"])

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(datamodule, "read_image", no_decoding)
    again = make(cache_dir=str(cache))
    again.setup("fit")  # reuses the cache: no image is decoded
    assert torch.equal(again.dataset("train").data, train.data)
    assert len(list((cache / "images").glob("*.npy"))) == 3 and not list((cache / "images").glob(".*"))  # no temp left
    monkeypatch.undo()

    changed = plain.dataset("train").paths[0]  # a training image is replaced: a new key, decoded afresh
    Image.fromarray(np.full((12, 20, 3), 255, np.uint8)).save(changed)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fresh = make(cache_dir=str(cache)).dataset("train")
    assert not torch.equal(fresh.data, train.data)
    assert torch.equal(fresh.data[0], torch.full((3, 8, 8), 255, dtype=torch.uint8))
    assert torch.equal(fresh.data[1:], train.data[1:])
    assert len(list((cache / "images").glob("*.npy"))) == 4
