"""VAE (Kingma & Welling 2014) on the shared loop: one player (encoder + decoder, Adam), one phase (the negative
ELBO), so checkpoints, exact resume, loggers, grids, evaluation and sweeps are those of the GANs.

What the likelihood is, on which scale (data are uint8 images served as x = k / 127.5 - 1 in [-1, 1]; every value
is in nats per image, summed over the D = C x H x W dimensions):

- `bernoulli`: the decoder's last layer gives logits l; with targets t = (x + 1) / 2 in [0, 1],
  log p(x|z) = sum_d t log sigmoid(l) + (1 - t) log(1 - sigmoid(l)) = -BCE-with-logits(l, t) with soft targets.
  For grey values this is not a normalised density (nor a probability of the 256 levels): its bounds compare
  VAEs with one another, not with other likelihood models, and no bits/dim are given. The image is the decoder
  mean 2 sigmoid(l) - 1.
- `gaussian`: mean tanh(l) on the [-1, 1] scale, one standard deviation for every pixel: learned (a single
  parameter, as the sigma-VAE of Rybkin et al. 2021) when `gaussian_std` is null, else fixed. The data are
  dequantised (uniform noise over each pixel's bin of width 1/127.5, centred on it), in training and in
  evaluation, so E_u log p(x + u) - D log 127.5 lower-bounds the log-probability of the 8-bit image and the bounds
  are also given in bits/dim of the 8-bit data (`bpd_elbo`, `bpd_iwae`), comparable with other likelihood models.

Evaluation (`likelihood_values`, called by the evaluator beside FID/IS/KID/PR on prior samples) reports upper bounds
on the negative log-likelihood of the evaluated split's images: `nll_elbo` (analytic KL, reconstruction term
averaged over k posterior samples) and `nll_iwae` (Burda et al. 2016, k importance samples), with `recon_nll` and
`kl` the ELBO's two terms. The ELBO is the beta = 1 bound whatever `kl_weight` trains with.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import UserError, check_betas, non_negative, positive_float, positive_int
from gan.models.core import AdversarialModule, Batch, Phase, Player

LIKELIHOODS = ("bernoulli", "gaussian")
BIN_WIDTH = 1 / 127.5  # one of the 256 pixel levels on the [-1, 1] scale
LOG_2PI = math.log(2 * math.pi)
IWAE_DECODES = 2000  # decoder inputs per evaluation chunk: images per chunk = max(1, IWAE_DECODES // k)


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) per row, in closed form."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(-1)


def normal_log_prob(z: Tensor, mean: Tensor | float = 0.0, log_var: Tensor | float = 0.0) -> Tensor:
    """log N(z; mean, diag(exp(log_var))) summed over the last dimension."""
    log_var = torch.as_tensor(log_var, dtype=z.dtype, device=z.device)
    return -0.5 * (LOG_2PI + log_var + (z - mean).pow(2) * torch.exp(-log_var)).sum(-1)


def reparameterize(mean: Tensor, log_var: Tensor, eps: Tensor) -> Tensor:
    """z = mean + sigma * eps with eps ~ N(0, I): a sample of q(z|x) differentiable in mean and log_var."""
    return mean + torch.exp(0.5 * log_var) * eps


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """log(mean(exp(values))) along `dim`, stably (through logsumexp: no overflow for log-weights of -1e4)."""
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


class LearnedScale(nn.Module):
    """The Gaussian decoder's log standard deviation, one for all pixels, as a network the player trains."""

    def __init__(self):
        super().__init__()
        self.log_std = nn.Parameter(torch.zeros(()))

    def forward(self) -> Tensor:
        return self.log_std


