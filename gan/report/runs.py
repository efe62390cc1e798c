"""A run as the comparison sees it, read from a run directory (or built by another source, e.g. W&B).

A run directory holds `config.yaml` (the resolved Hydra config), `metrics.jsonl` (one JSON object
per logged step, evaluation lines carry a `provenance` dict), `summary.json` (missing when the run
crashed) and `samples/iter_<g_iter>.png`. Finding them accepts run directories, sweep directories,
any parent directory and shell-style globs.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gan.errors import UserError

RUN_MARKERS = ("config.yaml", "metrics.jsonl")
GLOB_CHARACTERS = "*?["
# Directories inside a run (or next to runs) that never hold runs themselves.
SKIPPED_DIRECTORIES = {"wandb", "checkpoints", "samples", "__pycache__"}
SAMPLE_ITERATION = re.compile(r"(\d+)")


@dataclass
class Run:
    """Everything the comparison needs from one training run, independent of where it was read."""

    source: str
    config: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any] | None = None
    samples_png: bytes | None = None
    samples_name: str | None = None
    notes: list[str] = field(default_factory=list)
    label: str = ""
    raw_config: dict[str, Any] | None = None  # Hydra's unresolved config (.hydra/config.yaml): what is interpolated
    sampled_keys: frozenset[str] = frozenset()  # keys a hyperparameter search drew from a range (.hydra/hydra.yaml)

    @property
    def model(self) -> str:
        """The model's name; an f-GAN (model.loss=f_<divergence>, Nowozin et al. 2016) adds its divergence."""
        name, loss = str(config_value(self.config, "model.name", "?")), config_value(self.config, "model.loss", None)
        return f"{name} {loss}" if isinstance(loss, str) and loss.startswith("f_") else name

    @property
    def data(self) -> str:
        return str(config_value(self.config, "data.name", "?"))

    @property
    def preset(self) -> str | None:
        """The scale preset applied (conf/scale/<name>.yaml, or "none"); None for runs from before it was recorded."""
        value = config_value(self.config, "preset", None)
        return None if value is None else str(value)

    @property
    def seed(self) -> Any:
        return config_value(self.config, "seed", None)

    @property
    def status(self) -> str:
        if self.summary is None:
            return "no summary"
        return str(self.summary.get("status", "unknown"))

    @property
    def wall_time_s(self) -> float | None:
        if self.summary and _is_finite_number(self.summary.get("wall_time_s")):
            return float(self.summary["wall_time_s"])
        elapsed = [r["elapsed_s"] for r in self.records if _is_finite_number(r.get("elapsed_s"))]
        return float(max(elapsed)) if elapsed else None


