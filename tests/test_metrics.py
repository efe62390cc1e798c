"""Metrics: values equal independent computations, provenance, the reference cache, both backbones, DDP gathering."""
from __future__ import annotations

import math
import os
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from conftest import ImageGeneratorStandIn
from gan.data.digits import DigitsDataModule
from gan.data.toy import mixture
from gan.errors import UserError
from gan.metrics import classifier_training, feature_extractor_inception, reference, scores
from gan.metrics.backbone import resolve_backbone
from gan.metrics.distributed import gather_rows
from gan.metrics.evaluator import TOY_VALUES, Evaluator
from gan.metrics.memorization import memorization_summary, nearest_distances
from gan.metrics.toy import toy_metrics
from gan.storage import cache_key, save_json, save_torch, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
PROVENANCE_KEYS = {"backbone", "weights_sha256", "resize", "image_size", "dataset", "split", "num_real", "num_fake",
                   "seed", "ckpt", "g_iter", "ema"}


def digits(num_classes=None) -> DigitsDataModule:
    return DigitsDataModule(name="digits", shape=(1, 8, 8), num_classes=num_classes, batch_size=16,
                            image_size=8, channels=1, backbone="classifier")


class FakeGenerator(ImageGeneratorStandIn):
    """An image generator: training images plus noise, drawn from the given generator."""

    g_iter = 7

    def __init__(self, datamodule, noise: float = 0.3):
        self.images, self.noise = datamodule.dataset("train").data, noise

    def sample(self, n, generator=None, ema=None):
        picks = torch.randint(len(self.images), (n,), generator=generator)
        x = self.images[picks].float() / 127.5 - 1
        return {"x": (x + self.noise * torch.randn(x.shape, generator=generator)).clamp(-1, 1)}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("metrics-cache")


def independent_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID written out with scipy's matrix square root, in float64: the reference for our value."""
    a, b = a.double().numpy(), b.double().numpy()
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))


# ---- values ---------------------------------------------------------------------------------------------
def test_fid_equals_an_independent_scipy_computation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3000, 32, generator=g) @ torch.randn(32, 32, generator=g) + 1.0
    b = torch.randn(2000, 32, generator=g) @ torch.randn(32, 32, generator=g)
    ours = scores.frechet_distance(scores.gaussian_statistics(a), scores.gaussian_statistics(b))
    assert ours == pytest.approx(independent_fid(a, b), rel=1e-4)
    assert scores.gaussian_statistics(a)["sigma"].dtype == np.float64


def test_fid_of_identical_sets_is_zero():
    a = torch.randn(1000, 16, generator=torch.Generator().manual_seed(1)) * 3
    stats = scores.gaussian_statistics(a)
    assert abs(scores.frechet_distance(stats, stats)) < 1e-6 * np.trace(stats["sigma"])


def test_fid_of_two_gaussians_matches_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    exact = scores.frechet_distance({"mu": mu1, "sigma": np.diag(var1)}, {"mu": mu2, "sigma": np.diag(var2)})
    assert exact == pytest.approx(closed, rel=1e-9)
    g = torch.Generator().manual_seed(2)
    a = torch.from_numpy(mu1) + torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.from_numpy(np.sqrt(var1))
    b = torch.from_numpy(mu2) + torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.from_numpy(np.sqrt(var2))
    sampled = scores.frechet_distance(scores.gaussian_statistics(a), scores.gaussian_statistics(b))
    assert sampled == pytest.approx(closed, rel=0.02)


def test_kid_is_small_for_one_distribution_and_uses_a_subset_no_larger_than_the_sets():
    g = torch.Generator().manual_seed(3)
    a, b, c = torch.randn(300, 8, generator=g), torch.randn(400, 8, generator=g), torch.randn(300, 8, generator=g) + 1
    same, shifted = scores.kernel_distance(a, b, seed=0, subsets=20), scores.kernel_distance(c, b, seed=0, subsets=20)
    assert same["kid_subset_size"] == 300
    assert scores.kernel_distance(b, a, seed=0, subsets=20)["kid_subset_size"] == 300  # the smaller set, either side
    assert abs(same["kid"]) < 0.05 * shifted["kid"]


def test_inception_score_limits():
    uniform = torch.zeros(100, 10)
    assert scores.inception_score(uniform, seed=0)["is"] == pytest.approx(1.0)
    confident = 100.0 * torch.eye(10).repeat(10, 1)  # every class equally often, each sample certain
    assert scores.inception_score(confident, seed=0, splits=1)["is"] == pytest.approx(10.0, rel=1e-6)


