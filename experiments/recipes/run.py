"""Faithful recipes, re-measured: each corrected default beside the previous one, at the same budget.

Every row trains the same model on the same data for the same number of generator iterations twice: once with
today's defaults (the reference code's recipe) and once with the overrides that restore the previous defaults
(named in each model's YAML). Each run selects its checkpoint on the validation split and reports on the test
split with fresh samples (`eval.json`), beside the same metric on real data (`ref_real/...`: the ceiling).

    python experiments/recipes/run.py [--rows sngan wgan_gp projection pix2pix cyclegan scratchgan sngan_constant_lr]
        [--seed 0] [--out DIR]

A run whose eval.json exists is not repeated, so an interrupted study continues where it stopped. The table goes to
results.md, `gan.compare`'s report of the image rows to report.html.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# The ResNet models at a CPU size on the 16 px digits: 32 channels in G and D (the papers: 128-256), 500 iterations.
RESNET_CPU = ["data=digits", "g_iters=500", "model.generator.resnet.width=32", "model.discriminator.resnet.width=32"]
IMAGE_METRICS = [("fid", "FID", False), ("is", "classifier score", True)]
# row: (model overrides shared by both runs, the previous defaults' overrides, metrics (key, label, higher is better))
ROWS = {
    "sngan": (["model=sngan", *RESNET_CPU],
              ["model.lr_decay=0", "model.g_batch_multiple=1", "model.discriminator.resnet.output_bias=true"],
              IMAGE_METRICS),
    "wgan_gp": (["model=wgan_gp", *RESNET_CPU],
                ["model.g_lr=1e-4", "model.d_lr=1e-4", "model.lr_decay=0", "model.g_batch_multiple=1",
                 "model.discriminator.resnet.pooling=sum"],
                IMAGE_METRICS),
    "projection": (["model=projection", *RESNET_CPU],
                   ["model.lr_decay=0", "model.g_batch_multiple=1", "model.discriminator.resnet.output_bias=true"],
                   IMAGE_METRICS),
    # conf/scale/pix2pix_digits_edges.yaml keeps the previous eval-mode batch norm (its table was measured so).
    "pix2pix": (["model=pix2pix", "data=digits_edges", "model.eval_batch_stats=true"], ["model.eval_batch_stats=false"],
                [("l1", "L1", False), ("psnr", "PSNR", True), ("fid", "FID", False), ("class_accuracy", "class acc.", True)]),
    # conf/scale/cyclegan_digits_styles.yaml already decays over the second half (lr_decay 0.5), the new default.
    "cyclegan": (["model=cyclegan", "data=digits_styles"], ["model.lr_decay=0"],
                 [("class_accuracy_ab", "class acc. A->B", True), ("class_accuracy_ba", "class acc. B->A", True),
                  ("fid_ab", "FID A->B", False), ("fid_ba", "FID B->A", False)]),
    # conf/scale/scratchgan_oracle.yaml keeps the previous values; the reference's are scratchgan.yaml's.
    "scratchgan": (["model=scratchgan", "data=oracle", "scale=none", "data.vocab_size=1000", "data.batch_size=256",
                    "g_iters=500", "metrics.every_n_g_iters=100", "callbacks.samples.every_g_iters=100",
                    "callbacks.checkpoint.every_g_iters=100"],
                   ["model.g_lr=1e-3", "model.d_lr=1e-3", "model.baseline_decay=0.99", "model.baseline_per_position=true",
                    "model.baseline_after_update=false", "model.d_l2=2e-4", "model.d_l2_biases=false",
                    "model.grad_clip=5.0", "model.discriminator.layer_norm=false", "model.discriminator.position_dim=0"],
                   [("nll_oracle", "NLL_oracle", False), ("nll_test", "NLL_test", False)]),
    # SNGAN's G batch of 2x D's and bias-free output layer alone, both runs at a constant lr.
    "sngan_constant_lr": (["model=sngan", *RESNET_CPU, "model.lr_decay=0"],
                          ["model.g_batch_multiple=1", "model.discriminator.resnet.output_bias=true"], IMAGE_METRICS),
}


def run_dir(out: Path, row: str, recipe: str, seed: int) -> Path:
    return out / "runs" / row / recipe / f"s{seed}"


def train(directory: Path, overrides: list[str]) -> float:
    """One `python -m gan.run`; returns its wall time in seconds."""
    command = [sys.executable, "-m", "gan.run", *overrides, f"hydra.run.dir={directory}"]
    print("$", " ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "WANDB_MODE": "offline"})
    return time.time() - started


def train_missing(out: Path, runs: dict[Path, list[str]]) -> dict[str, float]:
    """Train each run (directory -> overrides) that has no eval.json yet. Returns the whole-process wall times, in
    seconds by directory relative to out, over every call of the study (kept in out/wall_times.json)."""
    times = out / "wall_times.json"
    seconds = json.loads(times.read_text()) if times.is_file() else {}
    for directory, overrides in runs.items():
        if not (directory / "eval.json").is_file():
            seconds[str(directory.relative_to(out))] = train(directory, overrides)
            times.write_text(json.dumps(seconds, indent=1) + "\n")
    return seconds


def compare(out: Path, runs: list[str]) -> None:
    """gan.compare's table of the runs to out/results.txt, its report to out/report.html (FID selects and ranks)."""
    with open(out / "results.txt", "w") as compare_out:
        subprocess.run([sys.executable, "-m", "gan.compare", *runs, "--metric", "fid",
                        "--out", str(out / "report.html")], cwd=REPO, check=True, stdout=compare_out)


