"""GPU readiness, checked on the CPU: mixed precision with the manual loop, torch.compile, channels-last, and
in-memory splits moved to the accelerator once (issue 10, item 4). The file cache of decoded images is tested
in test_data.py."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from conftest import compose_config
from gan.data.datamodule import Batches, ImageFiles, TensorPairs, data_device
from gan.data.digits import DigitsDataModule
from gan.errors import UserError
from gan.models.base import GANModule
from gan.models.core import compile_setting, float32_outputs
from gan.train import load_checkpoint, train

TINY = ["data.image_size=8", "data.batch_size=16", "g_iters=2", "model.log_every=1"]
TINY_DCGAN = ["model.generator.dcgan.width=8", "model.discriminator.dcgan.width=8"]
MODELS = {
    "dcgan": ["model=dcgan", *TINY_DCGAN],
    # the gradient penalty differentiates D twice under autocast; n_critic=2 splits the iteration's batch
    "wgan_gp": ["model=wgan_gp", "model.arch=dcgan", "model.n_critic=2", *TINY_DCGAN],
    "pix2pix": ["model=pix2pix", "data=digits_edges", "model.generator.width=8", "model.discriminator.width=8"],
}


def losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["g_iter"] for r in records] == [1, 2]
    return [v for r in records for k, v in r.items() if k.startswith("train/")]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_bf16_mixed_precision_trains_with_the_manual_loop(tmp_path, model):
    run = tmp_path / "run"
    train(compose_config(run, *MODELS[model], *TINY, "trainer.precision=bf16-mixed"))
    values = losses(run)
    assert values and all(math.isfinite(v) for v in values)
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_network_outputs_are_float32_under_autocast():
    """The losses of every model see float32: autocast runs the layers in bf16, the hook casts their outputs."""
    net = nn.Linear(4, 2)
    net.register_forward_hook(float32_outputs)
    pair = nn.Linear(4, 2)
    pair.forward = lambda x: (nn.functional.linear(x, pair.weight), torch.arange(3))  # a tuple, e.g. StarGAN's D
    pair.register_forward_hook(float32_outputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert nn.functional.linear(torch.ones(1, 4), net.weight).dtype == torch.bfloat16  # what autocast does
        assert net(torch.ones(1, 4)).dtype == torch.float32
        logits, labels = pair(torch.ones(1, 4))
        assert logits.dtype == torch.float32 and labels.dtype == torch.int64


def test_channels_last_trains_and_converts_weights_and_batches(tmp_path, monkeypatch):
    seen = []
    d_loss = GANModule.discriminator_loss
    monkeypatch.setattr(GANModule, "discriminator_loss", lambda self, batch: seen.append(
        batch["x"].is_contiguous(memory_format=torch.channels_last)) or d_loss(self, batch))
    run = tmp_path / "run"
    train(compose_config(run, *MODELS["dcgan"], *TINY, "model.channels_last=true"))
    assert all(math.isfinite(v) for v in losses(run))
    assert seen == [True, True]  # the real images of both iterations
    module = configured(compose_config(run, *MODELS["dcgan"], *TINY, "model.channels_last=true"))
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)


def configured(cfg, precision: str = "32-true"):
    """The model as Lightning's `fit` prepares it (`configure_model`), without training it."""
    module = instantiate(cfg.model)
    module.trainer = SimpleNamespace(precision=precision)
    module.configure_model()
    return module


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="torch.compile on the CPU needs a C compiler")
def test_compiled_training_writes_checkpoints_that_load_uncompiled(tmp_path):
    """torch.compile on the CPU (inductor, C compiler): WGAN-GP, whose penalty runs the networks eagerly (compiled
    graphs cannot be differentiated twice). The checkpoint keeps the plain networks' keys."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run = tmp_path / "run"
    overrides = [*MODELS["wgan_gp"], "model.n_critic=1", *TINY, "model.compile=networks"]
    train(compose_config(run, *overrides))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # G and D were compiled
    assert all(math.isfinite(v) for v in losses(run))
    cfg, _, loaded = load_checkpoint(run)
    assert cfg.model.compile == "networks" and loaded.generator._compiled_call_impl is None  # loaded: not compiled
    plain = instantiate(compose_config(run, *MODELS["wgan_gp"], *TINY).model)
    assert loaded.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"])
    assert torch.isfinite(loaded.sample(4, torch.Generator().manual_seed(0))["x"]).all()
    torch._dynamo.reset()


def test_compile_leaves_spectrally_normalised_networks_eager(tmp_path):
    cfg = compose_config(tmp_path, "model=sngan", "model.arch=cnn", "model.compile=true")  # true: networks
    with pytest.warns(UserWarning, match="spectral normalisation"):
        module = configured(cfg, precision="bf16-mixed")
    assert module.generator._compiled_call_impl is not None and module.discriminator._compiled_call_impl is None
    assert module.generator._forward_hooks  # bf16-mixed: outputs cast to float32


def final_weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="torch.compile on the CPU needs a C compiler")
@pytest.mark.parametrize("model", ["dcgan", "wgan_gp", "sngan"])
def test_compiled_step_trains_like_the_eager_one(tmp_path, model):
    """model.compile=step compiles each phase's update (inductor on the CPU): DCGAN whole, WGAN-GP with its gradient
    penalty cut out of the graph and run eagerly, SNGAN with spectral norm's power iteration traced in the graph. Two
    iterations end at the eager run's weights up to float rounding (the compiled kernels sum in another order), and the
    checkpoint holds the plain networks' keys."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    overrides = [*{**MODELS, "sngan": ["model=sngan", "model.arch=cnn"]}[model], "model.n_critic=1", *TINY]
    train(compose_config(eager, *overrides))
    train(compose_config(compiled, *overrides, "model.compile=step"))
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] >= 2  # the D and G phases (split where the module's RNG draws)
    if model == "wgan_gp":
        assert any("_input_gradient_norm" in str(reason) or "disable" in str(reason).lower()
                   for reason in counters["graph_break"])  # the penalty ran outside the graphs
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-4, abs=1e-5)
    want, got = final_weights(eager), final_weights(compiled)
    assert got.keys() == want.keys()
    for key in want:
        # atol: one Adam step (lr 2e-4) where the gradient is float noise around 0 (a conv bias before batch norm)
        torch.testing.assert_close(got[key], want[key], rtol=1e-3, atol=2e-4, msg=key)
    torch._dynamo.reset()


