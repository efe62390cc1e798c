"""The groups a comparison draws and summarises: the distinct combinations of the factors a study varies.

The factors are config keys (`--by model.augment,data.train_limit`) or, by default, what differs between the runs:
the model, the dataset and the scale preset, and the settings that vary within one model, dataset and preset; the seed,
what follows from it (model.seed: ${seed}), launch bookkeeping (run directories, W&B ids) and values a hyperparameter
search drew at random are left out. Runs differing in the model only stay grouped by model.
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

from gan.errors import UserError
from gan.report.analysis import Hyperparameters, flatten_config
from gan.report.runs import Run

# Factors that are columns of their own rather than config keys: the model (an f-GAN with its divergence), the
# dataset and the scale preset.
RUN_COLUMNS = ("model", "data", "preset")
UNUSED = object()  # a run's value of a factor it does not have or does not use (model.ada_kimg without ADA)


def factor_values(run: Run, flat: dict[str, Any], factors: Sequence[str]) -> tuple:
    """The run's value of each factor (from `flat`, its config less the settings it does not use), or UNUSED."""
    columns = run_columns(run)
    return tuple(columns[key] if key in RUN_COLUMNS else flat.get(key, UNUSED) for key in factors)


def run_columns(run: Run) -> dict[str, Any]:
    return {"model": run.model, "data": run.data, "preset": run.preset}


def group_order(values: Sequence[Any]) -> tuple:
    """A sort key of a group's factor values: numbers in numeric order, then text, then null, then unused."""
    def rank(value: Any) -> tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return 0, value, ""
        return (3, 0, "") if value is UNUSED else (2, 0, "") if value is None else (1, 0, str(value))

    return tuple(rank(value) for value in values)


def choose_factors(runs: Sequence[Run], hyperparameters: Hyperparameters) -> tuple[list[str], list[str]]:
    """The factors the runs differ in, and the keys left out because a search sampled them (see the module)."""
    named = [tuple(run_columns(run).values()) for run in runs]

    def varies_within_a_name(key: str) -> bool:  # not a setting the model, the dataset or the preset implies
        # among the runs that have and use the key: a run without it (recorded before the setting existed, or one
        # that does not use it, such as model.ada_kimg without ADA) does not make it a factor
        seen: dict[tuple, set[str]] = {}
        for names, flat in zip(named, hyperparameters.flats):
            if key in flat:
                seen.setdefault(names, set()).add(repr(flat[key]))
        return any(len(values) > 1 for values in seen.values())

    sampled = set().union(*(run.sampled_keys for run in runs))
    varied = [k for k in hyperparameters.keys if varies_within_a_name(k)]
    names = [name for i, name in enumerate(RUN_COLUMNS) if len({values[i] for values in named}) > 1]
    factors = names + [k for k in varied if k not in sampled]
    return factors or ["model"], [k for k in varied if k in sampled]


def parse_factors(by: str, runs: Sequence[Run], hyperparameters: Hyperparameters) -> list[str]:
    """The keys of `--by key1,key2`, each a setting of some run (or a column: model, data, preset)."""
    keys = list(dict.fromkeys(key.strip() for key in by.split(",")))
    known = set(RUN_COLUMNS).union(*(flatten_config(run.config) for run in runs))
    for key in keys:
        if key in known:
            continue
        near = [k for k in sorted(known) if k.endswith("." + key)] or difflib.get_close_matches(key, sorted(known), 3)
        hint = f"Did you mean {' or '.join(near[:3])}? " if key and near else ""
        differing = ", ".join(hyperparameters.keys) or "none besides the seed"
        raise UserError(
            f"--by {by!r}: {key!r} is not a setting of any of the {len(runs)} runs compared, so the runs cannot be "
            f"grouped by it. Expected dotted config keys as each run's config.yaml spells them, separated by commas "
            f"(e.g. --by model.augment,data.train_limit), or {', '.join(RUN_COLUMNS)}. {hint}Settings that differ "
            f"between these runs: {differing}."
        )
    return keys
