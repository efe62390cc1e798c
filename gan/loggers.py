"""Where numbers go: `metrics.jsonl` in the run directory always, and W&B (or CSV/TensorBoard) beside it."""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Mapping

from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only

from gan.storage import atomic_write

# The loggers Lightning's rank-zero messages go through (`rank_zero_info` of pytorch_lightning and lightning_fabric).
LIGHTNING_MESSAGE_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                             "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _NoAdvertisingTips(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines; every other message passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        advertises = "Tip:" in message and ("litlogger" in message or "litmodels" in message)
        return not (message.startswith("💡 Tip:") or advertises)


def silence_lightning_tips() -> None:
    """Install the filter once on the loggers Lightning prints its tips through (Lightning has no switch for them)."""
    for name in LIGHTNING_MESSAGE_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvertisingTips) for f in log.filters):
            log.addFilter(_NoAdvertisingTips())


silence_lightning_tips()


class JsonlLogger(Logger):
    """One JSON object per logged step, `{"g_iter": step, ...metrics}`, readable without W&B.

    Evaluation results pass `provenance=` so each stored value says how it was measured.
    """

    def __init__(self, save_dir: str | os.PathLike, filename: str = "metrics.jsonl"):
        super().__init__()
        self.path = Path(save_dir) / filename

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args, **kwargs) -> None:
        """The resolved config is written to `config.yaml` by the training entry point."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None, provenance: dict | None = None) -> None:
        record = {"g_iter": step, **{k: _plain(v) for k, v in metrics.items()}}
        if provenance is not None:
            record["provenance"] = provenance
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    @rank_zero_only
    def rewind(self, g_iter: int) -> None:
        """Keep the records up to `g_iter`, the iteration a run resumes from (0: a new run), so the records logged
        after that checkpoint and before an interruption are not there twice once the run logs them again."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if _logged_by(line, g_iter)]
        atomic_write(self.path, lambda f: f.write("".join(line + "\n" for line in kept)), mode="w")


def _logged_by(line: str, g_iter: int) -> bool:
    """A whole record (not the half line of a process killed while writing) of iteration `g_iter` or before."""
    try:
        return (json.loads(line).get("g_iter") or 0) <= g_iter
    except (ValueError, AttributeError):
        return False


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """A TCP connect in a daemon thread, so a hanging DNS lookup cannot stall the run."""
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result)


def wandb_mode(requested: str | None) -> str:
    """`online` only with credentials and a reachable server; otherwise `offline`, never a prompt."""
    requested = requested or os.environ.get("WANDB_MODE")
    if requested in ("online", "offline", "disabled"):
        return requested
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    return "online" if _has_wandb_credentials() and _reachable(host) else "offline"


class GanWandbLogger(WandbLogger):
    """Lightning's WandbLogger with `g_iter` as every metric's x-axis, and a run summary that the evaluation writes
    (best validation values, final test values), so W&B's own runs table compares what `gan.compare` does."""

    STEP_METRIC = "g_iter"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._axes_defined = False
        if self._wandb_init.get("anonymous") is None:  # Lightning passes anonymous=None, which wandb warns about
            self._wandb_init.pop("anonymous", None)

    @property
    def experiment(self):
        experiment = super().experiment
        if not self._axes_defined and callable(getattr(experiment, "define_metric", None)):
            self._axes_defined = True
            experiment.define_metric(self.STEP_METRIC)
            experiment.define_metric("*", step_metric=self.STEP_METRIC, step_sync=True)
        return experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """W&B's own step counter stays internal: each record carries `g_iter`, the x-axis of every chart."""
        record = {k: _plain(v) for k, v in metrics.items()}
        if step is not None:
            record[self.STEP_METRIC] = int(step)
        self.experiment.log(record)

    @rank_zero_only
    def log_summary(self, values: Mapping[str, Any]) -> None:
        summary = self.experiment.summary
        for key, value in values.items():
            summary[key] = _plain(value)


def sweep_group() -> str | None:
    """`sweep-<name of the sweep directory>` inside a Hydra multirun job, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hydra = HydraConfig.get()
        mode = hydra.get("mode")
        sweep_dir = hydra.get("sweep", {}).get("dir")
    except Exception:  # no Hydra, or a config without the runtime keys: not a sweep
        return None
    if str(getattr(mode, "name", mode)) != "MULTIRUN" or not sweep_dir:
        return None
    return f"sweep-{Path(str(sweep_dir)).name}"


def wandb_logger(save_dir: str, mode: str | None = None, group: str | None = None, group_sweeps: bool = True,
                 **kwargs) -> GanWandbLogger:
    """The W&B logger of a run: `group` names the W&B group; in a Hydra sweep (`-m`) with `group_sweeps` the runs of
    one sweep share the group `sweep-<sweep directory name>` (the `group` then goes into the job type)."""
    mode = wandb_mode(mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    if mode == "offline":
        rank_zero_info(
            f"W&B runs offline (no credentials or no network): its files are in {save_dir}/wandb. "
            f"Upload them later with `wandb sync {save_dir}/wandb/offline-run-*`."
        )
    sweep = sweep_group() if group_sweeps else None
    if sweep is not None:
        if group and "job_type" not in kwargs:
            kwargs["job_type"] = group
        group = sweep
    return GanWandbLogger(save_dir=save_dir, mode=mode, resume="allow", group=group, **kwargs)
