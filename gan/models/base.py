"""Noise -> image GANs: a generator player and a discriminator player on the shared loop (`gan.models.core`).

Phases per iteration: `d` (n_critic discriminator steps, each on its own real minibatch, with the
regulariser in its loss), `d_reg` (only when `reg_every > 1`: the regulariser alone, lazily, every
`reg_every` iterations), then `g` (one generator step, on `g_batch_multiple` x D's batch of fakes). Variants
override a loss or a hook.

With `augment` (DiffAugment or ADA, `gan.augment`) D sees only augmented images: `critic` augments every image it
is given, so D's loss (real and fake), G's loss and the regularisers (whose input gradients flow back through the
augmentation to the un-augmented image, as in stylegan2-ada-pytorch) all see what D sees. ADA's p is adjusted from
D's outputs on real images (`record_critic`) every `ada_interval` iterations and logged as train/ada_p.
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from gan.augment import AdaptiveAugment, make_augment
from gan.errors import UserError, check_betas, non_negative, positive_float, positive_int
from gan.losses import get_loss, get_regularizer
from gan.improved import (HistoricalAverage, VirtualBatchNormGenerator, check_feature_matching,
                          feature_matching_loss, head_input, one_sided_smoothing)
from gan.models.core import AdversarialModule, Batch, Phase, Player, flag, lr_schedule
from gan.unrolled import check_unrollable, unrolled_parameters


AUGMENT_SETTINGS = ("augment", "augment_policy", "ada_target", "ada_interval", "ada_kimg", "ada_transforms")


def augment_only(model: str, settings: dict) -> dict:
    """The settings a model with a loss of its own (ProGAN, StyleGAN) passes on to GANModule: augmentation only. Any
    other GANModule setting (a regulariser, packing, a loss) is one such a model does not honour, so it is refused;
    a key GANModule does not know either is left to Python's own error (which gan.train turns into the list of keys)."""
    known = set(inspect.signature(GANModule.__init__).parameters)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"__init__() got an unexpected keyword argument '{unknown[0]}'")
    other = sorted(set(settings) - set(AUGMENT_SETTINGS))
    if other:
        raise UserError(f"model={model} does not honour model.{', model.'.join(other)}: it trains with its own loss "
                        f"and regularisation (see conf/model/{model}.yaml for the settings it has), and of the shared "
                        f"GAN settings it takes only the augmentation ones ({', '.join(AUGMENT_SETTINGS)}). Remove "
                        f"the override, or use a model that has the option (model=dcgan, wgan_gp, sngan, ...).")
    return settings


