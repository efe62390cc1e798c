"""Toy mode-collapse benchmark: every unconditional variant (and packing) on ring and grid, VEEGAN/PacGAN protocol.

    python experiments/toy_mode_collapse/run.py                 # all variants, ring + grid, 5 seeds, 2 processes
    python experiments/toy_mode_collapse/run.py --variants gan pacgan4 --data ring --seeds 1 --set model.g_lr=1e-4
    python experiments/toy_mode_collapse/run.py --variants tuned --jobs 1 --process --out results/tuned
    python experiments/toy_mode_collapse/run.py --variants gan fgan_pearson fgan_kl --data ring --seeds 1
    python experiments/toy_mode_collapse/run.py --variants objectives --out results/objectives
    python experiments/toy_mode_collapse/run.py --variants objectives --out results/objectives --reuse  # finish it

Each run is the framework's own training (`gan.train.train` on the composed config `experiment=toy_<variant>`,
logger=none, no in-training evaluation); the weights at the end of training (no checkpoint selection) then draw
2,500 samples, scored by `gan.metrics.toy`: modes captured, % high quality (within 3 std of the nearest mean)
and the reverse KL of the mode histogram. The table (mean +/- standard error over seeds) is written to
results/results.md and results/results.csv beside the published rows of VEEGAN and PacGAN Table 1, with the
per-run numbers in results/runs.csv and one scatter PNG per variant (seed 0, both mixtures).

The default variants share one budget of network updates (the equal-budget table). `tuned` is the recipe tuned to
beat PacGAN4's published row within 5 minutes per run (conf/experiment/toy_tuned.yaml), with its own, larger
budget. `--process` runs each job as a whole `python -m gan.run experiment=... data=... seed=...` process (the
command a user types, with its default logger and metrics) and records that process's wall time (`wall_s`);
run it with `--jobs 1` so the times are those of a run alone on a core.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from gan.losses import F_DIVERGENCES  # noqa: E402

# variant label -> experiment config (conf/experiment/toy_<name>.yaml), or (experiment config, its overrides)
VARIANTS = {
    "gan": "toy_gan",
    "pacgan4": "toy_pacgan",
    "lsgan": "toy_lsgan",
    "wgan": "toy_wgan",
    "wgan_gp": "toy_wgan_gp",
    "sngan": "toy_sngan",
    "tuned": "toy_tuned",  # not an equal-budget variant: the recipe that beats PacGAN4's row, with its own budget
    # f-GAN (Nowozin et al. 2016): the gan variant with an f-divergence as its loss (fgan_gan: its D loss is gan's)
    **{f"fgan_{name.removeprefix('f_')}": ("toy_gan", f"model.loss={name}") for name in F_DIVERGENCES},
    # the lectures' objectives and tricks, each one override of the gan variant (tests/test_objectives.py)
    "rsgan": ("toy_gan", "model.loss=relativistic"),
    "rasgan": ("toy_gan", "model.loss=relativistic_average"),
    "ralsgan": ("toy_gan", "model.loss=relativistic_average_ls"),
    "rahinge": ("toy_gan", "model.loss=relativistic_average_hinge"),
    # at toy_gan's lr 3e-3 the unrolled Adam steps overshoot (seed 0: 0-3 modes, also with 1 step); the paper's lr is
    # 1e-4, and 5e-4 trains in the budget (seed 0, ring: 8 modes, 88% high quality)
    "unrolled5": ("toy_gan", "model.unroll_steps=5", "model.g_lr=5e-4", "model.d_lr=5e-4"),
    "unrolled10": ("toy_gan", "model.unroll_steps=10", "model.g_lr=5e-4", "model.d_lr=5e-4"),
    "feature_matching": ("toy_gan", "model.feature_matching=true"),
    # 5 kernels: the layer costs O(batch^2 x kernels x 5); Improved GAN's 100 (for images) take ~10 min a run here
    "minibatch_disc": ("toy_gan", "model.discriminator.minibatch_kernels=5"),
    "historical_avg": ("toy_gan", "model.historical_averaging=0.01"),
    "label_smoothing": ("toy_gan", "model.label_smoothing=0.1"),
    "ali": "toy_ali",  # BiGAN/ALI: an encoder player and a D of (x, z) pairs
    "bigan": "toy_bigan",
}
EQUAL_BUDGET = ("gan", "pacgan4", "lsgan", "wgan", "wgan_gp", "sngan")  # the default table
OBJECTIVES = ("rsgan", "rasgan", "ralsgan", "rahinge", "unrolled5", "unrolled10", "feature_matching", "minibatch_disc",
              "historical_avg", "label_smoothing", "ali", "bigan")  # --variants objectives
DATASETS = ("ring", "grid")
EVAL_SEED = 10_000  # evaluation samples come from seed EVAL_SEED + run seed, never from the training stream
# (modes, % high quality, reverse KL or None) as published. VEEGAN Table 1: akashgit/VEEGAN's tab.png (no reverse KL);
# PacGAN Table 1 (10 trials): fjxmlzn/PacGAN's synthetic_data_experiments/results/Table1.png.
PUBLISHED = [
    ("GAN (VEEGAN Table 1)", {"ring": (1, 99.3, None), "grid": (3.3, 0.5, None)}),
    ("ALI (VEEGAN Table 1)", {"ring": (2.8, 0.13, None), "grid": (15.8, 1.6, None)}),
    ("Unrolled GAN (VEEGAN Table 1)", {"ring": (7.6, 35.6, None), "grid": (23.6, 16.0, None)}),
    ("VEEGAN (VEEGAN Table 1)", {"ring": (8, 52.9, None), "grid": (24.6, 40.0, None)}),
    ("GAN (PacGAN Table 1)", {"ring": (6.3, 98.2, 0.45), "grid": (17.3, 94.8, 0.70)}),
    ("ALI (PacGAN Table 1)", {"ring": (6.6, 97.6, 0.36), "grid": (24.1, 95.7, 0.14)}),
    ("PacGAN4 (PacGAN Table 1)", {"ring": (7.8, 95.9, 0.07), "grid": (24.8, 93.6, 0.04)}),
]
TARGET = dict(PUBLISHED)["PacGAN4 (PacGAN Table 1)"]
METRICS = ("modes", "high_quality", "reverse_kl")
TIME_LIMIT_S = 300


def variant_overrides(variant: str) -> list[str]:
    experiment, *overrides = (VARIANTS[variant],) if isinstance(VARIANTS[variant], str) else VARIANTS[variant]
    return [f"experiment={experiment}", *overrides]


def run_one(job: dict) -> dict:
    """Train one (variant, data, seed) through the real config and score its final generator."""
    import torch

    torch.set_num_threads(1)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from hydra import compose, initialize_config_dir

    from gan.train import train

    run_dir = Path(job["work_dir"]) / f"{job['variant']}_{job['data']}_s{job['seed']}"
    if job["process"]:
        return run_process(job, run_dir)
    overrides = [*variant_overrides(job["variant"]), f"data={job['data']}", f"seed={job['seed']}",
                 "logger=none", "metrics=none", f"paths.run_dir={run_dir}", "callbacks.progress_bar=null",
                 "callbacks.samples=null", "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                 *job["overrides"]]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if job["reuse"] and finished(run_dir, cfg):
        return score(job, run_dir, None) | {"reused": True}
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        held = ("an unfinished run or one of another config (--set, code defaults)" if job["reuse"] else
                "a run (--reuse scores it instead, if it is a completed run of this config)")
        raise RuntimeError(f"{run_dir} already holds {held}, so it is neither scored nor overwritten. Delete that "
                           f"directory to train the run again, or pass another --work-dir.")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        started = time.perf_counter()
        train(cfg)
        seconds = time.perf_counter() - started
    return score(job, run_dir, seconds)


def finished(run_dir: Path, cfg) -> bool:
    """Whether run_dir holds a completed run of exactly this config (--reuse scores it instead of training again)."""
    import json

    from omegaconf import OmegaConf

    summary, saved = run_dir / "summary.json", run_dir / "config.yaml"
    if not (summary.is_file() and saved.is_file()) or json.loads(summary.read_text()).get("status") != "completed":
        return False
    return OmegaConf.to_container(OmegaConf.load(saved)) == OmegaConf.to_container(cfg, resolve=True)


def run_process(job: dict, run_dir: Path) -> dict:
    """The job as the command a user types, `python -m gan.run experiment=<variant> data=<data> seed=<seed>` (its
    own run directory added), timed from outside: `wall_s` is the whole process, start-up and evaluation included."""
    command = [sys.executable, "-m", "gan.run", *variant_overrides(job["variant"]), f"data={job['data']}",
               f"seed={job['seed']}", f"hydra.run.dir={run_dir}", *job["overrides"]]
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        started = time.perf_counter()
        result = subprocess.run(command, check=False, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {result.returncode}; see {log.name}")
    return score(job, run_dir, None, wall)


def score(job: dict, run_dir: Path, seconds: float | None, wall: float | None = None) -> dict:
    """Score the final weights of a finished run (its EMA generator where it keeps one) on fresh samples."""
    import torch

    from gan.data.toy import mixture
    from gan.metrics.toy import NUM_SAMPLES, toy_metrics
    from gan.train import load_checkpoint

    _, _, module = load_checkpoint(run_dir)
    if seconds is None:  # the training time the run recorded itself (train_seconds, checkpointed)
        seconds = module.train_seconds
    samples = module.sample(NUM_SAMPLES, generator=torch.Generator().manual_seed(EVAL_SEED + job["seed"]))["x"]
    means, std = mixture(job["data"])
    values = toy_metrics(samples, means, std)
    if job["seed"] == job["scatter_seed"]:
        torch.save(samples.cpu(), run_dir / "eval_samples.pt")
    updates = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]  # optimiser steps
    row = {"variant": job["variant"], "data": job["data"], "seed": job["seed"], **values,
           "g_iters": module.g_iter, "updates": updates, "train_s": round(seconds, 1)}
    if wall is not None:
        row["wall_s"] = round(wall, 1)
    return {**row, "run_dir": str(run_dir)}


def summarise(rows: list[dict], variants: list[str], datasets: list[str]) -> list[dict]:
    table = []
    for variant in variants:
        for data in datasets:
            runs = [r for r in rows if r["variant"] == variant and r["data"] == data]
            if not runs:
                continue
            entry = {"variant": variant, "data": data, "seeds": len(runs), "updates": runs[0]["updates"],
                     "max_train_s": max(r["train_s"] for r in runs)}
            if all("wall_s" in r for r in runs):
                entry["max_wall_s"] = max(r["wall_s"] for r in runs)
            for metric in METRICS:
                values = [float(r[metric]) for r in runs]
                mean = sum(values) / len(values)
                se = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
                      if len(values) > 1 else float("nan"))
                entry[f"{metric}_mean"], entry[f"{metric}_se"] = mean, se
            table.append(entry)
    return table


def beats_target(entry: dict) -> bool:
    modes, quality, _ = TARGET[entry["data"]]
    return entry["modes_mean"] > modes and entry["high_quality_mean"] > quality


def markdown(table: list[dict], datasets: list[str], seeds: int) -> str:
    def cell(entry, metric, digits):
        if entry is None:
            return "—"
        se = entry[f"{metric}_se"]
        return f"{entry[f'{metric}_mean']:.{digits}f} ± {se:.{digits}f}" if se == se else f"{entry[f'{metric}_mean']:.{digits}f}"

    walls = any("max_wall_s" in e for e in table)  # whole-process wall times (--process)
    header = "| variant | " + " | ".join(f"{d}: modes | {d}: % high quality | {d}: reverse KL" for d in datasets)
    lines = [header + " | updates (D+G) | max train s |" + (" max wall s |" if walls else ""),
             "|---" * (1 + 3 * len(datasets) + 2 + walls) + "|"]
    variants = list(dict.fromkeys(e["variant"] for e in table))
    for variant in variants:
        entries = {e["data"]: e for e in table if e["variant"] == variant}
        cells = []
        for data in datasets:
            entry = entries.get(data)
            mark = " **✓**" if entry is not None and beats_target(entry) else ""
            cells += [cell(entry, "modes", 2) + mark, cell(entry, "high_quality", 1), cell(entry, "reverse_kl", 3)]
        any_entry = next(iter(entries.values()))
        max_s = max(e["max_train_s"] for e in entries.values())
        wall = (f" {max(e.get('max_wall_s', float('nan')) for e in entries.values()):.0f} |" if walls else "")
        lines.append(f"| {variant} (this framework) | " + " | ".join(cells) + f" | {any_entry['updates']} | {max_s:.0f} |"
                     + wall)
    for name, published in PUBLISHED:
        cells = []
        for data in datasets:
            modes, quality, reverse_kl = published[data]
            cells += [f"{modes}", f"{quality}", "—" if reverse_kl is None else f"{reverse_kl}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " | — | — |" + (" — |" if walls else ""))
    return "\n".join(lines) + (
        f"\n\nMean ± standard error over {seeds} seeds; 2,500 samples of the final generator per run. "
        f"✓: more modes and more high-quality samples than PacGAN4's published row "
        f"(ring {TARGET['ring'][0]} / {TARGET['ring'][1]}%, grid {TARGET['grid'][0]} / {TARGET['grid'][1]}%)."
        + (" Max wall s: the whole `python -m gan.run` process, timed from outside." if walls else "") + "\n")


def scatter(rows: list[dict], variant: str, datasets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from gan.data.toy import ToyDataModule

    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 4.2), dpi=100, squeeze=False)
    for ax, data in zip(axes[0], datasets):
        run = next((r for r in sorted(rows, key=lambda r: r["seed"])
                    if r["variant"] == variant and r["data"] == data
                    and (Path(r["run_dir"]) / "eval_samples.pt").is_file()), None)
        if run is None:
            ax.set_axis_off()
            continue
        real = ToyDataModule(data, [2], None, 1).dataset("test").data[:2500].numpy()
        fake = torch.load(Path(run["run_dir"]) / "eval_samples.pt").numpy()
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.6", label="real")
        ax.scatter(fake[:, 0], fake[:, 1], s=2, c="tab:blue", alpha=0.5, label="generated")
        ax.set_title(f"{variant} on {data} (seed {run['seed']}): {run['modes']} modes, "
                     f"{float(run['high_quality']):.1f}% HQ", fontsize=8)
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(EQUAL_BUDGET), choices=[*VARIANTS, "objectives"],
                        help="default: the equal-budget variants (tuned, the recipe with its own budget, on request); "
                             "objectives: the relativistic, unrolled and Improved GAN variants")
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per variant and dataset (default 5)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one CPU thread each (default 2)")
    parser.add_argument("--process", action="store_true",
                        help="run each job as a whole `python -m gan.run` process and record its wall time")
    parser.add_argument("--reuse", action="store_true",
                        help="score the completed runs in --work-dir whose config is this job's; train the rest")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides, all runs")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="table, CSVs and PNGs go here")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "toy_mode_collapse",
                        help="run directories (checkpoints, configs)")
    args = parser.parse_args(argv)
    args.variants = [v for group in args.variants for v in (OBJECTIVES if group == "objectives" else [group])]

    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [dict(variant=v, data=d, seed=s, work_dir=str(args.work_dir), overrides=args.set, scatter_seed=0,
                 process=args.process, reuse=args.reuse)
            for s in range(args.seeds) for v in args.variants for d in args.data]
    started = time.perf_counter()
    rows = []
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        for row in pool.map(run_one, jobs):
            rows.append(row)
            print(f"[{time.perf_counter() - started:6.0f}s] {row['variant']:>8} {row['data']:>4} seed {row['seed']}: "
                  f"modes {row['modes']:>2}  high quality {row['high_quality']:5.1f}%  reverse KL "
                  f"{row['reverse_kl']:.3f}  ({row['train_s']:.0f}s"
                  + (f", {row['wall_s']:.0f}s wall" if "wall_s" in row else "") + f", {row['updates']} updates)", flush=True)
    table = summarise(rows, args.variants, args.data)
    reused = sum(r.pop("reused", False) for r in rows)
    write_csv(args.out / "runs.csv", [{k: v for k, v in r.items() if k != "run_dir"} for r in rows])
    write_csv(args.out / "results.csv", table)
    text = markdown(table, args.data, args.seeds)
    (args.out / "results.md").write_text(
        "# Toy mode-collapse benchmark\n\n" + text +
        f"\nCommand: `python experiments/toy_mode_collapse/run.py {' '.join(argv or sys.argv[1:])}`; "
        f"total wall time {time.perf_counter() - started:.0f} s with {args.jobs} parallel runs"
        + (f"; {reused} of the {len(rows)} runs were trained by an earlier call and only scored in this one (--reuse), "
           f"their train s as they recorded it" if reused else "") + ".\n")
    for variant in args.variants:
        scatter(rows, variant, args.data, args.out / f"scatter_{variant}.png")
    print("\n" + text)
    best = [e for e in table if beats_target(e)]
    over = [r for r in rows if max(r["train_s"], r.get("wall_s", 0)) > TIME_LIMIT_S]
    if over:
        print(f"{len(over)} runs took longer than {TIME_LIMIT_S} s.")
    print(f"Variants beating PacGAN4's row: {sorted({(e['variant'], e['data']) for e in best}) or 'none'}")


if __name__ == "__main__":
    main()
