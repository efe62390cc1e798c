"""Image-to-image datamodules on small data written in each dataset's real on-disk layout, and the embedded digit sets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.data.aligned import AlignedDataModule
from gan.data.attributes import CelebAAttributesDataModule, DomainFolderDataModule
from gan.data.datamodule import InfiniteBatchSampler
from gan.data.digits import DigitsDataModule, FRACTIONS, stratified_indices
from gan.data.digits_translation import (HALVES, DigitsAttributesDataModule, DigitsEdgesDataModule, DigitsStylesDataModule,
                                         attribute_assignment, digits, edge_map, render_attributes, thicken)
from gan.data.folder import hash_percent
from gan.data.translation import DOMAIN_B_SEED_OFFSET
from gan.data.unaligned import UnalignedDataModule
from gan.errors import UserError

CELEBA_ATTRIBUTES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
                     "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair "
                     "Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face "
                     "Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair "
                     "Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def common(name, shape, batch_size=2, **kwargs):
    if name != "digits":  # the image-to-image datamodules: no jitter unless a test asks (tests/test_translation_recipes.py)
        kwargs = {"load_size": shape[-1], "flip": False, **kwargs}
    return dict(name=name, shape=shape, num_classes=kwargs.pop("num_classes", None), batch_size=batch_size, **kwargs)


def take(iterable, n):
    return list(itertools.islice(iterable, n))


def code(images: torch.Tensor, channel: int = 0) -> list[int]:
    """The uniform value each image of a [N, C, H, W] batch in [-1, 1] was written with, in one channel."""
    return [round(v) for v in ((images[:, channel].mean((1, 2)) + 1) * 127.5).tolist()]


def one_paragraph(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- aligned (pix2pix)


def write_aligned(root: Path, counts: dict[str, int], height: int = 8) -> dict[str, list[int]]:
    """Side-by-side pairs: A is uniform (code, 10, 20), B uniform (code, 200, 30); codes differ between splits."""
    codes = {}
    for s, (split, count) in enumerate(counts.items()):
        (root / split).mkdir(parents=True)
        codes[split] = []
        for i in range(count):
            pixels = np.zeros((height, 2 * height, 3), np.uint8)
            pixels[:, :height] = (s * 80 + i, 10, 20)
            pixels[:, height:] = (s * 80 + i, 200, 30)
            Image.fromarray(pixels).save(root / split / f"{i:03d}.png")
            codes[split].append(s * 80 + i)
    return codes


def test_aligned_pairs_splits_and_direction(tmp_path):
    codes = write_aligned(tmp_path, {"train": 12, "val": 3, "test": 2})
    dm = AlignedDataModule(**common("aligned", (3, 4, 4), root=str(tmp_path), image_size=4))
    dm.setup("fit")
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [12, 3, 2]
    x, y = dm.dataset("train")[0]  # the (x, y) view serves the target images
    assert x.shape == (3, 4, 4) and x.dtype == torch.float32 and int(y) == -1
    assert torch.allclose(x[1], torch.full((4, 4), 200 / 127.5 - 1))
    batch = take(dm.train_dataloader(), 1)[0]
    assert batch.keys() == {"a", "b"}
    assert batch["a"].shape == batch["b"].shape == (2, 3, 4, 4) and batch["a"].dtype == torch.float32
    assert -1 <= batch["a"].min() and batch["b"].max() <= 1
    assert code(batch["a"], 1) == [10, 10] and code(batch["b"], 1) == [200, 200]
    assert code(batch["a"]) == code(batch["b"])  # the two halves of the same files
    for split in ("train", "val", "test"):
        tensors = dm.eval_tensors(split)
        assert tensors.keys() == {"a", "b", "label"} and tensors["a"].dtype == torch.uint8
        assert tensors["a"][:, 0, 0, 0].tolist() == codes[split] and tensors["b"][:, 1].unique().tolist() == [200]
        assert tensors["label"].tolist() == [-1] * len(codes[split])
    reverse = AlignedDataModule(**common("aligned", (1, 4, 4), root=str(tmp_path), image_size=4, channels=1, direction="BtoA"))
    forward = AlignedDataModule(**common("aligned", (1, 4, 4), root=str(tmp_path), image_size=4, channels=1))
    assert torch.equal(reverse.eval_tensors("test")["a"], forward.eval_tensors("test")["b"])
    assert torch.equal(reverse.eval_tensors("test")["b"], forward.eval_tensors("test")["a"])
    assert reverse.eval_tensors("test")["a"].shape == (2, 1, 4, 4)


def test_aligned_holds_out_val_and_test_of_train_when_missing(tmp_path):
    write_aligned(tmp_path, {"train": 60})
    dm = AlignedDataModule(**common("aligned", (3, 4, 4), root=str(tmp_path), image_size=4))
    percent = {i: hash_percent(f"{i:03d}.png") for i in range(60)}
    expected = {"train": [i for i in range(60) if percent[i] >= 10], "val": [i for i in range(60) if percent[i] < 5],
                "test": [i for i in range(60) if 5 <= percent[i] < 10]}
    assert all(expected.values())  # these names put files in every split
    for split, members in expected.items():
        assert dm.eval_tensors(split)["a"][:, 0, 0, 0].tolist() == members
    (tmp_path / "test").mkdir()
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / "test" / "only.jpg")
    with_test = AlignedDataModule(**common("aligned", (3, 4, 4), root=str(tmp_path), image_size=4))
    assert len(with_test.dataset("test")) == 1  # an existing folder is used as it is, and train keeps 5..10
    assert with_test.eval_tensors("train")["a"][:, 0, 0, 0].tolist() == sorted(expected["train"] + expected["test"])


def test_aligned_errors(tmp_path):
    make = lambda root, **kw: AlignedDataModule(**common("aligned", (3, 4, 4), root=root, image_size=4, **kw))
    with pytest.raises(UserError, match="data.root is null") as no_root:
        make(None).setup("fit")
    assert "download_pix2pix_dataset.sh" in one_paragraph(no_root)
    with pytest.raises(UserError) as missing:
        make(str(tmp_path / "facades")).setup("fit")
    message = one_paragraph(missing)
    assert str(tmp_path / "facades" / "train") in message and "width = 2 x height" in message
    assert "download_pix2pix_dataset.sh" in message
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no images"):
        make(str(tmp_path / "empty")).setup("fit")
    write_aligned(tmp_path / "bad", {"train": 4})
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "bad" / "train" / "square-ish.jpg")
    with pytest.raises(UserError, match="12x8 pixels") as ratio:
        make(str(tmp_path / "bad")).setup("fit")
    assert str(tmp_path / "bad" / "train" / "square-ish.jpg") in one_paragraph(ratio)
    with pytest.raises(UserError, match="data.direction=AtoB"):
        make(str(tmp_path), direction="A2B")


# ---------------------------------------------------------------- unaligned (CycleGAN)


def write_unaligned(root: Path, counts=(("trainA", 40), ("trainB", 30), ("testA", 3), ("testB", 4))) -> dict[str, list[str]]:
    """Uniform 8x8 images; red = a code unique to the image, green = 50 for domain A and 150 for domain B."""
    names = {}
    for f, (folder, count) in enumerate(counts):
        (root / folder).mkdir(parents=True)
        names[folder] = []
        for i in range(count):
            name = f"{folder}_{i:03d}.jpg" if folder.startswith("test") else f"{i:03d}.png"
            Image.fromarray(np.full((8, 8, 3), (f * 50 + i, 50 if folder.endswith("A") else 150, 0), np.uint8)).save(
                root / folder / name, quality=100)
            names[folder].append(name)
    return names


def test_unaligned_domains_splits_and_eval_tensors(tmp_path):
    names = write_unaligned(tmp_path)
    dm = UnalignedDataModule(**common("unaligned", (3, 4, 4), root=str(tmp_path), image_size=4))
    dm.setup("fit")
    held = {folder: [i for i, n in enumerate(names[folder]) if hash_percent(n) < 5] for folder in ("trainA", "trainB")}
    assert all(held.values())
    for split in ("train", "val"):
        a, b = dm.domains(split)
        for domain, records, offset in (("A", a, 0), ("B", b, 50)):
            members = [i for i in range(len(names[f"train{domain}"])) if (i in held[f"train{domain}"]) == (split == "val")]
            tensors = dm.eval_tensors(split)
            assert tensors[domain.lower()][:, 0, 0, 0].tolist() == [offset + i for i in members]
    test = dm.eval_tensors("test")
    assert test.keys() == {"a", "b", "a_label", "b_label"}
    assert test["a"].shape == (3, 3, 4, 4) and test["b"].shape == (4, 3, 4, 4) and test["a"].dtype == torch.uint8
    assert test["a_label"].tolist() == [-1] * 3 and test["b_label"].tolist() == [-1] * 4
    assert (test["a"][:, 1] < 100).all() and (test["b"][:, 1] > 100).all()  # JPEG: the green code survives roughly
    x, y = dm.dataset("val")[0]  # the (x, y) view is domain B, the target
    assert x.shape == (3, 4, 4) and code(x[None], 1) == [150] and int(y) == -1


def test_unaligned_streams_are_independent_and_resume(tmp_path):
    write_unaligned(tmp_path)
    make = lambda: UnalignedDataModule(**common("unaligned", (3, 4, 4), root=str(tmp_path), image_size=4, batch_size=3, seed=2))
    dm = make()
    dm.setup("fit")
    batches = take(dm.train_dataloader(), 25)  # crosses passes of both domains (12 and 9 batches per pass)
    assert all(b.keys() == {"a", "b"} and b["a"].shape == b["b"].shape == (3, 3, 4, 4) for b in batches)
    a, b = dm.domains("train")
    code_a, code_b = ([int(c) for c in eval_images[:, 0, 0, 0]] for eval_images in (dm.eval_tensors("train")["a"],
                                                                                     dm.eval_tensors("train")["b"]))
    expected_a = take(InfiniteBatchSampler(len(a), 3, seed=2), 25)
    expected_b = take(InfiniteBatchSampler(len(b), 3, seed=2 + DOMAIN_B_SEED_OFFSET), 25)
    assert [code(batch["a"]) for batch in batches] == [[code_a[i] for i in idx] for idx in expected_a]
    assert [code(batch["b"]) for batch in batches] == [[code_b[i] for i in idx] for idx in expected_b]
    resumed_dm = make()
    resumed_dm.load_state_dict(dm.state_dict() | {"minibatches_consumed": 17})
    for original, resumed in zip(batches[17:], take(resumed_dm.train_dataloader(), 8)):
        assert torch.equal(original["a"], resumed["a"]) and torch.equal(original["b"], resumed["b"])


def test_unaligned_errors(tmp_path):
    make = lambda root, **kw: UnalignedDataModule(**common("unaligned", (3, 4, 4), root=root, image_size=4, **kw))
    with pytest.raises(UserError, match="data.root is null"):
        make(None).setup("fit")
    with pytest.raises(UserError) as missing:
        make(str(tmp_path)).setup("fit")
    message = one_paragraph(missing)
    assert str(tmp_path / "trainA") in message and "download_cyclegan_dataset.sh" in message and "trainB" in message
    write_unaligned(tmp_path, counts=(("trainA", 30), ("trainB", 0)))
    with pytest.raises(UserError, match="trainB holds no images"):
        make(str(tmp_path)).setup("fit")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "trainB" / "one.png")
    with pytest.raises(UserError, match="Domain B of the 'val' split .* is empty"):
        make(str(tmp_path)).domains("val")
    with pytest.raises(UserError, match="fewer than data.batch_size=2"):
        make(str(tmp_path)).setup("fit")  # trainB has one image
    with pytest.raises(UserError, match="testA does not exist"):
        make(str(tmp_path)).eval_tensors("test")


# ---------------------------------------------------------------- CelebA attributes (StarGAN)


def write_celeba_attributes(root: Path, partitions=(0, 0, 0, 0, 0, 1, 1, 2)) -> np.ndarray:
    """torchvision's layout; 178x218 faces white in the centred 178x178 square, red above and below it."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    values = np.random.default_rng(0).choice([-1, 1], (len(partitions), 40))
    pixels = np.full((218, 178, 3), 255, np.uint8)
    pixels[:20] = pixels[-20:] = (255, 0, 0)
    lines = [str(len(partitions)), " ".join(CELEBA_ATTRIBUTES) + " "]  # the real header ends in a space
    for i, partition in enumerate(partitions, 1):
        Image.fromarray(pixels).save(folder / "img_align_celeba" / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg " + " ".join(f"{v:2d}" for v in values[i - 1]))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{i:06d}.jpg {p}\n" for i, p in enumerate(partitions, 1)))
    return values


