"""pix2pix (Isola et al. 2017): a U-Net G conditioned on the input image, a PatchGAN D judging (input, output)
pairs, vanilla GAN loss + lambda_L1 x L1 to the ground truth, D's loss halved, dropout as the only noise."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from gan.losses import LOSSES
from gan.errors import non_negative
from gan.models.core import Batch, Phase
from gan.models.translation import TranslationModule


class Pix2Pix(TranslationModule):
    kind = "paired"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, g_optimizer: Callable, d_optimizer: Callable,
                 name: str, g_lr: float, d_lr: float, betas: Sequence[float] | None, l1_weight: float,
                 eval_dropout: bool, eval_batch_stats: bool, total_iters: int | None, lr_decay: float, log_every: int,
                 seed: int, **speed):  # compile, channels_last: see AdversarialModule
        super().__init__(eval_dropout=eval_dropout, eval_batch_stats=eval_batch_stats, seed=seed, log_every=log_every,
                         **speed)
        self.name, self.generator, self.discriminator = name, generator, discriminator
        self.loss = LOSSES["non_saturating"]  # the paper's vanilla (BCE) GAN loss
        self.l1_weight = non_negative("model.l1_weight", l1_weight)
        self.schedule(
            self.generator_and_discriminator(g_optimizer, d_optimizer, g_lr, d_lr, betas, total_iters, lr_decay),
            [Phase("d", "discriminator", self.discriminator_loss), Phase("g", "generator", self.generator_loss)])

    def judge(self, a: Tensor, b: Tensor) -> Tensor:
        return self.discriminator(torch.cat([a, b], dim=1))

    def discriminator_loss(self, batch: Batch) -> Tensor:
        a, b = batch["a"], batch["b"]
        with torch.no_grad():
            fake = self.generator(a)
        return 0.5 * self.loss.d(self.judge(a, b), self.judge(a, fake))

    def generator_loss(self, batch: Batch) -> Tensor:
        a, b = batch["a"], batch["b"]
        fake = self.generator(a)
        l1 = (fake - b).abs().mean()
        self._last["l1"] = l1.detach()
        return self.loss.g(self.judge(a, fake)) + self.l1_weight * l1

    def translate(self, a: Tensor) -> Tensor:
        return self.run(self.generator, a)

    def grid_columns(self, batch: dict[str, Tensor]) -> list[Tensor]:
        return [batch["a"], self.translate(batch["a"]).cpu(), batch["b"]]

