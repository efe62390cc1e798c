"""The training loop never makes the host wait for the device between log steps: for every model, the iterations that
do not log read no tensor value on the host (`bool`, `item`, `tolist`, `numpy`, `cpu`, `int`, `float`, `index`), which
on a GPU would drain its queue at each call. Left out: the optimiser's own CPU step counters (torch.optim reads them)
and draws from a module's CPU generator read through gan.models.core.host_values (it refuses device tensors). Counted
on the CPU: the calls are the same on any device."""
from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import test_biggan
import test_gan_int_cls
import test_infogan
import test_progan
import test_srgan
import test_stylegan
import test_text_gan
import test_translation_models
import test_vae
import test_zoo
from conftest import CONF, compose_config
from gan.augment import AdaptiveAugment
from gan.models.core import host_values
from gan.train import build

pytestmark = pytest.mark.usefixtures("one_thread")

HOST_READS = ("__bool__", "item", "tolist", "numpy", "cpu", "__int__", "__float__", "__index__")
QUIET = ["logger=none", "metrics=none", "model.log_every=1000", "callbacks.checkpoint.every_g_iters=1000",
         "callbacks.samples.every_g_iters=1000"]

# Every model in conf/model, at the size its own tests train it.
CASES = {
    **{m: [f"model={m}", *test_zoo.DIGITS] for m in test_zoo.MODELS},
    "stylegan": ["model=stylegan", *test_stylegan.TINY],
    "stylegan2": ["model=stylegan2", *test_stylegan.TINY],
    "progan": test_progan.TINY,
    "biggan": test_biggan.TINY,
    "gan_int_cls": test_gan_int_cls.TINY,
    "infogan": test_infogan.SMALL,
    "srgan": test_srgan.TINY,
    "vae": test_vae.TINY,
    **{m: [f"model={m}", *test_text_gan.TINY_DATA, *overrides] for m, overrides in test_text_gan.TINY_MODEL.items()},
    **{m: [*overrides, "data.image_size=8", "data.batch_size=4"]
       for m, overrides in test_translation_models.SMALL.items()},
}


# The augmentations every noise -> image GAN can add (conf/model/_augment.yaml); ADA moves p every 2 iterations here.
CASES |= {"dcgan+diffaugment": [*CASES["dcgan"], "model.augment=diffaugment"],
          "dcgan+ada": [*CASES["dcgan"], "model.augment=ada", "model.ada_kimg=0.1", "model.ada_interval=2"],
          "stylegan2+ada": [*CASES["stylegan2"], "model.augment=ada", "model.ada_kimg=0.1", "model.ada_interval=2"],
          # the objectives and tricks of the GAN family (tests/test_objectives.py)
          "gan+unrolled+improved": [*CASES["gan"], "model.unroll_steps=2", "model.historical_averaging=0.1",
                                    "model.discriminator.minibatch_kernels=8", "model.label_smoothing=0.1"],
          "gan+relativistic": [*CASES["gan"], "model.loss=relativistic_average"],
          "gan+feature_matching": [*CASES["gan"], "model.feature_matching=true"],
          "dcgan+virtual_batch_norm": [*CASES["dcgan"], "model.virtual_batch_norm=8"]}


def test_every_model_is_counted():
    models = {p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("_")}
    assert {case.split("+")[0] for case in CASES} == models


@contextmanager
def host_reads(calls: list[str]):
    """Record each host read of a tensor value as 'method at file:line' (the first frame outside torch)."""
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counted(name, original):
        def read(self, *args, **kwargs):
            frame = sys._getframe(1)
            # Adam's step counters and host_values' draws from a module's CPU generator are host tensors by design
            if "torch/optim/" not in frame.f_code.co_filename and frame.f_code is not host_values.__code__:
                while frame is not None and "/torch/" in frame.f_code.co_filename:
                    frame = frame.f_back
                where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}" if frame else "torch"
                calls.append(f"{name} at {where}")
            return original(self, *args, **kwargs)
        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def host_reads_per_iteration(tmp_path: Path, overrides: list[str], g_iters: int) -> dict[int, list[str]]:
    cfg = compose_config(tmp_path / "run", *overrides, *QUIET, f"g_iters={g_iters}")
    if cfg.model.name in test_zoo.MODELS:
        cfg = compose_config(tmp_path / "run", *overrides, *test_zoo.tiny(cfg.model), *QUIET, f"g_iters={g_iters}")
    datamodule, model, trainer = build(cfg, tmp_path / "run")
    step, reads = model.training_step, {}

    def counted_step(batch, batch_idx):
        calls: list[str] = []
        with host_reads(calls):
            step(batch, batch_idx)
        reads[model.g_iter] = calls
    model.training_step = counted_step
    trainer.fit(model, datamodule=datamodule)
    return reads


@pytest.mark.parametrize("model", sorted(CASES))
def test_iterations_that_do_not_log_read_nothing_back_from_the_device(tmp_path, model):
    reads = host_reads_per_iteration(tmp_path, CASES[model], g_iters=6)
    later = {i: calls for i, calls in reads.items() if i > 1}  # the first iteration may set things up once
    found = Counter(call for calls in later.values() for call in calls)
    if model.endswith("+ada"):  # ADA draws its transforms on the host: it reads p back once after each adjustment
        p_reads = found.pop(f"__float__ at augment.py:{AdaptiveAugment.forward.__code__.co_firstlineno + 2}", 0)
        assert p_reads <= len(later) // 2 + 1  # model.ada_interval=2
    assert len(later) == 5 and not found, f"host reads in {len(later)} iterations: {dict(found)}"


COUNTING_RUN = '''
import json, os, sys
sys.path.insert(0, {tests!r})
from test_no_host_sync import host_reads
from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop
import gan.run

reads, advance = {{}}, _TrainingEpochLoop.advance

def counted(self, data_fetcher):
    calls = []
    with host_reads(calls):
        advance(self, data_fetcher)
    reads[self.trainer.lightning_module.g_iter] = calls

_TrainingEpochLoop.advance = counted
try:
    gan.run.main()
finally:
    import torch.distributed as dist
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("LOCAL_RANK", 0))
    with open(os.path.join({out!r}, f"reads{{rank}}.json"), "w") as f:
        json.dump(reads, f)
'''


@pytest.mark.slow
def test_ddp_iterations_that_do_not_log_read_nothing_back_either(tmp_path):
    """The whole iteration of each of 2 DDP processes (Lightning's loop, the callbacks, training_step): Lightning's own
    per-step broadcast of its SIGTERM flag, read on the host, is switched off where the run catches SIGTERM itself."""
    import json
    import os
    import subprocess

    script = tmp_path / "counting_run.py"
    script.write_text(COUNTING_RUN.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1"}
    args = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data=digits", "data.image_size=8",
            "data.batch_size=16", "model.generator.dcgan.width=8", "model.discriminator.dcgan.width=8", "g_iters=12",
            "model.log_every=6", *QUIET[4:], "logger=none", "metrics=none", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        reads = {int(i): calls for i, calls in json.loads((tmp_path / f"reads{rank}.json").read_text()).items()}
        quiet = {i: calls for i, calls in reads.items() if i > 1 and i % 6}
        found = Counter(call for calls in quiet.values() for call in calls)
        assert len(quiet) == 9 and not found, f"rank {rank}: host reads in {len(quiet)} iterations: {dict(found)}"
