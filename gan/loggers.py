"""Where numbers go: `metrics.jsonl` in the run directory always, and W&B (or CSV/TensorBoard) beside it."""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only


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


def wandb_logger(save_dir: str, mode: str | None = None, **kwargs) -> WandbLogger:
    mode = wandb_mode(mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    if mode == "offline":
        rank_zero_info(
            f"W&B runs offline (no credentials or no network): its files are in {save_dir}/wandb. "
            f"Upload them later with `wandb sync {save_dir}/wandb/offline-run-*`."
        )
    return WandbLogger(save_dir=save_dir, mode=mode, resume="allow", **kwargs)
