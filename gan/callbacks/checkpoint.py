"""Checkpoints counted in generator iterations, written atomically, carrying the run's config; and the checkpoint a
stop signal asks for (a Slurm time limit or preemption, `scancel`), taken at the end of the iteration it arrives in."""
from __future__ import annotations

import signal
import threading
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from gan.errors import Stopped, UserError, positive_int
from gan.storage import save_torch


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints through `gan.storage.save_torch` (temp file, fsync, rename): a kill at any moment leaves
    either the previous checkpoint or the new one, never a truncated file. Lightning's own fsspec transaction
    falls back to a non-atomic copy across filesystems."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        save_torch(checkpoint, path)


class GIterCheckpoint(ModelCheckpoint):
    """ModelCheckpoint every `every_g_iters` iterations (files `g000500.ckpt` + `last.ckpt`, overwritten, never
    versioned), keyed on the model's iteration counter, whatever number of optimiser steps an iteration takes.

    `stop_signals` (conf/callbacks/default.yaml: SIGUSR1, Lightning's and plain `sbatch --signal`'s; SIGUSR2,
    submitit's; SIGTERM, `scancel`'s and a time limit's last word) are caught during training: the iteration under way finishes, `last.ckpt` gets that
    iteration, and `gan.errors.Stopped` ends the fit (gan/train.py requeues the Slurm job or records the stop). Under
    DDP the ranks agree to stop at the same iteration: every `signal_check_every` iterations (None: at the model's log
    steps, where the loop reads the device anyway) they reduce what they received (one small collective; a single
    process checks every iteration at no cost)."""

    def __init__(self, every_g_iters: int, stop_signals: list[str], signal_check_every: int | None, **kwargs):
        kwargs.setdefault("filename", "g{g_iter:06.0f}")
        kwargs.setdefault("auto_insert_metric_name", False)
        kwargs.setdefault("save_top_k", -1)
        kwargs.setdefault("save_last", True)
        kwargs.setdefault("enable_version_counter", False)  # a resumed run overwrites, so `last.ckpt` is the last
        super().__init__(**kwargs)
        self.every_g_iters = positive_int("callbacks.checkpoint.every_g_iters", every_g_iters)
        self.signal_check_every = (None if signal_check_every is None else
                                   positive_int("callbacks.checkpoint.signal_check_every", signal_check_every))
        unknown = [name for name in stop_signals or () if name not in signal.Signals.__members__]
        if unknown:
            raise UserError(f"callbacks.checkpoint.stop_signals names {unknown}, which are not signals here. Expected "
                            f"names such as SIGUSR1, SIGUSR2, SIGTERM (Python's signal.Signals), or [] to catch none.")
        self.stop_signals = [signal.Signals[name] for name in stop_signals or ()]
        self.received: int = 0  # the first stop signal caught, 0 while none
        self._previous: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        """Installed here, after Lightning's own handlers (its SIGUSR1 requeue would save in the middle of a step)."""
        super().on_train_start(trainer, pl_module)
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._receive) for s in self.stop_signals}
            if signal.SIGTERM in self._previous and trainer.world_size > 1:
                # Lightning broadcasts its SIGTERM flag from rank 0 and reads it on the host at every step under DDP
                # (_TrainingEpochLoop._broadcast_sigterm_tensor: a wait for the device per step); SIGTERM is caught
                # here instead, so its flag never rises and the broadcast would only cost.
                trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = lambda: None

    def _receive(self, signum, frame) -> None:
        self.received = self.received or signum

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _stop_signal(self, trainer, pl_module) -> int:
        if trainer.world_size == 1:
            return self.received
        if pl_module.g_iter % (self.signal_check_every or pl_module.log_every):
            return 0
        return int(trainer.strategy.reduce(torch.tensor(self.received, device=trainer.strategy.root_device),
                                           reduce_op="max"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self._stop_signal(trainer, pl_module)
        periodic = not pl_module.g_iter % self.every_g_iters
        if (periodic or stop) and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            if periodic:
                self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        if stop:
            raise Stopped(signal.Signals(stop).name, pl_module.g_iter)

    def _monitor_candidates(self, trainer) -> dict:
        """The file name's `g_iter` comes from the model, not from a value logged every step."""
        return super()._monitor_candidates(trainer) | {"g_iter": torch.tensor(float(trainer.lightning_module.g_iter))}


class EmbedConfig(Callback):
    """Stores the resolved config in every checkpoint, so a checkpoint alone rebuilds its model."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["gan_config"] = self.config
