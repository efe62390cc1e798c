"""The training loop every GAN here shares, as a Lightning module with manual optimisation.

One `training_step` is one discriminator step on one real batch; every `n_critic`-th step is
followed by one generator step. Lightning's `global_step` counts both optimisers' steps, so the
module counts generator iterations (`g_iter`), discriminator steps and real images seen itself,
and logs against `g_iter`. All randomness of the loop comes from one seeded generator whose
state is checkpointed, so a resumed run continues bit for bit.
"""
from __future__ import annotations

import copy
import time
from functools import partial
from typing import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from gan.errors import DivergenceError, UserError
from gan.losses import get_loss, get_regularizer


class GANModule(pl.LightningModule):
    auxiliary_classifier = False  # whether the loop trains D's class head (ACGAN sets it)

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        g_optimizer: Callable,
        d_optimizer: Callable,
        latent_dim: int,
        name: str = "gan",
        loss: str = "non_saturating",
        regularizer: str | None = None,
        reg_weight: float = 0.0,
        n_critic: int = 1,
        pack: int = 1,
        ema_decay: float | None = None,
        num_classes: int | None = None,
        conditioning: str = "none",
        log_every: int = 25,
        grid_size: int = 64,
        seed: int = 0,
        **hparams,  # variant-specific hyperparameters, recorded but unused by the base loop
    ):
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.name, self.latent_dim = name, latent_dim
        self.loss = get_loss(loss)
        self.regularizer, self.reg_weight = get_regularizer(regularizer), reg_weight
        if n_critic < 1 or pack < 1:
            raise UserError(f"model.n_critic and model.pack must be positive integers, got n_critic={n_critic}, pack={pack}.")
        self.n_critic, self.pack = n_critic, pack
        self.conditional = conditioning != "none"
        if conditioning == "acgan" and not self.auxiliary_classifier:
            raise UserError("model.conditioning=acgan (an auxiliary classifier in D) is trained by the ACGAN model "
                            "only: use model=acgan, or another conditioning (concat, projection) with this model.")
        if self.conditional and pack > 1:
            raise UserError("Packing (model.pack > 1) is defined for unconditional GANs only; set model.pack=1 "
                            "or model.conditioning=none.")
        self.num_classes = num_classes if self.conditional else None
        self.ema_generator = copy.deepcopy(generator).requires_grad_(False) if ema_decay else None
        self.ema_decay = ema_decay
        self.log_every = log_every
        self.rng = torch.Generator().manual_seed(seed)
        # Fixed latents for sample grids; conditional grids show one row per class.
        if self.conditional:
            self.grid_columns = max(1, grid_size // num_classes)
            grid_labels = torch.arange(num_classes).repeat_interleave(self.grid_columns)
        else:
            self.grid_columns, grid_labels = max(1, round(grid_size**0.5)), None
        grid_n = len(grid_labels) if self.conditional else grid_size
        self.register_buffer("fixed_z", torch.randn(grid_n, latent_dim, generator=torch.Generator().manual_seed(seed + 1)))
        self.register_buffer("fixed_labels", grid_labels)
        self.g_iter = self.d_steps = self.images_seen = 0
        self.train_seconds = 0.0  # wall time spent training, summed over resumed segments
        self._last: dict[str, Tensor] = {}

    # ---- sampling ---------------------------------------------------------------------------------
    def noise(self, n: int) -> Tensor:
        """Latents from the module's own RNG. Under DDP every rank draws the global batch and keeps its
        slice, so the union over ranks is the single-process stream and the RNG state stays shared."""
        world, rank = self.trainer.world_size if self._trainer else 1, self.global_rank
        z = torch.randn(n * world, self.latent_dim, generator=self.rng)
        return z[rank * n:(rank + 1) * n].to(self.device)

    def random_labels(self, n: int) -> Tensor | None:
        if not self.conditional:
            return None
        world, rank = self.trainer.world_size if self._trainer else 1, self.global_rank
        y = torch.randint(self.num_classes, (n * world,), generator=self.rng)
        return y[rank * n:(rank + 1) * n].to(self.device)

    @torch.no_grad()
    def sample(self, n: int | None = None, labels: Tensor | None = None, ema: bool | None = None,
               z: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Samples in eval mode; by default from the EMA generator when there is one."""
        net = self.ema_generator if (ema is not False and self.ema_generator is not None) else self.generator
        if z is None:
            z = torch.randn(n, self.latent_dim, generator=generator)
        z = z.to(self.device)
        if self.conditional and labels is None:
            labels = torch.randint(self.num_classes, (z.shape[0],), generator=generator)
        labels = labels.to(self.device) if labels is not None else None
        was_training = net.training
        net.eval()
        out = net(z, labels)
        net.train(was_training)
        return out

    def sample_grid(self) -> Tensor:
        return self.sample(z=self.fixed_z, labels=self.fixed_labels)

    # ---- the loop ---------------------------------------------------------------------------------
    def configure_optimizers(self):
        return self.g_optimizer(self.generator.parameters()), self.d_optimizer(self.discriminator.parameters())

    def on_train_start(self) -> None:
        self._segment_start, self._seconds_at_start = time.perf_counter(), self.train_seconds

    def packed(self, x: Tensor) -> Tensor:
        """PacGAN packing: m consecutive samples stacked along channels become one input of D."""
        if self.pack == 1:
            return x
        return x.reshape(x.shape[0] // self.pack, self.pack * x.shape[1], *x.shape[2:])

    def critic(self, x: Tensor, y: Tensor | None) -> Tensor:
        """D's adversarial logits, with PacGAN packing: m samples are judged jointly as one."""
        return self.discriminator(self.packed(x), y)

    def discriminator_loss(self, real: Tensor, y_real: Tensor | None, fake: Tensor, y_fake: Tensor | None) -> Tensor:
        d_real, d_fake = self.critic(real, y_real), self.critic(fake, y_fake)
        loss = self.loss.d(d_real, d_fake)
        self._last.update(d_real=self.loss.d_output(d_real).mean(), d_fake=self.loss.d_output(d_fake).mean())
        return loss + self.regularization(real, y_real, fake)

    def regularization(self, real: Tensor, y_real: Tensor | None, fake: Tensor) -> Tensor | float:
        """reg_weight x the regulariser, on D's actual (packed) inputs: with packing, D's input gradient is
        taken with respect to the packed sample, and interpolates mix whole packs (PacGAN + WGAN-GP)."""
        if self.regularizer is None or not self.reg_weight:
            return 0.0
        penalty = self.regularizer(lambda x: self.discriminator(x, y_real), self.packed(real), self.packed(fake),
                                   self.rng)
        self._last["reg"] = penalty.detach()
        return self.reg_weight * penalty

    def generator_loss(self, fake: Tensor, y_fake: Tensor | None) -> Tensor:
        return self.loss.g(self.critic(fake, y_fake))

    def after_discriminator_step(self) -> None:
        """Hook for variants that constrain D after its update (WGAN's weight clipping)."""

    def training_step(self, batch, batch_idx):
        real, y_real = batch
        if real.shape[0] % self.pack:
            raise UserError(f"model.pack={self.pack} must divide the batch size data.batch_size={real.shape[0]}.")
        y_real = y_real if self.conditional else None
        opt_g, opt_d = self.optimizers()
        n = real.shape[0]

        with torch.no_grad():
            y_fake = self.random_labels(n)
            fake = self.generator(self.noise(n), y_fake)
        self._last["d_loss"] = self._update(opt_d, "discriminator",
                                            lambda: self.discriminator_loss(real, y_real, fake, y_fake))
        self.after_discriminator_step()
        self.d_steps += 1
        self.images_seen += n * (self.trainer.world_size if self._trainer else 1)
        if self.d_steps % self.n_critic:
            return

        def g_loss() -> Tensor:
            y = self.random_labels(n)
            return self.generator_loss(self.generator(self.noise(n), y), y)

        self._last["g_loss"] = self._update(opt_g, "generator", g_loss)
        self._update_ema()
        self.g_iter += 1
        self.train_seconds = self._seconds_at_start + time.perf_counter() - self._segment_start
        # ModelCheckpoint names periodic files by g_iter; the progress bar shows it too.
        self.log("g_iter", float(self.g_iter), prog_bar=True, logger=False)
        if self.g_iter % self.log_every == 0:
            self._log_training()

    def _update(self, optimizer, player: str, compute_loss: Callable[[], Tensor]) -> Tensor:
        """One optimiser step of one player; only that player's parameters take gradients."""
        with self.toggled_optimizer(optimizer):
            loss = compute_loss()
            self._check_finite(player, loss)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
        return loss.detach()

    def _log_training(self) -> None:
        values = {f"train/{k}": v.item() for k, v in self._last.items()}
        self.log_dict({k.split("/")[1]: v for k, v in values.items() if k.endswith("loss")}, prog_bar=True, logger=False)
        values.update(images_seen=self.images_seen, elapsed_s=round(self.train_seconds, 3))
        for logger in self.loggers:
            logger.log_metrics(values, step=self.g_iter)

    def _check_finite(self, phase: str, loss: Tensor) -> None:
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"Training diverged: the {phase} loss became {loss.item()} at generator iteration {self.g_iter} "
                f"(discriminator step {self.d_steps + 1}). The parameters were not updated with it, and the "
                f"checkpoints written before this step are kept. Lower the learning rates, add a regulariser "
                f"(model.regularizer=gp) or spectral normalisation (model.discriminator.norm=spectral), then "
                f"resume from the last good checkpoint or start again."
            )

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_generator is None:
            return
        for ema, live in zip(self.ema_generator.parameters(), self.generator.parameters()):
            ema.lerp_(live, 1.0 - self.ema_decay)
        for ema, live in zip(self.ema_generator.buffers(), self.generator.buffers()):
            ema.copy_(live)

    # ---- checkpoint state that Lightning does not know about -------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gan_progress"] = {
            "g_iter": self.g_iter, "d_steps": self.d_steps, "images_seen": self.images_seen,
            "train_seconds": self.train_seconds, "rng": self.rng.get_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        progress = checkpoint["gan_progress"]
        self.g_iter, self.d_steps = progress["g_iter"], progress["d_steps"]
        self.images_seen, self.train_seconds = progress["images_seen"], progress["train_seconds"]
        self.rng.set_state(progress["rng"])
