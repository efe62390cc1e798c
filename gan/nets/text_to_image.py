"""GAN-INT-CLS networks (Reed et al. 2016, sec. 4 and Fig. 2): a word-level text encoder, G(z, phi(t)) and D(x, phi(t)),
DCGAN bodies at the data's size.

- TextEncoder: word embeddings and a GRU; phi(t) is the GRU's state after the caption's last word (padding after it
  never reaches the state, so no packing, and no lengths are read back to the host).
- G: phi(t) compressed by a linear layer and LeakyReLU(0.2) to `text_dim` (the paper: 128), concatenated to z, then
  the DCGAN generator.
- D: the DCGAN discriminator's convolutions down to base x base maps (4x4 at 64 px, 7x7 at 28 px); phi(t) compressed
  the same way, replicated spatially and concatenated to them; a 1x1 convolution with batch norm and LeakyReLU, then
  a base x base convolution to one logit (the paper's "1x1 convolution followed by rectification and a 4x4
  convolution to compute the final score").
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from gan.data.captions import PAD
from gan.errors import UserError
from gan.nets.dcgan import DCGANGenerator, dcgan_init, stages


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int | None, embed_dim: int, hidden: int):
        super().__init__()
        if vocab_size is None:
            raise UserError("The text encoder is sized by the data's vocabulary, but this data has none "
                            "(data.vocab_size is not set): text-to-image models train on captioned images. Use "
                            "data=digits_captions (embedded), cub_captions or coco_captions.")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.rnn = nn.GRU(embed_dim, hidden, batch_first=True)
        self.out_dim = hidden

    def forward(self, tokens: Tensor) -> Tensor:
        outputs, _ = self.rnn(self.embed(tokens))
        last = ((tokens != PAD).sum(1) - 1).clamp(min=0)  # an empty caption reads the first step's state
        return outputs.gather(1, last.view(-1, 1, 1).expand(-1, 1, outputs.shape[2])).squeeze(1)


def compress(in_dim: int, text_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, text_dim), nn.LeakyReLU(0.2, True))


class TextToImageGenerator(nn.Module):
    def __init__(self, shape, latent_dim: int, embedding_dim: int, text_dim: int, width: int):
        super().__init__()
        self.text = compress(embedding_dim, text_dim)
        self.body = DCGANGenerator(shape, latent_dim + text_dim, width)
        dcgan_init(self.text)

    def forward(self, z: Tensor, embedding: Tensor) -> Tensor:
        return self.body(torch.cat([z, self.text(embedding)], 1))


class TextToImageDiscriminator(nn.Module):
    def __init__(self, shape, embedding_dim: int, text_dim: int, width: int):
        super().__init__()
        base, n_down = stages(shape)
        layers = [nn.Conv2d(shape[0], width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        channels = width
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(channels * 2),
                       nn.LeakyReLU(0.2, True)]
            channels *= 2
        self.features = nn.Sequential(*layers)
        self.text = compress(embedding_dim, text_dim)
        self.joint = nn.Sequential(nn.Conv2d(channels + text_dim, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                   nn.LeakyReLU(0.2, True), nn.Conv2d(channels, 1, base))
        dcgan_init(self)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.features(x)
        text = self.text(embedding)[:, :, None, None].expand(-1, -1, *h.shape[2:])
        return self.joint(torch.cat([h, text], 1)).flatten()
