"""Translation metrics (pix2pix, CycleGAN, StarGAN) through the Evaluator, with stand-in translators on the digit sets."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from gan.callbacks.evaluation import EvaluationCallback
from gan.data.digits_translation import (INK, DigitsAttributesDataModule, DigitsEdgesDataModule, DigitsStylesDataModule,
                                         render_attributes, scale_channels, thicken)
from gan.errors import UserError
from gan.kinds import check_fields, get_kind
from gan.evaluate import format_table, save_samples
from gan.metrics import classifier_training, translation
from gan.metrics.directions import HIGHER_IS_BETTER
from gan.metrics.evaluator import Evaluator
from gan.metrics.feature_extractor_classifier import ClassifierNet
from gan.metrics.quantize import from_uint8, to_uint8

SPLIT = "val"  # its edge maps are all distinct, so a lookup from a to b is a perfect paired translator


pytestmark = pytest.mark.usefixtures("single_thread")


def datamodule(make, channels):
    return make(name={DigitsEdgesDataModule: "digits_edges", DigitsStylesDataModule: "digits_styles",
                      DigitsAttributesDataModule: "digits_attributes"}[make], shape=(channels, 8, 8), num_classes=None,
                batch_size=16, image_size=8, channels=channels, backbone="classifier", load_size=8, flip=False)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("translation-cache")


@pytest.fixture(scope="module")
def evaluators(cache_dir):
    """One evaluator per kind, shared: each classifier is trained once (a few seconds at 8 px) into the tmp cache."""
    return {"paired": Evaluator(datamodule(DigitsEdgesDataModule, 1), num_samples=500, cache_dir=cache_dir, batch_size=64),
            "unpaired": Evaluator(datamodule(DigitsStylesDataModule, 3), num_samples=500, cache_dir=cache_dir, batch_size=64),
            "attributes": Evaluator(datamodule(DigitsAttributesDataModule, 3), num_samples=500, cache_dir=cache_dir,
                                    batch_size=64)}


class StandIn:
    """A translation model as its kind sees it (gan.kinds.translation.Translator): `kind`, `translate`, `device`,
    `g_iter`, `eval_dropout`, `eval_batch_stats`."""

    name, g_iter, device, eval_dropout, eval_batch_stats = "stand-in", 5, torch.device("cpu"), False, False

    def __init__(self, kind: str, fn):
        self.kind, self.fn, self.calls = kind, fn, 0

    def translate(self, x, *condition):
        assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
        self.calls += 1
        return self.fn(x, *condition)


def identity(x, *condition):
    return x.clone()


def noise(x, *condition):
    return torch.rand(x.shape) * 2 - 1  # from the evaluator's private seeded stream


def lookup(pairs: dict[bytes, torch.Tensor]):
    """A translator that returns the stored output for each input image (found by its uint8 bytes)."""
    def fn(x, *condition):
        return torch.stack([from_uint8(pairs[image.numpy().tobytes()]) for image in to_uint8(x)])
    return fn


def base_keys(values):
    return [k for k in values if "/" not in k]


def independent_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().numpy(), b.double().numpy()
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))


def load_classifier(path) -> ClassifierNet:
    saved = torch.load(path, weights_only=False)
    net = ClassifierNet(**saved["arch"])
    net.load_state_dict(saved["state_dict"])
    return net.eval()


# ---- the reference rows -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["paired", "unpaired", "attributes"])
def test_the_identity_translator_scores_exactly_its_reference_row(evaluators, kind):
    evaluation = evaluators[kind].evaluate(StandIn(kind, identity), split=SPLIT, seed=0)
    values = evaluation.values
    assert base_keys(values) == list(get_kind(kind).value_keys)  # digits: every value, class accuracies included
    assert all(values[k] == values[f"ref_identity/{k}"] for k in base_keys(values))
    assert {k.split("/", 1)[1] for k in values if k.startswith("ref_real/")} <= set(base_keys(values))
    for k in base_keys(values):
        assert math.isfinite(values[f"ref_identity/{k}"]) or k == "psnr"
    if kind == "attributes":  # doing nothing: real images (FID = the real row), half the targets missed, no cycle error
        assert values["fid"] == values["ref_real/fid"] and values["cycle_l1"] == 0
        assert 0.35 < values["attribute_accuracy"] < 0.65 < values["ref_real/attribute_accuracy"]
    if kind == "unpaired":  # the other domain's classifier barely recognises untranslated digits; the real ones it does
        assert values["cycle_l1"] == 0 and values["class_accuracy_ab"] < values["ref_real/class_accuracy_ab"]


def test_a_perfect_paired_translator_scores_the_ceiling(evaluators):
    evaluator = evaluators["paired"]
    data = evaluator.datamodule.eval_tensors(SPLIT, 500)
    perfect = StandIn("paired", lookup({a.numpy().tobytes(): b for a, b in zip(data["a"], data["b"])}))
    values = evaluator.evaluate(perfect, split=SPLIT, seed=0).values
    assert values["l1"] == 0 and values["psnr"] == math.inf and values["ssim"] == pytest.approx(1.0)
    assert abs(values["fid"]) < 1e-3  # the very target images
    assert values["class_accuracy"] == values["ref_real/class_accuracy"]
    net = load_classifier(evaluator._judges.target_classes().path)
    expected = float((net(from_uint8(data["b"]))[1].argmax(1) == data["label"]).double().mean())
    assert values["ref_real/class_accuracy"] == pytest.approx(expected) and expected > 0.8
    assert values["ref_real/fid"] > values["fid"]  # two real samples differ; the translations are the targets


def test_paired_values_equal_independent_computations(evaluators):
    evaluator = evaluators["paired"]
    data = evaluator.datamodule.eval_tensors(SPLIT, 500)
    # The targets with a quarter of the input blended in: every value lies strictly between its floor and its ceiling.
    blended = {a.numpy().tobytes(): to_uint8((3 * from_uint8(b) + from_uint8(a)) / 4) for a, b in zip(data["a"], data["b"])}
    evaluation = evaluator.evaluate(StandIn("paired", lookup(blended)), split=SPLIT, seed=2, keep_samples=True)
    values, out = evaluation.values, evaluation.arrays["translations"]
    fake, real = from_uint8(out), from_uint8(data["b"])
    assert values["l1"] == pytest.approx(float((fake - real).abs().mean()), rel=1e-6)
    psnr = PeakSignalNoiseRatio(data_range=2.0, reduction="elementwise_mean", dim=(1, 2, 3))
    psnr.update(fake, real)
    ssim = StructuralSimilarityIndexMeasure(data_range=2.0)
    ssim.update(fake, real)
    assert values["psnr"] == pytest.approx(float(psnr.compute()), rel=1e-5)
    assert values["ssim"] == pytest.approx(float(ssim.compute()), rel=1e-5)
    features = evaluator.backbone.features
    assert values["fid"] == pytest.approx(independent_fid(features(out)["pool"], features(data["b"])["pool"]), rel=1e-4)
    train_b = evaluator.datamodule.eval_tensors("train", len(data["b"]))["b"]
    assert values["ref_real/fid"] == pytest.approx(
        independent_fid(features(data["b"])["pool"], features(train_b)["pool"]), rel=1e-4)
    net = load_classifier(evaluator._judges.target_classes().path)
    assert values["class_accuracy"] == pytest.approx(float((net(fake)[1].argmax(1) == data["label"]).double().mean()))
    assert 0 < values["l1"] < values["ref_identity/l1"] and values["ref_identity/ssim"] < values["ssim"] < 1
    p = evaluation.provenance
    assert (p["translation"], p["split"], p["seed"], p["num_fake"], p["g_iter"]) == ("paired", SPLIT, 2, 180, 5)
    assert p["weights_sha256"] == p["class_classifier_sha256"] and 0.8 < p["class_classifier_test_accuracy"] <= 1
    assert p["eval_dropout"] is False and "fid_warning" not in p  # 180 records for 128-d features


def test_noise_scores_near_chance(evaluators):
    paired = evaluators["paired"].evaluate(StandIn("paired", noise), split=SPLIT, seed=0).values
    assert paired["class_accuracy"] < 0.3 and abs(paired["ssim"]) < 0.1 and paired["fid"] > 10 * paired["ref_real/fid"]
    unpaired = evaluators["unpaired"].evaluate(StandIn("unpaired", noise), split=SPLIT, seed=0).values
    assert unpaired["class_accuracy_ab"] < 0.3 and unpaired["class_accuracy_ba"] < 0.3 and unpaired["cycle_l1"] > 0.5
    attributes = evaluators["attributes"].evaluate(StandIn("attributes", noise), split=SPLIT, seed=0).values
    assert 0.3 < attributes["attribute_accuracy"] < 0.7 and attributes["class_accuracy"] < 0.3
    assert attributes["fid"] > 10 * attributes["ref_real/fid"]


def test_evaluations_are_seeded_and_leave_the_global_stream_alone(evaluators):
    evaluator = evaluators["attributes"]
    torch.manual_seed(123)
    first = evaluator.evaluate(StandIn("attributes", noise), split=SPLIT, seed=4).values
    after = torch.rand(1)
    torch.manual_seed(123)
    assert evaluator.evaluate(StandIn("attributes", noise), split=SPLIT, seed=4).values == first
    assert torch.equal(torch.rand(1), after)
    other = evaluator.evaluate(StandIn("attributes", noise), split=SPLIT, seed=5).values
    assert other["cycle_l1"] != first["cycle_l1"]  # fresh noise
    assert other["ref_identity/attribute_accuracy"] != first["ref_identity/attribute_accuracy"]  # fresh targets


# ---- the kinds with translators that do the job ---------------------------------------------------------------------
def test_the_true_style_transfer_scores_near_the_real_row(evaluators):
    """digits_styles' own recipe as G (gray -> thick orange) and its red channel as F (thick gray digits, not the thin
    ones of domain A: a poor F): A->B close to the real row and far from the identity's."""
    def style(x):
        return from_uint8(scale_channels(thicken(to_uint8(x)[:, :1]), [c / 255 for c in INK]))

    def unstyle(x):
        return x[:, :1].expand(-1, 3, -1, -1).clone()

    module = StandIn("unpaired", lambda x, direction: style(x) if direction == "ab" else unstyle(x))
    values = evaluators["unpaired"].evaluate(module, split=SPLIT, seed=0).values
    assert values["class_accuracy_ab"] >= values["ref_real/class_accuracy_ab"] - 0.1
    assert values["class_accuracy_ab"] > values["ref_identity/class_accuracy_ab"] + 0.3
    assert values["fid_ab"] < values["ref_identity/fid_ab"] / 10
    assert values["fid_ba"] > values["ref_real/fid_ba"] and values["cycle_l1"] > 0  # thickening is not undone


