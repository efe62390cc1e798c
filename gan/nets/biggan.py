"""BigGAN's networks (Brock et al. 2019; the layer plan of the authors' BigGAN-PyTorch).

G: z is split into equal chunks, one for the input layer and one per residual up-block (the hierarchical latent,
   "skip-z"). Each block's two class-conditional batch norms take their gains and biases from linear maps of the
   block's conditioning vector [shared class embedding, z chunk] (gain = 1 + W_g c, bias = W_b c). Blocks: CBN, ReLU,
   nearest x2, 3x3 conv, CBN, ReLU, 3x3 conv, plus a 1x1 shortcut of the up-sampled input. Output: BN, ReLU, 3x3 conv,
   tanh. Optional self-attention (SAGAN) after the block that first outputs `attention` pixels.
D: SNGAN's residual down-blocks (`gan.nets.resnet.DiscriminatorBlock`, wide: the first conv already has the output
   width), optional self-attention after the block that first outputs `attention` pixels, ReLU, global sum pooling,
   projection head (`gan.nets.conditioning.DiscriminatorHead`).
Spectral normalisation on every conv and linear layer of both (not on G's shared embedding); orthogonal
initialisation. Widths are `width` x a multiplier per block, by default the reference's plan for the resolution.
With `shared_dim: 0` and `hierarchical: false` G conditions as the reference's CIFAR-10 model does: per-class gains
and biases (an embedding of the class, i.e. a linear map of its one-hot vector, without spectral norm), z to the
input layer only.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gan.errors import UserError, positive_int
from gan.nets.conditioning import (
    DiscriminatorHead,
    check_choice,
    one_hot,
    validate_conditioning,
)
from gan.nets.dcgan import upsamplings
from gan.nets.resnet import DiscriminatorBlock

# BigGAN-PyTorch's channel multipliers (x width) by resolution. G: the input layer's and each up-block's output;
# D: each block's output. Other resolutions use 4 throughout, as the 32x32 model.
G_CHANNELS = {32: (4, 4, 4, 4), 64: (16, 16, 8, 4, 2), 128: (16, 16, 8, 4, 2, 1), 256: (16, 16, 8, 8, 4, 2, 1)}
D_CHANNELS = {32: (4, 4, 4, 4), 64: (1, 2, 4, 8, 16), 128: (1, 2, 4, 8, 16, 16), 256: (1, 2, 4, 8, 8, 16, 16)}
INITS = {"ortho": nn.init.orthogonal_, "N02": lambda w: nn.init.normal_(w, 0.0, 0.02), "xavier": nn.init.xavier_uniform_}


def initialize(network: nn.Module, init: str, plain: Sequence[nn.Module] = ()) -> None:
    """The reference's initialisation of every conv, linear and embedding layer, then spectral normalisation of
    each but the `plain` ones (built without it, so that its power iteration starts from the initialised weights)."""
    check_choice("the BigGAN networks' init", init, tuple(INITS))
    plain = set(map(id, plain))
    for m in list(network.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            INITS[init](m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
            if id(m) not in plain:
                spectral_norm(m)


def channel_plan(key: str, channels: Sequence[int] | None, default: dict, resolution: int, length: int,
                 width: int) -> list[int]:
    multipliers = list(default.get(resolution, (4,) * length)) if channels is None else list(channels)
    if len(multipliers) != length or not all(isinstance(m, int) and not isinstance(m, bool) and m > 0
                                             for m in multipliers):
        raise UserError(f"{key} lists a positive integer width multiplier per layer: {length} for "
                        f"{resolution}x{resolution} images (null: the reference's plan), got {channels!r}.")
    return [positive_int(key.rsplit(".", 1)[0] + ".width", width) * m for m in multipliers]


def attention_index(key: str, attention: int | None, resolutions: list[int]) -> int | None:
    """The block after which self-attention runs: the first that outputs `attention` pixels (None: no attention)."""
    if attention in (None, 0):
        return None
    if attention not in resolutions:
        raise UserError(f"{key}={attention!r}: self-attention runs after a block of this network, whose outputs "
                        f"have {', '.join(map(str, sorted(set(resolutions))))} pixels per side here; use one of "
                        f"those, or null for no attention (the paper: 64 at 128x128; the reference's CIFAR-10 "
                        f"model: none).")
    return resolutions.index(attention)


class SelfAttention(nn.Module):
    """SAGAN's self-attention (Zhang et al. 2019) as BigGAN uses it: 1x1 convs to queries (C/8), keys (C/8) and
    values (C/2), keys and values max-pooled 2x2, softmax over key positions, a 1x1 conv back to C channels, added to
    the input through a learned gate gamma that starts at 0 (the block starts as the identity)."""

    def __init__(self, channels: int):
        super().__init__()
        self.key_channels, self.value_channels = max(1, channels // 8), max(1, channels // 2)
        self.theta = nn.Conv2d(channels, self.key_channels, 1, bias=False)
        self.phi = nn.Conv2d(channels, self.key_channels, 1, bias=False)
        self.g = nn.Conv2d(channels, self.value_channels, 1, bias=False)
        self.o = nn.Conv2d(self.value_channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        queries = self.theta(x).flatten(2)                           # [N, C/8, HW]
        keys = F.max_pool2d(self.phi(x), 2).flatten(2)              # [N, C/8, HW/4]
        values = F.max_pool2d(self.g(x), 2).flatten(2)              # [N, C/2, HW/4]
        attention = torch.softmax(queries.transpose(1, 2) @ keys, dim=-1)  # [N, HW, HW/4]
        out = (values @ attention.transpose(1, 2)).view(n, self.value_channels, h, w)
        return x + self.gamma * self.o(out)


class ClassConditionalBatchNorm2d(nn.Module):
    """Batch norm without its own affine parameters; per-sample gain 1 + W_g c and bias W_b c from the conditioning
    vector c ([shared class embedding, z chunk], or a one-hot class)."""

    def __init__(self, channels: int, condition_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(condition_dim, channels, bias=False)
        self.bias = nn.Linear(condition_dim, channels, bias=False)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.bn(x) * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


class GeneratorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, condition_dim: int):
        super().__init__()
        self.bn1 = ClassConditionalBatchNorm2d(in_channels, condition_dim)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.bn2 = ClassConditionalBatchNorm2d(out_channels, condition_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class BigGANGenerator(nn.Module):
    def __init__(self, shape, latent_dim: int, num_classes: int | None, width: int, channels: Sequence[int] | None,
                 shared_dim: int, hierarchical: bool, attention: int | None, init: str):
        super().__init__()
        validate_conditioning("projection", num_classes)  # class-conditional: labelled data only
        n_blocks = upsamplings(shape, "BigGAN")
        widths = channel_plan("model.generator.channels", channels, G_CHANNELS, shape[1], n_blocks + 1, width)
        if isinstance(shared_dim, bool) or not isinstance(shared_dim, int) or shared_dim < 0:
            raise UserError(f"model.generator.shared_dim is the size of the shared class embedding (the paper: 128; "
                            f"0: per-class gains and biases as the reference's CIFAR-10 model), got {shared_dim!r}.")
        if not isinstance(hierarchical, bool):
            raise UserError(f"model.generator.hierarchical must be true or false, got {hierarchical!r}.")
        latent_dim = positive_int("model.latent_dim", latent_dim)
        self.slots = n_blocks + 1 if hierarchical else 1
        if latent_dim % self.slots:
            raise UserError(f"model.latent_dim={latent_dim} must split into {self.slots} equal chunks (one for the "
                            f"input layer and one per each of the {n_blocks} residual blocks of a "
                            f"{shape[1]}x{shape[1]} generator; the paper: 120 = 6 x 20 at 128x128), e.g. "
                            f"model.latent_dim={self.slots * max(1, round(latent_dim / self.slots))}.")
        self.chunk, self.num_classes, self.widths = latent_dim // self.slots, num_classes, widths
        self.shared = nn.Embedding(num_classes, shared_dim) if shared_dim else None
        condition_dim = (shared_dim or num_classes) + (self.chunk if hierarchical else 0)
        self.linear = nn.Linear(self.chunk, widths[0] * 4 * 4)
        self.blocks = nn.ModuleList(GeneratorBlock(widths[i], widths[i + 1], condition_dim) for i in range(n_blocks))
        self.attention_at = attention_index("model.generator.attention", attention,
                                            [8 * 2**i for i in range(n_blocks)])
        self.attention = SelfAttention(widths[self.attention_at + 1]) if self.attention_at is not None else None
        self.bn = nn.BatchNorm2d(widths[-1])
        self.to_image = nn.Conv2d(widths[-1], shape[0], 3, 1, 1)
        # spectral norm everywhere but on the shared embedding and (as the reference) per-class gains and biases
        per_class = [] if shared_dim else [bn for block in self.blocks for bn in (block.bn1, block.bn2)]
        initialize(self, init, plain=[self.shared] + [m for bn in per_class for m in (bn.gain, bn.bias)])

    def conditions(self, z: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(the input layer's z chunk, each block's conditioning vector [shared embedding of y, its z chunk])."""
        classes = self.shared(y) if self.shared is not None else one_hot(y, self.num_classes)
        if self.slots == 1:
            return z, [classes] * len(self.blocks)
        chunks = z.split(self.chunk, dim=1)
        return chunks[0], [torch.cat([classes, chunk], dim=1) for chunk in chunks[1:]]

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise UserError("The BigGAN generator is class-conditional: it needs class labels y.")
        z0, conditions = self.conditions(z, y)
        h = self.linear(z0).view(-1, self.widths[0], 4, 4)
        for i, (block, c) in enumerate(zip(self.blocks, conditions)):
            h = block(h, c)
            if i == self.attention_at:
                h = self.attention(h)
        return self.to_image(F.relu(self.bn(h))).tanh()

    def regularized_weights(self) -> list[Tensor]:
        """The weights orthogonal regularisation acts on, as the reference: every matrix and conv kernel (the stored
        weights, before spectral normalisation) except the shared class embedding."""
        shared = set() if self.shared is None else set(map(id, self.shared.parameters()))
        return [p for p in self.parameters() if p.dim() >= 2 and id(p) not in shared]


