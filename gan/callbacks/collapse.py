"""Collapse watchdog: warns when the generator collapses and names the best checkpoint before it.

It reads the validations of the run's `EvaluationCallback` (it computes nothing itself) and flags
a sharp rise of FID over the best value so far, or a sample diversity (mean pairwise feature
distance of generated samples over that of real ones) below `min_diversity`.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

from gan.callbacks.evaluation import EvaluationCallback
from gan.errors import UserError


class CollapseWatchdog(Callback):
    def __init__(self, fid_rise: float = 1.5, min_diversity: float = 0.7, stop: bool = False):
        self.fid_rise, self.min_diversity, self.stop = float(fid_rise), float(min_diversity), bool(stop)
        self.seen = 0
        self.collapsed = False
        self.warnings: list[str] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.check(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.check(trainer)

    def check(self, trainer) -> None:
        """Look at the validations that arrived since the last call."""
        evaluation = next((c for c in trainer.callbacks if isinstance(c, EvaluationCallback)), None)
        if evaluation is None:
            raise UserError("The collapse watchdog reads the evaluation callback's results, but the run has none. "
                            "Enable evaluation (metrics=default) or remove the collapse watchdog callback.")
        history = evaluation.history
        for index in range(self.seen, len(history)):
            reasons = self.reasons(history[:index], history[index]["values"])
            if reasons and not self.collapsed:
                self.warn(trainer, evaluation, history[index]["g_iter"], reasons)
            self.collapsed = bool(reasons)
        self.seen = len(history)

    def reasons(self, before: list[dict[str, Any]], values: dict[str, float]) -> list[str]:
        out = []
        best_fid = min((h["values"]["fid"] for h in before if "fid" in h["values"]), default=None)
        if "fid" in values and best_fid is not None and values["fid"] > self.fid_rise * best_fid:
            out.append(f"FID rose to {values['fid']:.4g}, more than {self.fid_rise:g}x the best so far ({best_fid:.4g})")
        if values.get("diversity", float("inf")) < self.min_diversity:
            out.append(f"sample diversity fell to {values['diversity']:.2f} of the real data's "
                       f"(threshold {self.min_diversity:g})")
        return out

    def warn(self, trainer, evaluation: EvaluationCallback, g_iter: int, reasons: list[str]) -> None:
        if evaluation.best_g_iter is not None:
            best = (f"The best checkpoint before it is {evaluation.best_path(trainer)} (g_iter {evaluation.best_g_iter}, "
                    f"{evaluation.split}/{evaluation.monitor} {evaluation.best:.4g}).")
        else:
            best = "No checkpoint has been selected yet."
        message = f"Generator collapse suspected at g_iter {g_iter}: {'; '.join(reasons)}. {best}"
        self.warnings.append(message)
        rank_zero_warn(message)
        if self.stop:
            trainer.should_stop = True