def test_precision_recall_of_identical_and_of_disjoint_sets():
    a = torch.randn(200, 4, generator=torch.Generator().manual_seed(4))
    assert scores.precision_recall(a, a.clone()) == {"precision": 1.0, "recall": 1.0}
    assert scores.precision_recall(a + 100, a) == {"precision": 0.0, "recall": 0.0}


def test_toy_metrics_follow_the_protocol():
    means, std = mixture("ring")
    perfect = means.repeat(100, 1) + 0.5 * std * torch.randn(800, 2, generator=torch.Generator().manual_seed(5))
    assert toy_metrics(perfect, means, std) == pytest.approx({"modes": 8, "high_quality": 100.0, "reverse_kl": 0.0}, abs=1e-9)
    collapsed = means[:1].repeat(50, 1)
    assert toy_metrics(collapsed, means, std) == pytest.approx({"modes": 1, "high_quality": 100.0, "reverse_kl": math.log(8)})
    off = toy_metrics(means * 1.5, means, std)  # near every mode, but none within 3 std
    assert off["modes"] == 0 and off["high_quality"] == 0.0
    edge = torch.cat([means.double() * (1 + 2.9 * std), means.double() * (1 + 3.1 * std)])  # radius 1: 2.9, 3.1 std out
    assert toy_metrics(edge, means, std) == pytest.approx({"modes": 8, "high_quality": 50.0, "reverse_kl": 0.0},
                                                          abs=1e-9)


def test_memorisation_flags_flipped_copies_and_not_held_out_images():
    dm = digits()
    train, held_out = dm.dataset("train").data, dm.dataset("test").data
    real = nearest_distances(held_out, train)
    copies = nearest_distances(train[:100].flip(-1), train)
    assert copies.max() < 1e-3  # zero up to cdist's matrix-product rounding
    values, distributions = memorization_summary(copies, real)
    assert values["memorization_copies"] == 1.0 and values["memorization_ratio"] < 0.01
    honest, _ = memorization_summary(nearest_distances(held_out[:90], train), nearest_distances(held_out[90:], train))
    assert 0.7 < honest["memorization_ratio"] < 1.4 and honest["memorization_copies"] < 0.1
    assert set(distributions["nearest_train_distance"]) >= {"generated", "held_out_real"}


def test_atomic_json_and_cache_keys(tmp_path):
    path = save_json({"b": 1, "a": [1, 2]}, tmp_path / "x" / "out.json")
    assert path.read_text().startswith("{") and list(path.parent.iterdir()) == [path]
    from gan.storage import atomic_write

    def fails_midway(f):
        f.write('{"trunc')
        raise OSError(28, "No space left on device")

    before = path.read_text()
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, fails_midway, mode="w")
    assert list(path.parent.iterdir()) == [path] and path.read_text() == before  # no temp file left, old file whole
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1}) != cache_key({"a": 1, "b": 3})


def test_atomic_write_puts_the_bytes_on_disk_before_the_rename(tmp_path, monkeypatch):
    """A power cut after the rename of unsynced data leaves an empty file under the checkpoint's name."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", Path(target).name))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = save_torch({"w": torch.ones(3)}, tmp_path / "last.ckpt")
    (first, size), second = events
    assert first == "fsync" and size > 0 and second == ("replace", "last.ckpt")
    assert torch.equal(torch.load(path)["w"], torch.ones(3))
    # Training writes its checkpoints this way too (AtomicCheckpointIO), not through Lightning's own writer.
    from conftest import compose_config
    from gan.train import train

    events.clear()
    run = tmp_path / "run"
    train(compose_config(run, "model=gan", "data=ring"))
    written = {"g000002.ckpt", "g000004.ckpt", "last.ckpt"}
    assert {p.name for p in (run / "checkpoints").iterdir()} == written
    assert written <= {name for kind, name in events if kind == "replace"}

# ---- backbones -----------------------------------------------------------------------------------------
def test_classifier_backbone_is_accurate_deterministic_and_cached(tmp_path, monkeypatch, cache_dir):
    dm = digits()  # unconditional run: the classifier still gets the labels
    path = classifier_training.classifier_weights(dm, cache_dir)
    saved = torch.load(path, weights_only=False)
    assert saved["test_accuracy"] > 0.95
    tiny = {"epochs": 1, "max_steps": 15}
    first = torch.load(classifier_training.classifier_weights(dm, tmp_path / "a", tiny), weights_only=False)
    second = torch.load(classifier_training.classifier_weights(dm, tmp_path / "b", tiny), weights_only=False)
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    monkeypatch.setattr(classifier_training, "train_classifier", lambda *a: pytest.fail("retrained a cached classifier"))
    assert classifier_training.classifier_weights(dm, cache_dir) == path


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory) -> Path:
    """torch-fidelity's Inception-v3 with random weights of the right shapes, saved as a weights file."""
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("weights") / feature_extractor_inception.WEIGHTS_FILENAME
    torch.save(net.state_dict(), path)
    return path


