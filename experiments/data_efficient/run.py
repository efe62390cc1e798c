"""Data-efficient GAN training: DCGAN with no augmentation, DiffAugment and ADA on less and less data.

Settings: the embedded digits with 10%, 25% and 100% of the training split (`data.train_limit`), and the 100 faces
of `data=faces100` (the DiffAugment paper's 100-shot setting); x {none, diffaugment, ada} x seeds. Every run selects
its checkpoint on the validation split and reports FID on the test split with fresh samples (`eval.json`); the
digits use the classifier backbone (Frechet classifier distance), the faces the dataset's default backbone. The
table (mean and standard deviation over seeds) goes to results.md, `gan.compare`'s report to report.html.

    python experiments/data_efficient/run.py [--data digits10 digits25 digits100 faces100]
        [--augment none diffaugment ada] [--seeds 3] [--g-iters 2000] [--ada-kimg 10] [--ada-digits-transforms ...]
        [--out DIR] [--set KEY=VALUE]

A run whose eval.json exists is not repeated, so an interrupted study continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

DATA = {
    "digits10": ["data=digits", "data.train_limit=0.1"],
    "digits25": ["data=digits", "data.train_limit=0.25"],
    "digits100": ["data=digits"],
    "faces100": ["data=faces100"],
}
AUGMENTS = {
    "none": ["model.augment=none"],
    "diffaugment": ["model.augment=diffaugment", "model.augment_policy=[color,translation,cutout]"],
    "ada": ["model.augment=ada"],  # and model.ada_kimg from --ada-kimg
}
# The DiffAugment repository's CIFAR-10 FID (10k samples), without -> with DiffAugment: the published reference.
PUBLISHED = [("BigGAN, 10% data", 39.78, 22.40), ("BigGAN, 20% data", 21.58, 14.04), ("StyleGAN2, 10% data", 36.02, 14.50)]


def run_dir(out: Path, data: str, augment: str, seed: int) -> Path:
    return out / "runs" / data / augment / f"s{seed}"


def train(directory: Path, overrides: list[str]) -> float:
    """One `python -m gan.run`; returns its wall time in seconds."""
    command = [sys.executable, "-m", "gan.run", *overrides, f"hydra.run.dir={directory}"]
    print("$", " ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "WANDB_MODE": "offline"})
    return time.time() - started


def table(out: Path, datas: list[str], augments: list[str], seeds: int, metric: str) -> str:
    lines = ["| data | " + " | ".join(augments) + " |", "|---" * (len(augments) + 1) + "|"]
    for data in datas:
        cells = []
        for augment in augments:
            values = [json.loads((run_dir(out, data, augment, s) / "eval.json").read_text())["values"][metric]
                      for s in range(seeds) if (run_dir(out, data, augment, s) / "eval.json").is_file()]
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.2f}{spread} (n={len(values)})" if values else "-")
        lines.append(f"| {data} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--augment", nargs="+", default=list(AUGMENTS), choices=list(AUGMENTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--g-iters", type=int, default=2000)
    parser.add_argument("--ada-kimg", type=float, default=10,
                        help="thousands of images over which ADA's p can go from 0 to 1 (the paper: 500 of 25,000; "
                             "here ~8%% of a 2,000-iteration run of batch 64, a similar fraction of training)")
    parser.add_argument("--ada-digits-transforms", default="xint,brightness,contrast",
                        help="ADA's transforms on the digits (model.ada_transforms): a flip or a 90-degree turn makes a "
                             "6 a 9, so they are left out there; the faces get all six (the paper's blit + colour)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra overrides for every run")
    args = parser.parse_args()
    out = args.out.resolve()
    common = ["model=dcgan", f"g_iters={args.g_iters}", "logger=none", "metrics.names=[fid,is]",
              f"callbacks.samples.every_g_iters={args.g_iters}", *args.set]
    times = out / "wall_times.json"  # seconds per run (whole process), over every call of the study
    seconds = json.loads(times.read_text()) if times.is_file() else {}
    started = time.time()
    for seed in range(args.seeds):  # seeds outermost: an interrupted study has every cell's first seeds
        for data in args.data:
            for augment in args.augment:
                extra = [f"model.ada_kimg={args.ada_kimg}"] if augment == "ada" else []
                if augment == "ada" and data.startswith("digits"):
                    extra.append(f"model.ada_transforms=[{args.ada_digits_transforms}]")
                directory = run_dir(out, data, augment, seed)
                if (directory / "eval.json").is_file():
                    continue
                seconds[str(directory.relative_to(out))] = train(
                    directory, [*DATA[data], *AUGMENTS[augment], *extra, *common, f"seed={seed}"])
    minutes = (time.time() - started) / 60
    report = "\n\n".join([
        f"Test-split FID (lower is better), mean ± std over seeds; DCGAN, {args.g_iters} generator iterations; "
        f"ADA kimg {args.ada_kimg}, transforms on the digits {args.ada_digits_transforms}; overrides "
        f"{' '.join(args.set) or 'none'}. Study wall time: {sum(seconds.values()) / 60:.1f} min over "
        f"{len(seconds)} runs (whole processes, one at a time; wall_times.json).",
        table(out, args.data, args.augment, args.seeds, "fid"),
        "Inception score / classifier score on the same samples (higher is better):",
        table(out, args.data, args.augment, args.seeds, "is"),
        "Published reference, CIFAR-10 FID10k from the DiffAugment repository (without -> with DiffAugment):",
        "\n".join(f"- {name}: {before} -> {after}" for name, before, after in PUBLISHED),
    ])
    (out / "results.md").write_text(report + "\n")
    times.write_text(json.dumps(seconds, indent=1) + "\n")
    with open(out / "results.txt", "w") as compare_out:
        subprocess.run([sys.executable, "-m", "gan.compare", str(out / "runs"), "--metric", "fid",
                        "--out", str(out / "report.html")], cwd=REPO, check=True, stdout=compare_out)
    print(report)
    print(f"study finished in {minutes:.1f} minutes")


if __name__ == "__main__":
    main()
