"""StyleGAN (Karras et al. 2019) and StyleGAN2 (Karras et al. 2020) on the shared loop: one model, the network
decides AdaIN or modulated convolutions (`gan.nets.stylegan`).

Phases per iteration, as stylegan2-ada-pytorch's training loop: `d` (non-saturating loss; R1 added when
`r1_every` = 1), `d_reg` (R1 alone every `r1_every` iterations, lazy), `g` (non-saturating loss), `g_reg` (path
length regularisation every `pl_every` iterations, lazy). The lazy phases' losses are multiplied by their interval
and their player's Adam lr and betas rescaled by c = k / (k + 1) (`gan.models.core`).

Every generator forward in training mixes styles: with probability `style_mixing`, the layers from a random
crossover on take their w from a second latent. The EMA of G has a half-life in images:
beta = 0.5 ** (batch_size / ema_half_life). Truncation (psi, layer cutoff) is for sampling only.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from gan.errors import UserError, non_negative, positive_float, positive_int
from gan.models.base import GANModule, augment_only
from gan.models.core import Batch, Phase, host_values
from gan.nets.stylegan import StyleGenerator

TRUNCATION_SWEEP = (1.0, 0.7, 0.5, 0.0, -0.5, -1.0)  # StyleGAN's figure 8
COARSE_RESOLUTION = 8  # the style-mixing grid's "coarse" styles: the layers up to 8x8 (StyleGAN, section 3.1)


class StyleGAN(GANModule):
    sampling_options = frozenset({"truncation", "path_length"})

    def __init__(
        self,
        generator: StyleGenerator,
        discriminator: nn.Module,
        g_optimizer: Callable,
        d_optimizer: Callable,
        latent_dim: int,
        name: str,
        batch_size: int,
        g_lr: float,
        d_lr: float,
        betas: Sequence[float],
        r1_gamma: float,
        r1_every: int,
        pl_weight: float,
        pl_every: int,
        pl_decay: float,
        pl_batch_shrink: int,
        style_mixing: float,
        ema_half_life: float,
        log_every: int,
        seed: int,
        compile: bool | str, compile_mode: str,
        channels_last: bool,
        **augment,  # model.augment and its settings (GANModule)
    ):
        if not isinstance(generator, StyleGenerator):
            raise UserError(f"model={name} needs a style-based generator (gan.nets.stylegan.StyleGenerator), got "
                            f"{type(generator).__name__}.")
        if latent_dim != generator.z_dim:
            raise UserError(f"model.latent_dim={latent_dim} differs from the generator's z_dim={generator.z_dim}: set "
                            f"model.latent_dim only (model.generator.latent_dim follows it).")
        batch_size = positive_int("model.batch_size", batch_size)
        ema_decay = 0.5 ** (batch_size / positive_float("model.ema_half_life", ema_half_life))
        super().__init__(generator, discriminator, g_optimizer, d_optimizer, latent_dim=latent_dim, name=name,
                         g_lr=g_lr, d_lr=d_lr, betas=betas, loss="non_saturating", regularizer="r1",
                         reg_weight=non_negative("model.r1_gamma", r1_gamma),
                         reg_every=positive_int("model.r1_every", r1_every), ema_decay=ema_decay,
                         log_every=log_every, seed=seed,
                         compile=compile, compile_mode=compile_mode, channels_last=channels_last,
                         **augment_only(name, augment))
        self.pl_weight, self.pl_every = non_negative("model.pl_weight", pl_weight), positive_int("model.pl_every", pl_every)
        if isinstance(pl_decay, bool) or not isinstance(pl_decay, (int, float)) or not 0 < pl_decay <= 1:
            raise UserError(f"model.pl_decay must lie in (0, 1] (the paper: 0.01, the weight of each new batch in the "
                            f"running mean of path lengths), got {pl_decay}.")
        self.pl_decay, self.pl_batch_shrink = float(pl_decay), positive_int("model.pl_batch_shrink", pl_batch_shrink)
        if isinstance(style_mixing, bool) or not isinstance(style_mixing, (int, float)) or not 0 <= style_mixing <= 1:
            raise UserError(f"model.style_mixing is a probability in [0, 1] (the papers: 0.9; 0 switches mixing "
                            f"off), got {style_mixing!r}.")
        self.style_mixing, self.ema_half_life = float(style_mixing), float(ema_half_life)
        self.register_buffer("pl_mean", torch.zeros(()))  # running mean of path lengths: checkpointed with the weights
        if self.pl_weight and self.pl_every > 1:  # lazy; with pl_every = 1 the term joins the generator's loss
            self.schedule(list(self.players.values()),
                          [*self.phases, Phase("g_reg", "generator", self.path_length_loss, every=self.pl_every, lazy=True)])
        self.crossover = min(self.generator.num_ws - 1, 2 * int(math.log2(COARSE_RESOLUTION)) - 2)

    # ---- training ---------------------------------------------------------------------------------
    def mapped(self, n: int) -> Tensor:
        """Training ws [n, num_ws, w_dim] with style mixing regularisation (stylegan2-ada-pytorch): one crossover
        per batch, uniform in [1, num_ws), used with probability `style_mixing`; w_avg follows the first latents."""
        mapping = self.generator.mapping
        ws = mapping(self.noise(n), update_w_avg=True)
        cutoff = host_values(torch.randint(1, ws.shape[1], (), generator=self.rng))
        mix = host_values(torch.rand((), generator=self.rng)) < self.style_mixing
        z2 = self.noise(n)
        if mix:
            ws = torch.cat([ws[:, :cutoff], mapping(z2)[:, cutoff:]], dim=1)
        return ws

    def fake_data(self, n: int) -> tuple[Tensor, None]:
        return self.generator.synthesis(self.mapped(n)), None

    def lazy_regularization(self, batch: Batch) -> Tensor:
        real = batch["x"]
        return self.regularization(real, None, real)  # R1 reads the real data only: no fakes to draw

    def generator_loss(self, batch: Batch) -> Tensor:
        loss = super().generator_loss(batch)
        if self.pl_weight and self.pl_every == 1:
            loss = loss + self.path_length_loss(batch)
        return loss

    @torch.compiler.disable  # model.compile=step: it differentiates twice, which a compiled graph cannot
    def path_length_loss(self, batch: Batch) -> Tensor:
        """StyleGAN2's path length regulariser: the norm of J_w^T y for images-shaped Gaussian y / sqrt(HW),
        pulled towards its running mean `pl_mean` (decay `pl_decay`), on batch / `pl_batch_shrink` samples."""
        n = max(1, batch["x"].shape[0] // self.pl_batch_shrink)
        ws = self.mapped(n)
        images = self.generator.synthesis(ws)
        y = self.draw(lambda m, rng: torch.randn(m, *images.shape[1:], generator=rng), n) / images[0, 0].numel() ** 0.5
        (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
        lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
        pl_mean = self.pl_mean.lerp(lengths.mean(), self.pl_decay)  # as stylegan2-ada-pytorch: not detached here
        self.pl_mean.copy_(pl_mean.detach())
        penalty = (lengths - pl_mean).square().mean()
        self._last.update(pl_penalty=penalty.detach(), pl_mean=self.pl_mean.clone())
        return self.pl_weight * penalty

    # ---- sampling ---------------------------------------------------------------------------------
    def style_generator(self, ema: bool | None = None) -> StyleGenerator:
        """The EMA generator (by default) or the trained one, for samples and metrics."""
        return self.ema_generator.module if ema is not False else self.generator

    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               z: Tensor | None = None, y: Tensor | None = None, truncation_psi: float = 1.0,
               truncation_cutoff: int | None = None, ws: Tensor | None = None,
               noise: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """{"x": images}; latents `z` (or styles `ws`) and noise maps, unless given, drawn from `generator`. Truncation pulls the first
        `truncation_cutoff` (null: all) layers' w towards the tracked mean w: w_avg + psi (w - w_avg)."""
        net = self.style_generator(ema)
        psi, cutoff = self.check_truncation(truncation_psi, truncation_cutoff, net.num_ws)
        was_training = net.training
        net.eval()
        if ws is None:
            if z is None:
                z = torch.randn(n, self.latent_dim, generator=generator)
            ws = net.mapping(z.to(self.device), psi, cutoff)
        x = net.synthesis(ws.to(self.device), noise or net.synthesis.draw_noise(len(ws), generator))
        net.train(was_training)
        return {"x": x}

    @staticmethod
    def check_truncation(psi, cutoff, num_ws: int) -> tuple[float, int | None]:
        if isinstance(psi, bool) or not isinstance(psi, (int, float)):
            raise UserError(f"truncation (psi) must be a number, e.g. 0.7 (1: no truncation), got {psi!r}.")
        if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int) or not 1 <= cutoff <= num_ws):
            raise UserError(f"truncation_cutoff must be null (every layer) or a number of layers in 1..{num_ws} "
                            f"(this generator has {num_ws} style inputs; the StyleGAN paper's figures truncate the "
                            f"first 8 of 18), got {cutoff!r}.")
        return float(psi), cutoff

    @torch.no_grad()
    def extra_grids(self, generator: torch.Generator, size: int = 64) -> dict[str, tuple[Tensor, int]]:
        """Named (images, columns) grids beside the fixed-latent one, from the EMA generator:

        - `style_mixing`: a header row of column sources and a header column of row sources; cell (i, j) takes the
          coarse styles (the layers up to 8x8) of row source i and the fine ones (and noise) of column source j;
        - `truncation`: one row per latent, one column per psi of TRUNCATION_SWEEP (every layer truncated).
        """
        net = self.style_generator()
        k = max(2, min(8, round(size**0.5) - 1))
        z_rows, z_columns = torch.randn(2, k, self.latent_dim, generator=generator)
        noise_rows, noise_columns = net.synthesis.draw_noise(k, generator), net.synthesis.draw_noise(k, generator)
        rows, columns = net.mapping(z_rows.to(self.device)), net.mapping(z_columns.to(self.device))
        mixed = columns[None].repeat(k, 1, 1, 1)  # [row, column, layer, w]
        mixed[:, :, :self.crossover] = rows[:, None, :self.crossover]
        row_images = self.sample(ws=rows, noise=noise_rows)["x"]
        column_images = self.sample(ws=columns, noise=noise_columns)["x"]
        mixed_images = self.sample(ws=mixed.flatten(0, 1), noise=[m.repeat(k, 1, 1, 1) for m in noise_columns])["x"]
        cells = [torch.full_like(row_images[:1], -1.0), column_images]  # the top-left corner is black
        for i in range(k):
            cells += [row_images[i:i + 1], mixed_images[i * k:(i + 1) * k]]
        sweep = torch.stack([self.sample(z=z_rows, noise=noise_rows, truncation_psi=psi)["x"]
                             for psi in TRUNCATION_SWEEP], dim=1)
        return {"style_mixing": (torch.cat(cells).float().cpu(), k + 1),
                "truncation": (sweep.flatten(0, 1).float().cpu(), len(TRUNCATION_SWEEP))}
