"""What the image-to-image models share: sampling a translation in evaluation mode, with a recorded noise policy."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from gan.errors import check_betas, positive_float
from gan.models.core import AdversarialModule, Player, lr_schedule


class TranslationModule(AdversarialModule):
    """A model that maps input images (and target attributes) to images instead of noise to images.

    `kind` names the data it learns from (paired, unpaired, attributes: gan.kinds.translation); `translate` is what
    the evaluator and the sample grids call; `grid_columns` is what one row of a sample grid shows, input first.
    """

    def __init__(self, seed: int, log_every: int, compile: bool, channels_last: bool, eval_dropout: bool = False):
        super().__init__(seed=seed, log_every=log_every, compile=compile, channels_last=channels_last)
        self.eval_dropout = bool(eval_dropout)

    def run(self, net: nn.Module, *inputs: Tensor) -> Tensor:
        """`net` in evaluation mode (its dropout kept active when `eval_dropout`: pix2pix's noise), no gradients."""
        was_training = net.training
        net.eval()
        if self.eval_dropout:
            for module in net.modules():
                if isinstance(module, nn.Dropout):
                    module.train()
        with torch.no_grad():
            out = net(*(x.to(self.device) for x in inputs))
        net.train(was_training)
        return out

    def generator_and_discriminator(self, g_optimizer: Callable, d_optimizer: Callable, g_lr: float, d_lr: float,
                                    betas, total_iters: int | None, lr_decay: int,
                                    generators: tuple[str, ...] = ("generator",),
                                    discriminators: tuple[str, ...] = ("discriminator",)) -> list[Player]:
        """The two players of every translation paper: Adam with the papers' lr decay, one per side."""
        betas, decay = check_betas("model.betas", betas), lr_schedule(total_iters, lr_decay)
        return [Player("generator", generators, g_optimizer, positive_float("model.g_lr", g_lr), betas, lr_factor=decay),
                Player("discriminator", discriminators, d_optimizer, positive_float("model.d_lr", d_lr), betas,
                       lr_factor=decay)]

    def grid_columns(self, batch: dict[str, Tensor]) -> list[Tensor]:
        raise NotImplementedError
