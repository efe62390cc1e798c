"""Rich progress bar counted in generator iterations, with the losses beside it."""
from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class GANProgressBar(RichProgressBar):
    @property
    def total_train_batches(self) -> int | float:
        module = self.trainer.lightning_module
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return self.trainer.max_steps // (module.n_critic + 1)
        return float("inf")

    def _get_train_description(self, current_epoch: int) -> str:
        return "generator iterations"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.is_disabled:
            return
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, pl_module.g_iter)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics.pop("g_iter", None)
        return metrics
