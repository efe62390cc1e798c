"""The image-to-image defaults follow the official code, each test citing its source (issue 20, "Faithful recipes"):
junyanz/pytorch-CycleGAN-and-pix2pix (data/base_dataset.py, data/aligned_dataset.py, options/*.py, test.py,
models/networks.py), phillipi/pix2pix (train.lua, test.lua, data/donkey_folder.lua), yunjey/stargan (data_loader.py,
solver.py) and the pix2pix paper (Isola et al. 2017, sec. 3.3)."""
from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch import nn

import gan  # noqa: F401  (registers the config resolvers the data configs use)
from conftest import compose_config
from gan.data.aligned import AlignedDataModule
from gan.data.translation import Jitter, draw_key
from gan.data.unaligned import UnalignedDataModule
from gan.errors import UserError

SIDE, LOAD, SIZE = 12, 12, 8  # images written at 12 px (= load_size, so no resampling), cropped to 8 px


def pattern(code: int) -> np.ndarray:
    """A SIDE x SIDE RGB image whose red channel numbers every pixel (row * SIDE + col) and whose green is `code`:
    any crop or flip of it is recognisable from its red channel alone."""
    pixels = np.zeros((SIDE, SIDE, 3), np.uint8)
    pixels[..., 0] = np.arange(SIDE * SIDE).reshape(SIDE, SIDE)
    pixels[..., 1] = code
    return pixels


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images + 1) * 127.5).round().to(torch.uint8)


def window(red: torch.Tensor) -> tuple[int, int, bool]:
    """(top, left, flipped) of an SIZE x SIZE crop of `pattern`'s red channel."""
    flipped = bool(red[0, 0] > red[0, -1])
    corner = int(red.min())
    return corner // SIDE, corner % SIDE, flipped


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def aligned(root, **kwargs) -> AlignedDataModule:
    (root / "train").mkdir(parents=True, exist_ok=True)
    for i in range(6):
        Image.fromarray(np.concatenate([pattern(10 + i), pattern(200 + i)], axis=1)).save(root / "train" / f"{i}.png")
    settings = dict(name="aligned", shape=(3, SIZE, SIZE), num_classes=None, batch_size=3, root=str(root),
                    image_size=SIZE, load_size=LOAD, flip=True, seed=3)
    return AlignedDataModule(**{**settings, **kwargs})


def unaligned(root, **kwargs) -> UnalignedDataModule:
    for domain in "AB":
        (root / f"train{domain}").mkdir(parents=True, exist_ok=True)
        for i in range(40):  # about 5% go to val (a hash of the name): the rest is train
            Image.fromarray(pattern(10 if domain == "A" else 200)).save(root / f"train{domain}" / f"{i}.png")
    settings = dict(name="unaligned", shape=(3, SIZE, SIZE), num_classes=None, batch_size=3, root=str(root),
                    image_size=SIZE, load_size=LOAD, flip=True, seed=3)
    return UnalignedDataModule(**{**settings, **kwargs})


# ---------------------------------------------------------------- data: jitter and flip


def test_a_pair_gets_one_crop_and_one_flip_for_both_halves(tmp_path):
    # junyanz data/aligned_dataset.py __getitem__: `transform_params = get_params(self.opt, A.size)` once, then the
    # same params for A_transform and B_transform; phillipi/pix2pix data/donkey_folder.lua:63-73 crops and flips
    # imA and imB with the same w1, h1 and draw.
    batches = take(aligned(tmp_path).train_dataloader(), 20)
    windows = set()
    for batch in batches:
        a, b = as_uint8(batch["a"]), as_uint8(batch["b"])
        assert torch.equal(a[:, 0], b[:, 0])  # the same pixels of the same pair: the same window
        assert (a[:, 1] < 100).all() and (b[:, 1] > 100).all()  # and a is still A, b is still B
        windows |= {window(red) for red in a[:, 0]}
    tops, lefts, flips = zip(*windows)
    # load 12 -> crop 8: offsets 0..4 inclusive, as junyanz get_params' random.randint(0, load_size - crop_size)
    assert set(tops) == set(lefts) == set(range(LOAD - SIZE + 1)) and set(flips) == {False, True}


