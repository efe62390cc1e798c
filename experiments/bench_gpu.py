"""Training throughput on this machine's accelerator, side by side: `python -m gan.run` against a plain PyTorch
script of the same networks, optimisers and data, both timed as whole processes (experiments/bench_overhead.py's
two sides), rounds alternating. Images/s for dcgan, sngan, wgan_gp, stylegan2 and biggan at 32 and 64 px, batch 64
and 256, `trainer.precision` 32-true and bf16-mixed, `model.compile` false and step.

A cell runs each side at two lengths N1 < N2 and takes the marginal cost of an iteration, (wall(N2) - wall(N1)) /
(N2 - N1): start-up, compilation and warm-up cancel, and what is left is what a long run pays per iteration, seen
from outside the process. Images/s = batch / marginal (generator iterations x batch: SNGAN and WGAN-GP take 5
critic steps per generator iteration, so their critic sees 5x the images counted). The ratio column is gan.run's
marginal over the plain script's; the issue's goal is within 1.15x in every cell.

The data is a synthetic in-memory split of random uint8 RGB images (and class labels for BigGAN), so nothing is
downloaded; on a GPU both sides hold it on the device. gan.run runs with its defaults minus what the plain
script does not do: no logger, no metrics, no sample grids; checkpoints only at the end. The plain script does the
model's arithmetic (gan.losses' loss and regulariser, n_critic, g_batch_multiple, lazy R1, EMA), not its extras, so
two cells set both sides to the same work: stylegan2 with `model.style_mixing=0 model.pl_weight=0` (no style
mixing or path length), biggan with `model.ortho_weight=0 model.ema_start=0` (and self-attention at half the image
size, where the 128 px recipe's 64 px would be absent or the last block).

    python experiments/bench_gpu.py                        # the whole grid (80 cells; hours on one GPU)
    python experiments/bench_gpu.py --models dcgan --sizes 32 --batches 64 --iters 200 1000 --rounds 2
    python experiments/bench_gpu.py --quick                # a few iterations of small networks on the CPU: it runs
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from bench_overhead import one_run  # noqa: E402
from gan.data.datamodule import ImageDataModule  # noqa: E402

MODELS = ("dcgan", "sngan", "wgan_gp", "stylegan2", "biggan")
SAME_WORK = {"stylegan2": ["model.style_mixing=0", "model.pl_weight=0"],
             "biggan": ["model.ortho_weight=0", "model.ema_start=0", "data.num_classes=10"]}
WIDTH = {"dcgan": "dcgan", "sngan": "resnet", "wgan_gp": "resnet"}  # where --width goes (the other two: their own)


class SyntheticImages(ImageDataModule):
    """Random uint8 RGB images held in memory, as CIFAR-10 is, at any size; labels in [0, num_classes) when set."""

    train_size = 4096

    def load_split(self, split: str):
        n = self.train_size if split == "train" else 256
        g = torch.Generator().manual_seed(("train", "val", "test").index(split))
        images = torch.randint(0, 256, (n, self.channels, self.image_size, self.image_size), generator=g,
                               dtype=torch.uint8)
        labels = torch.randint(self.num_classes, (n,), generator=g) if self.num_classes else torch.full((n,), -1)
        return self.pairs(images, labels)


def cell_overrides(model: str, size: int, batch: int, precision: str, compile: str, args) -> list[str]:
    cell = [f"model={model}", "data=cifar10", "data._target_=bench_gpu.SyntheticImages", f"data.image_size={size}",
            "data.num_classes=null", f"data.batch_size={batch}", f"trainer.precision={precision}",
            f"model.compile={compile}", "logger=none", "~callbacks.samples", "callbacks.checkpoint.every_g_iters=100000000",
            "model.log_every=1000000", *SAME_WORK.get(model, [])]
    if model == "biggan":  # attention at the half-size block (the 128 px recipe's is at 64 px: absent below 128 px)
        cell += [f"model.generator.attention={size // 2}", f"model.discriminator.attention={size // 2}"]
    if args.width and model in WIDTH:
        cell += [f"model.generator.{WIDTH[model]}.width={args.width}",
                 f"model.discriminator.{WIDTH[model]}.width={args.width}"]
    return cell + args.overrides


def measure(overrides: list[str], args, env: dict) -> dict:
    """Per side: the median marginal seconds per iteration over the rounds."""
    n1, n2 = args.iters
    walls = {(side, n): [] for side in ("plain", "gan.run") for n in (n1, n2)}
    for r in range(args.rounds):
        for n in (n1, n2):
            for side in (("plain", "gan.run") if r % 2 == 0 else ("gan.run", "plain")):
                walls[side, n].append(one_run(side, n, overrides, env)[0])
    return {side: (statistics.median(walls[side, n2]) - statistics.median(walls[side, n1])) / (n2 - n1)
            for side in ("plain", "gan.run")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="dcgan at 16 px, batch 8, 16 channels, 3 and 6 "
                        "iterations, 1 round: proves both sides run (on a CPU); the figures mean nothing")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--compile", nargs="+", default=["false", "step"], choices=["false", "networks", "step"])
    parser.add_argument("--iters", type=int, nargs=2, default=[100, 500], metavar=("N1", "N2"),
                        help="the two lengths of every cell, in generator iterations")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--width", type=int, default=None, help="G and D width of dcgan, sngan, wgan_gp")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every cell, e.g. model.channels_last=true")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.sizes, args.batches, args.precisions = ["dcgan"], [16], [8], ["32-true"]
        args.iters, args.rounds, args.width = [3, 6], 1, args.width or 16
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "offline"}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"# {device}; torch {torch.__version__}; whole processes, marginal of {args.iters[0]} -> {args.iters[1]} "
          f"generator iterations, median of {args.rounds} alternating rounds"
          f"{'; --quick: figures not meaningful' if args.quick else ''}")
    header = (f"| model | px | batch | precision | compile | plain img/s | gan.run img/s | gan.run / plain |\n"
              f"|---|---|---|---|---|---|---|---|")
    print(header, flush=True)
    for model in args.models:
        for size in args.sizes:
            for batch in args.batches:
                for precision in args.precisions:
                    for compile in args.compile:
                        cell = f"| {model} | {size} | {batch} | {precision} | {compile} |"
                        try:
                            sec = measure(cell_overrides(model, size, batch, precision, compile, args), args, env)
                        except SystemExit as error:  # one failing cell (no bf16 on an old GPU) must not end the table
                            print(f"{cell} failed: {str(error).strip().splitlines()[-1][:100]} | | |", flush=True)
                            continue
                        if min(sec.values()) <= 0:  # N2 - N1 iterations took less than the noise of a process
                            print(f"{cell} noise: raise --iters | | |", flush=True)
                            continue
                        print(f"{cell} {batch / sec['plain']:.0f} | {batch / sec['gan.run']:.0f} | "
                              f"{sec['gan.run'] / sec['plain']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
