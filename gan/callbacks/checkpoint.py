"""Checkpoints counted in generator iterations, written atomically, carrying the run's config."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same directory, fsync, then rename over the target: a kill at
    any moment leaves either the previous checkpoint or the new one, never a truncated file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class GIterCheckpoint(ModelCheckpoint):
    """ModelCheckpoint every `every_g_iters` generator iterations (files `g000500.ckpt` + `last.ckpt`).

    Lightning's step counts discriminator and generator updates; one generator iteration is
    `n_critic + 1` of them, and a checkpoint lands right after a generator update.
    """

    def __init__(self, every_g_iters: int, **kwargs):
        kwargs.setdefault("filename", "g{g_iter:06.0f}")
        kwargs.setdefault("auto_insert_metric_name", False)
        kwargs.setdefault("save_top_k", -1)
        kwargs.setdefault("save_last", True)
        super().__init__(**kwargs)
        self.every_g_iters = every_g_iters

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._every_n_train_steps = self.every_g_iters * (pl_module.n_critic + 1)


class EmbedConfig(Callback):
    """Stores the resolved config in every checkpoint, so a checkpoint alone rebuilds its model."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["gan_config"] = self.config
