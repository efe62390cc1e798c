"""The training budget and the progress bar, both counted in iterations (the model's `g_iter`)."""
from __future__ import annotations

from pytorch_lightning.callbacks import Callback, RichProgressBar

from gan.errors import positive_int


class IterationBudget(Callback):
    """Stops training once the model has run `g_iters` iterations; a resumed run that is already there
    stops before its first step. None: no limit of its own (trainer.max_steps or max_epochs decides)."""

    def __init__(self, g_iters: int | None):
        self.g_iters = None if g_iters is None else positive_int("g_iters", g_iters)

    def on_train_start(self, trainer, pl_module) -> None:
        self.on_train_batch_end(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if self.g_iters is not None and pl_module.g_iter >= self.g_iters:
            trainer.should_stop = True


class GANProgressBar(RichProgressBar):
    """Rich's bar counting iterations. It redraws from a thread at most `refresh_rate` times a second (Lightning's
    default, 100, costs the training loop measurable time on a small CPU), and reads the logged losses only on the
    iterations that log them (the model's `log_every`), not on every step."""

    def __init__(self, refresh_rate: int = 4, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)

    @property
    def total_train_batches(self) -> int | float:
        budget = next((c for c in self.trainer.callbacks if isinstance(c, IterationBudget)), None)
        return budget.g_iters if budget is not None and budget.g_iters is not None else float("inf")

    def _get_train_description(self, current_epoch: int) -> str:
        return "generator iterations"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.is_disabled:
            return
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        if self.progress is not None:  # the public bar and rich's Progress, not Lightning's private _update
            self.progress.update(self.train_progress_bar_id, completed=pl_module.g_iter, visible=True)
            self.refresh()
        if pl_module.g_iter % pl_module.log_every == 0:
            self._update_metrics(trainer, pl_module)

    def get_metrics(self, trainer, pl_module):
        """The losses of the last log step (the model's `shown_losses`, plain numbers), without Lightning's version."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics | pl_module.shown_losses
