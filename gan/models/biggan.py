"""BigGAN (Brock et al. 2019) on the GAN loop: the networks of `gan.nets.biggan`, hinge loss, 2 D steps per G step,
orthogonal regularisation in G's loss, an EMA of G that starts averaging after a warm-up, truncated latents at
sampling.

- Orthogonal regularisation (the paper's section 3.1): beta * ||W^T W (1 - I)||_F^2 summed over G's weights, each
  reshaped to [fan_in, out] (its filters as columns, so W^T W is the filters' Gram matrix), without the diagonal:
  the filters are pushed towards pairwise orthogonality, their norms are free. Added to G's loss (the reference
  adds its gradient, 2 (W W^T (1 - I)) W, i.e. that of half the penalty, to the gradients directly).
- EMA: over G's whole state_dict, as the reference's `utils.ema` (ajbrock/BigGAN-PyTorch utils.py): parameters and
  floating-point buffers (batch-norm running means and variances, spectral norm's power-iteration vectors) alike; the
  updates of the first `ema_start` iterations copy G (the reference's decay 0 before `ema_start`), later ones blend
  with `ema_decay`. Integer buffers (batch norm's num_batches_tracked) are copied. (The other models' EMA averages the
  parameters and copies the buffers, as StyleGAN2's.)
- Sampling mode (`sample_eval_mode`): G's batch norms on their running statistics (eval mode, the reference's
  `--G_eval_mode`, which its ImageNet script sets) or on the statistics of the batch being sampled (train mode, its
  default, which its CIFAR-10 script keeps); either way the running statistics come back untouched, so sampling
  never changes a checkpoint. Recorded with every evaluation (`sampling_context`).
- Truncation trick: latent entries with |z| above a threshold are redrawn until none is (the paper's section 3.1);
  the other entries keep their values. `sample(threshold=t)` takes the paper's threshold. The evaluator's
  `truncation=psi` (shared with StyleGAN, where psi = 1 is no truncation) maps to the threshold whose interval
  keeps the fraction psi of a standard normal's mass: t = sqrt(2) erfinv(psi), so psi = 1 is no truncation,
  psi = 0.6827 is t = 1, psi = 0.9545 is t = 2, and smaller psi truncates more, as for StyleGAN.
"""
from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from gan.errors import UserError, non_negative
from gan.models.base import GANModule
from gan.models.core import Batch, Player
from gan.models.translation import batch_statistics

TRUNCATION_SWEEP = (None, 2.0, 1.0, 0.5, 0.04)  # thresholds of the paper's figure 2(a), after no truncation


def orthogonal_penalty(weight: Tensor) -> Tensor:
    """||W^T W (1 - I)||_F^2 for W the weight with its output filters as columns ([fan_in, out])."""
    filters = weight.flatten(1)  # [out, fan_in]: the rows are W's columns
    gram = filters @ filters.T
    return (gram - torch.diag_embed(gram.diagonal())).square().sum()


def truncate(z: Tensor, threshold: float | None, generator: torch.Generator | None = None) -> Tensor:
    """z with every entry whose magnitude exceeds `threshold` redrawn from N(0, 1) until none does (None: z)."""
    if threshold is None:
        return z
    z = z.clone()
    outside = z.abs() > threshold
    while outside.any():
        z[outside] = torch.randn(int(outside.sum()), generator=generator).to(z)
        outside = z.abs() > threshold
    return z


def threshold_of_psi(psi: float) -> float | None:
    """The truncation threshold t whose interval [-t, t] holds the fraction psi of N(0, 1); psi = 1: none."""
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not 0 < psi <= 1:
        raise UserError(f"truncation={psi!r}: for BigGAN, psi is the fraction of the normal distribution the "
                        f"truncated latents keep, in (0, 1] (1: no truncation; 0.6827: threshold 1; 0.9545: "
                        f"threshold 2; the threshold is sqrt(2) erfinv(psi)).")
    return None if psi == 1 else math.sqrt(2) * torch.special.erfinv(torch.tensor(float(psi), dtype=torch.float64)).item()


def _train(modules: list[nn.Module]) -> None:
    for module in modules:
        module.train()


