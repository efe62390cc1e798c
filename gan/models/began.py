"""BEGAN (Berthelot, Schumm & Metz 2017): an autoencoder D whose per-image L1 reconstruction loss is the energy

    L(v) = mean |v - D(v)|                                           (eq. 1, eta = 1, as a mean over pixels)

and an equilibrium term k_t that weights the fakes in D's loss (eq. 7, section 3.4):

    L_D = L(x) - k_t L(G(z_D)),    L_G = L(G(z_G)),
    k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1)    (k_t in [0, 1], k_0 = 0),

with the convergence measure M_global = L(x) + |gamma L(x) - L(G(z_G))| (section 3.4.1), logged as train/m_global
beside train/k. z ~ U(-1, 1)^N_z (section 3.5).

On the shared loop an iteration runs the `d` phase, then the `g` phase, each drawing its own z (z_D, z_G as the
paper). L(x) is D's energy of the iteration's real batch, measured in the `d` phase before D's step; L(G(z_G)) is the
`g` phase's, measured with D after its step. k is updated from these two once per iteration, after G's step
(`after_step`). carpedm20/BEGAN-tensorflow measures both before either step and reuses one z for D and G; the two
orders differ by one step of D's learning rate.

k is a buffer: it lives on the device, is updated there without being read back and is checkpointed, so a resumed run
continues exactly. Under DDP L(x) and L(G(z_G)) are averaged over the ranks, so every rank keeps the same k.

Left out: the paper's learning-rate decay (halved when M_global stalls; a constant lr here, `model.lr_decay` offers a
linear decay) and the optional skip connections (gan/nets/began.py). Adam's betas are not in the paper; (0.5, 0.999)
are the reference's. Samples are clamped to the data's [-1, 1] (G has no output activation, as the reference).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from gan.errors import UserError
from gan.losses import AdversarialLoss
from gan.models.base import GANModule
from gan.models.core import Phase


def energy_d(real: Tensor, fake: Tensor) -> Tensor:
    """D's loss on energies: real = L(x), fake = k_t L(G(z_D)) (eq. 7; k_t = 1 is eq. 4's L(x) - L(G(z)))."""
    return real.mean() - fake.mean()


def energy_g(fake: Tensor) -> Tensor:
    """G's loss on energies: L(G(z_G)) (eq. 7)."""
    return fake.mean()


# D's "output" is its energy L(v): low on what it reconstructs well (real images, if D wins).
ENERGY_LOSS = AdversarialLoss("began", energy_d, energy_g, probabilistic=False)


def k_update(k: Tensor, l_real: Tensor, l_fake: Tensor, gamma: float, lambda_k: float) -> Tensor:
    """k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1) (eq. 7, k_t in [0, 1])."""
    return (k + lambda_k * (gamma * l_real - l_fake)).clamp(0.0, 1.0)


def convergence_measure(l_real: Tensor, l_fake: Tensor, gamma: float) -> Tensor:
    """M_global = L(x) + |gamma L(x) - L(G(z_G))| (section 3.4.1)."""
    return l_real + (gamma * l_real - l_fake).abs()


