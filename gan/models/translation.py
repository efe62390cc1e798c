"""What the image-to-image models share: sampling a translation in evaluation mode, with a recorded noise and
normalisation policy."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from gan.errors import check_betas, positive_float
from gan.models.core import AdversarialModule, Player, lr_schedule


class TranslationModule(AdversarialModule):
    """A model that maps input images (and target attributes) to images instead of noise to images.

    `kind` names the data it learns from (paired, unpaired, attributes: gan.kinds.translation); `translate` is what
    the evaluator and the sample grids call; `grid_columns` is what one row of a sample grid shows, input first.
    """

    def __init__(self, seed: int, log_every: int,
                 compile: bool | str, compile_mode: str, channels_last: bool, eval_dropout: bool,
                 eval_batch_stats: bool):
        super().__init__(seed=seed, log_every=log_every,
                         compile=compile, compile_mode=compile_mode, channels_last=channels_last)
        self.eval_dropout = bool(eval_dropout)
        self.eval_batch_stats = bool(eval_batch_stats)

    def run(self, net: nn.Module, *inputs: Tensor) -> Tensor:
        """`net` in evaluation mode, no gradients; its dropout kept active when `eval_dropout` (pix2pix's noise), its
        normalisation layers on the statistics of the batch when `eval_batch_stats` (pix2pix's test-time batch norm),
        the checkpointed running statistics left untouched."""
        was_training = net.training
        net.eval()
        if self.eval_dropout:
            for module in net.modules():
                if isinstance(module, nn.Dropout):
                    module.train()
        with torch.no_grad(), batch_statistics(net, self.eval_batch_stats):
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


@contextmanager
def batch_statistics(net: nn.Module, active: bool) -> Iterator[None]:
    """While active, `net`'s batch/instance norm layers normalise with the statistics of the batch they see (train
    mode) and their running statistics (mean, var, batch count: what a checkpoint holds) come back bit-identical."""
    layers = [m for m in net.modules() if active and isinstance(m, nn.modules.batchnorm._NormBase)]
    saved = [({name: b.clone() for name, b in m.named_buffers(recurse=False) if b is not None}, m.training)
             for m in layers]
    for m in layers:
        m.train()
    try:
        yield
    finally:
        for m, (buffers, training) in zip(layers, saved):
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
            m.train(training)