def cell(values: dict, key: str) -> str:
    value, real = values.get(key), values.get(f"ref_real/{key}")
    if value is None:
        return "-"
    return f"{value:.4g}" + (f" (real {real:.4g})" if real is not None else "")


def table(out: Path, seed: int, seconds: dict) -> str:
    """Every row of ROWS whose two runs have finished."""
    lines = ["| model | metric | reference recipe (today's default) | previous default | better |", "|---|---|---|---|---|"]
    for row in ROWS:
        runs = {recipe: run_dir(out, row, recipe, seed) / "eval.json" for recipe in ("reference", "previous")}
        if not all(path.is_file() for path in runs.values()):
            continue
        values = {recipe: json.loads(path.read_text())["values"] for recipe, path in runs.items()}
        for key, label, higher in ROWS[row][2]:
            new, old = values["reference"].get(key), values["previous"].get(key)
            better = "-" if new is None or old is None else (
                "reference" if (new > old) == higher and new != old else "previous" if new != old else "tie")
            lines.append(f"| {row} | {label} | {cell(values['reference'], key)} | {cell(values['previous'], key)} | {better} |")
        times = [seconds.get(str(run_dir(out, row, recipe, seed).relative_to(out))) for recipe in ("reference", "previous")]
        if all(times):
            lines.append(f"| {row} | whole process | {times[0]:.0f} s | {times[1]:.0f} s | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    out = args.out.resolve()
    seconds = train_missing(out, {
        run_dir(out, row, recipe, args.seed): [*ROWS[row][0], *extra, "logger=none", f"seed={args.seed}",
                                               f"tags=[{recipe}]"]
        for row in args.rows for recipe, extra in (("reference", []), ("previous", ROWS[row][1]))})
    report = (f"Test split, checkpoint selected on val, seed {args.seed}; each row's two runs share every setting "
              f"but the recipe (experiments/recipes/run.py ROWS).\n\n" + table(out, args.seed, seconds))
    (out / "results.md").write_text(report + "\n")
    # gan.compare refuses to put runs scored under different protocols on one axis: the report holds the image rows
    # (one dataset, one backbone); the translation and text rows are in the table above.
    image_runs = [str(path) for row, (_, _, metrics) in ROWS.items() if metrics is IMAGE_METRICS
                  for path in sorted((out / "runs" / row).glob("*/s*")) if (path / "eval.json").is_file()]
    compare(out, image_runs)
    print(report)


if __name__ == "__main__":
    main()