def check_fraction(key: str, value, low_open: bool, meaning: str) -> float:
    """A number in (0, 1] (low_open) or [0, 1], else a UserError naming the key."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (0 < value <= 1 if low_open else 0 <= value <= 1))
    if not ok:
        raise UserError(f"{key} must be a number in {'(0, 1]' if low_open else '[0, 1]'} ({meaning}), got {value!r}. "
                        f"Set e.g. {key}={0.5 if low_open else 0.0}.")
    return float(value)


class BEGAN(GANModule):
    def __init__(self, *args, gamma: float, lambda_k: float, k_0: float, loss: str, regularizer: str | None,
                 pack: int, conditioning: str, n_critic: int, augment: str, unroll_steps: int, feature_matching: bool,
                 historical_averaging: float, label_smoothing: float, virtual_batch_norm: int, **kwargs):
        given = {"loss": loss, "regularizer": "none" if regularizer in (None, "none", "null") else regularizer,
                 "pack": pack, "conditioning": conditioning, "n_critic": n_critic, "augment": augment,
                 "unroll_steps": unroll_steps, "feature_matching": feature_matching,
                 "historical_averaging": historical_averaging, "label_smoothing": label_smoothing,
                 "virtual_batch_norm": virtual_batch_norm}
        honoured = {"loss": "began", "regularizer": "none", "pack": 1, "conditioning": "none", "n_critic": 1,
                    "augment": "none", "unroll_steps": 0, "feature_matching": False, "historical_averaging": 0,
                    "label_smoothing": 0, "virtual_batch_norm": 0}
        refused = [f"model.{key}={given[key]}" for key in honoured if given[key] != honoured[key]]
        if refused:
            raise UserError(f"model=began does not honour {', '.join(refused)}: its D is an autoencoder trained on "
                            f"its reconstruction energies with the equilibrium term k_t, one D and one G step per "
                            f"iteration, on single unconditional images without augmentation, unrolling or "
                            f"Improved GAN's options (model.loss=began, regularizer=none, pack=1, conditioning=none, "
                            f"n_critic=1, augment=none, unroll_steps=0, feature_matching=false, "
                            f"historical_averaging=0, label_smoothing=0, virtual_batch_norm=0). Remove the "
                            f"override, or use a model that has the option (model=dcgan, wgan_gp, sngan, ...).")
        super().__init__(*args, regularizer=regularizer, pack=pack, conditioning=conditioning, n_critic=n_critic,
                         augment=augment, **kwargs)
        self.loss = ENERGY_LOSS
        self.gamma = check_fraction("model.gamma", gamma, True, "the diversity ratio E[L(G(z))] / E[L(x)]; the "
                                    "paper uses 0.3 to 0.7")
        self.lambda_k = check_fraction("model.lambda_k", lambda_k, False, "k_t's learning rate; the paper's 0.001, "
                                       "0 holds k at k_0")
        self.register_buffer("k", torch.tensor(check_fraction("model.k_0", k_0, False, "k's initial value; the "
                                                              "paper's 0")))
        if self.generator.latent_dim != self.latent_dim:
            raise UserError(f"model=began: the generator reads z of {self.generator.latent_dim} values, but "
                            f"model.latent_dim is {self.latent_dim}. Size the generator from model.latent_dim, as "
                            f"conf/model/began.yaml does.")

    def noise(self, n: int) -> Tensor:
        """z ~ U(-1, 1)^latent_dim (section 3.5), from the module's RNG."""
        return self.draw(lambda m, rng: 2 * torch.rand(m, self.latent_dim, generator=rng) - 1, n)

    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               z: Tensor | None = None, y: Tensor | None = None) -> dict[str, Tensor]:
        """{"x": images clamped to [-1, 1]}, z ~ U(-1, 1) from `generator` unless given."""
        if z is None:
            z = 2 * torch.rand(n, self.latent_dim, generator=generator) - 1
        x = super().sample(z=z, ema=ema)["x"]
        return {"x": x.clamp(-1.0, 1.0)}

    def energy(self, x: Tensor) -> Tensor:
        """L(v) per image [N]: the mean absolute reconstruction error of D, the autoencoder (eq. 1, eta = 1)."""
        return (x - self.discriminator(x)).abs().flatten(1).mean(1)

    def discriminator_loss(self, batch) -> Tensor:
        real = batch["x"]
        with torch.no_grad():
            fake, _ = self.fake_data(real.shape[0])
        l_real, l_fake = self.energy(real), self.energy(fake)
        self._l_real = l_real.detach().mean()
        self._last.update(d_real=self._l_real, d_fake=l_fake.detach().mean())
        return self.loss.d(l_real, self.k * l_fake)

    def generator_loss(self, batch) -> Tensor:
        fake, _ = self.fake_data(self.g_batch_multiple * batch["x"].shape[0])
        l_fake = self.energy(fake)
        self._l_fake = l_fake.detach().mean()
        return self.loss.g(l_fake)

    @torch.no_grad()
    def after_step(self, phase: Phase) -> None:
        """After G's step: M_global and k_{t+1} from this iteration's L(x) and L(G(z_G)), on the device (logged: k
        after the update, the value the next iteration uses)."""
        if phase.name != "g":
            return
        l_real, l_fake = self._l_real, self._l_fake
        if self.world_size > 1:
            l_real = self.trainer.strategy.reduce(l_real, reduce_op="mean")
            l_fake = self.trainer.strategy.reduce(l_fake, reduce_op="mean")
        self.k.copy_(k_update(self.k, l_real, l_fake, self.gamma, self.lambda_k))
        self._last.update(m_global=convergence_measure(l_real, l_fake, self.gamma), k=self.k.clone())
