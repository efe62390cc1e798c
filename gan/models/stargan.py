"""StarGAN (Choi et al. 2018): one generator G(x, c) for every target domain c, a discriminator with a real/fake
head (WGAN-GP, lambda_gp = 10) and a domain classification head (lambda_cls = 1), a reconstruction loss
G(G(x, c), c_original) ~ x (lambda_rec = 10), 5 critic steps per generator step, random target domains."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.losses import gradient_penalty
from gan.errors import non_negative, positive_int
from gan.models.core import Batch, Phase
from gan.models.translation import TranslationModule


class StarGAN(TranslationModule):
    kind = "attributes"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, g_optimizer: Callable, d_optimizer: Callable,
                 name: str, g_lr: float, d_lr: float, betas: Sequence[float] | None, n_critic: int,
                 gp_weight: float, cls_weight: float, rec_weight: float, total_iters: int | None, lr_decay: float,
                 log_every: int, seed: int, **speed):  # compile, channels_last: see AdversarialModule
        super().__init__(seed=seed, log_every=log_every, **speed)
        self.name, self.generator, self.discriminator = name, generator, discriminator
        self.gp_weight, self.cls_weight, self.rec_weight = (non_negative(f"model.{key}", value) for key, value in
                                                            (("gp_weight", gp_weight), ("cls_weight", cls_weight), ("rec_weight", rec_weight)))
        self.n_critic = positive_int("model.n_critic", n_critic)
        self.schedule(
            self.generator_and_discriminator(g_optimizer, d_optimizer, g_lr, d_lr, betas, total_iters, lr_decay),
            [Phase("d", "discriminator", self.discriminator_loss, repeats=self.n_critic),
             Phase("g", "generator", self.generator_loss)])

    def target_attributes(self, attrs: Tensor) -> Tensor:
        """The reference code's targets: the batch's own attribute vectors in a random order."""
        return attrs[torch.randperm(len(attrs), generator=self.rng).to(attrs.device)]

    def classification(self, logits: Tensor, attrs: Tensor) -> Tensor:
        """Multi-label BCE summed over attributes, averaged over the batch (as the reference code for CelebA)."""
        return F.binary_cross_entropy_with_logits(logits, attrs, reduction="sum") / logits.shape[0]

    def discriminator_loss(self, batch: Batch) -> Tensor:
        x, attrs = batch["x"], batch["attrs"]
        target = self.target_attributes(attrs)
        with torch.no_grad():
            fake = self.generator(x, target)
        src_real, cls_real = self.discriminator(x)
        src_fake, _ = self.discriminator(fake)
        penalty = gradient_penalty(lambda images: self.discriminator(images)[0], x, fake, self.rng)
        cls = self.classification(cls_real, attrs)
        self._last.update(d_cls=cls.detach(), gp=penalty.detach())
        return src_fake.mean() - src_real.mean() + self.cls_weight * cls + self.gp_weight * penalty

    def generator_loss(self, batch: Batch) -> Tensor:
        x, attrs = batch["x"], batch["attrs"]
        target = self.target_attributes(attrs)
        fake = self.generator(x, target)
        src_fake, cls_fake = self.discriminator(fake)
        cls = self.classification(cls_fake, target)
        reconstruction = (self.generator(fake, attrs) - x).abs().mean()
        self._last.update(g_cls=cls.detach(), rec=reconstruction.detach())
        return -src_fake.mean() + self.cls_weight * cls + self.rec_weight * reconstruction

    def translate(self, x: Tensor, attrs: Tensor) -> Tensor:
        return self.run(self.generator, x, attrs.float())

    def grid_columns(self, batch: dict[str, Tensor]) -> list[Tensor]:
        """input | the input with each attribute flipped in turn (StarGAN's figures: one column per target domain)"""
        x, attrs = batch["x"], batch["attrs"].float()
        columns = [x]
        for k in range(attrs.shape[1]):
            flipped = attrs.clone()
            flipped[:, k] = 1 - flipped[:, k]
            columns.append(self.translate(x, flipped).cpu())
        return columns