def test_unaligned_domains_draw_their_crops_independently(tmp_path):
    # junyanz data/unaligned_dataset.py __getitem__: `A = self.transform_A(A_img)`, `B = self.transform_B(B_img)`,
    # two RandomCrop/RandomHorizontalFlip calls, so A and B get independent draws.
    batches = take(unaligned(tmp_path).train_dataloader(), 10)
    same = [window(as_uint8(batch["a"])[i, 0]) == window(as_uint8(batch["b"])[i, 0]) for batch in batches for i in range(3)]
    assert not all(same) and sum(same) < len(same) // 2  # 50 windows: a match by chance is rare


def test_flips_happen_half_the_time_and_each_seed_draws_its_own():
    # junyanz data/base_dataset.py get_params: `flip = random.random() > 0.5`; yunjey/stargan data_loader.py:76
    # T.RandomHorizontalFlip() (p = 0.5).
    jitter = Jitter(load_size=LOAD, crop_size=SIZE, flip=True)
    draws = lambda seed: [jitter.draw(8, torch.Generator().manual_seed(draw_key(seed, 0, p))) for p in range(300)]
    first, again, other = draws(0), draws(0), draws(1)
    flips = torch.cat([f for _, _, f in first]).float()
    assert 0.45 < flips.mean().item() < 0.55  # 2400 draws: 1/2 within 5 standard deviations
    assert all(torch.equal(x, y) for d, e in zip(first, again) for x, y in zip(d, e))
    assert not all(torch.equal(x, y) for d, e in zip(first, other) for x, y in zip(d, e))
    no_flip = Jitter(load_size=LOAD, crop_size=SIZE, flip=False).draw(100, torch.Generator().manual_seed(0))
    assert not no_flip[2].any()


@pytest.mark.parametrize("make", [aligned, unaligned])
def test_a_datamodule_at_a_checkpointed_position_draws_the_same_crops_and_flips(tmp_path, make):
    # A resumed run must see the batches an uninterrupted one saw: the draws are keyed by the stream position
    # (gan.data.datamodule: minibatches_consumed, checkpointed), not by torch's global RNG.
    whole = take(make(tmp_path).train_dataloader(), 6)
    resumed_dm = make(tmp_path)
    resumed_dm.load_state_dict({"minibatches_consumed": 4})
    torch.manual_seed(12345)  # the global RNG plays no part
    resumed = take(resumed_dm.train_dataloader(), 2)
    for expected, got in zip(whole[4:], resumed):
        assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    windows = {window(as_uint8(batch["a"])[i, 0]) for batch in whole for i in range(3)}
    assert len(windows) > 3  # the batches really are jittered


def test_evaluation_images_are_never_jittered(tmp_path):
    # junyanz test.py: `opt.no_flip = True`; options/test_options.py sets load_size to crop_size (no random crop).
    jittered = aligned(tmp_path / "one").eval_tensors("train")
    plain = aligned(tmp_path / "two", load_size=SIZE, flip=False).eval_tensors("train")
    assert jittered.keys() == plain.keys() and all(torch.equal(jittered[k], plain[k]) for k in plain)
    assert not torch.equal(as_uint8(next(iter(aligned(tmp_path / "one").train_dataloader()))["a"]), plain["a"][:3])


def test_a_load_size_below_the_image_size_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"data.load_size=6 must be an integer of at least data.image_size=8"):
        aligned(tmp_path, load_size=6)


# ---------------------------------------------------------------- data: the configs' defaults


@pytest.mark.parametrize("data, load_size, flip", [
    # junyanz options/base_options.py: --load_size 286, --crop_size 256, --preprocess resize_and_crop, --no_flip off;
    # phillipi/pix2pix train.lua:17-18,27 loadSize 286, fineSize 256, flip 1.
    ("aligned", 286, True), ("unaligned", 286, True),
    # yunjey/stargan data_loader.py:75-78: RandomHorizontalFlip (train only), CenterCrop, Resize: no random crop.
    ("celeba_attributes", 128, True), ("domain_folder", 128, True),
    # the embedded digits: a flipped digit is another shape, a 16 px digit has no margin to crop.
    ("digits_edges", 16, False), ("digits_styles", 16, False), ("digits_attributes", 16, False),
])
def test_each_data_config_jitters_like_its_reference(tmp_path, data, load_size, flip):
    cfg = compose_config(tmp_path, "model=pix2pix", f"data={data}")
    assert (cfg.data.load_size, cfg.data.flip) == (load_size, flip)
    if data.startswith("digits"):
        dm = instantiate(cfg.data)
        assert not dm.jitter.active
        field, key = {"digits_edges": ("b", "b"), "digits_styles": ("b", "x"), "digits_attributes": ("x", "x")}[data]
        records = dm.domains("train")[1] if data == "digits_styles" else dm.dataset("train")
        stored = records.records(range(len(records)))[key]
        batch = as_uint8(next(iter(dm.train_dataloader()))[field])
        assert all(any(torch.equal(image, s) for s in stored) for image in batch[:4])  # as stored: no crop, no flip