def test_celeba_attributes_parse_select_and_crop(tmp_path):
    values = write_celeba_attributes(tmp_path)
    dm = CelebAAttributesDataModule(**common("celeba_attributes", (3, 8, 8), root=str(tmp_path), image_size=8))
    dm.setup("fit")
    assert dm.attribute_names == ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"] and dm.num_attributes == 5
    columns = [CELEBA_ATTRIBUTES.index(a) for a in dm.attribute_names]
    for split, rows in (("train", [0, 1, 2, 3, 4]), ("val", [5, 6]), ("test", [7])):
        tensors = dm.eval_tensors(split)
        assert tensors.keys() == {"x", "attrs", "label"} and tensors["x"].shape == (len(rows), 3, 8, 8)
        assert torch.equal(tensors["attrs"], torch.from_numpy(values[rows][:, columns] > 0).float())
        assert tensors["label"].tolist() == [-1] * len(rows)
        # centre crop 178: the red bands above and below the face are gone (red would leave green near 0)
        assert tensors["x"][:, 1].float().min() > 200
    batch = take(dm.train_dataloader(), 1)[0]
    assert batch.keys() == {"x", "attrs"} and batch["attrs"].dtype == torch.float32 and batch["attrs"].shape == (2, 5)
    assert set(batch["attrs"].unique().tolist()) <= {0.0, 1.0} and batch["x"].dtype == torch.float32
    chosen = CelebAAttributesDataModule(**common("celeba_attributes", (3, 8, 8), root=str(tmp_path), image_size=8,
                                                 attributes=["Eyeglasses", "Smiling"]))
    assert torch.equal(chosen.eval_tensors("val")["attrs"], torch.from_numpy(values[[5, 6]][:, [15, 31]] > 0).float())


