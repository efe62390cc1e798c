"""WGAN (Arjovsky et al. 2017): a critic kept K-Lipschitz by clipping its weights to [-c, c] after every update,
trained with RMSprop (the paper: momentum-based optimisers such as Adam made the critic unstable)."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from gan.errors import UserError, positive_float
from gan.models.base import GANModule
from gan.models.core import Phase


def rmsprop(params: Iterable[nn.Parameter], lr: float, betas=None, **kwargs) -> torch.optim.RMSprop:
    """RMSprop built from the shared optimiser settings; it has no `betas`, so they must be null."""
    if betas is not None:
        raise UserError(f"RMSprop has no betas, but model.betas={list(betas)}. Set model.betas=null, or use Adam.")
    return torch.optim.RMSprop(params, lr=lr, **kwargs)


class WGAN(GANModule):
    def __init__(self, *args, clip: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip = positive_float("model.clip", clip)  # the paper: 0.01

    @torch.no_grad()
    def after_step(self, phase: Phase) -> None:
        if phase.player == "discriminator":
            for parameter in self.discriminator.parameters():
                parameter.clamp_(-self.clip, self.clip)
        super().after_step(phase)