# ---------------------------------------------------------------- models: sampling and schedule


class HandBatchNorm(nn.Module):
    """Batch norm written out: the batch's per-channel mean and biased variance, then the affine map."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps

    def forward(self, x):
        mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def with_hand_batch_norm(net: nn.Module) -> nn.Module:
    net = copy.deepcopy(net)
    for name, child in net.named_children():
        setattr(net, name, HandBatchNorm(child) if isinstance(child, nn.BatchNorm2d) else with_hand_batch_norm(child))
    return net


def test_pix2pix_samples_with_test_batch_statistics_and_keeps_the_running_ones(tmp_path):
    # Isola et al. 2017, sec. 3.3: "we apply batch normalization using the statistics of the test batch, rather than
    # aggregated statistics of the training batch"; phillipi/pix2pix test.lua:77 `--netG:evaluate()` (commented out);
    # junyanz test.py: `if opt.eval: model.eval()` (off by default).
    cfg = compose_config(tmp_path, "model=pix2pix", "data=digits_edges", "scale=none", "model.generator.width=8",
                         "model.discriminator.width=8")
    assert cfg.model.eval_batch_stats is True  # the model config's (the digits preset pins its measured false)
    module = instantiate(cfg.model)
    torch.manual_seed(0)
    for _ in range(3):  # running statistics away from their initial 0 / 1
        module.generator(torch.rand(8, 1, 16, 16) * 4 - 1)
    module.generator.train(False)
    before = {k: v.clone() for k, v in module.generator.state_dict().items()}
    a = torch.rand(6, 1, 16, 16) * 2 - 1
    torch.manual_seed(1)
    out = module.translate(a)
    after = module.generator.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert not module.generator.training and all(not m.training for m in module.generator.modules())
    hand = with_hand_batch_norm(module.generator).eval()
    for m in hand.modules():
        if isinstance(m, nn.Dropout):
            m.train()  # pix2pix's dropout noise at test time (eval_dropout)
    torch.manual_seed(1)
    with torch.no_grad():
        expected = hand(a)
    assert torch.allclose(out, expected, atol=1e-5)
    module.eval_batch_stats = False  # the running averages give another output: the setting is what decides
    torch.manual_seed(1)
    assert not torch.allclose(module.translate(a), expected, atol=1e-3)


def test_every_translation_config_names_its_sampling_statistics(tmp_path):
    # CycleGAN (junyanz test.py: eval() only under --eval) and StarGAN (yunjey/stargan solver.py test(): no G.eval())
    # sample in train mode too; their instance norm keeps no running statistics, so the setting changes nothing there.
    for model in ("pix2pix", "cyclegan", "stargan"):
        assert compose_config(tmp_path, f"model={model}").model.eval_batch_stats is True


def test_cyclegan_lr_is_constant_for_half_the_run_then_falls_to_zero(tmp_path):
    # junyanz options/train_options.py: --n_epochs 100 (initial lr), --n_epochs_decay 100 (linear decay to zero);
    # models/networks.py get_scheduler, lr_policy 'linear': lr_l = 1.0 - max(0, epoch + epoch_count - n_epochs) /
    # float(n_epochs_decay + 1).
    total = 1000
    module = instantiate(compose_config(tmp_path, "model=cyclegan", "data=digits_styles", f"g_iters={total}",
                                        "model.g_ab.width=8", "model.d_a.width=8").model)
    for player in module.players.values():
        factor = player.lr_factor
        assert factor(0) == 1.0 and factor(total // 2) == 1.0
        assert factor(3 * total // 4) == pytest.approx(1 - (total / 4) / (total / 2 + 1))  # about half way down
        assert factor(total - 1) == pytest.approx(1 - (total / 2 - 1) / (total / 2 + 1)) and factor(total - 1) < 0.01
