"""What a comparison computes from runs: per-run best/final values, protocol checks, differing
hyperparameters and the expected-best-of-k "budget" curve of Lucic et al. (2018)."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from math import comb
from typing import Any, Sequence

from gan.errors import UserError
from gan.metrics.directions import HIGHER_IS_BETTER
from gan.report.runs import Run

# Values of one metric are comparable only when all of these agree.
PROTOCOL_FIELDS = ("backbone", "weights_sha256", "num_fake", "num_real", "split", "image_size", "resize", "dataset")

# Config subtrees and leaf names that describe where a run was stored or how it was launched,
# not what was trained; model/data names and the seed have their own columns.
NOISE_PREFIXES = ("paths.", "logger.", "hydra.", "callbacks.", "launcher.", "hparams_search.", "debug.", "wandb.")
NOISE_KEYS = frozenset({"model.name", "data.name", "seed", "task_name", "tags", "ckpt_path", "run_name", "id"})
NOISE_LEAVES = frozenset({"_target_", "_partial_", "_recursive_", "_convert_"})
NOISE_TRAINER_LEAVES = frozenset(
    {"accelerator", "devices", "num_nodes", "strategy", "default_root_dir", "enable_progress_bar",
     "enable_model_summary", "log_every_n_steps", "enable_checkpointing", "logger"}
)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    lower_is_better: bool

    @property
    def val_key(self) -> str:
        return f"val/{self.name}"

    @property
    def test_key(self) -> str:
        return f"test/{self.name}"

    def better(self, a: float, b: float) -> bool:
        return a < b if self.lower_is_better else a > b


def metric_spec(argument: str, direction: str | None = None) -> MetricSpec:
    name = argument.split("/", 1)[1] if argument.startswith(("val/", "test/")) else argument
    if direction is not None:
        return MetricSpec(name, direction == "min")
    if name in HIGHER_IS_BETTER:
        return MetricSpec(name, not HIGHER_IS_BETTER[name])
    known = ", ".join(sorted(HIGHER_IS_BETTER))
    raise UserError(
        f"Unknown metric {argument!r}: the comparison needs to know whether lower or higher is better. "
        f"Known metrics: {known}. For another metric logged as val/<name>, pass --direction min or "
        "--direction max."
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class RunResult:
    run: Run
    curve: list[tuple[int, float | None, float]]  # (g_iter, elapsed_s, value) of the validation metric
    best: float | None
    best_g_iter: int | None
    final: float | None
    final_split: str | None  # "test", or "val" when the run has no test evaluation


def summarise_run(run: Run, spec: MetricSpec) -> RunResult:
    curve = [
        (int(r.get("g_iter", 0) or 0), r.get("elapsed_s") if _finite(r.get("elapsed_s")) else None, float(r[spec.val_key]))
        for r in run.records
        if _finite(r.get(spec.val_key))
    ]
    curve.sort(key=lambda point: point[0])
    best = best_g_iter = None
    for g_iter, _, value in curve:
        if best is None or spec.better(value, best):
            best, best_g_iter = value, g_iter
    tests = [float(r[spec.test_key]) for r in run.records if _finite(r.get(spec.test_key))]
    if tests:
        final, final_split = tests[-1], "test"
    elif curve:
        final, final_split = curve[-1][2], "val"
    else:
        final, final_split = None, None
    return RunResult(run, curve, best, best_g_iter, final, final_split)


def available_metrics(runs: Sequence[Run]) -> list[str]:
    names = {key.split("/", 1)[1] for run in runs for r in run.records for key in r if key.startswith("val/")}
    return sorted(names)


def _protocol(record: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    provenance = record.get("provenance") if isinstance(record.get("provenance"), dict) else {}
    return tuple((name, provenance.get(name)) for name in PROTOCOL_FIELDS)


def check_protocols(runs: Sequence[Run], spec: MetricSpec) -> dict[str, dict[str, Any]]:
    """The evaluation protocol shared by all values of the metric, per split ("val", "test").

    Raises UserError naming the runs and the fields when values of one split were computed under
    different protocols, since they cannot share an axis or a column.
    """
    shared: dict[str, dict[str, Any]] = {}
    for split, key in (("val", spec.val_key), ("test", spec.test_key)):
        groups: dict[tuple, list[Run]] = {}
        for run in runs:
            for protocol in dict.fromkeys(_protocol(r) for r in run.records if key in r):
                groups.setdefault(protocol, []).append(run)
        if len(groups) > 1:
            raise UserError(_incompatible_message(key, groups))
        if groups:
            shared[split] = dict(next(iter(groups)))
    return shared


def _incompatible_message(key: str, groups: dict[tuple, list[Run]]) -> str:
    protocols = [dict(p) for p in groups]
    differing = [f for f in PROTOCOL_FIELDS if len({repr(p[f]) for p in protocols}) > 1]
    lines = [
        f"Refusing to compare {key}: the runs were evaluated under different protocols "
        f"({', '.join(differing)} differ{'s' if len(differing) == 1 else ''}), and values computed with "
        "a different feature backbone, number of samples, split, resolution or resize method are not "
        "comparable on one axis. Expected every run to share one protocol. Compare each group "
        "separately, or re-evaluate the runs with one protocol:"
    ]
    for protocol, members in groups.items():
        described = ", ".join(f"{f}={dict(protocol)[f]}" for f in differing)
        labels = ", ".join(run.label for run in members)
        sources = " ".join(shlex.quote(run.source) for run in members)
        lines.append(f"  [{described}] {labels}")
        if not any(run.source.startswith("wandb:") for run in members):
            lines.append(f"      python -m gan.compare {sources}")
    return "\n".join(lines)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def _is_noise(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    if key in NOISE_KEYS or key == "hydra" or key.startswith(NOISE_PREFIXES) or leaf in NOISE_LEAVES:
        return True
    if key.startswith("trainer.") and leaf in NOISE_TRAINER_LEAVES:
        return True
    return leaf.endswith(("_dir", "_path", "dir", "path", "root"))


def differing_hyperparameters(runs: Sequence[Run]) -> tuple[list[str], list[dict[str, Any]]]:
    """Dotted config keys whose values differ across runs (noise excluded), and each run's flat config."""
    flats = [_flatten(run.config) for run in runs]
    keys = sorted({k for flat in flats for k in flat if not _is_noise(k)}, key=_key_order)
    missing = object()
    differing = [k for k in keys if len({repr(flat.get(k, missing)) for flat in flats}) > 1]
    return differing, flats


def _key_order(key: str) -> tuple[int, str]:
    group = {"model": 0, "data": 1}.get(key.split(".", 1)[0], 2)
    return group, key


def expected_best_of_k(values: Sequence[float], k: int, lower_is_better: bool) -> float:
    """E[best of k values drawn without replacement from `values`], exactly, from order statistics.

    With values sorted best first, v_(i) is the best of a random k-subset exactly when the subset
    holds v_(i) and k-1 of the n-i worse values: probability C(n-i, k-1) / C(n, k).
    """
    n = len(values)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    ordered = sorted(values, reverse=not lower_is_better)
    total = comb(n, k)
    # int / int stays exact until the final division, so large n cannot overflow a float.
    return sum(v * (comb(n - i, k - 1) / total) for i, v in enumerate(ordered, start=1))


def budget_curve(values: Sequence[float], lower_is_better: bool) -> list[float]:
    return [expected_best_of_k(values, k, lower_is_better) for k in range(1, len(values) + 1)]