def config_value(config: dict[str, Any], dotted_key: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_run_dir(path: Path) -> bool:
    return all((path / marker).is_file() for marker in RUN_MARKERS)


def _natural_key(text: str) -> list[Any]:
    # Sweep jobs are numbered 0..N: sort 2 before 10.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _walk_for_runs(top: Path) -> tuple[list[Path], list[Path]]:
    """Run directories under `top`, and directories that have a config.yaml but no metrics.jsonl."""
    runs, incomplete = [], []
    for current, dirnames, filenames in os.walk(top):
        path = Path(current)
        if is_run_dir(path):
            runs.append(path)
            dirnames[:] = []
            continue
        if "config.yaml" in filenames and path.name != ".hydra":
            incomplete.append(path)
        dirnames[:] = sorted(
            (d for d in dirnames if not d.startswith(".") and d not in SKIPPED_DIRECTORIES),
            key=_natural_key,
        )
    return runs, incomplete


def find_run_dirs(inputs: list[str]) -> list[Path]:
    """Resolve command-line inputs (run dirs, sweep dirs, parents, globs) into run directories."""
    found: list[Path] = []
    for argument in inputs:
        expanded = os.path.expanduser(argument)
        if os.path.exists(expanded):
            candidates = [Path(expanded)]
        elif any(c in argument for c in GLOB_CHARACTERS):
            candidates = [Path(p) for p in sorted(glob.glob(expanded, recursive=True), key=_natural_key)]
            if not candidates:
                raise UserError(
                    f"The pattern {argument!r} matches nothing. Expected run directories, sweep "
                    "directories or a glob that matches them (quote the glob so that the shell passes "
                    "it unchanged, e.g. 'multirun/*/*'). Check the path relative to the current "
                    f"directory {os.getcwd()}."
                )
        else:
            raise UserError(
                f"{argument!r} does not exist. Expected a run directory (with config.yaml and "
                "metrics.jsonl), a sweep directory, a parent directory of runs or a glob. Check the "
                f"path relative to the current directory {os.getcwd()}."
            )
        runs_here, incomplete = [], []
        for candidate in candidates:
            if candidate.is_dir():
                runs, partial = _walk_for_runs(candidate)
                runs_here += runs
                incomplete += partial
            elif candidate.name in RUN_MARKERS and is_run_dir(candidate.parent):
                runs_here.append(candidate.parent)
        if not runs_here:
            hint = ""
            if incomplete:
                listed = ", ".join(str(p) for p in incomplete[:5])
                hint = (
                    f" {len(incomplete)} director{'y has' if len(incomplete) == 1 else 'ies have'} a "
                    f"config.yaml but no metrics.jsonl (runs that stopped before logging anything?): "
                    f"{listed}{' ...' if len(incomplete) > 5 else ''}."
                )
            raise UserError(
                f"No runs found in {argument!r}. A run directory contains config.yaml and "
                "metrics.jsonl, as written by `python -m gan.run`; a Hydra sweep puts one per job in "
                f"<sweep_dir>/<job_number>/.{hint} Pass run directories, sweep directories or a parent "
                "directory of runs, e.g. `python -m gan.compare multirun/2024-05-01/12-00-00`."
            )
        found += runs_here
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def read_metrics_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of a metrics.jsonl and notes about lines that could not be read.

    A run killed while writing leaves a truncated last line: it is dropped with a note.
    """
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records, notes = [], []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                notes.append("the last line of metrics.jsonl is truncated (run stopped mid-write); ignored it")
            else:
                notes.append(f"line {number} of metrics.jsonl is not valid JSON; ignored it")
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, notes


def _read_config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.load(path)
    except Exception as error:  # YAML syntax errors come in several types
        raise UserError(
            f"Cannot read {path}: {error}. Expected the resolved Hydra config that training writes "
            "into each run directory. Fix or remove the file, or leave this run out of the comparison."
        ) from error
    try:
        container = OmegaConf.to_container(config, resolve=True)
    except Exception:  # an interpolation that only resolves inside Hydra: keep it as text
        container = OmegaConf.to_container(config, resolve=False)
    return container if isinstance(container, dict) else {}


def _read_hydra_file(path: Path) -> dict[str, Any] | None:
    """A file Hydra keeps in `.hydra/` (config.yaml: the composed config before interpolation; hydra.yaml: Hydra's own
    settings), uninterpolated; None when missing or unreadable."""
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        container = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # only a help for the table: a damaged file is ignored
        return None
    return container if isinstance(container, dict) else None


def sampled_keys(hydra_settings: dict[str, Any] | None) -> frozenset[str]:
    """The config keys a hyperparameter search sampled from a range (`hydra.sweeper.params`, e.g.
    `model.g_lr: tag(log, interval(1e-5, 1e-2))`): values drawn at random, not levels of a factor."""
    params = config_value(hydra_settings or {}, "hydra.sweeper.params", None)
    if not isinstance(params, dict):
        return frozenset()
    return frozenset(str(key) for key, space in params.items() if "interval(" in str(space))


def _read_summary(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        notes.append("summary.json is not valid JSON; ignored it")
        return None
    return summary if isinstance(summary, dict) else None


def latest_samples(run_dir: Path) -> Path | None:
    """The sample grid with the highest iteration number in its name."""
    grids = list((run_dir / "samples").glob("*.png"))
    if not grids:
        return None

    def iteration(path: Path) -> tuple[int, float]:
        numbers = SAMPLE_ITERATION.findall(path.stem)
        return (int(numbers[-1]) if numbers else -1, path.stat().st_mtime)

    return max(grids, key=iteration)


def load_run_dir(run_dir: Path) -> Run:
    records, notes = read_metrics_jsonl(run_dir / "metrics.jsonl")
    summary = _read_summary(run_dir / "summary.json", notes)
    samples = latest_samples(run_dir)
    return Run(
        source=str(run_dir),
        config=_read_config(run_dir / "config.yaml"),
        records=records,
        summary=summary,
        samples_png=samples.read_bytes() if samples else None,
        samples_name=samples.name if samples else None,
        notes=notes,
        raw_config=_read_hydra_file(run_dir / ".hydra" / "config.yaml"),
        sampled_keys=sampled_keys(_read_hydra_file(run_dir / ".hydra" / "hydra.yaml")),
    )


def assign_directory_labels(runs: list[Run]) -> None:
    """Short unique labels: each run's path below the runs' common directory, keeping two components when
    the names alone say little (jobs named 0, 1, ...: show sweep/0; `0_dcgan_digits_s0` stays as it is)."""
    paths = [os.path.abspath(run.source) for run in runs]
    if not paths:
        return
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    labels = [os.path.relpath(path, common) for path in paths]
    if all(os.sep not in label for label in labels) and any(len(label) <= 3 or label.isdigit() for label in labels):
        labels = [os.path.relpath(path, os.path.dirname(common)) for path in paths]
    for run, label in zip(runs, labels):
        run.label = label


def make_labels_unique(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        count = seen.get(run.label, 0)
        seen[run.label] = count + 1
        if count:
            run.label = f"{run.label} ({count + 1})"
