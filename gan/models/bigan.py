"""BiGAN (Donahue, Krähenbühl & Darrell 2017) and ALI (Dumoulin et al. 2017): an encoder E: x -> z learned together
with the generator G: z -> x against a discriminator of (x, z) pairs,

    min_{G, E} max_D  V = E_x[log D(x, E(x))] + E_z[log(1 - D(G(z), z))],

whose optimum has E = G^-1 (BiGAN, theorem 2). Players: `generator` steps G and E with one optimiser, as both
references do; `discriminator` steps D on V (the phases `d`, n_critic times, and `g` of GANModule). G and E minimise V
with the labels swapped (`model.loss=non_saturating`: softplus(D(x, E(x))) + softplus(-D(G(z), z)), the references'
practice: each term is G's non-saturating loss, E's on the negated logit) or minimise V itself (`minimax`).

`model.stochastic_encoder=true` is ALI's encoder: E gives mu and log sigma, z = mu + sigma * eps with eps ~ N(0, I)
drawn from the module's RNG (reparameterised: the gradient reaches mu and sigma). BiGAN's is deterministic; under the
uniform prior its output goes through tanh into (-1, 1), the prior's support (the reference squashes with
2 sigmoid - 1). `model.prior`: uniform, U(-1, 1)^d (BiGAN), or normal, N(0, I) (ALI). For features and reconstructions
(`encode`, `reconstruct`) the stochastic encoder gives its mean, or a draw from a given generator.
Metrics and grids: gan.kinds.inference.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import Tensor, nn

from gan.errors import UserError
from gan.models.base import GANModule
from gan.models.core import flag
from gan.nets.conditioning import check_choice

PRIORS = ("uniform", "normal")
LOSSES = ("non_saturating", "minimax")


class BiGAN(GANModule):
    kind = "inference"
    shared_g_loss = False  # G and E have a loss of their own: relativistic, unrolled, feature matching, VBN refused

    def __init__(self, *args, encoder: nn.Module, nets: str, prior: str, stochastic_encoder: bool, loss: str,
                 regularizer, pack: int, conditioning: str, augment: str, historical_averaging: float, **kwargs):
        name = kwargs["name"]
        refused = {key: value for key, value, honoured in (
            ("loss", loss, loss in LOSSES), ("regularizer", regularizer, regularizer in (None, "none")),
            ("pack", pack, pack == 1), ("conditioning", conditioning, conditioning == "none"),
            ("augment", augment, augment == "none"),
            ("historical_averaging", historical_averaging, not historical_averaging)) if not honoured}
        if refused:
            raise UserError(f"model={name} does not honour {', '.join(f'model.{k}={v}' for k, v in refused.items())}: "
                            f"its D judges (x, z) pairs with the GAN log-loss (model.loss={' or '.join(LOSSES)}), "
                            f"one unaugmented pair at a time, without a gradient penalty or class labels; expected "
                            f"model.regularizer=none, model.pack=1, model.conditioning=none, model.augment=none, "
                            f"model.historical_averaging=0 (its G player also steps E). "
                            f"Remove the override, or use a noise -> image model that has the option (model=dcgan, "
                            f"wgan_gp).")
        super().__init__(*args, arch=nets, loss=loss, regularizer=regularizer, pack=pack, conditioning=conditioning,
                         augment=augment, **kwargs)
        self.encoder = encoder
        self.prior = check_choice("model.prior", prior, PRIORS)
        self.stochastic_encoder = flag("model.stochastic_encoder", stochastic_encoder)
        if encoder.stochastic != self.stochastic_encoder:
            raise UserError(f"model.stochastic_encoder={self.stochastic_encoder}, but the encoder network was built "
                            f"with stochastic={encoder.stochastic} (its output width is twice the latent width when it "
                            f"gives mean and log sigma). Set only model.stochastic_encoder: conf/model/_bigan.yaml "
                            f"passes it on to model.encoder.stochastic.")
        if self.ema_decay:
            self.ema_encoder = self.make_ema(encoder, float(self.ema_decay))
        generator_player = replace(self.players["generator"], networks=("generator", "encoder"),
                                   ema=("generator", "encoder") if self.ema_decay else ())
        self.schedule([generator_player, self.players["discriminator"]], self.phases)

    # ---- the prior and the encoder's posterior ----------------------------------------------------------------
    def prior_draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        if self.prior == "uniform":
            return 2 * torch.rand(n, self.latent_dim, generator=generator) - 1
        return torch.randn(n, self.latent_dim, generator=generator)

    def noise(self, n: int) -> Tensor:
        return self.draw(self.prior_draw, n)

    def posterior(self, h: Tensor, eps: Tensor | None) -> Tensor:
        """z from E's output h: h itself (tanh(h) under the uniform prior); for the stochastic encoder, h is
        (mu, log sigma) and z = mu + sigma * eps, or mu when eps is None."""
        if not self.stochastic_encoder:
            return torch.tanh(h) if self.prior == "uniform" else h
        mu, log_sigma = h.chunk(2, dim=1)
        return mu if eps is None else mu + log_sigma.exp() * eps

    def inferred(self, x: Tensor) -> Tensor:
        """z ~ q(z | x) in training: eps from the module's RNG (`draw`: exact resume, each rank its share)."""
        eps = (self.draw(lambda m, rng: torch.randn(m, self.latent_dim, generator=rng), len(x))
               if self.stochastic_encoder else None)
        return self.posterior(self.encoder(x), eps)

    # ---- the losses ------------------------------------------------------------------------------------------
    def discriminator_loss(self, batch) -> Tensor:
        x = batch["x"]
        with torch.no_grad():
            z_hat, z = self.inferred(x), self.noise(len(x))
            fake = self.generator(z)
        d_real, d_fake = self.discriminator(x, z_hat), self.discriminator(fake, z)
        self.record_critic(d_real, d_fake)
        return self.loss.d(d_real, d_fake)

    def generator_loss(self, batch) -> Tensor:
        """G's loss on its (G(z), z) pairs plus E's on the (x, E(x)) pairs with the labels swapped (the negated
        logit); G's pairs are `g_batch_multiple` x D's batch."""
        x = batch["x"]
        z = self.noise(self.g_batch_multiple * len(x))
        d_real, d_fake = self.discriminator(x, self.inferred(x)), self.discriminator(self.generator(z), z)
        return self.loss.g(d_fake) + self.loss.g(-d_real)

    # ---- sampling and inference (gan.kinds.inference) ------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               z: Tensor | None = None) -> dict[str, Tensor]:
        """{"x": G(z)} in eval mode, z drawn from the prior with `generator` unless given."""
        return super().sample(z=self.prior_draw(n, generator) if z is None else z, ema=ema)

    def networks(self, ema: bool | None) -> tuple[nn.Module, nn.Module]:
        """(E, G): their EMA copies by default when kept (model.ema_decay), as `sample`."""
        if ema is not False and self.ema_decay:
            return self.ema_encoder, self.ema_generator
        return self.encoder, self.generator

    @torch.no_grad()
    def encode(self, x: Tensor, ema: bool | None = None, generator: torch.Generator | None = None,
               encoder: nn.Module | None = None) -> Tensor:
        """E's code of images in [-1, 1] (or points), eval mode: z, or for the stochastic encoder its mean, or a draw
        with eps from `generator` when given. `encoder`: another network of E's architecture instead of E."""
        encoder = self.networks(ema)[0] if encoder is None else encoder
        with evaluating(encoder):
            h = encoder(x.to(self.device))
        eps = (torch.randn(len(x), self.latent_dim, generator=generator).to(self.device)
               if self.stochastic_encoder and generator is not None else None)
        return self.posterior(h, eps)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, ema: bool | None = None, generator: torch.Generator | None = None) -> Tensor:
        """G(E(x)), eval mode; z ~ q(z | x) drawn with `generator` for the stochastic encoder (its mean for None)."""
        generator_net = self.networks(ema)[1]
        z = self.encode(x, ema, generator)
        with evaluating(generator_net):
            return generator_net(z)

    def reinitialized_encoder(self, seed: int) -> nn.Module:
        """A copy of E with every layer's parameters drawn afresh (PyTorch's initialisation, on the CPU, from `seed`
        alone): the features a trained E is compared with."""
        encoder = copy.deepcopy(self.encoder).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            for module in encoder.modules():
                if module is not encoder and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return encoder.to(self.device)


@contextmanager
def evaluating(network: nn.Module):
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)