class BigGANDiscriminator(nn.Module):
    def __init__(self, shape, num_classes: int | None, width: int, channels: Sequence[int] | None,
                 attention: int | None, init: str):
        super().__init__()
        validate_conditioning("projection", num_classes)
        resolution = shape[1]
        upsamplings(shape, "BigGAN")  # square, a power of two >= 8
        # As the reference: down to 8x8 and two more blocks up to 32x32 (SNGAN's plan); down to 4x4 and one more above.
        downs = int(math.log2(resolution)) - (3 if resolution <= 32 else 2)
        down = [downs > 0] + [True] * (downs - 1) + [False, False] if resolution <= 32 else [True] * downs + [False]
        widths = channel_plan("model.discriminator.channels", channels, D_CHANNELS, resolution, len(down), width)
        blocks = [DiscriminatorBlock(shape[0] if i == 0 else widths[i - 1], out, is_down, "none", first=i == 0)
                  for i, (is_down, out) in enumerate(zip(down, widths))]
        resolutions = [resolution // 2 ** sum(down[:i + 1]) for i in range(len(down))]
        self.blocks = nn.ModuleList(blocks)
        self.attention_at = attention_index("model.discriminator.attention", attention,
                                            resolutions)
        self.attention = SelfAttention(widths[self.attention_at]) if self.attention_at is not None else None
        self.head = DiscriminatorHead(widths[-1], num_classes, "projection", "none")
        initialize(self, init)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise UserError("The BigGAN discriminator is a projection discriminator: it needs class labels y.")
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attention_at:
                h = self.attention(h)
        return self.head(F.relu(h).sum(dim=(2, 3)), y)
