"""The contract between a model and the framework (gan.kinds): declared kinds, data fields checked before training,
resumes that would change the model refused, options a model does not honour refused."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, compose_config, run_cli
from gan.data.digits import DigitsDataModule
from gan.errors import UserError
from gan.kinds import KINDS, EvalRequest, Kind, check_fields, check_model, get_kind, register
from gan.metrics.evaluator import Evaluation, Evaluator
from gan.train import build, train

TINY = ["data.image_size=8", "data.batch_size=16", "model.generator.dcgan.width=8", "model.discriminator.dcgan.width=8"]


def one_paragraph(text: str) -> str:
    """The `Error: ...` paragraph of a command's stderr: one line, no traceback."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, text
    return lines[0]


# ---------------------------------------------------------------- bad input, before anything trains
@pytest.mark.parametrize("model, fits", [("pix2pix", "data=aligned, data=digits_edges"),
                                         ("cyclegan", "data=digits_styles, data=unaligned"),
                                         # these read a data setting noise data lacks (data.num_attributes, data.scale)
                                         ("stargan", "data=celeba_attributes, data=digits_attributes, data=domain_folder"),
                                         ("srgan", "data=div2k, data=mnist5k_x4, data=sr_folder")])
def test_a_translation_model_on_noise_data_exits_2_naming_the_data_that_fits(tmp_path, model, fits):
    result = run_cli(f"model={model}", "data=digits", "logger=none", "metrics=none", "g_iters=2",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert f"Data that fits this model: {fits}." in one_paragraph(result.stderr)
    assert not (tmp_path / "run").exists()  # Hydra made it; nothing trained, so nothing is left


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dcgan")
    result = run_cli("logger=none", "metrics=none", "g_iters=2", *TINY, f"hydra.run.dir={tmp / 'run'}", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return tmp / "run"


@pytest.mark.parametrize("override, says", [
    ("model=wgan_gp", "holds a dcgan model, and this command's overrides make it model wgan_gp"),
    ("model.generator.dcgan.width=16", "change the shape of its weights (generator."),
])
def test_a_resume_that_changes_the_model_exits_2_and_keeps_the_run(dcgan_run, tmp_path, override, says):
    before = sorted(p.name for p in (dcgan_run / "checkpoints").iterdir())
    result = run_cli(f"resume={dcgan_run}", override, cwd=tmp_path)
    assert result.returncode == 2
    paragraph = one_paragraph(result.stderr)
    assert says in paragraph and "Start a new run with these settings" in paragraph
    assert sorted(p.name for p in (dcgan_run / "checkpoints").iterdir()) == before
    assert json.loads((dcgan_run / "summary.json").read_text())["g_iter"] == 2


def test_a_model_refuses_a_shared_setting_it_does_not_honour(tmp_path):
    cfg = compose_config(tmp_path / "run", "model=progan", "data=digits", "+model.regularizer=r1",
                         "+model.reg_weight=10")
    with pytest.raises(UserError, match=r"model=progan does not honour model.reg_weight, model.regularizer"):
        build(cfg, tmp_path / "run")


def test_stargan_takes_the_number_of_domains_from_the_folders(tmp_path):
    for d, domain in enumerate(("happy", "sad", "tired")):
        (tmp_path / "domains" / domain).mkdir(parents=True)
        for i in range(24):
            Image.fromarray(np.full((8, 8, 3), (80 * d, 5 * i, 0), np.uint8)).save(tmp_path / "domains" / domain / f"{i}.png")
    cfg = compose_config(tmp_path / "run", "model=stargan", "data=domain_folder", f"data.root={tmp_path / 'domains'}",
                         "data.image_size=8", "data.batch_size=4", "data.num_workers=0", "model.generator.width=4",
                         "model.discriminator.width=4", "g_iters=1")
    assert cfg.data.num_attributes is None
    train(cfg)
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.data.num_attributes == 3 and saved.model.generator.num_domains == 3


# ---------------------------------------------------------------- the registry
def test_every_kind_names_fields_some_data_config_serves():
    from gan.data import data_configs_serving

    get_kind("image")  # loads every kind module
    assert {"image", "conditional", "likelihood", "paired", "unpaired", "attributes", "tokens"} <= set(KINDS)
    for kind in KINDS.values():
        assert data_configs_serving(kind.fields), kind.name


def test_an_unknown_kind_is_named_with_the_known_ones():
    with pytest.raises(UserError, match=r"Unknown task kind 'sketch': the kinds are attributes, conditional, image"):
        get_kind("sketch")


class Constant(torch.nn.Module):
    """A made-up kind's model: it 'generates' its one stored image."""

    kind, name, g_iter = "constant_test", "constant", 3

    def __init__(self):
        super().__init__()
        self.image = torch.nn.Parameter(torch.zeros(1, 8, 8))

    def draw(self, n: int) -> torch.Tensor:
        return self.image.expand(n, -1, -1, -1)


def test_a_new_kind_is_one_registered_class_and_shared_code_dispatches_to_it(tmp_path):
    from typing import Protocol, runtime_checkable

    from gan.callbacks.samples import SampleGrid
    from gan.evaluate import format_table

    @runtime_checkable
    class Drawer(Protocol):
        name: str
        g_iter: int

        def draw(self, n: int) -> torch.Tensor: ...

    @register
    class ConstantKind(Kind):
        name, fields, protocol = "constant_test", ("x",), Drawer

        def monitor(self, evaluator) -> str:
            return "mean"

        def evaluate(self, evaluator, module, request: EvalRequest) -> Evaluation:
            values = {"mean": float(module.draw(request.num_samples).mean())}
            return Evaluation(values, {**evaluator.run_provenance(request.split, request.seed, ["mean"]),
                                       **self.context(module, request)})

        def write_samples(self, grid, trainer, module, path: Path) -> dict[str, Path]:
            grid.save_grid(module.draw(4).detach(), 2, path.with_suffix(".png"))
            return {"samples": path.with_suffix(".png")}

    try:
        module = Constant()
        assert check_model(module) is KINDS["constant_test"]
        dm = DigitsDataModule(name="digits", shape=(1, 8, 8), num_classes=None, batch_size=16, image_size=8,
                              channels=1, backbone="classifier")
        check_fields(module, dm)
        evaluation = Evaluator(dm, names=["fid"], cache_dir=tmp_path).evaluate(module, split="val", seed=0,
                                                                               num_samples=10)
        assert evaluation.values == {"mean": 0.0} and evaluation.provenance["kind"] == "constant_test"
        assert "mean" in format_table(evaluation).splitlines()[-1]
        grid = SampleGrid(str(tmp_path / "samples"))
        trainer = type("Trainer", (), {"is_global_zero": True, "loggers": [], "datamodule": dm})()
        grid.write(trainer, module)
        assert grid.last_path == tmp_path / "samples" / "iter_000003.png" and grid.last_path.is_file()
    finally:
        KINDS.pop("constant_test", None)


def test_a_model_that_lacks_what_its_kind_calls_is_named():
    class Broken(torch.nn.Module):
        kind, name, g_iter = "paired", "broken", 0

    with pytest.raises(TypeError, match=r"declares kind 'paired' but lacks eval_dropout, eval_batch_stats, translate, grid_columns"):
        check_model(Broken())


def test_shared_code_probes_no_model_with_getattr():
    """The evaluator, the callbacks, gan.evaluate and gan.compare ask the model's kind, never getattr/hasattr."""
    paths = [*(REPO / "gan" / "metrics").glob("*.py"), *(REPO / "gan" / "callbacks").glob("*.py"),
             REPO / "gan" / "evaluate.py", REPO / "gan" / "compare.py"]
    probes = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path in paths
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if re.search(r"\b(getattr|hasattr)\((module|pl_module|model|self\.module|trainer\.lightning_module)\b",
                           line)]
    assert not probes, "\n".join(probes)
