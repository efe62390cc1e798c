"""InfoGAN (Chen et al. 2016): latent codes c beside the noise z, and a head Q on D's body that recovers c from
G(z, c); both players maximise the variational lower bound on the mutual information I(c; G(z, c)),

    L_I = E[log Q(c | G(z, c))] + H(c),

so D's loss is the GAN loss - lambda L_I and G's is its GAN loss - lambda L_I (openai/InfoGAN
`infogan/algos/infogan_trainer.py`: `discriminator_loss -= info_reg_coeff * mi_est`, the same for G; Q's weights are
D's, stepped by D's optimiser). The prior is the reference's MNIST one: z ~ U(-1, 1)^62 (`Uniform(62)`), a
categorical code of 10 values, two continuous codes ~ U(-1, 1). Metrics and grids: gan.kinds.latent_codes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gan.errors import UserError, non_negative
from gan.models.base import GANModule
from gan.nets.infogan import CodePosterior, check_codes


class InfoGAN(GANModule):
    kind = "latent_codes"
    shared_g_loss = False

    def __init__(self, *args, categorical_codes, continuous_codes: int, info_weight: float, conditioning: str,
                 pack: int, **kwargs):
        if conditioning != "none" or pack != 1:
            raise UserError(f"model=infogan learns its codes without labels and judges one image at a time, so it "
                            f"takes model.conditioning=none and model.pack=1 (got conditioning={conditioning}, "
                            f"pack={pack}). Remove the override; for class-conditional models use model=cgan or acgan.")
        super().__init__(*args, conditioning=conditioning, pack=pack, **kwargs)
        self.categorical_codes, self.continuous_codes = check_codes(categorical_codes, continuous_codes)
        self.info_weight = non_negative("model.info_weight", info_weight)
        expected = self.latent_dim + sum(self.categorical_codes) + self.continuous_codes
        if self.generator.input_dim != expected:
            raise UserError(f"model=infogan: the generator reads {self.generator.input_dim} inputs, but z and the codes "
                            f"make {expected} (latent_dim {self.latent_dim} + categorical {list(self.categorical_codes)}"
                            f" + continuous {self.continuous_codes}). Size the networks from the model's keys, as "
                            f"conf/model/infogan.yaml does.")

    # ---- the prior ------------------------------------------------------------------------------------------
    @property
    def prior_width(self) -> int:
        return self.latent_dim + len(self.categorical_codes) + self.continuous_codes

    def split_prior(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z, categorical code indices [N, k], continuous codes) from uniform draws u in [0, 1): z and the continuous
        codes are 2u - 1, a categorical code of size K is floor(K u). One draw for all keeps the RNG stream simple."""
        z, cat, cont = u.split([self.latent_dim, len(self.categorical_codes), self.continuous_codes], dim=1)
        sizes = torch.tensor(self.categorical_codes, dtype=u.dtype, device=u.device)
        return 2 * z - 1, (cat * sizes).long().clamp_max(sizes.long() - 1), 2 * cont - 1

    def generator_inputs(self, z: Tensor, categorical: Tensor, continuous: Tensor) -> Tensor:
        one_hots = [F.one_hot(categorical[:, i], k).to(z) for i, k in enumerate(self.categorical_codes)]
        return torch.cat([z, *one_hots, continuous.to(z)], dim=1)

    def coded_fakes(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        z, categorical, continuous = self.split_prior(
            self.draw(lambda m, rng: torch.rand(m, self.prior_width, generator=rng), n))
        return self.generator(self.generator_inputs(z, categorical, continuous)), categorical, continuous

    def fake_data(self, n: int) -> tuple[Tensor, None]:
        return self.coded_fakes(n)[0], None  # the lazy regulariser's fakes

    # ---- the losses ----------------------------------------------------------------------------------------
    def information(self, posterior: CodePosterior, categorical: Tensor, continuous: Tensor) -> Tensor:
        """lambda x (-L_I + H(c)): the codes' negative log-likelihood under Q (H(c) is a constant). Logs the lower
        bounds on I(c; x) in nats: categorical (at most sum log K) and continuous (H of U(-1, 1) is log 2 a code)."""
        log_cat, log_cont = posterior.log_likelihood(categorical, continuous)
        self._last.update(mi_categorical=(sum(map(math.log, self.categorical_codes)) + log_cat.mean()).detach(),
                          mi_continuous=(self.continuous_codes * math.log(2) + log_cont.mean()).detach())
        return -self.info_weight * (log_cat + log_cont).mean()

    def discriminator_loss(self, batch) -> Tensor:
        real = batch["x"]
        with torch.no_grad():
            fake, categorical, continuous = self.coded_fakes(real.shape[0])
        d_real = self.critic(real, None)
        d_fake, posterior = self.discriminator.with_codes(self.augmented(fake))
        self.record_critic(d_real, d_fake)
        loss = self.loss.d(d_real, d_fake) + self.information(posterior, categorical, continuous)
        return loss + self.regularization(real, None, fake) if self.reg_every == 1 else loss

    def generator_loss(self, batch) -> Tensor:
        fake, categorical, continuous = self.coded_fakes(self.g_batch_multiple * batch["x"].shape[0])
        d_fake, posterior = self.discriminator.with_codes(self.augmented(fake))
        return self.loss.g(d_fake) + self.information(posterior, categorical, continuous)

    # ---- sampling and inference (gan.kinds.latent_codes) ----------------------------------------------------------
    def sampler(self, ema: bool | None):
        return self.ema_generator if (ema is not False and self.ema_decay) else self.generator

    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               z: Tensor | None = None, categorical: Tensor | None = None,
               continuous: Tensor | None = None) -> dict[str, Tensor]:
        """{"x": images, "y": the first categorical code, "categorical": [N, k], "continuous": [N, c]}, eval mode.
        What is not given is drawn from the prior with `generator`."""
        n = next((len(t) for t in (z, categorical, continuous) if t is not None), n)
        drawn = self.split_prior(torch.rand(n, self.prior_width, generator=generator))
        z, categorical, continuous = (drawn[i] if given is None else given
                                      for i, given in enumerate((z, categorical, continuous)))
        net = self.sampler(ema)
        was_training = net.training
        net.eval()
        x = net(self.generator_inputs(z, categorical, continuous).to(self.device))
        net.train(was_training)
        out = {"x": x, "categorical": categorical, "continuous": continuous}
        if self.categorical_codes:
            out["y"] = categorical[:, 0]
        return out

    @torch.no_grad()
    def infer_codes(self, x: Tensor) -> CodePosterior:
        """Q(c | x) of images in [-1, 1], D in eval mode (its batch norm on the running statistics)."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        posterior = self.discriminator.codes(x.to(self.device))
        self.discriminator.train(was_training)
        return posterior

    def extra_grids(self, generator: torch.Generator, size: int) -> dict[str, tuple[Tensor, int]]:
        """One grid per code, varying that code along each row with everything else fixed (the paper's figure 2).
        Categorical code i: a row per noise draw, its values left to right, the continuous codes at 0. Continuous
        code j: -2 to 2 left to right (beyond the prior's [-1, 1], as the paper shows), one z for the grid, the first
        categorical code at the row's value, the other continuous codes at 0."""
        rows, continuous = max(1, round(size**0.5)), self.continuous_codes
        z, categorical, _ = self.split_prior(torch.rand(rows, self.prior_width, generator=generator))
        grids = {}
        for i, k in enumerate(self.categorical_codes):
            codes = categorical.repeat_interleave(k, 0)
            codes[:, i] = torch.arange(k).repeat(rows)
            x = self.sample(z=z.repeat_interleave(k, 0), categorical=codes,
                            continuous=torch.zeros(rows * k, continuous))["x"]
            grids[f"categorical_{i}"] = (x.float().cpu(), k)
        for j in range(continuous):
            codes = categorical[:1].repeat(rows * rows, 1)
            if self.categorical_codes:
                codes[:, 0] = (torch.arange(rows) % self.categorical_codes[0]).repeat_interleave(rows)
            values = torch.zeros(rows * rows, continuous)
            values[:, j] = torch.linspace(-2, 2, rows).repeat(rows)
            x = self.sample(z=z[:1].expand(rows * rows, -1), categorical=codes, continuous=values)["x"]
            grids[f"continuous_{j}"] = (x.float().cpu(), rows)
        return grids