def test_a_perfect_attribute_translator_scores_the_real_row(evaluators):
    """Re-renders each digit with the target attributes (the dataset's own recipe): the classifiers see real images."""
    evaluator = evaluators["attributes"]
    dm = evaluator.datamodule
    from gan.data.digits import FRACTIONS
    from gan.data.digits_translation import attribute_assignment, digits
    gray, _, index = digits(8, *FRACTIONS[SPLIT])
    sources = {render_attributes(gray[i:i + 1], attribute_assignment(1797)[index[i]][None])[0].numpy().tobytes(): gray[i]
               for i in range(len(gray))}

    def render(x, attrs):
        grays = torch.stack([sources[image.numpy().tobytes()] for image in to_uint8(x)])
        out = render_attributes(grays, attrs)
        sources.update({image.numpy().tobytes(): g for image, g in zip(out, grays)})  # so that it translates back
        return from_uint8(out)

    values = evaluator.evaluate(StandIn("attributes", render), split=SPLIT, seed=0).values
    assert values["attribute_accuracy"] > 0.95 and values["cycle_l1"] == 0
    assert values["class_accuracy"] > values["ref_real/class_accuracy"] - 0.1
    assert values["fid"] < 3 * values["ref_real/fid"] and len(dm.eval_tensors(SPLIT, 500)["x"]) == 180


