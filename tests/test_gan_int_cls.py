"""GAN-INT-CLS (Reed et al. 2016) on captioned data: the captions are true of their images, held-out word combinations
stay out of training, the losses are the paper's, training resumes exactly, the evaluation prints its table and saves
captions, and the real CUB/Oxford and COCO layouts are read (or refused with one paragraph)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from conftest import assert_same, compose_config, ddp_run, final_state, kill_and_resume, run_cli
from gan.data.captions import (ATTRIBUTES, DIGIT_WORDS, HELD_OUT, COCOCaptionsDataModule, DigitsCaptionsDataModule,
                               ReedCaptionsDataModule, decode, stroke_measures)
from gan.errors import UserError
from gan.models.gan_int_cls import GANIntCLS, gan_cls_d_loss, interpolate
from gan.train import instantiate as build, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model=gan_int_cls", "data=digits_captions", "data.batch_size=8", "model.generator.width=8",
        "model.discriminator.width=8", "model.text_encoder.embed_dim=8", "model.text_encoder.hidden=16",
        "model.generator.text_dim=8", "model.discriminator.text_dim=8"]


def tiny(run, *overrides):
    return compose_config(run, *TINY, "callbacks.checkpoint.every_g_iters=3", "callbacks.samples.every_g_iters=3",
                          *overrides)


def digits_captions(**kwargs):
    return DigitsCaptionsDataModule(name="digits_captions", shape=(1, 28, 28), num_classes=10, batch_size=8,
                                    max_length=10, **{"vocab_size": 26, **kwargs})


# ---------------------------------------------------------------- the captions are true


def strokes(*drawn):
    """uint8 [N, 1, 28, 28] images, each a white shape drawn by `draw(image)` on black."""
    images = torch.zeros(len(drawn), 1, 28, 28, dtype=torch.uint8)
    for image, draw in zip(images, drawn):
        draw(image[0])
    return images


def test_measures_of_hand_drawn_strokes():
    def vertical(width):
        def draw(img):
            img[4:24, 13:13 + width] = 255
        return draw

    def leaning(direction):  # a 2-pixel line from the bottom centre to the top, shifted right (1) or left (-1)
        def draw(img):
            for row in range(4, 24):
                col = 13 + direction * (23 - row) // 3
                img[row, col:col + 2] = 255
        return draw

    m = stroke_measures(strokes(vertical(1), vertical(3), leaning(1), leaning(-1)))
    # a 1-pixel line is all boundary: 2 x 20 / 20; a 3-pixel one has 18 interior pixels: 2 x 60 / 42
    assert m["thickness"][:2].tolist() == pytest.approx([2.0, 2 * 60 / 42])
    assert m["slant"][0].abs() < 1e-4 and m["slant"][1].abs() < 1e-4  # upright
    assert m["slant"][2] > 0.2 and m["slant"][3] < -0.2  # the top to the right: leaning right
    assert m["size"][:2].tolist() == [20 * 1, 20 * 3]  # bounding boxes


def test_every_caption_names_its_class_and_the_measured_attributes(tmp_path):
    dm = digits_captions()
    test = dm.dataset("test")
    measured = stroke_measures(test.images)
    for i in range(len(test)):
        assert all(DIGIT_WORDS[int(test.true_labels[i])] in caption.split() for caption in test.texts[i])
        for k, (name, words) in enumerate(ATTRIBUTES.items()):
            assert all(words[int(test.attrs[i, k])] in caption for caption in test.texts[i])
    for k, name in enumerate(ATTRIBUTES):  # each word covers one interval of its measure, in order
        values = [measured[name][test.attrs[:, k] == v] for v in range(len(ATTRIBUTES[name]))]
        assert all(lower.max() <= upper.min() for lower, upper in zip(values, values[1:]))
    assert len(dm.vocabulary) == 26 and set(" ".join(c for t in test.texts for c in t).split()) <= set(dm.vocabulary)
    assert decode(test.tokens[:1, 0], dm.vocabulary) == [test.texts[0][0]]
    assert len({len(t) for t in test.texts}) == 1 and len(test.texts[0]) == 3  # three word orders each


def test_held_out_word_combinations_are_absent_from_training_only():
    dm = digits_captions()
    phrases = [f"{word} {DIGIT_WORDS[label]}" if attribute == "thickness" else f"{DIGIT_WORDS[label]} {word}"
               for label, attribute, word in HELD_OUT]
    train_text = [t[0] for t in dm.dataset("train").texts]
    for phrase in phrases:
        assert not any(phrase in caption for caption in train_text), phrase
        assert any(phrase in t[0] for t in dm.dataset("test").texts), phrase
    test = dm.dataset("test")
    assert int(test.heldout.sum()) == sum(any(p in t[0] for p in phrases) for t in test.texts) > 20
    assert len(dm.dataset("train")) < 4000 and len(test) == 500  # mnist5k's splits, less the held-out images


def test_training_batches_are_images_and_one_of_their_captions():
    dm = digits_captions()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "tokens"} and batch["x"].shape == (8, 1, 28, 28) and batch["tokens"].shape == (8, 10)
    assert dm.batch_fields == ("x", "tokens")
    with pytest.raises(UserError, match="data.vocab_size=30"):
        digits_captions(vocab_size=30).setup()


# ---------------------------------------------------------------- the paper's losses


def test_gan_cls_discriminator_loss_weights_wrong_text_and_fakes_by_half():
    real_right, real_wrong, fake_right = torch.tensor([2.0, 0.0]), torch.tensor([1.0, -1.0]), torch.tensor([0.0, 3.0])

    def log_sigmoid(s):
        return math.log(1 / (1 + math.exp(-s)))

    expected = -(log_sigmoid(2) + log_sigmoid(0)) / 2 - 0.5 * (
        (log_sigmoid(-1) + log_sigmoid(1)) / 2 + (log_sigmoid(0) + log_sigmoid(-3)) / 2)
    assert gan_cls_d_loss(real_right, real_wrong, fake_right).item() == pytest.approx(expected, rel=1e-6)


def test_the_model_draws_wrong_text_and_interpolates_at_beta_one_half(tmp_path):
    module = instantiate(tiny(tmp_path, "scale=none").model)  # the paper's settings, not the CPU preset's
    assert isinstance(module, GANIntCLS) and module.interp_beta == 0.5 and module.interp_weight == 1.0
    opt = [o.param_groups[0] for o in module.configure_optimizers()]
    assert all(g["lr"] == 2e-4 and g["betas"] == (0.5, 0.999) for g in opt)
    x, tokens = torch.rand(6, 1, 28, 28) * 2 - 1, torch.randint(2, 26, (6, 10))
    batch = {"x": x, "tokens": tokens}
    state = module.rng.get_state()
    d_loss, g_loss = module.discriminator_loss(batch), module.generator_loss(batch)
    module.rng.set_state(state)
    right = module.text_encoder(tokens)
    wrong_index = module.other_records(6)
    assert not (wrong_index == torch.arange(6)).any()  # always another record's caption
    fake = module.generator(module.noise(6), right)
    D = module.discriminator
    assert d_loss.item() == pytest.approx(gan_cls_d_loss(D(x, right), D(x, right[wrong_index]), D(fake, right)).item(),
                                          rel=1e-5)
    plain = F.softplus(-D(module.generator(module.noise(6), right), right)).mean()
    partner = right[module.other_records(6)]
    mixed = (right + partner) / 2
    assert torch.allclose(interpolate(right, partner, 0.5), mixed)
    interp = F.softplus(-D(module.generator(module.noise(6), mixed), mixed)).mean()
    assert g_loss.item() == pytest.approx((plain + interp).item(), rel=1e-5)


def test_bad_model_settings_are_refused(tmp_path):
    with pytest.raises(UserError, match="model.interp_beta"):
        build(tiny(tmp_path, "model.interp_beta=1.5").model)
    module = instantiate(tiny(tmp_path).model)
    with pytest.raises(UserError, match="at least 2 records"):
        module.other_records(1)
    with pytest.raises(UserError, match="captions' tokens"):
        module.sample(4)


# ---------------------------------------------------------------- training


def test_trains_and_resumes_exactly(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny(whole, "g_iters=5"))
    train(tiny(parts, "g_iters=3"))
    train(OmegaConf.merge(tiny(parts, "g_iters=5"), {"resume": str(parts / "checkpoints" / "last.ckpt")}), ["g_iters=5"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 5 and any(k.startswith("text_encoder.") for k in state["state_dict"])
    assert_same(state, final_state(parts))
    samples = whole / "samples"
    captions = (samples / "iter_000003.txt").read_text().splitlines()
    assert len(captions) == 8 and all(line.startswith(f"row {i + 1}: a ") for i, line in enumerate(captions))
    tile = 56 + 2  # 28-pixel digits enlarged twice (to at least the grid's 48), 2 pixels of padding
    assert Image.open(samples / "iter_000003.png").size == (8 * tile + 2, 8 * tile + 2)  # 8 captions x 8 noises
    assert Image.open(samples / "interpolation" / "iter_000003.png").size == (8 * tile + 2, 8 * tile + 2)


def test_a_model_of_captions_refuses_data_without_them(tmp_path):
    with pytest.raises(UserError, match="data=digits_captions"):
        train(compose_config(tmp_path, *TINY[:1], "data=mnist5k", *TINY[2:]))


# ---------------------------------------------------------------- gan.evaluate and gan.compare on real runs
# Slow: three command-line starts and the judges' training take over a minute on 2 cores.

JUDGES = ["metrics.every_n_g_iters=1", "metrics.num_samples=60", "metrics.final_num_samples=60",
          "metrics.classifier.max_steps=20", "metrics.classifier.epochs=1"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cache = root / "cache"
    for seed in (0, 1):
        result = run_cli(*TINY, "g_iters=2", "logger=none", f"seed={seed}", *JUDGES, f"paths.cache_dir={cache}",
                         f"hydra.run.dir={root / 'runs' / f's{seed}'}", cwd=root, env={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr
    return root


@pytest.mark.slow
def test_evaluate_prints_the_table_and_saves_samples_with_captions(tiny_runs):
    run = tiny_runs / "runs" / "s0"
    result = run_cli(f"ckpt={run}", "num_samples=60", "split=test", "save_samples=true", cwd=tiny_runs,
                     module="gan.evaluate", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "digits_captions / test split, 60 captions" in lines[0]
    assert lines[1].split() == ["metric", "value", "ceiling", "floor"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.startswith("  ") and len(line.split()) == 4}
    for key in ("class_accuracy", "thickness_accuracy", "slant_accuracy", "size_accuracy", "heldout_class_accuracy"):
        assert all(0 <= float(cell) <= 1 for cell in rows[key])  # value, ceiling, floor (judges of 20 steps here)
    assert float(rows["fid"][0]) > float(rows["fid"][1]) and rows["fid"][2] == "-"  # no floor: FID ignores captions
    saved = json.loads((run / "checkpoints" / "eval.json").read_text())
    values = saved["values"]
    assert [f"{values[k]:.6g}" for k in ("class_accuracy", "ref_real/class_accuracy", "ref_shuffled/class_accuracy")] \
        == rows["class_accuracy"]
    arrays = np.load(saved["provenance"]["samples_file"])
    assert arrays["arr_0"].shape == (60, 28, 28, 1) and arrays["arr_0"].dtype == np.uint8
    captions, labels = arrays["captions"], arrays["labels"]
    assert len(captions) == 60 and all(DIGIT_WORDS[y] in c.split() for c, y in zip(captions, labels))
    assert arrays["attrs"].shape == (60, 3) and list(arrays["attribute_names"]) == list(ATTRIBUTES)


@pytest.mark.slow
def test_compare_reads_two_text_to_image_runs(tiny_runs, tmp_path):
    result = run_cli(str(tiny_runs / "runs"), "--out", str(tmp_path / "report.html"), cwd=tmp_path, module="gan.compare")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.html").is_file() and "gan_int_cls" in result.stdout


# ---------------------------------------------------------------- real layouts: Reed's CUB / Oxford-102, COCO


def jpg(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)


def reed(root, layout, **kwargs):
    return ReedCaptionsDataModule(name="cub_captions", shape=(3, 16, 16), num_classes=None, batch_size=2, root=str(root),
                                  image_size=16, channels=3, max_length=6, layout=layout, **kwargs)


def write_reed(root, layout, classes=("001.Black_footed_Albatross", "002.Laysan_Albatross"), per_class=5):
    for c, name in enumerate(classes):
        for i in range(per_class):
            stem = f"{name.split('.')[-1]}_{i:04d}" if layout == "cub" else f"image_{c * per_class + i:05d}"
            text = root / "text_c10" / name / f"{stem}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            caption = f"this bird has a {'white' if c else 'black'} wing and a {'short' if i % 2 else 'long'} beak\n"
            text.write_text(caption * 10)
            image = root / "images" / name / f"{stem}.jpg" if layout == "cub" else root / "jpg" / f"{stem}.jpg"
            jpg(image, (255, 255, 255) if c else (0, 0, 0))


@pytest.mark.parametrize("layout", ["cub", "oxford"])
def test_reed_layouts_read_ten_captions_per_image(tmp_path, layout):
    write_reed(tmp_path, layout)
    dm = reed(tmp_path, layout)
    dm.setup()
    sizes = [len(dm.dataset(s)) for s in ("train", "val", "test")]
    assert sum(sizes) == 10 and sizes[0] == 8
    train = dm.dataset("train")
    assert all(len(t) == 10 for t in train.texts) and train.tokens.shape == (8, 10, 6)
    assert dm.vocabulary[:2] == ["<pad>", "<unk>"] and {"white", "black", "wing"} <= set(dm.vocabulary)
    assert dm.settings_from_data() == {"vocab_size": len(dm.vocabulary)}
    x, _ = train[0]
    white = "white" in train.texts[0][0]
    assert x.shape == (3, 16, 16) and (x.mean() > 0.9 if white else x.mean() < -0.9)  # the caption's own image
    assert decode(train.tokens[:1, 0], dm.vocabulary) == [" ".join(train.texts[0][0].split()[:6])]
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (2, 3, 16, 16) and batch["tokens"].shape == (2, 6)


def test_reed_class_lists_give_the_zero_shot_split(tmp_path):
    write_reed(tmp_path, "cub", classes=("001.A", "002.B", "003.C"))
    (tmp_path / "trainvalclasses.txt").write_text("001.A\n002.B\n")
    (tmp_path / "testclasses.txt").write_text("003.C\n")
    dm = reed(tmp_path, "cub")
    test = dm.dataset("test")
    assert len(test) == 5 and all(p.parent.name == "003.C" for p in test.images.paths)
    assert len(dm.dataset("train")) == 9 and len(dm.dataset("val")) == 1


def test_reed_layout_errors_name_the_files(tmp_path):
    with pytest.raises(UserError, match=r"text_c10 does not exist.*reedscot/icml2016"):
        reed(tmp_path, "cub").dataset("train")
    write_reed(tmp_path, "cub")
    first = sorted((tmp_path / "text_c10").glob("*/*.txt"))[0]
    first.write_text("\n  \n")
    with pytest.raises(UserError, match=f"caption file {first} is empty"):
        for split in ("train", "val", "test"):
            reed(tmp_path, "cub").dataset(split)
    first.write_text("a bird\n")
    image = tmp_path / "images" / first.parent.name / f"{first.stem}.jpg"
    image.unlink()
    with pytest.raises(UserError) as error:
        for split in ("train", "val", "test"):
            reed(tmp_path, "cub").dataset(split)
    assert str(first) in str(error.value) and str(image) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="data.layout='flickr'"):
        reed(tmp_path, "flickr")


def write_coco(root, per_split=6):
    for part in ("train2014", "val2014"):
        images, notes = [], []
        for i in range(per_split):
            name = f"COCO_{part}_{i:012d}.jpg"
            jpg(root / part / name, (255, 0, 0) if i % 2 else (0, 0, 255))
            images.append({"id": 100 + i, "file_name": name})
            notes += [{"image_id": 100 + i, "id": 10 * i + k, "caption": f"A {'red' if i % 2 else 'blue'} square."}
                      for k in range(5)]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{part}.json").write_text(json.dumps({"images": images, "annotations": notes}))


def coco(root, **kwargs):
    return COCOCaptionsDataModule(name="coco_captions", shape=(3, 16, 16), num_classes=None, batch_size=2,
                                  root=str(root), image_size=16, channels=3, max_length=8, **kwargs)


def test_coco_reads_annotations_and_images(tmp_path):
    write_coco(tmp_path)
    dm = coco(tmp_path)
    dm.setup()
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [6, 3, 3]
    train = dm.dataset("train")
    assert all(len(t) == 5 for t in train.texts) and dm.vocabulary == ["<pad>", "<unk>", "a", "square", "blue", "red"]
    x, _ = train[1]  # image 101: red
    assert x[0].mean() > 0.9 and x[2].mean() < -0.9 and "red" in train.texts[1][0]
    assert set(p.name for p in dm.dataset("val").images.paths).isdisjoint(p.name for p in dm.dataset("test").images.paths)


def test_coco_errors_name_the_files(tmp_path):
    with pytest.raises(UserError, match=r"captions_train2014.json does not exist.*cocodataset.org"):
        coco(tmp_path).dataset("train")
    write_coco(tmp_path)
    missing = tmp_path / "train2014" / "COCO_train2014_000000000003.jpg"
    missing.unlink()
    with pytest.raises(UserError) as error:
        coco(tmp_path).dataset("train")
    assert str(missing) in str(error.value) and "captions_train2014.json" in str(error.value)
    (tmp_path / "annotations" / "captions_val2014.json").write_text("{not json")
    with pytest.raises(UserError, match="is not a COCO captions file"):
        coco(tmp_path).dataset("val")
    (tmp_path / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(UserError, match="has no captions"):
        coco(tmp_path).dataset("val")


def test_data_configs_build(tmp_path):
    for name in ("digits_captions", "cub_captions", "coco_captions"):
        cfg = compose_config(tmp_path, "model=gan_int_cls", f"data={name}", f"paths.data_dir={tmp_path}")
        dm = instantiate(cfg.data)
        assert dm.name == name and dm.batch_fields == ("x", "tokens")
    with pytest.raises(UserError, match="does not exist"):
        train(compose_config(tmp_path / "run", *TINY[:1], "data=cub_captions", f"paths.data_dir={tmp_path}"))


# ---------------------------------------------------------------- slow: a real kill, and DDP on 2 CPU processes

CLI_TINY = [*TINY, "metrics=none", "model.log_every=5", "logger=none"]


@pytest.mark.slow
def test_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    whole, parts = kill_and_resume(tmp_path, [*CLI_TINY, "g_iters=40", "callbacks.checkpoint.every_g_iters=3",
                                              "callbacks.samples.every_g_iters=20"])
    assert_same(final_state(whole), final_state(parts))


@pytest.mark.slow
def test_runs_under_ddp_on_two_cpu_processes(tmp_path):
    records = ddp_run(tmp_path, *CLI_TINY, "data.batch_size=4")
    assert records[-1]["images_seen"] == 4 * 4 * 2  # 2 ranks x batch 4
