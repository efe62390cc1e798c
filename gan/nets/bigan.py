"""BiGAN / ALI networks: an encoder E: x -> z, a generator G: z -> x and a joint discriminator D(x, z), chosen together
by `model.nets`:

- `mlp`, for flat data (2-D toy points) and small images, after BiGAN's permutation-invariant MNIST networks (Donahue
  et al. 2017, appendix; jeffdonahue/bigan `net.py`, `mnist_mlp` and `deconvnet_mnist_mlp`: two hidden layers).
  G: (FC - BN - ReLU) x depth, FC to the sample, tanh for images (in [-1, 1]), linear for points. E: FC - LReLU(0.2),
  then (FC - BN - LReLU(0.2)) x (depth - 1), FC to z, or to (mu, log sigma) for ALI's stochastic encoder
  (`stochastic`: twice the latent width; the model draws z = mu + sigma * eps);
- `conv`, for images whose side is a multiple of 4 (16 px digits, 28 px MNIST, 32 px CIFAR-10): the same FC layers,
  after two stride-2 4x4 convolutions of `width` and 2 x `width` maps in E and in D's x path, and before two 4x4
  up-convolutions in G (InfoGAN's MNIST networks, gan/nets/infogan.py).

D is ALI's three-way discriminator (Dumoulin et al. 2017; IshmaelBelghazi/ALI `XZJointDiscriminator`): an x path and a
z path, (FC - norm - LReLU(0.2)) x depth each (no norm on a path's first layer), and a joint path of the same kind on
the concatenation of their outputs, then FC 1 (a logit). `dropout` before each of D's layers (ALI: 0.2 on D's inputs,
0.5 above), `norm` none | batch | layer | spectral.

Departures: BiGAN's reference feeds z into every hidden layer of its MLP D instead of a z path; ALI's D uses maxout
units and two dropout rates; weights keep PyTorch's initialisation (the references draw N(0, 0.02) and N(0, 0.01)).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gan.errors import UserError
from gan.nets.conditioning import NORMS, check_choice, norm_1d, norm_2d, sn

NETS = ("mlp", "conv")


def encoder(nets: str, shape, latent_dim: int, hidden: int, depth: int, width: int, stochastic: bool) -> nn.Module:
    return Encoder(shape, latent_dim, hidden, depth, stochastic, trunk(nets, shape, width, "batch", 0.0))


def generator(nets: str, shape, latent_dim: int, hidden: int, depth: int, width: int) -> nn.Module:
    conv = check_choice("model.nets", nets, NETS) == "conv"
    return Generator(shape, latent_dim, hidden, depth, width if conv else None)


def discriminator(nets: str, shape, latent_dim: int, hidden: int, depth: int, width: int, norm: str,
                  dropout: float) -> nn.Module:
    check_choice("model.discriminator.norm", norm, NORMS)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise UserError(f"model.discriminator.dropout is the probability of zeroing a unit before each of D's layers, "
                        f"a number in [0, 1) (ALI: 0.2; 0 for none), got {dropout!r}.")
    return JointDiscriminator(latent_dim, hidden, depth, norm, dropout, trunk(nets, shape, width, norm, dropout))


def check_depth(key: str, depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise UserError(f"{key} is the number of hidden layers, a whole number >= 0 (BiGAN's MNIST networks: 2), got "
                        f"{depth!r}.")
    return depth


def check_side(shape) -> int:
    """The side of the conv networks' smallest maps: a quarter of the image's."""
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] % 4 or shape[1] < 8:
        raise UserError(f"model.nets=conv makes square images whose side is a multiple of 4 (two stride-2 stages: 28 = "
                        f"7 x 4), but the data has shape {list(shape)}. Use model.nets=mlp (any shape, 2-D points "
                        f"too), or data.image_size=<multiple of 4>.")
    return shape[1] // 4


def dropped(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p else []


def path(width: int, hidden: int, depth: int, norm: str = "none", dropout: float = 0.0) -> tuple[nn.Sequential, int]:
    """(FC - norm - LReLU(0.2)) x depth, each FC after dropout; no norm on the first layer. Returns (layers, width)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [*dropped(dropout), sn(nn.Linear(width, hidden), norm), norm_1d(norm if i else "none", hidden),
                   nn.LeakyReLU(0.2)]
        width = hidden
    return nn.Sequential(*layers), width


def trunk(nets: str, shape, width: int, norm: str, dropout: float) -> tuple[nn.Module, int]:
    """What reads the data before the FC layers: (module, its output width). mlp: a flatten; conv: two stride-2 4x4
    convolutions (width, then 2 x width maps, LReLU(0.2), `norm` on the second), flattened."""
    if check_choice("model.nets", nets, NETS) == "mlp":
        return nn.Flatten(), math.prod(shape)
    side = check_side(shape)
    return nn.Sequential(
        *dropped(dropout), sn(nn.Conv2d(shape[0], width, 4, 2, 1), norm), nn.LeakyReLU(0.2),
        *dropped(dropout), sn(nn.Conv2d(width, 2 * width, 4, 2, 1), norm), norm_2d(norm, 2 * width), nn.LeakyReLU(0.2),
        nn.Flatten()), 2 * width * side * side


class Encoder(nn.Module):
    def __init__(self, shape, latent_dim: int, hidden: int, depth: int, stochastic: bool,
                 trunk: tuple[nn.Module, int]):
        super().__init__()
        self.stochastic = bool(stochastic)  # outputs (mu, log sigma) side by side, 2 x latent_dim
        body, width = path(trunk[1], hidden, check_depth("model.encoder.depth", depth), norm="batch")
        self.net = nn.Sequential(trunk[0], body, nn.Linear(width, latent_dim * (2 if self.stochastic else 1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Generator(nn.Module):
    """FC layers, then the sample (`width` None) or 2 x width maps of a quarter of the side and two up-convolutions."""

    def __init__(self, shape, latent_dim: int, hidden: int, depth: int, width: int | None):
        super().__init__()
        self.shape = tuple(shape)
        layers, features = [], latent_dim
        for _ in range(check_depth("model.generator.depth", depth)):
            layers += [nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            features = hidden
        if width is None:
            layers.append(nn.Linear(features, math.prod(self.shape)))
            if len(self.shape) > 1:
                layers.append(nn.Tanh())
        else:
            side = check_side(self.shape)
            maps = 2 * width * side * side
            layers += [nn.Linear(features, maps), nn.BatchNorm1d(maps), nn.ReLU(),
                       nn.Unflatten(1, (2 * width, side, side)),
                       nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.ConvTranspose2d(width, self.shape[0], 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(z).view(-1, *self.shape)


class JointDiscriminator(nn.Module):
    def __init__(self, latent_dim: int, hidden: int, depth: int, norm: str, dropout: float,
                 trunk: tuple[nn.Module, int]):
        super().__init__()
        depth = check_depth("model.discriminator.depth", depth)
        x_path, x_width = path(trunk[1], hidden, depth, norm, dropout)
        self.x_path = nn.Sequential(trunk[0], x_path)
        self.z_path, z_width = path(latent_dim, hidden, depth, norm, dropout)
        self.joint, width = path(x_width + z_width, hidden, depth, norm, dropout)
        self.head = nn.Sequential(*dropped(dropout), sn(nn.Linear(width, 1), norm))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """The logit of D(x, z) [N]."""
        return self.head(self.joint(torch.cat([self.x_path(x), self.z_path(z)], dim=1))).squeeze(1)