def test_compile_settings_are_checked():
    assert compile_setting(True, "default") == ("networks", "default")  # runs saved before `step` existed
    assert compile_setting(False, "reduce-overhead") == ("false", "reduce-overhead")
    with pytest.raises(UserError, match="not a compile setting"):
        compile_setting("phases", "default")
    with pytest.raises(UserError, match="not a torch.compile mode"):
        compile_setting("step", "fast")


def test_in_memory_split_goes_to_the_trainers_accelerator_once():
    """No GPU here: the meta device stands in for it (indexing and dtype conversion work there, values do not)."""
    split = TensorPairs(torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8), torch.arange(10))
    on = lambda device: SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    assert data_device(on("meta"), 0, split) == torch.device("meta")
    assert data_device(on("cpu"), 0, split) is None  # on the CPU nothing changes
    assert data_device(on("meta"), 2, split) is None  # loader workers index on the host
    assert data_device(None, 0, split) is None
    assert data_device(on("meta"), 0, ImageFiles([], 4, 1)) is None  # decoded per access: stays on the host
    batch = Batches(split.to(torch.device("meta")), lambda x, y: {"x": x, "y": y})[[0, 3, 5]]
    assert batch["x"].device.type == "meta" and batch["x"].dtype == torch.float32 and batch["x"].shape == (3, 1, 4, 4)


def test_datamodule_serves_training_batches_from_the_device():
    dm = DigitsDataModule(name="digits", shape=(1, 8, 8), num_classes=10, batch_size=4, image_size=8, channels=1)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")), lightning_module=None,
                                 global_rank=0, world_size=1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].device.type == "meta" and batch["y"].device.type == "meta"
    assert dm.dataset("train").data.device.type == "cpu"  # the split the metrics read stays where it was
    dm.trainer = SimpleNamespace(**{**vars(dm.trainer), "strategy": SimpleNamespace(root_device=torch.device("cpu"))})
    assert next(iter(dm.train_dataloader()))["x"].device.type == "cpu"


def test_tf32_matmul_precision_is_set_on_gpus_only_and_recorded(tmp_path, monkeypatch):
    """float32_matmul_precision=high (TF32 on GPUs) is applied where the trainer runs on CUDA; on the CPU the process's
    setting stays. Either way summary.json and every evaluation's provenance record the precision the run had."""
    from gan.errors import UserError
    from gan.kinds import get_kind

    applied = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", applied.append)
    run = tmp_path / "run"
    train(compose_config(run, *TINY, *TINY_DCGAN, "metrics=none"))
    assert applied == []  # the CPU: nothing changed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    _, _, module = load_checkpoint(run)
    context = get_kind(module.kind).context(module, SimpleNamespace(ckpt=None))
    assert context["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    with pytest.raises(UserError, match="float32_matmul_precision must be"):
        train(compose_config(tmp_path / "bad", *TINY, *TINY_DCGAN, "metrics=none", "float32_matmul_precision=tf32"))
    import gan.train
    from pytorch_lightning.accelerators import CPUAccelerator

    monkeypatch.setattr(gan.train, "CUDAAccelerator", CPUAccelerator)  # as build() sees a CUDA trainer
    train(compose_config(tmp_path / "cuda", *TINY, *TINY_DCGAN, "metrics=none"))
    assert applied == ["high"]
