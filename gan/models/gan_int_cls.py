"""GAN-INT-CLS (Reed et al. 2016, "Generative Adversarial Text to Image Synthesis") on the shared loop.

D scores (image, text) pairs with the matching-aware loss GAN-CLS (Algorithm 1): real image with its own caption ->
real; real image with another record's caption ("wrong text") and a fake made from the right caption -> fake, the
two weighted 1/2. GAN-INT: G also trains on embeddings interpolated between two captions, beta t1 + (1 - beta) t2
(beta 0.5, sec. 4.3), which D judges with the interpolated embedding; D never trains on them (it has no real image
for them). Both phases use the non-saturating loss.

The text encoder is trained jointly with D by the matching-aware loss (it is one of the discriminator player's
networks); G reads its embeddings without gradient. Reed pre-trains a char-CNN-RNN with a structured joint embedding
instead; here captions are short and built from a small vocabulary, and the matching-aware loss alone makes the
embedding separate the captions D must tell apart (conf/model/gan_int_cls.yaml says why).

All randomness (z, which record's caption is the wrong one, the interpolation partners) is drawn from the module's
RNG through `draw`, so a resumed run and every DDP rank continue the single-process stream exactly.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import UserError, check_betas, non_negative, positive_float, positive_int
from gan.models.core import AdversarialModule, Batch, Phase, Player


def gan_cls_d_loss(real_right: Tensor, real_wrong: Tensor, fake_right: Tensor) -> Tensor:
    """Reed et al. Algorithm 1: L_D = log D(x, h) + (log(1 - D(x, h_wrong)) + log(1 - D(x_fake, h))) / 2, maximised;
    as a loss on logits, softplus(-s_r) + (softplus(s_w) + softplus(s_f)) / 2, each term a batch mean."""
    return F.softplus(-real_right).mean() + 0.5 * (F.softplus(real_wrong).mean() + F.softplus(fake_right).mean())


def interpolate(first: Tensor, second: Tensor, beta: float) -> Tensor:
    """GAN-INT's embeddings: beta t1 + (1 - beta) t2."""
    return beta * first + (1 - beta) * second


def others(n: int, shifts: Tensor) -> Tensor:
    """Indices of another record of the batch for each one: (i + shift_i) mod n with shifts in 1..n-1."""
    return (torch.arange(n, device=shifts.device) + shifts) % n


class GANIntCLS(AdversarialModule):
    kind = "text_to_image"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, text_encoder: nn.Module,
                 g_optimizer: Callable, d_optimizer: Callable, *, name: str, latent_dim: int, g_lr: float, d_lr: float,
                 betas: Sequence[float] | None, interp_beta: float, interp_weight: float, log_every: int, seed: int,
                 compile: bool | str, compile_mode: str, channels_last: bool):
        super().__init__(seed=seed, log_every=log_every,
                         compile=compile, compile_mode=compile_mode, channels_last=channels_last)
        self.generator, self.discriminator, self.text_encoder = generator, discriminator, text_encoder
        self.name, self.latent_dim = name, positive_int("model.latent_dim", latent_dim)
        self.interp_weight = non_negative("model.interp_weight", interp_weight)
        if isinstance(interp_beta, bool) or not isinstance(interp_beta, (int, float)) or not 0 <= interp_beta <= 1:
            raise UserError(f"model.interp_beta must be a number in [0, 1] (the paper's 0.5 mixes two captions "
                            f"equally), got {interp_beta!r}.")
        self.interp_beta = float(interp_beta)
        betas = check_betas("model.betas", betas)
        self.schedule(
            [Player("generator", ("generator",), g_optimizer, positive_float("model.g_lr", g_lr), betas),
             Player("discriminator", ("discriminator", "text_encoder"), d_optimizer,
                    positive_float("model.d_lr", d_lr), betas)],
            [Phase("d", "discriminator", self.discriminator_loss), Phase("g", "generator", self.generator_loss)])

    # ---- draws from the module's RNG ---------------------------------------------------------------------------
    def noise(self, n: int) -> Tensor:
        return self.draw(lambda m, rng: torch.randn(m, self.latent_dim, generator=rng), n)

    def other_records(self, n: int) -> Tensor:
        if n < 2:
            raise UserError(f"GAN-CLS pairs each image with another record's caption, so a batch needs at least 2 "
                            f"records; data.batch_size is {n}. Use data.batch_size=2 or more (the paper: 64).")
        return others(n, self.draw(lambda m, rng: torch.randint(1, n, (m,), generator=rng), n))

    # ---- the losses of the phases -------------------------------------------------------------------------------
    def discriminator_loss(self, batch: Batch) -> Tensor:
        x, tokens = batch["x"], batch["tokens"]
        right = self.text_encoder(tokens)
        wrong = right[self.other_records(len(x))]
        with torch.no_grad():
            fake = self.generator(self.noise(len(x)), right.detach())
        real_right, real_wrong = self.discriminator(x, right), self.discriminator(x, wrong)
        fake_right = self.discriminator(fake, right)
        self._last.update(d_real=torch.sigmoid(real_right).mean().detach(),
                          d_wrong=torch.sigmoid(real_wrong).mean().detach(),
                          d_fake=torch.sigmoid(fake_right).mean().detach())
        return gan_cls_d_loss(real_right, real_wrong, fake_right)

    def generator_loss(self, batch: Batch) -> Tensor:
        n = len(batch["x"])
        with torch.no_grad():
            right = self.text_encoder(batch["tokens"])
        loss = F.softplus(-self.discriminator(self.generator(self.noise(n), right), right)).mean()
        if self.interp_weight:
            mixed = interpolate(right, right[self.other_records(n)], self.interp_beta)
            interp = F.softplus(-self.discriminator(self.generator(self.noise(n), mixed), mixed)).mean()
            self._last["g_int"] = interp.detach()
            loss = loss + self.interp_weight * interp
        return loss

    # ---- sampling ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, tokens: Tensor) -> Tensor:
        was_training = self.text_encoder.training
        self.text_encoder.eval()
        out = self.text_encoder(tokens.to(self.device))
        self.text_encoder.train(was_training)
        return out

    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               tokens: Tensor | None = None, embedding: Tensor | None = None, z: Tensor | None = None) -> dict[str, Tensor]:
        """{"x": images in [-1, 1]} of the captions `tokens` (or their `embedding`), in eval mode; `z` fixes the
        noise, else it is drawn from `generator`."""
        if ema:
            raise UserError(f"ema=true: model {self.name} keeps no EMA copy of its generator. Leave ema unset.")
        if embedding is None:
            if tokens is None:
                raise UserError(f"Model {self.name} draws images of captions: pass the captions' tokens to sample().")
            embedding = self.embed(tokens)
        if z is None:
            z = torch.randn(len(embedding), self.latent_dim, generator=generator)
        was_training = self.generator.training
        self.generator.eval()
        x = self.generator(z.to(self.device), embedding.to(self.device))
        self.generator.train(was_training)
        return {"x": x}

    def interpolation(self, first: Tensor, second: Tensor, z: Tensor, steps: int) -> Tensor:
        """Images [len(first) * steps, C, H, W]: per pair of captions (rows), the embedding walked from `first` to
        `second` in `steps` steps with the row's noise fixed (the paper's Fig. 8)."""
        a, b = self.embed(first), self.embed(second)
        betas = torch.linspace(1, 0, steps, device=a.device)
        mixed = torch.stack([interpolate(a, b, float(beta)) for beta in betas], 1).flatten(0, 1)
        return self.sample(embedding=mixed, z=z.repeat_interleave(steps, 0))["x"]
