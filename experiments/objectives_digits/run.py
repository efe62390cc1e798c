"""The lectures' objectives and tricks on the embedded digits: each one override of the default DCGAN run, or one model.

Every row trains on `data=digits` (16 px) for the same number of generator iterations (train.yaml's 2,000) with its
checkpoint selected on the validation split, and reports the test split with fresh samples (`eval.json`): FID and
classifier score on the digits classifier's features, precision/recall, beside the same metrics on real held-out
digits (`ref_real/...`: the ceiling) and the plain DCGAN row (the baseline every option changes one thing of).

    python experiments/objectives_digits/run.py [--rows dcgan rasgan ...] [--seeds 0 1] [--out DIR]

A run whose eval.json exists is not repeated, so an interrupted study continues where it stopped. Each run is the
whole `python -m gan.run` process, timed from outside (wall_times.json). The table goes to results.md, gan.compare's
table to results.txt and its report to report.html.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from experiments.recipes.run import compare, train_missing  # noqa: E402  (the recipes study's loop and report)

DCGAN = ["model=dcgan", "data=digits"]
# row: overrides (each the DCGAN default run plus the one option the row is about, or a model of its own)
ROWS = {
    "dcgan": DCGAN,  # the baseline: the non-saturating DCGAN
    "rsgan": [*DCGAN, "model.loss=relativistic"],
    "rasgan": [*DCGAN, "model.loss=relativistic_average"],
    "ralsgan": [*DCGAN, "model.loss=relativistic_average_ls"],
    "rahinge": [*DCGAN, "model.loss=relativistic_average_hinge"],
    "unrolled5": [*DCGAN, "model.unroll_steps=5"],
    "feature_matching": [*DCGAN, "model.feature_matching=true"],
    "minibatch_disc": [*DCGAN, "model.discriminator.minibatch_kernels=100"],  # Improved GAN's B = 100, C = 5
    "historical_avg": [*DCGAN, "model.historical_averaging=0.01"],
    "label_smoothing": [*DCGAN, "model.label_smoothing=0.1"],
    "virtual_batch_norm": [*DCGAN, "model.virtual_batch_norm=64"],
    # BEGAN at a CPU width: at its default (the paper's) n = 64 maps, 100 iterations took 237 s on shared cores (~80
    # min for 2,000); at 16, a run takes 5-11 min
    "began": ["model=began", "data=digits", "model.generator.width=16", "model.discriminator.width=16"],
    "bigan": ["model=bigan", "data=digits"],
    "ali": ["model=ali", "data=digits"],
}
METRICS = [("fid", "FID", 1), ("is", "classifier score", 2), ("precision", "precision", 2), ("recall", "recall", 2)]


def run_dir(out: Path, row: str, seed: int) -> Path:
    return out / "runs" / row / f"s{seed}"


def cell(values: list[float], digits: int) -> str:
    """One seed's value, or the mean and the values of each seed."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{sum(values) / len(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def table(out: Path, rows: list[str], seeds: list[int], seconds: dict) -> str:
    header = " | ".join(label for _, label, _ in METRICS)
    lines = [f"| row | {header} | probe accuracy | max whole process |", "|---" * (len(METRICS) + 3) + "|"]
    real = None
    for row in rows:
        done = [seed for seed in seeds if (run_dir(out, row, seed) / "eval.json").is_file()]
        if not done:
            continue
        runs = [json.loads((run_dir(out, row, seed) / "eval.json").read_text())["values"] for seed in done]
        real = real or runs[0]
        cells = [cell([values[key] for values in runs], digits) if key in runs[0] else "-"
                 for key, _, digits in METRICS]
        probe = cell([values["probe_accuracy"] for values in runs], 3) if "probe_accuracy" in runs[0] else "-"
        walls = [seconds.get(str(run_dir(out, row, seed).relative_to(out))) for seed in done]
        wall = f"{max(walls):.0f} s" if all(walls) else "-"
        label = f"{row} ({len(done)} seed{'s' * (len(done) > 1)})"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {probe} | {wall} |")
    if real is not None:  # every run scores the same real test digits against the training split's
        cells = [f"{real[f'ref_real/{key}']:.{digits}f}" if f"ref_real/{key}" in real else "-"
                 for key, _, digits in METRICS]
        lines.append("| real held-out digits (ceiling) | " + " | ".join(cells) + " | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    out = args.out.resolve()
    seconds = train_missing(out, {run_dir(out, row, seed): [*ROWS[row], "logger=none", f"seed={seed}"]
                                  for seed in args.seeds for row in args.rows})
    finished = [run_dir(out, row, seed) for row in args.rows for seed in args.seeds
                if (run_dir(out, row, seed) / "eval.json").is_file()]
    lengths = sorted({OmegaConf.load(run / "config.yaml").g_iters for run in finished})  # as the runs trained
    report = (f"Test split, checkpoint selected on val, seeds {', '.join(map(str, args.seeds))}, "
              f"{' / '.join(f'{n:,}' for n in lengths)} generator iterations; digits classifier features "
              f"(experiments/objectives_digits/run.py ROWS). Several seeds: their mean, each seed's value in brackets."
              f"\n\n" + table(out, args.rows, args.seeds, seconds))
    (out / "results.md").write_text(report + "\n")
    compare(out, [str(run) for run in finished])
    print(report)


if __name__ == "__main__":
    main()