def test_inception_backbone_runs_offline_from_a_weights_file(random_inception_weights, tmp_path):
    from torch_fidelity import FeatureExtractorInceptionV3

    dm = digits()
    evaluator = Evaluator(dm, names=["fid", "is", "kid"], backbone="inception", num_samples=3, cache_dir=tmp_path,
                          inception_weights=str(random_inception_weights))
    evaluation = evaluator.evaluate(FakeGenerator(dm), split="val")
    assert isinstance(evaluator.backbone.extractor, FeatureExtractorInceptionV3)
    assert all(math.isfinite(evaluation.values[k]) for k in ("fid", "is", "kid"))
    p = evaluation.provenance
    assert p["backbone"] == "inception" and p["weights_sha256"] == sha256_file(random_inception_weights)
    assert p["resize"] == feature_extractor_inception.RESIZE and p["num_fake"] == p["num_real"] == 3
    assert p["kid_subset_size"] == 3


def test_missing_inception_weights_offline_is_one_clear_paragraph(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(feature_extractor_inception, "download_url_to_file", offline)
    evaluator = Evaluator(digits(), backbone="inception", cache_dir=tmp_path)
    with pytest.raises(UserError) as error:
        evaluator.evaluate(FakeGenerator(digits()))
    message = str(error.value)
    assert feature_extractor_inception.WEIGHTS_FILENAME in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in message
    assert "metrics.inception_weights=" in message and "metrics.backbone=classifier" in message
    assert "\n" not in message and "Traceback" not in message
    with pytest.raises(UserError, match="does not exist"):
        Evaluator(digits(), backbone="inception", inception_weights=str(tmp_path / "nope.pth")).backbone


def test_backbone_defaults_per_dataset_and_mismatches_are_user_errors():
    assert Evaluator(digits()).backbone_name == "classifier"
    ring = SimpleNamespace(name="ring", shape=(2,), num_classes=None, backbone="toy")
    assert Evaluator(ring).backbone_name == "toy"
    with pytest.raises(UserError, match="toy"):
        Evaluator(ring, backbone="inception")
    with pytest.raises(UserError, match="Unknown metric"):
        Evaluator(digits(), names=["fid", "lpips"])


@pytest.mark.parametrize("config", sorted((REPO_ROOT / "conf" / "data").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_data_config_names_a_backbone_that_fits_its_data(config):
    data = OmegaConf.load(config)
    datamodule = SimpleNamespace(name=data.name, shape=list(data.shape), backbone=data.backbone)
    expected = {"digits": "classifier", "mnist": "classifier", "mnist5k": "classifier", "fashion_mnist": "classifier",
                "ring": "toy",
                "grid": "toy", "digits_edges": "classifier", "digits_styles": "classifier",
                "digits_attributes": "classifier", "mnist5k_x4": "classifier", "digits_captions": "classifier",
                "oracle": "oracle"}.get(data.name, "inception")
    assert resolve_backbone("auto", datamodule) == expected


def test_an_unknown_data_backbone_is_one_paragraph_naming_the_setting():
    with pytest.raises(UserError) as error:
        resolve_backbone("auto", SimpleNamespace(name="digits", shape=(1, 8, 8), backbone="vgg"))
    message = str(error.value)
    assert "data.backbone=vgg" in message and "inception, classifier, toy" in message and "\n" not in message
    with pytest.raises(UserError, match="data.backbone=inception does not fit"):
        resolve_backbone("auto", SimpleNamespace(name="ring", shape=(2,), backbone="inception"))


# ---- the evaluator: same features, provenance, reference cache --------------------------------------------
def test_evaluation_values_equal_independent_computations_on_the_same_features(cache_dir):
    dm = digits()
    evaluator = Evaluator(dm, names=["fid", "is", "kid", "pr", "memorization"], num_samples=300, cache_dir=cache_dir)
    evaluation = evaluator.evaluate(FakeGenerator(dm), split="val", seed=3, ckpt="some.ckpt", keep_samples=True)
    fake = evaluator.backbone.features(evaluation.samples)["pool"]
    real = evaluator.reference("val", 300).features
    assert evaluation.values["fid"] == pytest.approx(independent_fid(fake, real), rel=1e-4)
    assert evaluation.values["precision"] == scores.precision_recall(fake, real)["precision"]
    assert PROVENANCE_KEYS <= evaluation.provenance.keys()
    p = evaluation.provenance
    assert (p["num_fake"], p["num_real"]) == (300, len(dm.dataset("val"))) and p["kid_subset_size"] == p["num_real"]
    assert (p["seed"], p["ckpt"], p["g_iter"], p["ema"], p["split"]) == (3, "some.ckpt", 7, False, "val")
    assert 0 < p["classifier_test_accuracy"] <= 1 and len(p["weights_sha256"]) == 16
    again = evaluator.evaluate(FakeGenerator(dm), split="val", seed=3)
    assert again.values == evaluation.values  # fresh samples come from the seed alone
    assert evaluator.evaluate(FakeGenerator(dm), split="val", seed=4).values != evaluation.values
    better = evaluator.evaluate(FakeGenerator(dm, noise=0.0), split="val", seed=3).values
    assert better["fid"] < evaluation.values["fid"]


def test_reference_statistics_are_cached_and_not_recomputed(cache_dir, monkeypatch):
    dm = digits()
    first = Evaluator(dm, names=["fid"], num_samples=100, cache_dir=cache_dir)
    value = first.evaluate(FakeGenerator(dm), split="test").values["fid"]
    path = first.reference("test", 100).path
    assert path.is_file() and not any(p.suffix == ".tmp" for p in path.parent.iterdir())
    monkeypatch.setattr(reference, "compute_reference", lambda *a: pytest.fail("reference statistics recomputed"))
    second = Evaluator(dm, names=["fid"], num_samples=100, cache_dir=cache_dir)
    assert second.evaluate(FakeGenerator(dm), split="test").values["fid"] == value
    assert second.reference("test", 100).from_cache and second.reference("test", 100).path == path
    other = reference.reference_key(dm, "test", second.backbone, 50)
    assert reference.reference_path(cache_dir, other) != path  # the sample count is part of the key


def test_toy_evaluation_of_a_perfect_sampler_finds_every_mode():
    from gan.data.toy import ToyDataModule

    dm = ToyDataModule(name="grid", shape=(2,), num_classes=None, batch_size=64)
    means, std = mixture("grid")

    class MixtureSampler(ImageGeneratorStandIn):
        g_iter = 3

        def sample(self, n, generator=None, ema=None):
            return {"x": means[torch.randint(len(means), (n,), generator=generator)]
                    + std * torch.randn(n, 2, generator=generator)}

    evaluation = Evaluator(dm, names=["fid"]).evaluate(MixtureSampler(), split="val")
    values, p = evaluation.values, evaluation.provenance
    assert values["modes"] == 25 and values["high_quality"] > 98 and values["reverse_kl"] < 0.02
    assert 0.95 < values["diversity"] < 1.05
    assert (p["backbone"], p["num_fake"], p["num_real"], p["metrics"]) == ("toy", 2500, 2500, list(TOY_VALUES))


# ---- DDP ------------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world_size: int, init_file: str, cache: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        dm = digits()
        evaluator = Evaluator(dm, names=["fid", "is", "kid", "pr"], num_samples=101, cache_dir=cache)
        evaluation = evaluator.evaluate(FakeGenerator(dm), split="val", seed=5, keep_samples=True)
        if rank == 0:
            torch.save({"values": evaluation.values, "samples": evaluation.samples,
                        "num_fake": evaluation.provenance["num_fake"]}, out)
    finally:
        dist.destroy_process_group()


def test_ddp_value_equals_the_single_process_value_on_the_same_samples(tmp_path, cache_dir):
    out = tmp_path / "rank0.pt"
    Evaluator(digits(), cache_dir=cache_dir).backbone  # train the classifier before forking
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(cache_dir), str(out)), nprocs=2,
                       start_method="fork")
    gathered = torch.load(out, weights_only=False)
    assert gathered["num_fake"] == len(gathered["samples"]) == 101
    single = Evaluator(digits(), names=["fid", "is", "kid", "pr"], num_samples=101, cache_dir=cache_dir).score(gathered["samples"], "val", seed=5)
    assert single.values == pytest.approx(gathered["values"], rel=1e-6)


def _gather_worker(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.save(gather_rows(rank_rows(rank), device="cpu"), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def rank_rows(rank: int) -> torch.Tensor:
    """Rank 0 holds 3 rows, rank 1 holds 5: every value tells its rank and row."""
    n = (3, 5)[rank]
    return torch.arange(n * 4, dtype=torch.float64).reshape(n, 4) + 100 * rank


def test_gather_rows_concatenates_uneven_ranks_in_rank_order(tmp_path):
    out = tmp_path / "gathered"
    mp.start_processes(_gather_worker, args=(str(tmp_path / "init"), str(out)), nprocs=2, start_method="fork")
    expected = torch.cat([rank_rows(0), rank_rows(1)])
    for rank in (0, 1):
        gathered = torch.load(f"{out}.{rank}")
        assert gathered.device.type == "cpu" and gathered.dtype == torch.float64
        assert torch.equal(gathered, expected)
