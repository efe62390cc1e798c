"""The VAE's networks, the DCGAN ones (Radford et al. 2015) reused so that a VAE and a DCGAN compare at equal size:
the encoder is the DCGAN discriminator's convolutional trunk with a head of 2 x latent_dim (posterior mean and
log-variance) instead of one logit; the decoder is the DCGAN generator without its final tanh (the model's likelihood
decides how the last layer's output becomes an image: Bernoulli logits, or a Gaussian mean through tanh)."""
from __future__ import annotations

from torch import Tensor, nn

from gan.errors import positive_int
from gan.nets.conditioning import NORMS, check_choice
from gan.nets.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init, stages


class VAEEncoder(nn.Module):
    """x -> (mean, log-variance) of the diagonal Gaussian q(z|x), each [N, latent_dim]."""

    def __init__(self, shape, latent_dim: int, width: int, norm: str):
        super().__init__()
        self.latent_dim = positive_int("model.latent_dim", latent_dim)
        check_choice("model.encoder.norm", norm, NORMS)
        self.features = DCGANDiscriminator(shape, width=positive_int("model.encoder.width", width), norm=norm).features
        base, n_down = stages(shape, "VAE")
        channels = width * 2 ** (n_down - 1)
        self.head = nn.Linear(channels * base * base, 2 * self.latent_dim)  # where D has its 4x4 "convolution" to one logit
        dcgan_init(self.head)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.head(self.features(x)).chunk(2, dim=1)
        return mean, log_var


def vae_decoder(shape, latent_dim: int, width: int) -> nn.Module:
    """z -> the last layer's output [N, C, H, W] before any output non-linearity (DCGANGenerator less its tanh)."""
    decoder = DCGANGenerator(shape, latent_dim=positive_int("model.latent_dim", latent_dim),
                             width=positive_int("model.decoder.width", width))
    decoder.net[-1] = nn.Identity()
    return decoder