# ---- classifiers: cached, recorded ----------------------------------------------------------------------------------
def test_classifiers_are_cached_and_their_accuracies_recorded(evaluators, cache_dir, monkeypatch):
    evaluation = evaluators["attributes"].evaluate(StandIn("attributes", identity), split=SPLIT, seed=0)
    p = evaluation.provenance
    assert p["attribute_names"] == ["thick", "inverted", "tinted"]
    assert set(p["attribute_classifier_attribute_accuracy"]) == {"thick", "inverted", "tinted"}
    assert 0.9 < p["attribute_classifier_test_accuracy"] <= 1 and 0.7 < p["class_classifier_test_accuracy"] <= 1
    unpaired = evaluators["unpaired"].evaluate(StandIn("unpaired", identity), split=SPLIT, seed=0).provenance
    assert unpaired["class_classifier_a_sha256"] == unpaired["fid_ba_space"]["weights_sha256"] != unpaired["weights_sha256"]
    assert unpaired["fid_warning"].startswith("90 samples")  # digits_styles' val domains hold 90 images each
    files = sorted(p.name for p in (cache_dir / "classifiers").glob("*.pt"))
    assert len(files) == 5 and any("domainA" in f for f in files) and any("attributes-" in f for f in files)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr(classifier_training, "train_classifier", no_training)
    fresh = Evaluator(datamodule(DigitsAttributesDataModule, 3), num_samples=500, cache_dir=cache_dir, batch_size=64)
    again = fresh.evaluate(StandIn("attributes", identity), split=SPLIT, seed=0)
    assert again.values == evaluation.values
    assert again.provenance["attribute_classifier_sha256"] == p["attribute_classifier_sha256"]


