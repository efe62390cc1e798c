"""Checkpoints counted in generator iterations, written atomically, carrying the run's config."""
from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from gan.errors import positive_int
from gan.storage import save_torch


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints through `gan.storage.save_torch` (temp file, fsync, rename): a kill at any moment leaves
    either the previous checkpoint or the new one, never a truncated file. Lightning's own fsspec transaction
    falls back to a non-atomic copy across filesystems."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        save_torch(checkpoint, path)


class GIterCheckpoint(ModelCheckpoint):
    """ModelCheckpoint every `every_g_iters` iterations (files `g000500.ckpt` + `last.ckpt`), keyed on the
    model's iteration counter, whatever number of optimiser steps an iteration takes."""

    def __init__(self, every_g_iters: int, **kwargs):
        kwargs.setdefault("filename", "g{g_iter:06.0f}")
        kwargs.setdefault("auto_insert_metric_name", False)
        kwargs.setdefault("save_top_k", -1)
        kwargs.setdefault("save_last", True)
        super().__init__(**kwargs)
        self.every_g_iters = positive_int("callbacks.checkpoint.every_g_iters", every_g_iters)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.g_iter % self.every_g_iters or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def _monitor_candidates(self, trainer) -> dict:
        """The file name's `g_iter` comes from the model, not from a value logged every step."""
        return super()._monitor_candidates(trainer) | {"g_iter": torch.tensor(float(trainer.lightning_module.g_iter))}


class EmbedConfig(Callback):
    """Stores the resolved config in every checkpoint, so a checkpoint alone rebuilds its model."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["gan_config"] = self.config