class BigGAN(GANModule):
    sampling_options = frozenset({"truncation"})

    def __init__(self, generator: nn.Module, *args, ortho_weight: float, ema_start: int, sample_eval_mode: bool,
                 arch: str | None = "biggan", **kwargs):
        """GANModule's settings (conf/model/biggan.yaml holds the paper's values) with projection conditioning, plus
        the orthogonal regularisation's weight, the iteration the EMA starts averaging at and whether G samples with
        its batch norms in eval mode (running statistics) or in train mode (the sampled batch's statistics)."""
        if not hasattr(generator, "regularized_weights"):
            raise UserError(f"model=biggan needs BigGAN's generator (gan.nets.biggan.BigGANGenerator), got "
                            f"{type(generator).__name__}.")
        if isinstance(ema_start, bool) or not isinstance(ema_start, int) or ema_start < 0:
            raise UserError(f"model.ema_start is the number of iterations during which the EMA of G just copies G "
                            f"before it starts averaging (the paper: 20000), an integer >= 0, got {ema_start!r}.")
        if not isinstance(sample_eval_mode, bool):
            raise UserError(f"model.sample_eval_mode is true (G samples with its batch norms on their running "
                            f"statistics) or false (on the statistics of the sampled batch), got {sample_eval_mode!r}.")
        super().__init__(generator, *args, arch=arch, conditioning="projection", **kwargs)
        self.ortho_weight, self.ema_start = non_negative("model.ortho_weight", ortho_weight), ema_start
        self.sample_eval_mode = sample_eval_mode

    # ---- training ---------------------------------------------------------------------------------
    def generator_loss(self, batch: Batch) -> Tensor:
        loss = super().generator_loss(batch)
        if not self.ortho_weight:
            return loss
        penalty = sum(orthogonal_penalty(w) for w in self.generator.regularized_weights())
        self._last["ortho"] = penalty.detach()
        return loss + self.ortho_weight * penalty

    def _update_ema(self, player: Player) -> None:
        """The reference's `utils.ema.update`: every entry of the state_dict blended with the decay (0 before
        `ema_start`: a copy), integer buffers copied."""
        for name in player.ema:
            live, ema = getattr(self, name), getattr(self, f"ema_{name}")
            if self.g_iter < self.ema_start:
                ema.n_averaged.zero_()  # so the update copies G instead of averaging
            # AveragedModel copies on its first update (n_averaged 0: the run's first iteration, or zeroed above);
            # known from the counter alone, so the device is not asked for n_averaged at every iteration
            copying = self.g_iter < max(self.ema_start, 1)
            buffers = [current if copying or not averaged.is_floating_point()
                       else averaged.lerp(current, 1.0 - self.ema_decay)
                       for averaged, current in zip(ema.module.buffers(), live.buffers())]
            ema.update_parameters(live)  # which also copies the live buffers over the averaged ones
            for averaged, value in zip(ema.module.buffers(), buffers):
                averaged.copy_(value)

    # ---- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               z: Tensor | None = None, y: Tensor | None = None, truncation_psi: float = 1.0,
               truncation_cutoff: int | None = None, threshold: float | None = None) -> dict[str, Tensor]:
        """{"x": images, "y": their labels}; z (given or drawn) truncated at `threshold`, or at the threshold of
        `truncation_psi` (see the module's docstring). The entries redrawn come from `generator`."""
        if truncation_cutoff is not None:
            raise UserError(f"truncation_cutoff={truncation_cutoff!r}: BigGAN truncates every latent entry; the "
                            f"cutoff (layers of a style-based generator) does not apply. Leave it null.")
        psi_threshold = threshold_of_psi(truncation_psi)
        if threshold is not None and psi_threshold is not None:
            raise UserError("Give BigGAN's truncation either as a threshold or as psi, not both.")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not threshold > 0):
            raise UserError(f"The truncation threshold must be a positive number (the paper's figure 2(a): 2, 1, "
                            f"0.5, 0.04), got {threshold!r}.")
        if z is None:
            z = torch.randn(n if y is None else len(y), self.latent_dim, generator=generator)
        z = truncate(z, threshold if threshold is not None else psi_threshold, generator)
        with self.sampling_mode():
            return super().sample(generator=generator, ema=ema, z=z, y=y)

    @contextmanager
    def sampling_mode(self) -> Iterator[None]:
        """With `sample_eval_mode` false, G's batch norms (live and EMA) normalise with the sampled batch's
        statistics, their running statistics saved and restored by `batch_statistics`; GANModule.sample switches G
        to eval mode before its forward, so a forward pre-hook switches the norm layers back to train mode."""
        if self.sample_eval_mode:
            yield
            return
        with ExitStack() as stack:
            for net in (self.generator, getattr(self, "ema_generator", None)):
                if net is None:
                    continue
                stack.enter_context(batch_statistics(net, True))
                norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
                stack.callback(net.register_forward_pre_hook(lambda module, args, norms=norms: _train(norms)).remove)
            yield

    def sampling_context(self) -> dict:
        """Whether G's batch norms sampled on their running statistics (eval mode) or the batch's (train mode)."""
        return {"sample_eval_mode": self.sample_eval_mode}

    @torch.no_grad()
    def extra_grids(self, generator: torch.Generator, size: int = 64) -> dict[str, tuple[Tensor, int]]:
        """`truncation`: one row per class (up to `size` / 5 classes), each with one latent, one column per
        threshold of TRUNCATION_SWEEP (none, then the paper's 2, 1, 0.5, 0.04); every column redraws its out-of-range
        entries from the same seed, so the grid is the same at every call."""
        rows = max(1, min(self.num_classes, size // len(TRUNCATION_SWEEP)))
        y = torch.arange(rows) * self.num_classes // rows
        z = torch.randn(rows, self.latent_dim, generator=generator)
        seed = int(torch.randint(2**62, (), generator=generator))
        sweep = torch.stack([self.sample(z=z, y=y, threshold=t, generator=torch.Generator().manual_seed(seed))["x"]
                             for t in TRUNCATION_SWEEP], dim=1)
        return {"truncation": (sweep.flatten(0, 1).float().cpu(), len(TRUNCATION_SWEEP))}
