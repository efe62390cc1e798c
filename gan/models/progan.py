"""Progressive GAN (Karras et al. 2018): G and D grow from 4x4 to the image size while training.

The schedule counts real images shown: `stable_images` at 4x4, then each next resolution fades in linearly over
`fade_images` (alpha 0 -> 1) and stabilises for `stable_images` (the paper: 800k + 800k); the last one stays. The
resolution and alpha of an iteration are a function of the checkpointed `images_seen` at its start, so a resumed run
continues the schedule exactly; that count is also in the state dict, beside the weights it belongs to. D sees real
images at the current resolution (average-pooled), blended during a fade-in the way G's output is:
(1 - alpha) * the lower resolution enlarged + alpha * the current one. Loss: WGAN-GP (lambda = 10) plus the drift
term epsilon * E[D(x)^2] (epsilon = 0.001) that keeps the critic's values near zero; one critic step per generator
step; Adam(1e-3, 0, 0.99); samples from an EMA of G (decay 0.999).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import UserError, non_negative, positive_int
from gan.losses import gradient_penalty
from gan.models.base import GANModule, augment_only
from gan.models.core import Batch
from gan.nets.progan import lerp, upsample


def growth_stage(images: int, levels: int, fade_images: int, stable_images: int) -> tuple[int, float]:
    """(level, alpha) once `images` real images have been shown; level k is 4 * 2^k pixels."""
    if images < stable_images:
        return 0, 1.0
    level, into = divmod(images - stable_images, fade_images + stable_images)
    if level + 1 >= levels:
        return levels - 1, 1.0
    return level + 1, min(1.0, into / fade_images)


class ProGAN(GANModule):
    def __init__(self, generator: nn.Module, discriminator: nn.Module, g_optimizer: Callable, d_optimizer: Callable,
                 latent_dim: int, name: str, g_lr: float, d_lr: float, betas: Sequence[float] | None, n_critic: int,
                 gp_weight: float, drift_weight: float, fade_images: int, stable_images: int, ema_decay: float | None,
                 log_every: int, seed: int, compile: bool | str, compile_mode: str, channels_last: bool, **augment):
        super().__init__(generator, discriminator, g_optimizer, d_optimizer, latent_dim, name=name, g_lr=g_lr,
                         d_lr=d_lr, betas=betas, loss="wasserstein", n_critic=n_critic, ema_decay=ema_decay,
                         log_every=log_every, seed=seed,
                         compile=compile, compile_mode=compile_mode, channels_last=channels_last,
                         **augment_only(name, augment))
        self.gp_weight = non_negative("model.gp_weight", gp_weight)
        self.drift_weight = non_negative("model.drift_weight", drift_weight)
        self.fade_images = positive_int("model.fade_images", fade_images)
        self.stable_images = positive_int("model.stable_images", stable_images)
        self.levels = generator.levels
        self.stage_images = 0  # the images shown when the latest iteration began: the stage training and samples use
        if discriminator.levels != self.levels:
            raise UserError(f"The progressive generator grows through {generator.levels} resolutions but the "
                            f"discriminator through {discriminator.levels}: build both for the data's shape.")

    @property
    def stage(self) -> tuple[int, float]:
        """(level, alpha): what this iteration trains, and what samples show."""
        return growth_stage(self.stage_images, self.levels, self.fade_images, self.stable_images)

    def sampling_context(self) -> dict[str, float]:
        """What an evaluation records beside its values: the resolution and alpha its samples were drawn at."""
        level, alpha = self.stage
        return {"resolution": 4 * 2**level, "alpha": alpha}

    def get_extra_state(self) -> Tensor:
        """The stage belongs to the weights: whatever loads a state dict alone (the evaluation's best.ckpt, a
        checkpoint's weights) samples at the resolution and alpha those weights were trained at."""
        return torch.tensor(self.stage_images)

    def set_extra_state(self, state: Tensor) -> None:
        self.stage_images = int(state)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self.stage_images = self.images_seen
        level, alpha = self.stage
        self._last.update(resolution=torch.tensor(4 * 2**level), alpha=torch.tensor(alpha))
        super().training_step(batch, batch_idx)

    # ---- the networks at the current stage ---------------------------------------------------------------
    def fake_data(self, n: int) -> tuple[Tensor, None]:
        return self.generator(self.noise(n), None, *self.stage), None

    def critic(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.discriminator(self.augmented(x), None, self.stage[1])

    def real_data(self, batch: Batch) -> tuple[Tensor, None]:
        """The real images at the current resolution; during a fade-in blended with their lower resolution."""
        level, alpha = self.stage
        x = batch["x"]
        x = F.avg_pool2d(x, x.shape[-1] // (4 * 2**level)) if x.shape[-1] > 4 * 2**level else x
        if level > 0 and alpha < 1:
            x = lerp(upsample(F.avg_pool2d(x, 2)), x, alpha)
        return x, None

    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               z: Tensor | None = None, y: Tensor | None = None) -> dict[str, Tensor]:
        """{"x": images} at the current resolution and alpha, enlarged (nearest) to the data's size so that grids
        and metrics take them as any model's; by default from the EMA generator."""
        net = self.ema_generator if (ema is not False and self.ema_decay) else self.generator
        if z is None:
            z = torch.randn(n, self.latent_dim, generator=generator)
        level, alpha = self.stage
        x = net(z.to(self.device), None, level, alpha)
        return {"x": upsample(x, 2 ** (self.levels - 1 - level))}

    # ---- the loss -------------------------------------------------------------------------------------
    def discriminator_loss(self, batch: Batch) -> Tensor:
        real, _ = self.real_data(batch)
        with torch.no_grad():
            fake, _ = self.fake_data(real.shape[0])
        d_real, d_fake = self.critic(real), self.critic(fake)
        self.record_critic(d_real, d_fake)
        penalty = gradient_penalty(self.critic, real, fake, self.rng)
        drift = d_real.square().mean()
        self._last.update(gp=penalty.detach(), drift=drift.detach())
        return self.loss.d(d_real, d_fake) + self.gp_weight * penalty + self.drift_weight * drift
