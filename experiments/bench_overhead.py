"""What `python -m gan.run` costs beside a plain PyTorch script of the same networks, timed as whole processes.

Both sides build the same networks, optimisers and loss from the same composed config (same init, n_critic,
packing, EMA) and draw the same kind of batches: the in-memory training split indexed by a seeded permutation.
The plain side is this file (`--plain N`): a hand-written loop, nothing else. The framework side is what a user
runs, `python -m gan.run g_iters=N metrics=none` with its default callbacks and loggers (progress bar,
metrics.jsonl, W&B offline, sample grids, checkpoints). Rounds alternate between the two so machine noise hits
both, and each side runs at two lengths N1 < N2:

- `wall`: the whole process, start to exit (imports, data, W&B start-up, training, shutdown);
- `train`: the training time the process reports itself (plain: its loop; gan.run: summary.json `train_seconds`);
- `marginal`: (wall(N2) - wall(N1)) / (N2 - N1), the cost of one more iteration seen from outside, start-up
  cancelled. The ratio of the marginals is the overhead a long run pays; `train / N` must agree with it, else
  something outside the timed loop (a background thread or process) is taking the machine.

    python experiments/bench_overhead.py                        # DCGAN on digits 16x16, 200 and 1000 iterations
    python experiments/bench_overhead.py --preset toy           # the toy GAN on grid: 3x128 MLPs, batch 256
    python experiments/bench_overhead.py --iters 300 1500 --rounds 5 model=wgan_gp logger=none
    python experiments/bench_overhead.py --plain 1000 [overrides]   # the plain loop alone; prints JSON
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRESETS = {"dcgan": ["data=digits"], "toy": ["experiment=toy_gan", "data=grid", "trainer.max_steps=-1"]}


def compose_config(g_iters: int, overrides: list[str], run_dir: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"g_iters={g_iters}", "metrics=none", f"paths.run_dir={run_dir}"])


def plain(g_iters: int, overrides: list[str]) -> dict:
    """A plain loop over the config's networks: n_critic D steps on fresh real batches (with the regulariser every
    reg_every of them, lazily scaled), then one G step on g_batch_multiple x the batch; class labels where the model
    is conditional; the EMA copy. It follows the config's device (trainer.accelerator: a GPU where there is one),
    trainer.precision (bf16-mixed: autocast, losses in float32), float32_matmul_precision and model.compile
    (networks: each network compiled; step: the D and G losses compiled as functions)."""
    sys.path.insert(0, str(REPO))
    import torch
    from hydra.utils import instantiate

    from gan.metrics.quantize import from_uint8

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(g_iters, overrides, tmp)
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.data)
    module = instantiate(cfg.model)
    if not hasattr(module, "discriminator"):  # model=vae
        return plain_vae(module, dm, g_iters, cfg.seed)
    cuda = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    module.to(device)
    G, D, loss, pack = module.generator, module.discriminator, module.loss, module.pack
    ema = getattr(module, "ema_generator", None)
    opt_g, opt_d = module.configure_optimizers()  # the model's players: generator, discriminator (lazy rescaling)
    split = dm.dataset("train")
    data, labels = split.data.to(device), split.labels.to(device) if module.conditional else None
    batch, latent, classes = dm.batch_size, module.latent_dim, module.num_classes
    penalty, weight, every = module.regularizer, module.reg_weight, module.reg_every
    bf16 = str(cfg.trainer.precision) == "bf16-mixed"  # else no autocast context at all: the plain loop stays lean
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    order_rng = torch.Generator().manual_seed(cfg.seed)
    order = torch.empty(0, dtype=torch.long)

    def real_batch():
        nonlocal order
        if len(order) < batch:
            order = torch.randperm(len(data), generator=order_rng).to(device)
        index, order = order[:batch], order[batch:]
        x = data[index]
        return (from_uint8(x) if x.dtype == torch.uint8 else x), (labels[index] if labels is not None else None)

    def fake_labels(n):
        return torch.randint(classes, (n,), device=device) if labels is not None else None

    def critic(x, y):
        return D(x.reshape(x.shape[0] // pack, pack * x.shape[1], *x.shape[2:]), y).float()

    def d_loss(real, y):
        with torch.no_grad(), autocast:
            y_fake = fake_labels(batch)
            fake = G(torch.randn(batch, latent, device=device), y_fake).float()
        with autocast:
            value = loss.d(critic(real, y), critic(fake, y_fake))
            if penalty is not None and weight and every == 1:
                value = value + weight * penalty(lambda x: critic(x, y), real, fake, order_rng)
        return value

    def lazy_penalty(real, y):  # its own D step every `every` iterations, weighted by `every`
        with torch.no_grad(), autocast:
            fake = G(torch.randn(batch, latent, device=device), fake_labels(batch)).float()
        with autocast:
            return every * weight * penalty(lambda x: critic(x, y), real, fake, order_rng)

    def g_loss():
        n = module.g_batch_multiple * batch
        with autocast:
            y_fake = fake_labels(n)
            return loss.g(critic(G(torch.randn(n, latent, device=device), y_fake).float(), y_fake))

    if cfg.model.compile in ("networks", True):
        G.compile(mode=cfg.model.compile_mode)
        D.compile(mode=cfg.model.compile_mode)
    elif cfg.model.compile == "step":
        d_loss, g_loss = torch.compile(d_loss, mode=cfg.model.compile_mode), torch.compile(g_loss, mode=cfg.model.compile_mode)

    start = time.perf_counter()
    for i in range(g_iters):
        for k in range(module.n_critic):
            real, y = real_batch()
            steps = [d_loss] + ([lazy_penalty] if k == 0 and penalty is not None and weight and every > 1
                                and i % every == 0 else [])
            for step in steps:
                d_value = step(real, y)
                opt_d.zero_grad(set_to_none=True)
                d_value.backward()
                opt_d.step()
        D.requires_grad_(False)
        g_value = g_loss()
        opt_g.zero_grad(set_to_none=True)
        g_value.backward()
        opt_g.step()
        D.requires_grad_(True)
        if ema is not None:
            ema.update_parameters(G)
    result = {"g_iters": g_iters, "d_loss": d_value.item(), "g_loss": g_value.item()}  # .item() waits for the device
    return {"train_seconds": time.perf_counter() - start, **result}


def plain_vae(module, dm, g_iters: int, seed: int) -> dict:
    """The VAE's plain loop: encode a fresh real batch, one reparameterised sample, Bernoulli ELBO, one Adam step."""
    import torch
    import torch.nn.functional as F

    from gan.metrics.quantize import from_uint8

    (optimizer,) = module.configure_optimizers()  # one player: encoder and decoder
    data, batch = dm.dataset("train").data, dm.batch_size
    order_rng, order = torch.Generator().manual_seed(seed), torch.empty(0, dtype=torch.long)
    start = time.perf_counter()
    for _ in range(g_iters):
        if len(order) < batch:
            order = torch.randperm(len(data), generator=order_rng)
        x, order = data[order[:batch]], order[batch:]
        x = from_uint8(x) if x.dtype == torch.uint8 else x
        mean, log_var = module.encoder(x)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        recon = F.binary_cross_entropy_with_logits(module.decoder(z), (x + 1) / 2, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(1)
        loss = (recon + kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return {"train_seconds": time.perf_counter() - start, "g_iters": g_iters, "loss": loss.item()}


def timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed with exit code {done.returncode}:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def one_run(side: str, n: int, overrides: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, training seconds) of one process."""
    if side == "plain":
        wall, out = timed([sys.executable, __file__, "--plain", str(n), *overrides], env)
        return wall, json.loads(out.strip().splitlines()[-1])["train_seconds"]
    with tempfile.TemporaryDirectory() as tmp:
        wall, _ = timed([sys.executable, "-m", "gan.run", *overrides, f"g_iters={n}", "metrics=none",
                         f"hydra.run.dir={tmp}/run"], env)
        return wall, json.loads((Path(tmp) / "run" / "summary.json").read_text())["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="dcgan")
    parser.add_argument("--iters", type=int, nargs=2, default=[200, 1000], metavar=("N1", "N2"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain", type=int, metavar="N", help="run the plain loop alone for N iterations; print JSON")
    args, overrides = parser.parse_known_args()
    overrides = PRESETS[args.preset] + overrides
    if args.plain:
        print(json.dumps(plain(args.plain, overrides)))
        return
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    n1, n2 = sorted(args.iters)
    runs = {(side, n): [] for side in ("plain", "gan.run") for n in (n1, n2)}
    for r in range(args.rounds):
        for n in (n1, n2):
            for side in (("plain", "gan.run") if r % 2 == 0 else ("gan.run", "plain")):
                runs[side, n].append(one_run(side, n, overrides, env))
                wall, train = runs[side, n][-1]
                print(f"round {r + 1}  {side:<8} N={n:<5} wall {wall:7.2f} s  train {train:7.2f} s", flush=True)

    def median(side, n, k):
        return statistics.median(run[k] for run in runs[side, n])

    print(f"\npreset {args.preset}, overrides {overrides}, medians of {args.rounds} rounds")
    print(f"{'':10}{'wall N1':>10}{'wall N2':>10}{'train/N2':>12}{'marginal':>12}")
    marginal = {}
    for side in ("plain", "gan.run"):
        marginal[side] = (median(side, n2, 0) - median(side, n1, 0)) / (n2 - n1)
        print(f"{side:<10}{median(side, n1, 0):9.2f}s{median(side, n2, 0):9.2f}s"
              f"{median(side, n2, 1) / n2 * 1e3:9.2f} ms{marginal[side] * 1e3:9.2f} ms")
    print(f"gan.run / plain: marginal {marginal['gan.run'] / marginal['plain']:.3f}x, "
          f"train {median('gan.run', n2, 1) / median('plain', n2, 1):.3f}x, "
          f"wall at N2 {median('gan.run', n2, 0) / median('plain', n2, 0):.3f}x")


if __name__ == "__main__":
    main()