class VAE(AdversarialModule):
    kind = "likelihood"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, optimizer: Callable, latent_dim: int,
                 name: str, likelihood: str, gaussian_std: float | None, kl_weight: float, iwae_k: int,
                 likelihood_images: int | None, lr: float, betas: Sequence[float] | None, log_every: int, seed: int,
                 compile: bool | str, compile_mode: str, channels_last: bool):
        super().__init__(seed=seed, log_every=log_every,
                         compile=compile, compile_mode=compile_mode, channels_last=channels_last)
        if likelihood not in LIKELIHOODS:
            raise UserError(f"model.likelihood={likelihood!r} is not a decoder likelihood this VAE has: use bernoulli "
                            f"(binary cross-entropy on pixels mapped to [0, 1], the classic choice for digits) or "
                            f"gaussian (a dequantised Gaussian on the [-1, 1] scale, with a learned standard deviation "
                            f"when model.gaussian_std=null, or a fixed one such as model.gaussian_std=0.1).")
        self.name, self.likelihood = name, likelihood
        self.latent_dim = positive_int("model.latent_dim", latent_dim)
        self.encoder, self.decoder = encoder, decoder
        self.kl_weight = non_negative("model.kl_weight", kl_weight)
        self.iwae_k = positive_int("model.iwae_k", iwae_k)
        self.likelihood_images = (None if likelihood_images is None
                                  else positive_int("model.likelihood_images", likelihood_images))
        networks = ("encoder", "decoder")
        self.gaussian_std = None
        if likelihood == "gaussian":
            if gaussian_std is None:
                self.decoder_scale = LearnedScale()
                networks += ("decoder_scale",)
            else:
                self.gaussian_std = positive_float("model.gaussian_std (null: learned)", gaussian_std)
        self.schedule([Player("vae", networks, optimizer, positive_float("model.lr", lr), check_betas("model.betas", betas))],
                      [Phase("vae", "vae", self.negative_elbo)])

    # ---- the likelihood ---------------------------------------------------------------------------------
    def log_std(self) -> Tensor:
        if self.gaussian_std is not None:
            return torch.tensor(math.log(self.gaussian_std), device=self.device)
        return self.decoder_scale()

    def log_likelihood(self, x: Tensor, output: Tensor) -> Tensor:
        """log p(x|z) per image (nats, summed over pixels) of the decoder's `output` for z; see the module docstring."""
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(output, (x + 1) / 2, reduction="none").flatten(1).sum(1)
        log_std = self.log_std()
        residual = (x - torch.tanh(output)) * torch.exp(-log_std)
        return -(0.5 * LOG_2PI + log_std + 0.5 * residual.pow(2)).flatten(1).sum(1)

    def image(self, output: Tensor) -> Tensor:
        """The decoder's mean as an image in [-1, 1]."""
        return 2 * torch.sigmoid(output) - 1 if self.likelihood == "bernoulli" else torch.tanh(output)

    def dequantized(self, x: Tensor, uniform: Tensor) -> Tensor:
        """Gaussian: x moved by (u - 1/2) bins, u ~ U[0, 1) (a point of the pixel's bin); Bernoulli: x as it is."""
        return x + (uniform.to(x.device) - 0.5) * BIN_WIDTH if self.likelihood == "gaussian" else x

    # ---- training -----------------------------------------------------------------------------------------
    def negative_elbo(self, batch: Batch) -> Tensor:
        """-(E_q log p(x|z) - kl_weight KL(q(z|x) || p(z))) per image, one reparameterised z each; every draw from
        the module's checkpointed RNG."""
        x = batch["x"]
        n = x.shape[0]
        if self.likelihood == "gaussian":
            x = self.dequantized(x, self.draw(lambda m, rng: torch.rand(m, *x.shape[1:], generator=rng), n))
        mean, log_var = self.encoder(x)
        z = reparameterize(mean, log_var, self.draw(lambda m, rng: torch.randn(m, self.latent_dim, generator=rng), n))
        reconstruction = self.log_likelihood(x, self.decoder(z))
        kl = gaussian_kl(mean, log_var)
        self._last.update(recon_nll=-reconstruction.mean().detach(), kl=kl.mean().detach())
        if self.likelihood == "gaussian":
            self._last["log_std"] = self.log_std().detach()
        return (self.kl_weight * kl - reconstruction).mean()

    # ---- sampling and reconstruction ----------------------------------------------------------------------
    @contextmanager
    def evaluating(self):
        """Encoder and decoder in eval mode (batch norm's running statistics), restored afterwards."""
        modes = [(net, net.training) for net in (self.encoder, self.decoder)]
        for net, _ in modes:
            net.eval()
        try:
            yield
        finally:
            for net, mode in modes:
                net.train(mode)

    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None, ema: bool | None = None,
               z: Tensor | None = None) -> dict[str, Tensor]:
        """{"x": decoder means of z ~ N(0, I)} (not noisy draws of p(x|z)), in eval mode; `z` fixes the latents, else
        they are drawn from `generator`. `ema` is accepted for the evaluator's sake: a VAE keeps no EMA copy."""
        if z is None:
            z = torch.randn(n, self.latent_dim, generator=generator)
        with self.evaluating():
            return {"x": self.image(self.decoder(z.to(self.device)))}

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the posterior mean: what the model makes of `x`, without sampling noise."""
        with self.evaluating():
            return self.image(self.decoder(self.encoder(x.to(self.device))[0]))

    def extra_grids(self, generator: torch.Generator, size: int = 64) -> dict[str, tuple[Tensor, int]]:
        """`reconstructions`: rows of fixed validation images (the metrics' fixed subset), each followed by a row
        of their reconstructions."""
        from gan.metrics.real_data import load_tensors

        columns = max(1, round(size**0.5))
        real = load_tensors(self.trainer.datamodule.dataset("val"), max(1, columns // 2) * columns)[0]
        columns = min(columns, len(real))
        rows = len(real) // columns
        real = real[:rows * columns]
        pairs = torch.stack([real, self.reconstruct(real).float().cpu()]).view(2, rows, columns, *real.shape[1:])
        return {"reconstructions": (pairs.transpose(0, 1).flatten(0, 2), columns)}

    # ---- the likelihood bounds the evaluator reports -------------------------------------------------------
    @torch.no_grad()
    def likelihood_bounds(self, x: Tensor, k: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Per image of `x`: the ELBO (analytic KL; reconstruction averaged over k posterior samples), the IWAE
        bound log (1/k) sum_i p(x, z_i) / q(z_i|x), and the ELBO's terms; on dequantised x for the Gaussian."""
        x = self.dequantized(x, torch.rand(x.shape, generator=generator)).to(self.device)
        eps = torch.randn(k, len(x), self.latent_dim, generator=generator).to(self.device)
        with self.evaluating():
            mean, log_var = self.encoder(x)
            z = reparameterize(mean, log_var, eps)  # [k, N, latent]
            outputs = self.decoder(z.flatten(0, 1))
        log_px = self.log_likelihood(x.repeat(k, *[1] * (x.dim() - 1)), outputs).view(k, len(x))
        log_w = log_px + normal_log_prob(z) - normal_log_prob(z, mean, log_var)
        kl = gaussian_kl(mean, log_var)
        return {"elbo": log_px.mean(0) - kl, "iwae": log_mean_exp(log_w, 0), "recon_nll": -log_px.mean(0), "kl": kl}

    def likelihood_values(self, datamodule, split: str, seed: int) -> tuple[dict[str, float], dict]:
        """(values, provenance) of the bounds on (a fixed subset of) `split`, reproducible from `seed`."""
        from gan.metrics.real_data import load_tensors

        images = load_tensors(datamodule.dataset(split), self.likelihood_images)[0]
        generator = torch.Generator().manual_seed(int(seed))
        chunk = max(1, IWAE_DECODES // self.iwae_k)
        parts = [self.likelihood_bounds(images[i:i + chunk], self.iwae_k, generator)
                 for i in range(0, len(images), chunk)]
        per_image = {key: torch.cat([p[key] for p in parts]).double().cpu() for key in parts[0]}
        values = {"nll_elbo": -per_image["elbo"].mean().item(), "nll_iwae": -per_image["iwae"].mean().item(),
                  "recon_nll": per_image["recon_nll"].mean().item(), "kl": per_image["kl"].mean().item()}
        dims = images[0].numel()
        if self.likelihood == "gaussian":  # the continuous density's bound moved to the 8-bit data, per dimension
            for bound in ("elbo", "iwae"):
                values[f"bpd_{bound}"] = (values[f"nll_{bound}"] + dims * math.log(1 / BIN_WIDTH)) / (dims * math.log(2))
        std = "learned" if self.gaussian_std is None else f"fixed {self.gaussian_std:g}"
        provenance = {
            "likelihood": ("bernoulli: BCE with soft targets (x + 1) / 2, not normalised for grey values" if
                           self.likelihood == "bernoulli" else
                           f"gaussian on the [-1, 1] scale, std {std} ({math.exp(self.log_std().item()):.4g}), "
                           f"dequantised; bpd of the 8-bit data"),
            "likelihood_units": "nats per image (summed over dimensions)", "likelihood_dims": dims,
            "likelihood_split": split, "likelihood_images": len(images), "iwae_k": self.iwae_k,
            "likelihood_seed": int(seed), "kl_weight": self.kl_weight,
        }
        return values, provenance
