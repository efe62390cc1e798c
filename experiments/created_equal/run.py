"""A small "Are GANs Created Equal?" study on digits (Lucic et al. 2018), end to end with the framework.

For each model: a random hyperparameter search of K trials (hparams_search=digits_random, Optuna's
RandomSampler, the same budget for every trial), then the best trial's hyperparameters retrained
with S further seeds. Every run scores the classifier-backbone FID on the validation split during
training (selection) and reports it on the test split with fresh samples at the end. Finally
`gan.compare` writes the table, the per-model distributions and the budget curve.

    python experiments/created_equal/run.py [--models gan dcgan lsgan] [--trials 3] [--seeds 1]
        [--g-iters 400] [--out experiments/created_equal]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# The same DCGAN networks for every model, as in Lucic et al., so the comparison is about the objective.
MODEL_OVERRIDES = {
    "dcgan": [],
    "lsgan": [],
    "wgan_gp": ["model.arch=dcgan"],
    "sngan": ["model.arch=dcgan"],
    "gan": [],
}


def gan_run(*args: str) -> None:
    command = [sys.executable, "-m", "gan.run", *args]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gan", "dcgan", "lsgan"])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1, help="extra seeds for the best trial of each model")
    parser.add_argument("--g-iters", type=int, default=400)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    runs = (args.out / "runs").resolve()
    common = [f"g_iters={args.g_iters}", "logger=none", "data=digits", "metrics.every_n_g_iters=200",
              "metrics.num_samples=1000", "metrics.final_num_samples=2000", "callbacks.samples.every_g_iters=200",
              "callbacks.checkpoint.every_g_iters=600"]
    started = time.time()
    for model in args.models:
        search = runs / model / "search"
        gan_run("hparams_search=digits_random", f"model={model}", *MODEL_OVERRIDES[model], *common,
                f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweep.dir={search}")
        best = yaml.safe_load((search / "optimization_results.yaml").read_text())["best_params"]
        seeds = ",".join(str(s) for s in range(1, args.seeds + 1))
        gan_run("-m", f"model={model}", *MODEL_OVERRIDES[model], *common, f"seed={seeds}",
                *(f"{k}={v}" for k, v in best.items()), f"hydra.sweep.dir={runs / model / 'seeds'}")
    minutes = (time.time() - started) / 60
    subprocess.run([sys.executable, "-m", "gan.compare", str(runs), "--metric", "fid",
                    "--out", str(args.out / "report.html")], cwd=REPO, check=True,
                   stdout=open(args.out / "results.txt", "w"))
    print((args.out / "results.txt").read_text())
    print(f"study finished in {minutes:.1f} minutes")


if __name__ == "__main__":
    main()
