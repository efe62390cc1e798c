"""Evaluation during training: select on the validation split, report on the test split with fresh samples.

Every `every_n_g_iters` generator iterations (and once at the end) the chosen metrics are computed
on the validation split, logged (W&B, `metrics.jsonl` with provenance) and `checkpoints/best.ckpt`
is kept by the monitored value. At the end of training the best weights are evaluated once on the
test split with samples from another seed, logged as `test/...` and written to `<run_dir>/eval.json`:
the checkpoint is selected and the reported number computed on different data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from gan.checkpoints import load as load_file
from gan.errors import UserError
from gan.kinds import Kind, kind_of
from gan.loggers import GanWandbLogger, JsonlLogger
from gan.metrics.directions import HIGHER_IS_BETTER
from gan.metrics.evaluator import DEFAULT_METRICS, Evaluation, Evaluator
from gan.storage import save_json

FINAL_SEED_OFFSET = 1  # the test report draws its samples from seed + 1: never the validation samples


class EvaluationCallback(Callback):
    def __init__(self, names: Sequence[str] = DEFAULT_METRICS, backbone: str = "auto", num_samples: int = 2000,
                 toy_num_samples: int = 2500, final_num_samples: int = 10000, every_n_g_iters: int = 1000,
                 split: str = "val", final_split: str = "test", final_weights: str = "best", monitor: str = "auto",
                 seed: int = 0, batch_size: int = 250, kid_subsets: int = 100, inception_weights: str | None = None,
                 cache_dir: str = ".cache/gan", classifier: dict | None = None, run_dir: str | None = None):
        if split == final_split:
            raise UserError(f"metrics.split and metrics.final_split are both '{split}': the checkpoint would be selected "
                            f"on the data its reported number is computed on. Use metrics.split=val metrics.final_split=test.")
        if final_weights not in ("best", "last"):
            raise UserError(f"metrics.final_weights={final_weights}: expected best (the checkpoint selected on "
                            f"{split}) or last (the weights at the end of training).")
        self.evaluator_args = dict(names=list(names), backbone=backbone, num_samples=num_samples,
                                   toy_num_samples=toy_num_samples, seed=seed, cache_dir=cache_dir,
                                   inception_weights=inception_weights, classifier=dict(classifier or {}),
                                   batch_size=batch_size, kid_subsets=kid_subsets)
        self.final_num_samples, self.every_n_g_iters = int(final_num_samples), int(every_n_g_iters or 0)
        self.split, self.final_split, self.final_weights = split, final_split, final_weights
        self.monitor_name, self.seed, self.run_dir = monitor, int(seed), run_dir
        self.evaluator: Evaluator | None = None
        self.kind: Kind | None = None  # the evaluated model's kind (gan.kinds), once known
        self.best: float | None = None
        self.best_g_iter: int | None = None
        self.last_bucket = 0
        self.history: list[dict[str, Any]] = []  # {"g_iter", "values", "improved"} per validation
        self.final: Evaluation | None = None

    # ---- where things go ----------------------------------------------------------------------------
    def directory(self, trainer) -> Path:
        return Path(self.run_dir or trainer.default_root_dir)

    def best_path(self, trainer) -> Path:
        return self.directory(trainer) / "checkpoints" / "best.ckpt"

    @property
    def monitor(self) -> str:
        if self.monitor_name != "auto":
            return self.monitor_name
        if self.evaluator is None:
            return "auto"  # nothing evaluated yet (fast_dev_run): the model's kind decides once it is known
        return self.kind.monitor(self.evaluator)

    def _evaluator(self, trainer, module) -> Evaluator:
        if self.evaluator is None:
            self.kind = kind_of(module)
            self.evaluator = Evaluator(trainer.datamodule, device=module.device, **self.evaluator_args)
            if self.monitor not in HIGHER_IS_BETTER:
                raise UserError(f"metrics.monitor={self.monitor} cannot select checkpoints: expected one of "
                                f"{', '.join(HIGHER_IS_BETTER)} (or auto).")
        return self.evaluator

    # ---- hooks ----------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        """Fail before training, not at the first validation: missing Inception weights, no labels, ..."""
        if not trainer.fast_dev_run:
            evaluator = self._evaluator(trainer, pl_module)
            self.kind.prepare(evaluator)  # downloads weights or trains a classifier, once (cached on disk)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fast_dev_run or not self.every_n_g_iters:
            return
        bucket = pl_module.g_iter // self.every_n_g_iters
        if bucket > self.last_bucket:
            self.last_bucket = bucket
            self.validate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.fast_dev_run:
            return
        if self.every_n_g_iters and (not self.history or self.history[-1]["g_iter"] != pl_module.g_iter):
            self.validate(trainer, pl_module)  # the final weights are candidates too
        self.report(trainer, pl_module)

    # ---- the two kinds of evaluation ------------------------------------------------------------------
    def validate(self, trainer, module) -> Evaluation:
        """Evaluate on the validation split, log, and save best.ckpt when the monitored value improved."""
        evaluation = self._evaluator(trainer, module).evaluate(module, split=self.split, seed=self.seed)
        value = evaluation.values.get(self.monitor)
        if value is None:
            raise UserError(f"metrics.monitor={self.monitor} is not among the computed values "
                            f"({', '.join(evaluation.values)}). Add it to metrics.names or change metrics.monitor.")
        improved = math.isfinite(value) and (self.best is None or (value > self.best if HIGHER_IS_BETTER[self.monitor]
                                                                    else value < self.best))
        if improved:
            self.best, self.best_g_iter = float(value), int(module.g_iter)
        self.history.append({"g_iter": int(module.g_iter), "values": evaluation.values, "improved": improved})
        self._log(trainer, self.split, evaluation, module)
        if improved:  # collective under DDP: every rank computed the same values, so every rank gets here
            # W&B's runs table compares runs by the selected checkpoint's values
            self._log_summary(trainer, {f"best/{self.split}/{k}": v for k, v in evaluation.values.items()}
                              | {"best/g_iter": self.best_g_iter, "best/monitor": f"{self.split}/{self.monitor}"})
            trainer.save_checkpoint(self.best_path(trainer), weights_only=False)  # the whole state
        best = "none yet" if self.best is None else f"{self.best:.4g} at g_iter {self.best_g_iter}"
        rank_zero_info(f"[eval] g_iter {module.g_iter} {self.split}: {_format(evaluation.values)} | best {self.monitor} {best}")
        return evaluation

    def report(self, trainer, module) -> Evaluation:
        """The final number: the selected weights on the test split, fresh samples; also `<run_dir>/eval.json`."""
        best_path = self.best_path(trainer)
        use_best = self.final_weights == "best" and self.best_g_iter is not None and best_path.is_file()
        live = None
        if use_best and self.best_g_iter != module.g_iter:
            live = {k: v.detach().clone() for k, v in module.state_dict().items()}
            module.load_state_dict(load_file(best_path, map_location=module.device)["state_dict"])
        try:
            evaluation = self._evaluator(trainer, module).evaluate(
                module, split=self.final_split, seed=self.seed + FINAL_SEED_OFFSET,
                ckpt=str(best_path) if use_best else None, num_samples=self.final_num_samples)
        finally:
            if live is not None:
                module.load_state_dict(live)
        evaluation.provenance.update(g_iter=self.best_g_iter if use_best else int(module.g_iter),
                                     selected_on=self.split if use_best else None,
                                     selection_monitor=self.monitor if use_best else None)
        self.final = evaluation
        self._log(trainer, self.final_split, evaluation, module)
        self._log_summary(trainer, {f"{self.final_split}/{k}": v for k, v in evaluation.values.items()}
                          | {f"{self.final_split}/weights_g_iter": evaluation.provenance["g_iter"]})
        if trainer.is_global_zero:
            save_json(evaluation.to_dict(), self.directory(trainer) / "eval.json")
        rank_zero_info(f"[eval] final {self.final_split} (g_iter {evaluation.provenance['g_iter']}): "
                       f"{_format(evaluation.values)}")
        return evaluation

    def _log(self, trainer, prefix: str, evaluation: Evaluation, module) -> None:
        """`<prefix>/<value>` at the module's g_iter, with the training clock and images seen of the training lines,
        so evaluation curves have a wall-clock axis too."""
        if not trainer.is_global_zero:
            return
        metrics = {f"{prefix}/{k}": v for k, v in evaluation.values.items()}
        metrics["images_seen"] = int(module.images_seen)
        metrics["elapsed_s"] = round(float(module.train_seconds), 3)
        step = int(module.g_iter)
        for logger in trainer.loggers:
            if isinstance(logger, JsonlLogger):
                logger.log_metrics(metrics, step=step, provenance=evaluation.provenance)
            else:
                logger.log_metrics(metrics, step=step)

    @staticmethod
    def _log_summary(trainer, values: dict[str, Any]) -> None:
        """Into the W&B run summary (`run.summary`), the one tracker here that keeps one."""
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, GanWandbLogger):
                    logger.log_summary(values)

    # ---- what the run's summary and a resumed run need ------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Read by gan.train: `objective` is the best validation value of the monitored metric."""
        out: dict[str, Any] = {"objective": self.best, "monitor": f"{self.split}/{self.monitor}",
                               "best_g_iter": self.best_g_iter}
        if self.final is not None:
            out.update({f"{self.final_split}/{k}": v for k, v in self.final.values.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_g_iter": self.best_g_iter, "last_bucket": self.last_bucket,
                "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_g_iter = state_dict["best"], state_dict["best_g_iter"]
        self.last_bucket, self.history = state_dict["last_bucket"], list(state_dict["history"])


def _format(values: dict[str, float]) -> str:
    """`fid 35.8 (real 17.9)`: each value with its real-data reference where there is one; no std, no reference rows
    on their own."""
    parts = []
    for key, value in values.items():
        if key.endswith("_std") or "/" in key:
            continue
        real = values.get(f"ref_real/{key}")
        parts.append(f"{key} {value:.4g}" + (f" (real {real:.4g})" if real is not None else ""))
    return " ".join(parts)
