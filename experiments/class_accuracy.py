"""Class accuracy of a conditional model's samples: the share of samples drawn for class c that the dataset's
classifier (the metrics' classifier backbone, trained once and cached) labels c. Chance is 1 / num_classes.

    python experiments/class_accuracy.py runs/<run> [--n 5000] [--truncation 1.0 0.6827 0.3829]

Samples come from the run's best checkpoint (EMA generator where the model keeps one), equally many per class,
drawn with a fixed seed; `--truncation` values are passed as the evaluator's truncation (BigGAN: the share of
N(0, 1) that the truncated z keeps; 1 is none).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gan.metrics.evaluator import Evaluator  # noqa: E402
from gan.train import load_checkpoint  # noqa: E402


@torch.no_grad()
def class_accuracy(module, classifier, num_classes: int, n: int, seed: int, ema: bool | None = None,
                   **sample_options) -> float:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n // num_classes)
    correct = 0
    for chunk in labels.split(250):
        x = module.sample(y=chunk, generator=generator, ema=ema, **sample_options)["x"].float().cpu().clamp(-1, 1)
        correct += int((classifier(x)[1].argmax(1) == chunk).sum())
    return correct / len(labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory (its best checkpoint) or a .ckpt")
    parser.add_argument("--n", type=int, default=5000, help="samples, equally many per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncation", type=float, nargs="+", default=[1.0])
    parser.add_argument("--live", action="store_true", help="sample the live generator, not its EMA copy")
    args = parser.parse_args(argv)
    path = args.run / "checkpoints" / "best.ckpt" if (args.run / "checkpoints" / "best.ckpt").exists() else args.run
    cfg, datamodule, module = load_checkpoint(path)
    if not getattr(module, "num_classes", None):
        sys.exit(f"{args.run} is not a conditional model (model.num_classes is unset): its samples have no class.")
    evaluator = Evaluator(datamodule, backbone="classifier", cache_dir=cfg.paths.cache_dir,
                          classifier=dict(cfg.metrics.get("classifier") or {}))
    classifier = evaluator.backbone.extractor.net.eval()
    for psi in args.truncation:
        options = {} if psi == 1 else {"truncation_psi": psi}
        accuracy = class_accuracy(module, classifier, module.num_classes, args.n, args.seed,
                                  ema=False if args.live else None, **options)
        print(f"{path}{' (live G)' if args.live else ''}: truncation {psi:g}: class accuracy {100 * accuracy:.1f}% of {args.n} samples "
              f"(chance {100 / module.num_classes:.0f}%)")


if __name__ == "__main__":
    main()
