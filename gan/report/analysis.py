"""What a comparison computes from runs: per-run best/final values, protocol checks, differing
hyperparameters and the expected-best-of-k "budget" curve of Lucic et al. (2018)."""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from math import comb
from statistics import mean, stdev
from typing import Any, Sequence

from gan.errors import UserError
from gan.metrics.directions import HIGHER_IS_BETTER
from gan.report.runs import Run, config_value

# Values of one metric are comparable only when all of these agree.
PROTOCOL_FIELDS = ("backbone", "weights_sha256", "num_fake", "num_real", "split", "image_size", "resize", "dataset")

# Config subtrees and leaf names that describe where a run was stored or how it was launched,
# not what was trained; model/data names, the seed and the scale preset have their own columns.
NOISE_PREFIXES = ("paths.", "logger.", "hydra.", "callbacks.", "launcher.", "hparams_search.", "debug.", "wandb.")
NOISE_KEYS = frozenset({"model.name", "data.name", "seed", "preset", "task_name", "tags", "ckpt_path", "run_name",
                        "id"})
NOISE_LEAVES = frozenset({"_target_", "_partial_", "_recursive_", "_convert_"})
NOISE_TRAINER_LEAVES = frozenset(
    {"accelerator", "devices", "num_nodes", "strategy", "default_root_dir", "enable_progress_bar",
     "enable_model_summary", "log_every_n_steps", "enable_checkpointing", "logger"}
)
# Keys with a column of their own: a hyperparameter equal to one of them in every run is derived from it (model.seed).
COLUMN_KEYS = ("seed", "model.name", "data.name")
# conf/model/_arch.yaml: G and D keep the settings of every architecture under its name, only the selected one is used.
NETWORK_PREFIXES = ("model.generator.", "model.discriminator.")
ARCHITECTURES = frozenset({"mlp", "dcgan", "cnn", "resnet"})
# Settings a run uses only under another setting's values: (the setting, or a prefix ending in "*"; the key it depends
# on; "in" or "not in"; those values). A run whose config says otherwise leaves the setting out of its row.
USED_ONLY_WHEN = (
    ("model.ada_*", "model.augment", "in", ("ada",)),
    ("model.augment_policy", "model.augment", "in", ("diffaugment",)),
    ("model.reg_weight", "model.regularizer", "not in", ("none",)),
    ("model.reg_every", "model.regularizer", "not in", ("none",)),
    ("model.gaussian_std", "model.likelihood", "in", ("gaussian",)),
)
REF_REAL = "ref_real"  # gan.metrics: `<split>/ref_real/<value>`, the value of real held-out data
INTERPOLATION = re.compile(r"^\$\{[^}]*\}$")
_ABSENT = object()


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
    group: str = ""  # the label of the run's group in the comparison (gan.report.groups), e.g. "augment=ada"


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
    return sorted(name for name in names if "/" not in name)  # not the reference rows (ref_real/fid, ...)


@dataclass
class Reference:
    """The metric on real held-out data (real vs real FID, real data's IS, ...): the ceiling of the runs' values."""

    val: float | None
    test: float | None
    spread: dict[str, tuple[float, float]]  # split -> (min, max) when the runs recorded different values


def real_reference(runs: Sequence[Run], spec: MetricSpec) -> Reference | None:
    """The mean over runs of each run's last `val/ref_real/<metric>` and `test/ref_real/<metric>`; None when no run
    recorded one (runs from before the evaluator computed it)."""
    found: dict[str, list[float]] = {}
    for split in ("val", "test"):
        key = f"{split}/{REF_REAL}/{spec.name}"
        for run in runs:
            values = [float(r[key]) for r in run.records if _finite(r.get(key))]
            if values:
                found.setdefault(split, []).append(values[-1])
    if not found:
        return None
    spread = {split: (min(v), max(v)) for split, v in found.items() if max(v) - min(v) > 1e-9 * max(1.0, abs(max(v)))}
    return Reference(*(mean(found[s]) if s in found else None for s in ("val", "test")), spread)


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


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value} of its leaves."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten_config(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def _is_noise(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    if key in NOISE_KEYS or key == "hydra" or key.startswith(NOISE_PREFIXES) or leaf in NOISE_LEAVES:
        return True
    if key.startswith("trainer.") and leaf in NOISE_TRAINER_LEAVES:
        return True
    return leaf.endswith(("_dir", "_path", "dir", "path", "root"))


def unused_architecture(key: str, config: dict[str, Any]) -> bool:
    """True for a key in the settings of an architecture the run does not use, e.g.
    `model.generator.mlp.hidden` when `model.arch=dcgan` (conf/model/_arch.yaml)."""
    for prefix in NETWORK_PREFIXES:
        if key.startswith(prefix):
            parts = key[len(prefix):].split(".")
            used = config_value(config, prefix + "arch", config_value(config, "model.arch"))
            return len(parts) > 1 and parts[0] in ARCHITECTURES and used is not None and parts[0] != used
    return False