class GANModule(AdversarialModule):
    auxiliary_classifier = False  # whether the loop trains D's class head (ACGAN sets it)
    shared_g_loss = True  # whether G's adversarial loss is generator_loss's (relativistic losses extend it); a model
    # with a G loss of its own sets False

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        g_optimizer: Callable,
        d_optimizer: Callable,
        latent_dim: int,
        *,
        name: str,
        arch: str | None = None,  # the architecture's name, recorded for comparisons (networks come built)
        g_lr: float,
        d_lr: float,
        betas: Sequence[float] | None,
        loss: str = "non_saturating",
        regularizer: str | None = None,
        reg_weight: float = 0.0,
        reg_every: int = 1,
        n_critic: int = 1,
        unroll_steps: int = 0,
        feature_matching: bool = False,
        historical_averaging: float = 0.0,
        label_smoothing: float = 0.0,
        virtual_batch_norm: int = 0,
        pack: int = 1,
        g_batch_multiple: int = 1,
        ema_decay: float | None = None,
        total_iters: int | None = None,
        lr_decay: float = 0.0,
        num_classes: int | None = None,
        conditioning: str = "none",
        augment: str,
        augment_policy: str | Sequence[str],
        ada_target: float,
        ada_interval: int,
        ada_kimg: float,
        ada_transforms: str | Sequence[str],
        log_every: int,
        seed: int,
        compile: bool | str, compile_mode: str,
        channels_last: bool,
    ):
        super().__init__(seed=seed, log_every=log_every,
                         compile=compile, compile_mode=compile_mode, channels_last=channels_last)
        if virtual_batch_norm:
            generator = self.virtual_batch_norm(generator, virtual_batch_norm, latent_dim, conditioning)
        self.generator, self.discriminator = generator, discriminator
        self.name, self.arch, self.latent_dim = name, arch, positive_int("model.latent_dim", latent_dim)
        self.loss = one_sided_smoothing(get_loss(loss), label_smoothing)
        self.unroll_steps = 0 if unroll_steps == 0 else positive_int("model.unroll_steps", unroll_steps)
        self.feature_matching = flag("model.feature_matching", feature_matching)
        if self.loss.relativistic or self.unroll_steps or self.feature_matching:
            check_shared_g_loss(self, self.loss, g_batch_multiple, self.unroll_steps, self.feature_matching)
        check_unrollable(d_optimizer, self.unroll_steps)
        if self.feature_matching:
            check_feature_matching(discriminator)
        self.historical_averaging = non_negative("model.historical_averaging", historical_averaging)
        self.regularizer, self.reg_weight = get_regularizer(regularizer), non_negative("model.reg_weight", reg_weight)
        self.n_critic, self.pack = positive_int("model.n_critic", n_critic), positive_int("model.pack", pack)
        self.reg_every = positive_int("model.reg_every", reg_every)
        self.g_batch_multiple = positive_int("model.g_batch_multiple", g_batch_multiple)
        self.conditional = conditioning != "none"
        if conditioning == "acgan" and not self.auxiliary_classifier:
            raise UserError("model.conditioning=acgan (an auxiliary classifier in D) is trained by the ACGAN model "
                            "only: use model=acgan, or another conditioning (concat, projection) with this model.")
        if self.conditional and pack > 1:
            raise UserError("Packing (model.pack > 1) is defined for unconditional GANs only; set model.pack=1 "
                            "or model.conditioning=none.")
        self.num_classes = num_classes if self.conditional else None
        self.ema_decay = ema_decay
        self.augment_pipe = make_augment(augment, augment_policy, ada_target, ada_interval, ada_kimg, ada_transforms)
        if ema_decay:
            self.ema_generator = self.make_ema(generator, float(ema_decay))
        betas, decay = check_betas("model.betas", betas), lr_schedule(total_iters, lr_decay)
        if self.historical_averaging:  # Improved GAN's historical averaging: each player's own running mean
            self.historical = nn.ModuleDict({"generator": HistoricalAverage(generator.parameters()),
                                             "discriminator": HistoricalAverage(discriminator.parameters())})
        phases = [Phase("d", "discriminator", self.with_history("discriminator", self.discriminator_loss),
                        repeats=self.n_critic)]
        if self.regularizer is not None and self.reg_weight and self.reg_every > 1:
            phases.append(Phase("d_reg", "discriminator", self.lazy_regularization, every=self.reg_every, lazy=True))
        phases.append(Phase("g", "generator", self.with_history("generator", self.generator_loss)))
        self.schedule(
            [Player("generator", ("generator",), g_optimizer, positive_float("model.g_lr", g_lr), betas,
                    ema=("generator",) if ema_decay else (), lr_factor=decay),
             Player("discriminator", ("discriminator",), d_optimizer, positive_float("model.d_lr", d_lr), betas,
                    lr_factor=decay)],
            phases)

    def virtual_batch_norm(self, generator: nn.Module, reference: int, latent_dim: int,
                           conditioning: str) -> nn.Module:
        """Improved GAN's virtual batch norm in G: `reference` latents N(0, I), drawn once from the run's seed (a
        generator of their own, so the module's stream is unchanged) and checkpointed with G."""
        reference = positive_int("model.virtual_batch_norm", reference)
        if conditioning != "none" or not self.shared_g_loss:
            raise UserError(f"model.virtual_batch_norm={reference} normalises the noise -> image G of an "
                            f"unconditional GAN against a fixed batch of reference latents; {type(self).__name__} "
                            f"with model.conditioning={conditioning} has other inputs. Use it with model=dcgan (or "
                            f"another unconditional model whose G has batch norm), or set model.virtual_batch_norm=0.")
        latents = torch.randn(reference, latent_dim, generator=torch.Generator().manual_seed(self.seed + 1))
        return VirtualBatchNormGenerator(generator, latents)

    @property
    def kind(self) -> str:
        return "conditional" if self.conditional else "image"

    # ---- sampling ---------------------------------------------------------------------------------
    def noise(self, n: int) -> Tensor:
        return self.draw(lambda m, rng: torch.randn(m, self.latent_dim, generator=rng), n)

    def random_labels(self, n: int) -> Tensor | None:
        if not self.conditional:
            return None
        return self.draw(lambda m, rng: torch.randint(self.num_classes, (m,), generator=rng), n)

    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               z: Tensor | None = None, y: Tensor | None = None) -> dict[str, Tensor]:
        """{"x": images (, "y": their labels)} in eval mode, by default from the EMA generator when there is one.
        `z` and `y` fix the inputs; what is not given is drawn from `generator`."""
        net = self.ema_generator if (ema is not False and self.ema_decay) else self.generator
        if z is None:
            z = torch.randn(n if y is None else len(y), self.latent_dim, generator=generator)
        if self.conditional and y is None:
            y = torch.randint(self.num_classes, (z.shape[0],), generator=generator)
        y = y.to(self.device) if self.conditional else None
        was_training = net.training
        net.eval()
        x = net(z.to(self.device), y)
        net.train(was_training)
        return {"x": x} if y is None else {"x": x, "y": y}

    # ---- the losses of the phases -------------------------------------------------------------------
    def packed(self, x: Tensor) -> Tensor:
        """PacGAN packing: m consecutive samples stacked along channels become one input of D."""
        if x.shape[0] % self.pack:
            raise UserError(f"model.pack={self.pack} must divide the batch size data.batch_size={x.shape[0]}.")
        if self.pack == 1:
            return x
        return x.reshape(x.shape[0] // self.pack, self.pack * x.shape[1], *x.shape[2:])

    def unpacked(self, x: Tensor) -> Tensor:
        return x if self.pack == 1 else x.reshape(x.shape[0] * self.pack, x.shape[1] // self.pack, *x.shape[2:])

    def augmented(self, x: Tensor) -> Tensor:
        """The images as D sees them: augmented with fresh draws from the model's RNG (model.augment), or as they are."""
        if self.augment_pipe is None:
            return x
        if x.dim() != 4:
            raise UserError(f"model.augment={'ada' if self.ada else 'diffaugment'} augments images [N, C, H, W], but "
                            f"this data has shape {list(x.shape)}. Use image data, or model.augment=none.")
        return self.augment_pipe(x, self.rng)

    def critic(self, x: Tensor, y: Tensor | None) -> Tensor:
        """D's adversarial logits on augmented images (model.augment), with PacGAN packing: m samples are judged
        jointly as one."""
        return self.discriminator(self.packed(self.augmented(x)), y)

    @property
    def ada(self) -> bool:
        return isinstance(self.augment_pipe, AdaptiveAugment)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if not self.ada:
            return super().training_step(batch, batch_idx)
        pipe = self.augment_pipe
        self._last["ada_p"] = pipe.p.clone()  # the p this iteration augments with
        super().training_step(batch, batch_idx)
        if self.g_iter % pipe.interval == 0:
            if self.world_size > 1:
                pipe.signs.copy_(self.trainer.strategy.reduce(pipe.signs, reduce_op="sum"))
            self._last["ada_rt"] = pipe.adjust(len(next(iter(batch.values()))) * self.world_size * pipe.interval)

    def real_data(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        if self.conditional and "y" not in batch:
            raise UserError("This conditional model needs class labels, but the data has none. Use a labelled "
                            "dataset (data=digits, mnist, fashion_mnist or cifar10) or model.conditioning=none.")
        return batch["x"], batch["y"] if self.conditional else None

    def fake_data(self, n: int) -> tuple[Tensor, Tensor | None]:
        y = self.random_labels(n)
        return self.generator(self.noise(n), y), y

    def discriminator_loss(self, batch: Batch) -> Tensor:
        real, y_real = self.real_data(batch)
        with torch.no_grad():
            fake, y_fake = self.fake_data(real.shape[0])
        loss = self.adversarial_d_loss(real, y_real, fake, y_fake)
        return loss + self.regularization(real, y_real, fake) if self.reg_every == 1 else loss

    def adversarial_d_loss(self, real: Tensor, y_real: Tensor | None, fake: Tensor, y_fake: Tensor | None) -> Tensor:
        d_real, d_fake = self.critic(real, y_real), self.critic(fake, y_fake)
        self.record_critic(d_real, d_fake)
        return self.loss.d(d_real, d_fake)

    def record_critic(self, d_real: Tensor, d_fake: Tensor) -> None:
        """What a person reads as D(x) and D(G(z)), logged beside the losses; ADA's overfitting signal."""
        if self.ada:
            self.augment_pipe.observe(d_real)
        self._last.update(d_real=self.loss.d_output(d_real).mean(), d_fake=self.loss.d_output(d_fake).mean())

    def regularization(self, real: Tensor, y_real: Tensor | None, fake: Tensor) -> Tensor | float:
        """reg_weight x the regulariser, on D's actual (packed) inputs: with packing, D's input gradient is
        taken with respect to the packed sample, and interpolates mix whole packs (PacGAN + WGAN-GP). With
        augmentation, D judges the augmented input and the gradient is taken through the augmentation with respect to
        the un-augmented one (R1 on real images as stylegan2-ada-pytorch; the gradient penalty's interpolates are
        augmented after mixing)."""
        if self.regularizer is None or not self.reg_weight:
            return 0.0
        penalty = self.regularizer(lambda x: self.critic(self.unpacked(x), y_real), self.packed(real),
                                   self.packed(fake), self.rng)
        self._last["reg"] = penalty.detach()
        return self.reg_weight * penalty

    def lazy_regularization(self, batch: Batch) -> Tensor:
        real, y_real = self.real_data(batch)
        with torch.no_grad():
            fake, _ = self.fake_data(real.shape[0])
        return self.regularization(real, y_real, fake)

    def generator_loss(self, batch: Batch) -> Tensor:
        """G's loss on `g_batch_multiple` x D's batch of fakes (sngan_projection's `n_gen_samples`, WGAN-GP's
        `GEN_BS_MULTIPLE`), drawn from the module's RNG (`fake_data` -> `draw`: exact resume, each rank its share)."""
        fake, y_fake = self.fake_data(self.g_batch_multiple * batch["x"].shape[0])
        if not (self.loss.relativistic or self.unroll_steps or self.feature_matching):
            return self.adversarial_g_loss(fake, y_fake)
        real, y_real = self.real_data(batch)
        if self.feature_matching:  # Improved GAN: G matches the mean of D's features on real data
            with torch.no_grad():  # the real side is a target: no graph for it
                real_features = head_input(self.discriminator, lambda: self.critic(real, y_real))
            fake_features = head_input(self.discriminator, lambda: self.critic(fake, y_fake))
            return feature_matching_loss(real_features, fake_features)
        critic = self.unrolled_critic(real, y_real, fake, y_fake) if self.unroll_steps else self.critic
        if self.loss.relativistic:  # D judges the iteration's real minibatch too (no gradient reaches real data)
            return self.loss.g(critic(fake, y_fake), critic(real, y_real))
        return self.loss.g(critic(fake, y_fake))

    def with_history(self, player: str, loss: Callable[[Batch], Tensor]) -> Callable[[Batch], Tensor]:
        """The phase loss, plus historical averaging's weight x ||theta - mean of past theta||^2 when it is on."""
        if not self.historical_averaging:
            return loss
        return partial(self.historically_averaged, player, loss)

    def historically_averaged(self, player: str, loss: Callable[[Batch], Tensor], batch: Batch) -> Tensor:
        penalty = self.historical[player].penalty()
        self._last[f"{player[0]}_history"] = penalty.detach()
        return loss(batch) + self.historical_averaging * penalty

    def after_step(self, phase: Phase) -> None:
        if self.historical_averaging and phase.name != "d_reg":  # after the player's step: theta[t] joins the mean
            self.historical[phase.player].update()

    def unrolled_critic(self, real: Tensor, y_real: Tensor | None, fake: Tensor,
                        y_fake: Tensor | None) -> Callable[[Tensor, Tensor | None], Tensor]:
        """`critic` as D would be after `unroll_steps` more steps of its optimiser on D's loss for this real minibatch
        and G's fakes (gan.unrolled): G's loss through it takes D's answer to G's change into account."""
        optimizers = self.optimizers()
        optimizer = dict(zip(self.players, optimizers if isinstance(optimizers, list) else [optimizers]))
        optimizer = getattr(optimizer["discriminator"], "optimizer", optimizer["discriminator"])  # Lightning's wrapper

        def d_loss(judge):
            return self.loss.d(judge(self.packed(self.augmented(real)), y_real),
                               judge(self.packed(self.augmented(fake)), y_fake))
        judge, _ = unrolled_parameters(self.discriminator, d_loss, optimizer, self.unroll_steps)
        return lambda x, y: judge(self.packed(self.augmented(x)), y)

    def adversarial_g_loss(self, fake: Tensor, y_fake: Tensor | None) -> Tensor:
        return self.loss.g(self.critic(fake, y_fake))


def check_shared_g_loss(module: GANModule, loss, g_batch_multiple: int, unroll_steps: int,
                        feature_matching: bool) -> None:
    """A relativistic loss, unrolling and feature matching change the shared G loss (`generator_loss`); paired
    relativistic losses need as many fakes as reals; feature matching replaces the adversarial G loss, so it does not
    combine with the other two."""
    options = [option for option, on in ((f"model.loss={loss.name} (relativistic)", loss.relativistic),
                                         (f"model.unroll_steps={unroll_steps}", unroll_steps),
                                         ("model.feature_matching=true", feature_matching)) if on]
    if feature_matching and len(options) > 1:
        raise UserError(f"model.feature_matching=true replaces G's adversarial loss by matching D's features, so "
                        f"{' and '.join(options[:-1])} would have no effect. Remove one of them.")
    if not module.shared_g_loss:
        option = options[0]
        raise UserError(f"{option} changes G's shared adversarial loss, which {type(module).__name__} does not use "
                        f"(it has a G loss of its own). Use it with an unconditional GAN (model=gan, dcgan, lsgan, "
                        f"sngan, wgan_gp, ...), or remove the override.")
    if loss.paired and g_batch_multiple != 1:
        raise UserError(f"model.loss={loss.name} compares each real sample with one fake (RSGAN), so G's batch must "
                        f"equal D's, but model.g_batch_multiple={g_batch_multiple}. Set model.g_batch_multiple=1, or "
                        f"use the average version (model.loss=relativistic_average).")
