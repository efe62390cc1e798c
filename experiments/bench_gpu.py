"""Training throughput of the framework on this machine's accelerator: images per second for DCGAN, SNGAN and
WGAN-GP at 32x32 and 64x64, each with and without `model.compile=true`, in `trainer.precision` 32-true and
bf16-mixed.

Each cell is one in-process `trainer.fit` through the normal path (`gan.train.build`: the model's own config,
Lightning's loop, the framework's data stream), on a synthetic in-memory dataset of random uint8 RGB images of
the right size (so no download is needed; on a GPU the split is moved to the device once, as real in-memory data
is). Sample grids, checkpoints, metrics and loggers are off. Throughput is generator iterations x batch size per
second, timed after `--warmup` iterations (compilation, cuDNN autotuning and allocator warm-up fall there), with
the device synchronised at both ends. SNGAN and WGAN-GP take 5 critic steps per generator iteration, so their
figures count one fifth of the real images their critic sees.

    python experiments/bench_gpu.py                      # the full grid, the models' published widths, batch 64
    python experiments/bench_gpu.py --quick              # a few iterations of small networks: proves it runs (CPU)
    python experiments/bench_gpu.py --models dcgan --sizes 64 --precisions bf16-mixed --iters 500
    python experiments/bench_gpu.py model.channels_last=true    # extra overrides apply to every cell
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from gan.data.datamodule import ImageDataModule  # noqa: E402

MODELS = ("dcgan", "sngan", "wgan_gp")
SIZES = (32, 64)
PRECISIONS = ("32-true", "bf16-mixed")
ARCH = {"dcgan": "dcgan", "sngan": "resnet", "wgan_gp": "resnet"}  # the model configs' default architectures


class SyntheticImages(ImageDataModule):
    """Random uint8 RGB images held in memory, as CIFAR-10 is, at any size; unlabelled."""

    train_size = 4096

    def load_split(self, split: str):
        n = self.train_size if split == "train" else 256
        g = torch.Generator().manual_seed(("train", "val", "test").index(split))
        images = torch.randint(0, 256, (n, self.channels, self.image_size, self.image_size), generator=g,
                               dtype=torch.uint8)
        return self.pairs(images, torch.full((n,), -1))


class Throughput(pl.Callback):
    """Seconds and generator iterations from the end of iteration `warmup` to the end of training, and the graphs
    torch.compile made before and during that window."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds, self.iters = warmup, None, float("nan"), 0
        self.graphs_before = self.graphs = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.g_iter == self.warmup:
            synchronize()
            self.start, self.first, self.graphs_before = time.perf_counter(), module.g_iter, compiled_graphs()

    def on_train_end(self, trainer, module) -> None:
        synchronize()
        if self.start is not None:
            self.seconds, self.iters = time.perf_counter() - self.start, module.g_iter - self.first
        self.graphs = compiled_graphs()


def compiled_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def overrides(model: str, size: int, compile: bool, precision: str, args) -> list[str]:
    cell = [f"model={model}", "data=cifar10", f"data._target_={__name__}.SyntheticImages", f"data.image_size={size}",
            "data.num_classes=null", f"data.batch_size={args.batch}", f"g_iters={args.warmup + args.iters}",
            f"model.compile={str(compile).lower()}", f"trainer.precision={precision}", "logger=none", "metrics=none",
            "~callbacks.checkpoint", "~callbacks.samples", "~callbacks.progress_bar",
            "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "model.log_every=1000000"]
    if args.width:
        cell += [f"model.generator.{ARCH[model]}.width={args.width}",
                 f"model.discriminator.{ARCH[model]}.width={args.width}"]
    return cell + args.overrides


def measure(model: str, size: int, compile: bool, precision: str, args) -> dict:
    from hydra import compose, initialize_config_dir

    from gan.train import build

    with tempfile.TemporaryDirectory() as run_dir:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides(model, size, compile, precision, args),
                                              f"paths.run_dir={run_dir}"])
        datamodule, module, trainer = build(cfg, Path(run_dir))
        timer = Throughput(args.warmup)
        trainer.callbacks.append(timer)
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        total = time.perf_counter() - started
    batch = cfg.data.batch_size
    return {"img_s": timer.iters * batch / timer.seconds, "ms_iter": 1000 * timer.seconds / timer.iters,
            "total_s": total, "graphs": timer.graphs, "late": timer.graphs - timer.graphs_before}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="2 warm-up + 3 timed iterations, networks 16 channels wide, batch 8: proves the script "
                             "runs (on a CPU); the figures mean nothing")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS))
    parser.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--iters", type=int, default=200, help="timed generator iterations per cell")
    parser.add_argument("--warmup", type=int, default=30, help="untimed generator iterations first")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=None, help="G and D width (default: each model's own)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every cell, e.g. model.channels_last=true")
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.warmup, args.batch, args.width = 3, 2, 8, args.width or 16
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(does not have many workers|torch.compile cannot train yet).*")

    device = (torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads")
    print(f"# {device}; torch {torch.__version__}; batch {args.batch}; {args.warmup} warm-up + {args.iters} timed "
          f"generator iterations per cell{'; --quick: small networks, figures not meaningful' if args.quick else ''}")
    header = (f"{'model':<8} {'size':>4} {'compile':>7} {'precision':>10} {'img/s':>9} {'ms/iter':>9} {'total s':>8} "
              f"{'graphs':>6}")
    print(header)
    print("-" * len(header))
    for model in args.models:
        for size in args.sizes:
            for compile in (c == "on" for c in args.compile):
                for precision in args.precisions:
                    try:
                        r = measure(model, size, compile, precision, args)
                        graphs = f"{r['graphs']}{'!' if r['late'] else ''}"
                        figures = f"{r['img_s']:>9.1f} {r['ms_iter']:>9.2f} {r['total_s']:>8.1f} {graphs:>6}"
                    except Exception as error:  # one failing cell (e.g. no bf16 on an old GPU) must not end the table
                        figures = f"  failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}"
                    print(f"{model:<8} {size:>4} {'on' if compile else 'off':>7} {precision:>10} {figures}", flush=True)
                    torch._dynamo.reset()
                    torch._dynamo.utils.counters.clear()
                    gc.collect()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
    print("graphs: the graphs torch.compile built; '!': some inside the timed window (raise --warmup)")


if __name__ == "__main__":
    main()