def unused_setting(key: str, config: dict[str, Any]) -> bool:
    """True for a setting that USED_ONLY_WHEN says the run does not use, e.g. `model.ada_kimg` when
    `model.augment=none`; a run without the key it depends on keeps the setting."""
    for setting, depends_on, relation, values in USED_ONLY_WHEN:
        if key == setting or (setting.endswith("*") and key.startswith(setting[:-1])):
            value = config_value(config, depends_on, _ABSENT)
            if value is not _ABSENT and (value in values) != (relation == "in"):
                return True
    return False


def _interpolated(value: Any) -> bool:
    if isinstance(value, str):
        return bool(INTERPOLATION.match(value.strip()))
    if isinstance(value, (list, tuple)) and value:
        return all(isinstance(v, str) and "${" in v for v in value)
    return False


@dataclass
class Hyperparameters:
    """The config keys a comparison shows: they differ between runs and matter."""

    keys: list[str]  # display order: keys that vary within a model first, then the ones only models differ in
    flats: list[dict[str, Any]]  # each run's flat config, less the settings it does not use (unused_setting, ...)
    by_model: frozenset[str]  # keys constant within each model: the models' own settings, implied by the model column
    derived: list[str]  # left out: interpolated from another key (model.seed: ${seed}) or equal to it in every run
    group_keys: list[str]  # the keys that tell configurations apart, seeds aside (for grouping seeds)


def select_hyperparameters(runs: Sequence[Run]) -> Hyperparameters:
    """Keys whose values differ across runs, without launch noise, derived copies and the settings a run does not use
    (unused architectures, USED_ONLY_WHEN)."""
    full = [flatten_config(run.config) for run in runs]
    unused = [{k for k in flat if unused_architecture(k, run.config) or unused_setting(k, run.config)}
              for flat, run in zip(full, runs)]
    flats = [{k: v for k, v in flat.items() if k not in skip} for flat, skip in zip(full, unused)]
    present = {k for flat in flats for k in flat}
    keys = sorted((k for k in present if not _is_noise(k)), key=_key_order)
    missing = object()
    # a key differs when the runs that use it disagree (a run without it at all counts as a value of its own)
    differing = [k for k in keys
                 if len({repr(flat.get(k, missing)) for flat, skip in zip(flats, unused) if k not in skip}) > 1]

    raws = [flatten_config(run.raw_config) if run.raw_config else None for run in runs]
    columns = {k: [repr(flat.get(k, missing)) for flat in flats] for k in [*COLUMN_KEYS, *differing]}
    derived = []
    for key in differing:
        interpolated = all(raw is not None for raw in raws) and all(_interpolated(raw.get(key)) for raw in raws)
        leaf, depth = key.rsplit(".", 1)[-1], key.count(".")
        copy = any(other != key and other.rsplit(".", 1)[-1] == leaf and other.count(".") < depth
                   and columns[other] == columns[key] for other in columns)
        if interpolated or copy:
            derived.append(key)
    shown = [k for k in differing if k not in derived]

    models = [run.model for run in runs]
    def constant_within(key: str, model: str) -> bool:
        return len({repr(flat.get(key, missing)) for flat, m in zip(flats, models) if m == model}) == 1

    by_model = frozenset(k for k in shown if all(constant_within(k, model) for model in set(models)))
    ordered = [k for k in shown if k not in by_model] + [k for k in shown if k in by_model]
    group_keys = [k for k in differing if k not in COLUMN_KEYS]
    return Hyperparameters(ordered, flats, by_model, derived, group_keys)


def differing_hyperparameters(runs: Sequence[Run]) -> tuple[list[str], list[dict[str, Any]]]:
    """Dotted config keys whose values differ across runs and matter (see `select_hyperparameters`), and each run's
    flat config."""
    selected = select_hyperparameters(runs)
    return selected.keys, selected.flats


def seed_groups(runs: Sequence[Run], hyperparameters: Hyperparameters) -> list[list[int]]:
    """Indices of runs that differ only in their seed (and what derives from it), in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, (run, flat) in enumerate(zip(runs, hyperparameters.flats)):
        signature = (run.model, run.data, tuple(repr(flat.get(k)) for k in hyperparameters.group_keys
                                                 if k not in hyperparameters.derived))
        groups.setdefault(signature, []).append(i)
    return list(groups.values())


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return mean(values), (stdev(values) if len(values) > 1 else None)


# The settings a reader looks for first, in this order; the others follow, shallow keys before nested ones.
LEADING_KEYS = ("model.arch", "model.loss", "model.regularizer", "model.augment", "model.n_critic", "model.g_lr",
                "model.d_lr", "model.betas", "model.reg_weight", "model.latent_dim", "g_iters", "data.image_size",
                "data.batch_size")


def _key_order(key: str) -> tuple:
    group = {"model": 0, "data": 1}.get(key.split(".", 1)[0], 2)
    leading = LEADING_KEYS.index(key) if key in LEADING_KEYS else len(LEADING_KEYS)
    return group, leading, key.count("."), key


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
