"""How much the framework adds to a GAN training step, side by side with a plain PyTorch loop.

Both train the same DCGAN networks (same init, batch, optimisers, loss, n_critic) on the same data
for the same number of generator iterations; the framework runs with its default callbacks and
logging (progress bar, JSONL + W&B offline logging, sample grids, checkpoints). Rounds alternate
between the two so machine noise hits both; the median per-iteration time is compared.

    python experiments/bench_overhead.py [--g-iters 500] [--rounds 3] [key=value overrides ...]

`--plain-only N` trains the plain loop alone for N iterations and exits, so that it can be timed as a whole
process beside `python -m gan.run g_iters=N metrics=none` (e.g. with /usr/bin/time, runs alternating).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gan.train import train  # noqa: E402


def config(run_dir: str, g_iters: int, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"g_iters={g_iters}", "metrics=none", *overrides, f"paths.run_dir={run_dir}"])


def plain_loop(cfg) -> float:
    """Seconds per generator iteration of a hand-written loop over the same objects."""
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.data)
    module = instantiate(cfg.model)
    G, D, loss = module.generator, module.discriminator, module.loss
    opt_g, opt_d = module.configure_optimizers()  # the model's players: generator, discriminator
    loader = DataLoader(dm.dataset("train"), batch_size=dm.batch_size, shuffle=True, drop_last=True)
    batches, d_steps, g_iters = iter(loader), 0, 0
    start = time.perf_counter()
    while g_iters < cfg.g_iters:
        try:
            real, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            real, _ = next(batches)
        n = real.shape[0]
        with torch.no_grad():
            fake = G(torch.randn(n, module.latent_dim))
        d_loss = loss.d(D(real), D(fake))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d_steps += 1
        if d_steps % module.n_critic:
            continue
        for p in D.parameters():
            p.requires_grad_(False)
        g_loss = loss.g(D(G(torch.randn(n, module.latent_dim))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        for p in D.parameters():
            p.requires_grad_(True)
        g_iters += 1
    return (time.perf_counter() - start) / cfg.g_iters


def framework(cfg) -> float:
    """Seconds per generator iteration inside `trainer.fit`, as the module measures it (start-up excluded)."""
    train(cfg)
    return json.loads((Path(cfg.paths.run_dir) / "summary.json").read_text())["train_seconds"] / cfg.g_iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--g-iters", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain-only", type=int, metavar="N", help="only the plain loop, N iterations, then exit")
    args, overrides = parser.parse_known_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    if args.plain_only:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"plain {plain_loop(config(str(Path(tmp) / 'run'), args.plain_only, overrides)) * 1e3:.2f} ms/iter")
        return
    plain, fw = [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config(str(Path(tmp) / "run"), args.g_iters, overrides)
            plain.append(plain_loop(cfg))
            fw.append(framework(cfg))
        print(f"round {r + 1}: plain {plain[-1] * 1e3:.2f} ms/iter, framework {fw[-1] * 1e3:.2f} ms/iter", flush=True)
    p, f = statistics.median(plain), statistics.median(fw)
    print(f"\nmodel={cfg.model.name} data={cfg.data.name} image_size={cfg.data.get('image_size')} "
          f"batch={cfg.data.batch_size} n_critic={cfg.model.n_critic} g_iters={args.g_iters} threads={torch.get_num_threads()}")
    print(f"plain PyTorch loop: {p * 1e3:.2f} ms per generator iteration (median of {args.rounds})")
    print(f"framework:          {f * 1e3:.2f} ms per generator iteration (median of {args.rounds})")
    print(f"overhead: {100 * (f / p - 1):+.1f}%  (target: at most +5%)")


if __name__ == "__main__":
    main()