def test_celeba_attributes_errors(tmp_path):
    make = lambda **kw: CelebAAttributesDataModule(**common("celeba_attributes", (3, 8, 8), root=str(tmp_path), image_size=8, **kw))
    with pytest.raises(UserError, match="data.download=true") as missing:
        make().setup("fit")
    assert str(tmp_path / "celeba" / "img_align_celeba") in one_paragraph(missing)
    write_celeba_attributes(tmp_path)
    with pytest.raises(UserError, match="Unknown CelebA attribute 'Blonde_Hair'") as unknown:
        make(attributes=["Blonde_Hair", "Male"]).setup("fit")
    assert all(name in one_paragraph(unknown) for name in CELEBA_ATTRIBUTES)
    with pytest.raises(UserError, match="data.attributes is empty"):
        make(attributes=[])
    table = tmp_path / "celeba" / "list_attr_celeba.txt"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:4] + [lines[4].replace(" 1", " 0", 1)] + lines[5:]) + "\n")
    with pytest.raises(UserError, match="list_attr_celeba.txt, line 5: expected an image name and 40 values"):
        make().setup("fit")
    table.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(UserError, match="announces 8 images on line 1 but lists 7"):
        make().setup("fit")
    table.write_text("\n".join(["7"] + lines[1:-1]) + "\n")
    with pytest.raises(UserError, match="000008.jpg is in the 'test' partition but has no line"):
        make().eval_tensors("test")
    table.unlink()
    with pytest.raises(UserError, match="list_attr_celeba.txt does not exist"):
        make().setup("fit")


