"""Runs read from the W&B API, mapped onto the same `Run` that a run directory gives.

Only the mapping touches W&B objects, through the few attributes used below (`id`, `name`,
`state`, `config`, `summary_metrics`, `scan_history()`, `file(path).download(root=...)`), so a
stub object with those attributes stands in for `wandb.Api()` in tests.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable

from gan.errors import UserError
from gan.report.runs import Run

STATE_TO_STATUS = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "failed"}
PROVENANCE_PREFIXES = ("provenance.", "provenance/")


def _unflatten(config: dict[str, Any]) -> dict[str, Any]:
    """W&B may hold a nested config flattened to dotted keys; rebuild the nesting of config.yaml."""
    nested: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) <= {"value", "desc"} and "value" in value:
            value = value["value"]
        if isinstance(value, dict):
            value = _unflatten(value)
        node = nested
        *parents, leaf = str(key).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return nested


def record_from_history_row(row: dict[str, Any]) -> dict[str, Any]:
    """One W&B history row as a metrics.jsonl record (g_iter, elapsed_s, metrics, provenance)."""
    record: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    for key, value in row.items():
        if value is None:
            continue
        if key == "provenance" and isinstance(value, dict):
            provenance.update(value)
        elif key.startswith(PROVENANCE_PREFIXES):
            provenance[key[len("provenance") + 1 :]] = value
        elif not key.startswith("_"):
            record[key] = value
    if "g_iter" not in record and "_step" in row:
        record["g_iter"] = row["_step"]
    if "elapsed_s" not in record and row.get("_runtime") is not None:
        record["elapsed_s"] = row["_runtime"]
    if provenance:
        record["provenance"] = provenance
    return record


def _latest_image_path(records: list[dict[str, Any]]) -> str | None:
    latest = None
    for record in records:
        for key, value in record.items():
            if isinstance(value, dict) and value.get("_type") == "image-file" and value.get("path"):
                latest = value["path"] if "sample" in key or latest is None else latest
    return latest


def _download(wandb_run: Any, path: str) -> bytes | None:
    with tempfile.TemporaryDirectory() as directory:
        try:
            wandb_run.file(path).download(root=directory, replace=True)
            return (Path(directory) / path).read_bytes()
        except Exception:  # samples are a nicety: a failed download leaves the run without a grid
            return None


def run_from_wandb(wandb_run: Any, project: str) -> Run:
    records = [record_from_history_row(dict(row)) for row in wandb_run.scan_history()]
    records.sort(key=lambda r: r.get("g_iter", 0) or 0)
    summary_metrics = dict(getattr(wandb_run, "summary_metrics", None) or {})
    summary = {
        "status": summary_metrics.get("status") or STATE_TO_STATUS.get(wandb_run.state, wandb_run.state),
        "g_iter": summary_metrics.get("g_iter"),
        "wall_time_s": summary_metrics.get("wall_time_s", summary_metrics.get("_runtime")),
        "run_dir": f"wandb:{project}/{wandb_run.id}",
    }
    image = _latest_image_path(records)
    return Run(
        source=f"wandb:{project}/{wandb_run.id}",
        config=_unflatten(dict(wandb_run.config)),
        records=records,
        summary=summary,
        samples_png=_download(wandb_run, image) if image else None,
        samples_name=Path(image).name if image else None,
        label=str(getattr(wandb_run, "name", None) or wandb_run.id),
    )


def runs_from_wandb(project: str, api: Any = None) -> list[Run]:
    """All runs of `entity/project`; `api` defaults to `wandb.Api()`."""
    if project.count("/") != 1 or not all(project.split("/")):
        raise UserError(
            f"--wandb expects <entity>/<project>, got {project!r}. Find both in the project's URL "
            "(https://wandb.ai/<entity>/<project>)."
        )
    offline_hint = (
        "Reading from W&B needs network access and a login (`wandb login` or WANDB_API_KEY). Without "
        "them, compare the run directories that training wrote instead: `python -m gan.compare <run dirs>`."
    )
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=30)
        wandb_runs: Iterable[Any] = list(api.runs(project))
        runs = [run_from_wandb(wandb_run, project) for wandb_run in wandb_runs]
    except UserError:
        raise
    except Exception as error:  # wandb raises its own, requests' and ValueError types
        raise UserError(f"Could not read the runs of W&B project {project!r}: {error}. {offline_hint}") from error
    if not runs:
        raise UserError(
            f"W&B project {project!r} has no runs. Expected the project that training logged to "
            "(logger.project in the config); check the entity and project names."
        )
    return runs
