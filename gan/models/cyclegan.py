"""CycleGAN (Zhu et al. 2017): G_ab: A -> B and G_ba: B -> A, judged by D_b and D_a with least-squares losses, tied by
cycle consistency (lambda = 10) and an identity term (0.5 lambda); the discriminators see a pool of 50 past fakes."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import non_negative
from gan.models.core import Batch, Phase, host_values
from gan.models.translation import TranslationModule


class ImagePool:
    """Shrivastava et al. 2017 as CycleGAN uses it: each new fake goes into the pool; once the pool is full, with
    probability 1/2 the discriminator sees a stored fake instead (which the new one replaces). Its draws come from
    the model's RNG and its contents are checkpointed, so a resumed run sees the same history."""

    def __init__(self, size: int, rng: torch.Generator):
        self.size, self.rng, self.images = int(size), rng, []

    def query(self, fakes: Tensor) -> Tensor:
        if self.size == 0:
            return fakes
        out = []
        for fake in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(fake.clone())
                out.append(fake)
            elif host_values(torch.rand((), generator=self.rng)) < 0.5:
                index = host_values(torch.randint(self.size, (), generator=self.rng))
                out.append(self.images[index].clone())
                self.images[index] = fake.clone()
            else:
                out.append(fake)
        return torch.stack(out)

    def state(self) -> list[Tensor]:
        return [image.cpu() for image in self.images]

    def load(self, images: list[Tensor], device) -> None:
        self.images = [image.to(device) for image in images]


class CycleGAN(TranslationModule):
    kind = "unpaired"

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module, d_a: nn.Module, d_b: nn.Module, g_optimizer: Callable,
                 d_optimizer: Callable, name: str, g_lr: float, d_lr: float, betas: Sequence[float] | None,
                 cycle_weight: float, identity_weight: float, pool_size: int, total_iters: int | None, lr_decay: float,
                 log_every: int, seed: int, **speed):  # compile, channels_last: see AdversarialModule
        super().__init__(seed=seed, log_every=log_every, **speed)
        self.name = name
        self.g_ab, self.g_ba, self.d_a, self.d_b = g_ab, g_ba, d_a, d_b
        self.cycle_weight = non_negative("model.cycle_weight", cycle_weight)
        self.identity_weight = non_negative("model.identity_weight", identity_weight)
        self.pools = {"a": ImagePool(pool_size, self.rng), "b": ImagePool(pool_size, self.rng)}
        self._fakes: dict[str, Tensor] = {}
        # As the reference code: one optimiser over both generators, one over both discriminators; G steps first.
        self.schedule(
            self.generator_and_discriminator(g_optimizer, d_optimizer, g_lr, d_lr, betas, total_iters, lr_decay,
                                             generators=("g_ab", "g_ba"), discriminators=("d_a", "d_b")),
            [Phase("g", "generator", self.generator_loss), Phase("d", "discriminator", self.discriminator_loss)])

    def generator_loss(self, batch: Batch) -> Tensor:
        a, b = batch["a"], batch["b"]
        fake_b, fake_a = self.g_ab(a), self.g_ba(b)
        adversarial = lsgan(self.d_b(fake_b), True) + lsgan(self.d_a(fake_a), True)
        cycle = (self.g_ba(fake_b) - a).abs().mean() + (self.g_ab(fake_a) - b).abs().mean()
        loss = adversarial + self.cycle_weight * cycle
        if self.identity_weight:
            identity = (self.g_ab(b) - b).abs().mean() + (self.g_ba(a) - a).abs().mean()
            loss = loss + self.cycle_weight * self.identity_weight * identity
            self._last["identity"] = identity.detach()
        self._last["cycle"] = cycle.detach()
        self._fakes = {"a": fake_a.detach(), "b": fake_b.detach()}  # the discriminators' phase judges these
        return loss

    def discriminator_loss(self, batch: Batch) -> Tensor:
        if not self._fakes:  # a schedule that puts the discriminators first: fresh fakes
            with torch.no_grad():
                self._fakes = {"a": self.g_ba(batch["b"]), "b": self.g_ab(batch["a"])}
        loss = 0.0
        for domain, critic in (("a", self.d_a), ("b", self.d_b)):
            fake = self.pools[domain].query(self._fakes[domain])
            loss = loss + 0.5 * (lsgan(critic(batch[domain]), True) + lsgan(critic(fake), False))
        self._fakes = {}
        return loss

    def translate(self, x: Tensor, direction: str = "ab") -> Tensor:
        return self.run(self.g_ab if direction == "ab" else self.g_ba, x)

    def grid_columns(self, batch: dict[str, Tensor]) -> list[Tensor]:
        """input a | G_ab(a) | G_ba(G_ab(a)) | input b | G_ba(b) | G_ab(G_ba(b))"""
        n = min(len(batch["a"]), len(batch["b"]))
        a, b = batch["a"][:n], batch["b"][:n]
        ab, ba = self.translate(a, "ab").cpu(), self.translate(b, "ba").cpu()
        return [a, ab, self.translate(ab, "ba").cpu(), b, ba, self.translate(ba, "ab").cpu()]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["image_pools"] = {domain: pool.state() for domain, pool in self.pools.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        for domain, images in checkpoint["image_pools"].items():
            self.pools[domain].load(images, self.device)


def lsgan(logits: Tensor, real: bool) -> Tensor:
    """The reference code's least-squares GAN loss: MSE to 1 (real) or 0 (fake), no 1/2 factor."""
    return F.mse_loss(logits, torch.ones_like(logits) if real else torch.zeros_like(logits))