def test_multilabel_classifier_training_learns_attributes():
    g = torch.Generator().manual_seed(0)
    attrs = (torch.rand(512, 2, generator=g) < 0.5).float()
    images = torch.zeros(512, 1, 8, 8, dtype=torch.uint8)
    images[:, :, :4] += (attrs[:, 0] * 200).to(torch.uint8).view(-1, 1, 1, 1)  # attribute 0: top half bright
    images[:, :, :, :4] += (attrs[:, 1] * 50).to(torch.uint8).view(-1, 1, 1, 1)  # attribute 1: left half brighter
    arch = {"channels": 1, "image_size": 8, "num_classes": 2, "width": 8}
    hp = {**classifier_training.DEFAULT_HPARAMS, "max_steps": 200}
    net = classifier_training.train_classifier(arch, images, attrs, hp, multilabel=True)
    assert min(classifier_training.attribute_accuracies(net, images, attrs)) > 0.95


# ---- integration: the callback's monitor, the command line's table and samples file ---------------------------------
@pytest.mark.parametrize("kind, monitor", [("paired", "fid"), ("unpaired", "fid_ab"), ("attributes", "fid")])
def test_the_callback_monitors_fid_of_the_translation(kind, monitor, tmp_path):
    callback = EvaluationCallback(names=["fid", "is"], cache_dir=str(tmp_path), run_dir=str(tmp_path))
    trainer = SimpleNamespace(datamodule=datamodule(DigitsEdgesDataModule, 1))
    callback._evaluator(trainer, StandIn(kind, identity))
    assert callback.monitor == monitor
    assert all(k in HIGHER_IS_BETTER for k in get_kind(kind).value_keys)


def test_the_table_shows_the_reference_rows_and_the_samples_file_holds_inputs_and_targets(evaluators, tmp_path):
    evaluation = evaluators["attributes"].evaluate(StandIn("attributes", noise), split=SPLIT, seed=0, keep_samples=True)
    table = format_table(evaluation)
    header, columns, *rows = table.splitlines()
    assert "attributes translation" in header and columns.split() == ["metric", "value", "real", "identity"]
    row = next(r for r in rows if r.split()[0] == "attribute_accuracy").split()
    assert [float(v) for v in row[1:]] == pytest.approx(
        [evaluation.values[k] for k in ("attribute_accuracy", "ref_real/attribute_accuracy", "ref_identity/attribute_accuracy")],
        rel=1e-5)
    assert next(r for r in rows if r.split()[0] == "cycle_l1").split()[2] == "-"  # no real row for the cycle
    save_samples(evaluation, tmp_path / "s.npz")
    saved = np.load(tmp_path / "s.npz")
    data = evaluators["attributes"].datamodule.eval_tensors(SPLIT, 500)
    assert saved["arr_0"].shape == (180, 8, 8, 3) and saved["arr_0"].dtype == np.uint8
    assert np.array_equal(saved["inputs"], data["x"].permute(0, 2, 3, 1).numpy())
    assert np.array_equal(saved["labels"], data["label"].numpy()) and saved["target_attrs"].shape == (180, 3)
    assert list(saved["attribute_names"]) == ["thick", "inverted", "tinted"]
    assert np.array_equal(saved["arr_0"], to_uint8(evaluation.samples).permute(0, 2, 3, 1).numpy())


def test_a_translation_model_on_data_of_another_kind_is_refused_before_training(cache_dir):
    from gan.data.digits import DigitsDataModule

    dm = DigitsDataModule(name="digits", shape=(1, 8, 8), num_classes=None, batch_size=16, image_size=8, channels=1,
                          backbone="classifier")
    with pytest.raises(UserError, match=r"missing: a, b, paired\). Data that fits this model: data=aligned, "
                                         r"data=digits_edges\."):
        check_fields(StandIn("paired", identity), dm)
    with pytest.raises(UserError, match=r"missing: unpaired\). Data that fits this model: data=digits_styles, "
                                         r"data=unaligned\."):
        check_fields(StandIn("unpaired", identity), datamodule(DigitsEdgesDataModule, 1))
    check_fields(StandIn("unpaired", identity), datamodule(DigitsStylesDataModule, 3))
