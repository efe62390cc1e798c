"""InfoGAN's MNIST networks (Chen et al. 2016, appendix C.1; openai/InfoGAN `infogan/models/regularized_gan.py`).

G: FC 1024 - BN - ReLU, FC (side/4)^2 x 128 - BN - ReLU, 4x4 up-conv 64 stride 2 - BN - ReLU, 4x4 up-conv to the
image, stride 2. D: 4x4 conv 64 stride 2 - lReLU, 4x4 conv 128 stride 2 - BN - lReLU, FC 1024 - BN - lReLU, then
two heads on that shared body: FC 1 (the adversarial logit) and Q, FC 128 - BN - lReLU - FC to the code posterior
(logits of each categorical code, then the means, and log-stds unless fixed, of the continuous codes).

Departures, each stated: the image comes out of tanh in [-1, 1] (the reference's Bernoulli means are a sigmoid in
[0, 1]: the same family up to an affine map of the pixels); lReLU's slope is the paper's 0.1 (the reference code's
`leaky_rectify` defaults to 0.01: `model.discriminator.leak=0.01`). Weights ~ N(0, 0.02), BN scale ~ N(1, 0.02),
biases 0, as the reference's `custom_ops`. The side must be a multiple of 4 (28: 7 -> 14 -> 28; 16: 4 -> 8 -> 16).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from gan.errors import UserError
from gan.nets.dcgan import dcgan_init


def check_codes(categorical_codes, continuous_codes) -> tuple[tuple[int, ...], int]:
    """(sizes of the categorical codes, number of continuous codes), refused unless every size is an integer >= 2,
    the count an integer >= 0, and there is at least one code."""
    sizes = list(categorical_codes) if isinstance(categorical_codes, Sequence) and not isinstance(
        categorical_codes, str) else None
    if sizes is None or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 2 for k in sizes):
        raise UserError(f"model.categorical_codes must be a list of code sizes, each an integer of at least 2 (the "
                        f"number of values the code takes; the paper's MNIST model: [10]), got {categorical_codes!r}. "
                        f"Use e.g. model.categorical_codes=[10], or [] for no categorical code.")
    if isinstance(continuous_codes, bool) or not isinstance(continuous_codes, int) or continuous_codes < 0:
        raise UserError(f"model.continuous_codes must be a whole number of U(-1, 1) codes, 0 or more (the paper's "
                        f"MNIST model: 2), got {continuous_codes!r}. Use e.g. model.continuous_codes=2.")
    if not sizes and not continuous_codes:
        raise UserError("InfoGAN needs at least one latent code to maximise the mutual information of, but "
                        "model.categorical_codes is empty and model.continuous_codes is 0. Set e.g. "
                        "model.categorical_codes=[10], or train a plain GAN (model=dcgan).")
    return tuple(sizes), continuous_codes


def check_side(shape) -> int:
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] % 4 or shape[1] < 8:
        raise UserError(f"InfoGAN's MNIST networks make square images whose side is a multiple of 4 (two stride-2 "
                        f"stages: 28 = 7 x 4), but the data has shape {tuple(shape)}. Use data=mnist5k (28), "
                        f"data=digits (16) or data.image_size=<multiple of 4>.")
    return shape[1] // 4


class InfoGANGenerator(nn.Module):
    def __init__(self, shape, latent_dim: int, categorical_codes, continuous_codes: int, width: int, hidden: int):
        super().__init__()
        sizes, continuous = check_codes(categorical_codes, continuous_codes)
        base = check_side(shape)
        self.input_dim = latent_dim + sum(sizes) + continuous
        self.base, self.width = base, width
        self.fc = nn.Sequential(nn.Linear(self.input_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(True),
                                nn.Linear(hidden, 2 * width * base * base), nn.BatchNorm1d(2 * width * base * base),
                                nn.ReLU(True))
        self.conv = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(True),
                                  nn.ConvTranspose2d(width, shape[0], 4, 2, 1), nn.Tanh())
        dcgan_init(self)
        for m in self.modules():  # dcgan_init covers BatchNorm2d; the FC layers' BN as the reference's
            if isinstance(m, nn.BatchNorm1d):
                nn.init.normal_(m.weight, 1.0, 0.02)

    def forward(self, inputs: Tensor, y: Tensor | None = None) -> Tensor:
        """`inputs`: [N, latent_dim + sum(categorical sizes) + continuous] (z, one-hot codes, continuous codes)."""
        return self.conv(self.fc(inputs).view(-1, 2 * self.width, self.base, self.base))


class InfoGANDiscriminator(nn.Module):
    def __init__(self, shape, categorical_codes, continuous_codes: int, width: int, hidden: int, q_hidden: int,
                 leak: float, fix_std: bool):
        super().__init__()
        sizes, continuous = check_codes(categorical_codes, continuous_codes)
        base = check_side(shape)
        self.categorical_codes, self.continuous_codes, self.fix_std = sizes, continuous, bool(fix_std)
        self.body = nn.Sequential(
            nn.Conv2d(shape[0], width, 4, 2, 1), nn.LeakyReLU(leak),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(leak), nn.Flatten(),
            nn.Linear(2 * width * base * base, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(leak))
        self.head = nn.Linear(hidden, 1)
        q_out = sum(sizes) + continuous * (1 if self.fix_std else 2)
        self.q_head = nn.Sequential(nn.Linear(hidden, q_hidden), nn.BatchNorm1d(q_hidden), nn.LeakyReLU(leak),
                                    nn.Linear(q_hidden, q_out))
        dcgan_init(self)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                nn.init.normal_(m.weight, 1.0, 0.02)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The adversarial logit [N] (what losses and regularisers judge)."""
        return self.head(self.body(x)).squeeze(1)

    def with_codes(self, x: Tensor) -> tuple[Tensor, "CodePosterior"]:
        """(the adversarial logit, Q(c | x)) from one pass through the shared body."""
        h = self.body(x)
        return self.head(h).squeeze(1), self.posterior(self.q_head(h))

    def codes(self, x: Tensor) -> "CodePosterior":
        return self.posterior(self.q_head(self.body(x)))

    def posterior(self, flat: Tensor) -> "CodePosterior":
        logits = list(flat[:, :sum(self.categorical_codes)].split(list(self.categorical_codes), dim=1))
        rest = flat[:, sum(self.categorical_codes):]
        mean = rest[:, :self.continuous_codes]
        log_std = torch.zeros_like(mean) if self.fix_std else rest[:, self.continuous_codes:]
        return CodePosterior(logits, mean, log_std)


class CodePosterior:
    """Q(c | x): a categorical distribution per categorical code (its logits) and a factored Gaussian over the
    continuous codes (means, log-stds; the reference fixes the std at 1 for MNIST, `Uniform(1, fix_std=True)`)."""

    def __init__(self, logits: list[Tensor], mean: Tensor, log_std: Tensor):
        self.logits, self.mean, self.log_std = logits, mean, log_std

    def log_likelihood(self, categorical: Tensor, continuous: Tensor) -> tuple[Tensor, Tensor]:
        """(log Q of the categorical codes, of the continuous codes), each [N], summed over the codes. `categorical`:
        [N, number of categorical codes] of indices; `continuous`: [N, continuous codes]."""
        log_cat = sum((torch.log_softmax(l, dim=1).gather(1, categorical[:, i:i + 1]).squeeze(1)
                       for i, l in enumerate(self.logits)), torch.zeros(len(continuous), device=continuous.device))
        z = (continuous - self.mean) * torch.exp(-self.log_std)
        log_cont = (-0.5 * torch.log(torch.tensor(2 * torch.pi)) - self.log_std - 0.5 * z**2).sum(1)
        return log_cat, log_cont