# ---------------------------------------------------------------- a folder per domain


def write_domains(root: Path, domains=("angry", "happy", "sad"), count: int = 40) -> None:
    """Uniform images: red = 80 x the domain's index, green = the image's number."""
    for d, domain in enumerate(domains):
        (root / domain).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((6, 10, 3), (80 * d, i, 0), np.uint8)).save(root / domain / f"{i:02d}.png")


def test_domain_folder_one_hot_and_splits(tmp_path):
    write_domains(tmp_path)
    dm = DomainFolderDataModule(**common("domain_folder", (3, 4, 4), root=str(tmp_path), image_size=4))
    dm.setup("fit")
    assert dm.attribute_names == ["angry", "happy", "sad"] and dm.num_attributes == 3
    seen = []
    for split, (lo, hi) in (("train", (0, 90)), ("val", (90, 95)), ("test", (95, 100))):
        tensors = dm.eval_tensors(split)
        expected = [(d, i) for d, domain in enumerate(dm.attribute_names) for i in range(40)
                    if lo <= hash_percent(f"{domain}/{i:02d}.png") < hi]
        assert [(int(r) // 80, int(g)) for r, g in tensors["x"][:, :2, 0, 0].tolist()] == expected
        assert torch.equal(tensors["attrs"], torch.eye(3)[[d for d, _ in expected]])
        seen += expected
    assert len(seen) == len(set(seen)) == 120
    batch = take(dm.train_dataloader(), 3)[2]
    assert batch.keys() == {"x", "attrs"} and torch.equal(batch["attrs"].sum(1), torch.ones(2))
    assert [int(c) // 80 for c in code(batch["x"])] == batch["attrs"].argmax(1).tolist()


def test_domain_folder_errors(tmp_path):
    make = lambda root: DomainFolderDataModule(**common("domain_folder", (3, 4, 4), root=root, image_size=4))
    with pytest.raises(UserError, match="data.root is null"):
        make(None).setup("fit")
    with pytest.raises(UserError, match="does not exist"):
        make(str(tmp_path / "nowhere")).setup("fit")
    write_domains(tmp_path / "one", domains=("happy",))
    with pytest.raises(UserError, match="holds only 'happy' of the at least two domain sub-folders") as single:
        make(str(tmp_path / "one")).setup("fit")
    assert "<root>/<domain>/" in one_paragraph(single)
    write_domains(tmp_path / "two", domains=("happy",))
    (tmp_path / "two" / "sad").mkdir()
    (tmp_path / "two" / "sad" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError) as empty:
        make(str(tmp_path / "two")).setup("fit")
    assert f"The domain folder {tmp_path / 'two' / 'sad'} holds no images" in one_paragraph(empty)


# ---------------------------------------------------------------- embedded: digits_edges


def test_digits_edges_pairs_outlines_with_their_digits():
    from sklearn.datasets import load_digits

    target = torch.from_numpy(load_digits().target)
    dm = DigitsEdgesDataModule(**common("digits_edges", (1, 16, 16), batch_size=64))
    dm.setup("fit")
    reference = DigitsDataModule(**common("digits", (1, 16, 16), 10, image_size=16))
    for split in ("train", "val", "test"):
        tensors = dm.eval_tensors(split)
        assert tensors.keys() == {"a", "b", "label"} and tensors["a"].shape == (len(reference.dataset(split)), 1, 16, 16)
        assert torch.equal(tensors["b"], reference.dataset(split).data)  # the target is the digits dataset's image
        assert torch.equal(tensors["label"], target[stratified_indices(target, *FRACTIONS[split])])
        assert torch.equal(tensors["a"], edge_map(tensors["b"]))  # each outline is its own digit's
        assert set(tensors["a"].unique().tolist()) == {0, 255}
    b = dm.eval_tensors("val")["b"]
    ink = b > 127
    assert ((dm.eval_tensors("val")["a"] > 0) <= ink).all()  # outlines lie on the ink ...
    assert (dm.eval_tensors("val")["a"] > 0).sum() < ink.sum()  # ... and are thinner than it
    batch = take(dm.train_dataloader(), 1)[0]
    assert batch.keys() == {"a", "b"} and batch["a"].shape == (64, 1, 16, 16) and -1 <= batch["a"].min()
    x, y = dm.dataset("train")[0]
    assert torch.equal(x, dm.eval_tensors("train")["b"][0].float() / 127.5 - 1) and int(y) == -1  # label hidden


def test_digits_edges_is_fixed_across_seeds_and_swaps_direction():
    first = DigitsEdgesDataModule(**common("digits_edges", (1, 16, 16), seed=0)).eval_tensors("test")
    again = DigitsEdgesDataModule(**common("digits_edges", (1, 16, 16), seed=5)).eval_tensors("test")
    assert all(torch.equal(first[k], again[k]) for k in first)
    reverse = DigitsEdgesDataModule(**common("digits_edges", (3, 8, 8), image_size=8, channels=3, direction="BtoA"))
    forward = DigitsEdgesDataModule(**common("digits_edges", (3, 8, 8), image_size=8, channels=3))
    assert torch.equal(reverse.eval_tensors("val")["a"], forward.eval_tensors("val")["b"])
    assert torch.equal(reverse.eval_tensors("val")["b"], forward.eval_tensors("val")["a"])
    labelled = DigitsEdgesDataModule(**common("digits_edges", (1, 16, 16), num_classes=10))
    labelled.setup("fit")  # the base class's label check passes: labels are the digit classes
    assert labelled.dataset("val").labels.min() >= 0
    assert int(labelled.dataset("val")[3][1]) == int(labelled.eval_tensors("val")["label"][3])


# ---------------------------------------------------------------- embedded: digits_styles


def test_digits_styles_domains_are_disjoint_halves_in_two_styles():
    from sklearn.datasets import load_digits

    target = torch.from_numpy(load_digits().target)
    for split, ((a_lo, a_hi), (b_lo, b_hi)) in HALVES.items():
        index_a, index_b = stratified_indices(target, a_lo, a_hi), stratified_indices(target, b_lo, b_hi)
        assert not set(index_a.tolist()) & set(index_b.tolist())
        assert torch.equal(torch.cat([index_a, index_b]).sort().values, stratified_indices(target, *FRACTIONS[split]))
    dm = DigitsStylesDataModule(**common("digits_styles", (3, 16, 16), batch_size=64))
    dm.setup("fit")
    tensors = dm.eval_tensors("train")
    assert tensors.keys() == {"a", "b", "a_label", "b_label"}
    gray_a, labels_a, _ = digits(16, 0.0, 0.4)
    gray_b, labels_b, _ = digits(16, 0.4, 0.8)
    assert torch.equal(tensors["a"], gray_a.expand(-1, 3, -1, -1)) and torch.equal(tensors["a_label"], labels_a)
    assert torch.equal(tensors["b_label"], labels_b)
    red, green, blue = tensors["b"].float().unbind(1)
    assert torch.equal(red, thicken(gray_b)[:, 0].float())  # B: thick strokes ...
    assert (blue == 0).all() and torch.allclose(green, (red * 140 / 255).round())  # ... in orange
    assert len(dm.domains("val")[0]) + len(dm.domains("val")[1]) == len(DigitsDataModule(**common("digits", (1, 16, 16))).dataset("val"))
    other_seed = DigitsStylesDataModule(**common("digits_styles", (3, 16, 16), seed=9)).eval_tensors("train")
    assert all(torch.equal(tensors[k], other_seed[k]) for k in tensors)
    with pytest.raises(UserError, match="data.channels=1 does not fit 'digits_styles'"):
        DigitsStylesDataModule(**common("digits_styles", (1, 16, 16), channels=1))


def test_digits_styles_streams_resume_in_worker_processes():
    make = lambda workers: DigitsStylesDataModule(**common("digits_styles", (3, 8, 8), image_size=8, batch_size=100,
                                                           seed=4, num_workers=workers))
    dm = make(0)
    dm.setup("fit")
    batches = take(dm.train_dataloader(), 10)  # 7 batches per pass of each domain
    a, b = dm.domains("train")
    first_a, first_b = next(iter(InfiniteBatchSampler(len(a), 100, 4))), next(iter(InfiniteBatchSampler(len(b), 100, 4 + DOMAIN_B_SEED_OFFSET)))
    assert torch.equal(batches[0]["a"], a.fields["x"][first_a].float() / 127.5 - 1)
    assert torch.equal(batches[0]["b"], b.fields["x"][first_b].float() / 127.5 - 1)
    resumed_dm = make(2)
    resumed_dm.load_state_dict(dm.state_dict() | {"minibatches_consumed": 6})
    for original, resumed in zip(batches[6:], take(resumed_dm.train_dataloader(), 4)):
        assert torch.equal(original["a"], resumed["a"]) and torch.equal(original["b"], resumed["b"])


# ---------------------------------------------------------------- embedded: digits_attributes


def test_digits_attributes_change_the_image():
    gray, _, _ = digits(16, 0.8, 0.9)
    plain = render_attributes(gray, torch.zeros(len(gray), 3))
    thick = render_attributes(gray, torch.tensor([[1.0, 0, 0]]).expand(len(gray), 3))
    inverted = render_attributes(gray, torch.tensor([[0, 1.0, 0]]).expand(len(gray), 3))
    tinted = render_attributes(gray, torch.tensor([[0, 0, 1.0]]).expand(len(gray), 3))
    assert torch.equal(plain, gray.expand(-1, 3, -1, -1))
    ink = lambda images: (images[:, 0] > 127).flatten(1).sum(1)
    assert (ink(thick) > ink(plain)).all()  # every thick digit has more ink than its plain self
    assert torch.equal(inverted, 255 - plain)
    assert torch.equal(tinted[:, 0], plain[:, 0]) and (tinted[:, 1:].float() <= 0.35 * plain[:, 1:].float() + 0.5).all()


def test_digits_attributes_dataset_is_fixed_and_rendered_from_its_attrs():
    dm = DigitsAttributesDataModule(**common("digits_attributes", (3, 16, 16), batch_size=64, seed=1))
    dm.setup("fit")
    assert dm.attribute_names == ["thick", "inverted", "tinted"] and dm.num_attributes == 3
    all_attrs = attribute_assignment(1797)
    assert set(all_attrs.unique().tolist()) == {0.0, 1.0} and abs(all_attrs.mean().item() - 0.5) < 0.05
    for split in ("train", "val", "test"):
        gray, labels, index = digits(16, *FRACTIONS[split])
        tensors = dm.eval_tensors(split)
        assert tensors.keys() == {"x", "attrs", "label"} and tensors["attrs"].dtype == torch.float32
        assert torch.equal(tensors["attrs"], all_attrs[index]) and torch.equal(tensors["label"], labels)
        assert torch.equal(tensors["x"], render_attributes(gray, tensors["attrs"]))
    other_seed = DigitsAttributesDataModule(**common("digits_attributes", (3, 16, 16), seed=8)).eval_tensors("val")
    assert all(torch.equal(dm.eval_tensors("val")[k], other_seed[k]) for k in other_seed)
    batch = take(dm.train_dataloader(), 1)[0]
    assert batch.keys() == {"x", "attrs"} and batch["x"].shape == (64, 3, 16, 16) and batch["attrs"].shape == (64, 3)


def test_eval_tensors_limit_is_a_fixed_nested_subset_and_cached():
    dm = DigitsAttributesDataModule(**common("digits_attributes", (3, 8, 8), image_size=8))
    full, small, large = dm.eval_tensors("train"), dm.eval_tensors("train", limit=100), dm.eval_tensors("train", limit=300)
    assert len(small["x"]) == 100 and len(large["x"]) == 300 and len(full["x"]) == 1438
    rows = {tuple(r) for r in large["x"].flatten(1).tolist()}
    assert all(tuple(r) in rows for r in small["x"].flatten(1).tolist())  # limit=100 lies inside limit=300
    assert dm.eval_tensors("train", limit=100) is small


@pytest.mark.parametrize("make, label_field", [(DigitsEdgesDataModule, "label"), (DigitsStylesDataModule, "b_label"),
                                               (DigitsAttributesDataModule, "label")])
def test_digit_sets_serve_labels_to_the_classifier_backbone_view(make, label_field, monkeypatch):
    from gan.metrics import real_data

    dm = make(**common(make.__name__, (3, 8, 8), image_size=8, channels=3))
    dm.setup("fit")
    assert int(dm.dataset("val")[0][1]) == -1  # unconditional: the (x, y) view hides the digit class
    monkeypatch.setitem(real_data.KNOWN_NUM_CLASSES, dm.name, 10)
    labelled, num_classes = real_data.labelled_dataset(dm, "val")
    assert num_classes == 10 and torch.equal(labelled.labels, dm.eval_tensors("val")[label_field])
    assert torch.equal(labelled[0][0], dm.dataset("val")[0][0])
