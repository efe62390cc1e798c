"""Compare finished runs: a table in the terminal and one self-contained HTML report.

    python -m gan.compare <run dirs, sweep dirs or globs> [--metric fid] [--out report.html] [--log-y | --no-log-y]
        [--by model.augment,data.train_limit]
    python -m gan.compare --wandb <entity/project> [--metric fid]

The best value of a run is selected on the validation curve (val/<metric>); the reported final
value is the held-out test evaluation (test/<metric>) where the run has one. Values computed
under different evaluation protocols are never put side by side. A "real data" row gives the
metric on real held-out images (real vs real FID, real data's IS, ...): the ceiling.

The runs are grouped by the factors a study varies (gan.report.groups): `--by` config keys, or by default the
settings that differ between the runs, seed aside (the model when nothing else differs). Each group has its colour in
the curves, its box in the distribution, its budget curve and its row (mean ± sd over its runs) in a second table.

The terminal table fits 120 columns: it shows the hyperparameters that differ between runs and
matter (not values derived from another key such as model.seed, not the settings a run does not use: those of
network architectures it does not use, or those USED_ONLY_WHEN leaves out, such as model.ada_kimg without ADA), with
short names. The HTML report keeps the full names.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence

from gan.errors import UserError
from gan.report.analysis import (
    Hyperparameters,
    MetricSpec,
    Reference,
    RunResult,
    available_metrics,
    budget_curve,
    check_protocols,
    mean_and_std,
    metric_spec,
    real_reference,
    seed_groups,
    select_hyperparameters,
    summarise_run,
)
from gan.report.groups import UNUSED, choose_factors, factor_values, group_order, parse_factors
from gan.report.html import Table, render_report
from gan.report.runs import Run, assign_directory_labels, find_run_dirs, load_run_dir, make_labels_unique

MISSING = "-"
VAL_FALLBACK_MARK = "*"
REAL_DATA = "real data"
TERMINAL_WIDTH = 120
MAX_CELL = 18  # longer config values are cut in the terminal (the HTML report has them whole)
# Metrics whose curves span orders of magnitude: their plots use a log y axis unless --no-log-y.
LOG_SCALE_METRICS = frozenset({"fid", "kid", "fid_ab", "fid_ba", "reverse_kl"})
ABBREVIATIONS = {"generator": "G", "discriminator": "D"}


def format_number(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_config_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(format_config_value(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return MISSING if value is None else str(value)


def format_mean_std(values: Sequence[float]) -> str:
    if not values:
        return MISSING
    average, spread = mean_and_std(values)
    return format_number(average) if spread is None else f"{average:.4g} ± {spread:.2g}"


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def short_names(keys: Sequence[str], parts: int = 2) -> dict[str, str]:
    """Readable column names for dotted config keys: the last `parts` components (more when that is ambiguous), with
    generator/discriminator as G/D: model.g_lr, D.norm, G.resnet.width."""
    names = {}
    for key in keys:
        components = key.split(".")
        for n in range(min(parts, len(components)), len(components) + 1):
            suffix = ".".join(components[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        names[key] = ".".join(ABBREVIATIONS.get(part, part) for part in suffix.split("."))
    return names


def format_factor(value: Any) -> str:
    return MISSING if value is UNUSED else format_config_value(value)


def group_label(factors: Sequence[str], values: Sequence[Any]) -> str:
    """`augment=ada, train_limit=0.1`: each factor by the last component of its key, the model and the dataset by their
    name alone; a factor the run does not use is left out."""
    names = short_names(factors, parts=1)
    shown = [format_factor(value) if key in ("model", "data") else f"{names[key]}={format_factor(value)}"
             for key, value in zip(factors, values) if value is not UNUSED]
    return ", ".join(shown) or "without " + ", ".join(names[key] for key in factors)


def describe_grouping(factors: Sequence[str], chosen: bool, sampled: Sequence[str], count: int) -> str:
    how = "given with --by" if chosen else \
        "chosen automatically: the settings that differ between the runs, seed aside; --by to choose"
    text = f"groups: {', '.join(factors)} ({count} group{'s' if count != 1 else ''}; {how})"
    if sampled:
        text += f"; not grouped by {', '.join(sampled)}: values drawn by a hyperparameter search"
    return text + "."


def _signed(value: float, spec: MetricSpec) -> float:
    return value if spec.lower_is_better else -value


def _signed_best(result: RunResult, spec: MetricSpec) -> float:
    assert result.best is not None
    return _signed(result.best, spec)


def order_results(results: Sequence[RunResult], spec: MetricSpec, hyperparameters: Hyperparameters,
                  factors: Sequence[str]) -> list[RunResult]:
    """By group (the factors' values); within it, configurations by their mean best value over seeds, the seeds of one
    configuration together (in seed order); runs without a value last."""
    runs = [r.run for r in results]
    keyed = []
    for group in seed_groups(runs, hyperparameters):
        bests = [results[i].best for i in group if results[i].best is not None]
        score = (0, _signed(sum(bests) / len(bests), spec)) if bests else (1, 0.0)
        for i in group:
            seed = results[i].run.seed
            seed_key = (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))
            position = group_order(factor_values(runs[i], hyperparameters.flats[i], factors))
            keyed.append(((position, *score, group[0], seed_key, results[i].run.label), results[i]))
    return [result for _, result in sorted(keyed, key=lambda item: item[0])]


def build_table(results: Sequence[RunResult], spec: MetricSpec, hyperparameters: Hyperparameters | None = None,
                reference: Reference | None = None, compact: bool = False, factors: Sequence[str] = ()) -> Table:
    """One row per run (and a last "real data" row when the runs recorded the reference); the hyperparameters that are
    factors (see gan.report.groups) come first.

    `compact` (the terminal): columns whose value is the same for every run (data, preset, status) move to a
    footnote, and the hyperparameters get short names and cut values.
    """
    hyperparameters = hyperparameters or select_hyperparameters([r.run for r in results])  # of `results`, in order
    flat_of = {id(r.run): flat for r, flat in zip(results, hyperparameters.flats)}
    keys = [k for k in factors if k in hyperparameters.keys] + [k for k in hyperparameters.keys if k not in factors]
    names = short_names(keys) if compact else {k: k for k in keys}
    columns = [{"data": r.run.data, "preset": r.run.preset, "status": r.run.status} for r in results]
    values = {column: {c[column] for c in columns} for column in ("data", "preset", "status")}
    show = {column: not compact or len(found) > 1 for column, found in values.items()}
    shared = [f"{column} {next(iter(found))}" for column, found in values.items()
              if not show[column] and next(iter(found)) is not None]  # runs from before `preset` was recorded: None
    headers = ["run", "model", *(c for c in ("data", "preset") if show[c]), "seed",
               *(["status"] if show["status"] else []), f"best {spec.val_key}", "at g_iter", f"final {spec.name}", "wall time", *(names[k] for k in keys)]
    first_value = headers.index(f"best {spec.val_key}")

    def cut(text: str) -> str:
        return text if not compact or len(text) <= MAX_CELL else text[:MAX_CELL - 3] + "..."

    rows, uses_fallback = [], False
    for result, column in zip(results, columns):
        run = result.run
        final = format_number(result.final)
        if result.final_split == "val":
            final += VAL_FALLBACK_MARK
            uses_fallback = True
        rows.append([
            run.label, run.model, *(format_config_value(column[c]) for c in ("data", "preset") if show[c]),
            format_config_value(run.seed), *([run.status] if show["status"] else []),
            format_number(result.best), format_number(result.best_g_iter), final, format_duration(run.wall_time_s),
            *(cut(format_config_value(flat_of[id(run)].get(key))) for key in keys),
        ])
    scored = [i for i, r in enumerate(results) if r.best is not None]
    highlight = min(scored, key=lambda i: _signed_best(results[i], spec)) if scored else None
    footnotes = [f"final is {spec.test_key} (held-out split, fresh samples)."]
    if uses_fallback:
        footnotes.append(f"{VAL_FALLBACK_MARK} no {spec.test_key} in this run: its last {spec.val_key} is shown instead.")
    reference_row = None
    if reference is not None:
        row = [""] * len(headers)
        row[0] = REAL_DATA
        row[first_value], row[first_value + 2] = format_number(reference.val), format_number(reference.test)
        reference_row = len(rows)
        rows.append(row)
        spread = "; ".join(f"{split} {low:.4g} to {high:.4g}" for split, (low, high) in reference.spread.items())
        footnotes.append(f"{REAL_DATA}: the metric on real held-out data ({spec.val_key.split('/')[0]}/ref_real/"
                         f"{spec.name}, {spec.test_key.split('/')[0]}/ref_real/{spec.name}: real data of another split "
                         f"scored as the samples are), the best a generator can be expected to reach"
                         + (f"; it varies between the runs ({spread}), the mean is shown." if spread else "."))
    if shared:
        footnotes.append(f"every run: {', '.join(shared)}.")
    numeric = frozenset({headers.index("seed"), *range(first_value, first_value + 4)})
    return Table(headers, rows, numeric_columns=numeric, highlight=highlight, footnotes=footnotes,
                 reference_row=reference_row, full_names={names[k]: k for k in keys})


def build_seed_table(results: Sequence[RunResult], spec: MetricSpec, hyperparameters: Hyperparameters,
                     factors: Sequence[str], compact: bool = False) -> Table | None:
    """One row per group of `results` (their `group`, made of `factors`): mean ± sample standard deviation over its
    runs. None when no group has more than one run."""
    runs = [r.run for r in results]
    groups: dict[str, list[int]] = {}
    for i, result in enumerate(results):
        groups.setdefault(result.group, []).append(i)
    if all(len(group) < 2 for group in groups.values()):
        return None
    names = short_names(factors) if compact else {k: k for k in factors}
    headers = [*(names[k] for k in factors), "runs", "seeds", f"best {spec.val_key}", f"final {spec.name}"]
    rows = []
    for group in groups.values():
        bests = [results[i].best for i in group if results[i].best is not None]
        finals = [results[i].final for i in group if results[i].final is not None]
        seeds = dict.fromkeys(format_config_value(runs[i].seed) for i in group)
        rows.append([*map(format_factor, factor_values(runs[group[0]], hyperparameters.flats[group[0]], factors)),
                     str(len(group)), ",".join(seeds), format_mean_std(bests), format_mean_std(finals)])
    configuration = {i: n for n, members in enumerate(seed_groups(runs, hyperparameters)) for i in members}
    if all(len({configuration[i] for i in group}) == 1 for group in groups.values()):
        footnote = "over seeds: mean ± sample standard deviation of the runs that differ only in their seed."
    else:
        footnote = (f"per group ({', '.join(factors)}): mean ± sample standard deviation over its runs, which may "
                    "differ in other settings too.")
    numeric = frozenset(range(len(headers) - 4, len(headers)))
    return Table(headers, rows, numeric_columns=numeric, footnotes=[footnote],
                 full_names={names[k]: k for k in factors})


def fit_table(table: Table, droppable: Sequence[str], width: int = TERMINAL_WIDTH) -> Table:
    """Drop hyperparameter columns (named in `droppable`, last first) until the table fits `width` columns."""
    dropped: list[str] = []
    columns = list(range(len(table.headers)))
    for name in reversed(droppable):
        if sum(max(len(str(c)) for c in [table.headers[i], *(row[i] for row in table.rows)]) for i in columns) \
                + 2 * (len(columns) - 1) <= width:
            break
        if name in table.headers:
            index = table.headers.index(name)
            columns.remove(index)
            dropped.append(name)
    if not dropped:
        return table
    remap = {old: new for new, old in enumerate(columns)}
    footnotes = [*table.footnotes, f"not shown, to fit {width} columns: {', '.join(reversed(dropped))} "
                                   f"(the HTML report has every column)."]
    return Table([table.headers[i] for i in columns], [[row[i] for i in columns] for row in table.rows],
                 numeric_columns=frozenset(remap[i] for i in table.numeric_columns if i in remap),
                 highlight=table.highlight, footnotes=footnotes, reference_row=table.reference_row,
                 full_names=table.full_names)


def format_text_table(table: Table, width: int = TERMINAL_WIDTH) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(table.headers, *table.rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in table.numeric_columns else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [line(row) for row in table.rows]
    if table.reference_row is not None:
        body.insert(table.reference_row, "  ".join("." * w for w in widths))
    notes = [wrapped for note in table.footnotes
             for wrapped in textwrap.wrap(note, width=width, subsequent_indent="  ", break_on_hyphens=False)]
    return "\n".join([line(table.headers), rule, *body, *notes])


def terminal_tables(results: Sequence[RunResult], spec: MetricSpec, hyperparameters: Hyperparameters,
                    reference: Reference | None, factors: Sequence[str], width: int = TERMINAL_WIDTH) -> str:
    """The runs table and, when some group has several runs, the per-group table, each within `width`."""
    def droppable(table: Table) -> list[str]:  # the models' own settings go first, then what varies, the factors last
        others = [k for k in hyperparameters.keys if k not in factors]
        order = [*factors, *(k for k in others if k not in hyperparameters.by_model),
                 *(k for k in others if k in hyperparameters.by_model)]
        by_name = {full: short for short, full in table.full_names.items()}
        return [by_name[k] for k in order if k in by_name]

    runs = build_table(results, spec, hyperparameters, reference, compact=True, factors=factors)
    text = format_text_table(fit_table(runs, droppable(runs), width), width)
    seeds = build_seed_table(results, spec, hyperparameters, factors, compact=True)
    if seeds is not None:
        text += "\n\n" + format_text_table(fit_table(seeds, droppable(seeds), width), width)
    return text


def load_runs(inputs: Sequence[str], wandb_project: str | None, wandb_api: Any = None) -> list[Run]:
    runs: list[Run] = []
    if inputs:
        runs = [load_run_dir(path) for path in find_run_dirs(list(inputs))]
        assign_directory_labels(runs)
    if wandb_project:
        from gan.report.wandb_source import runs_from_wandb

        runs += runs_from_wandb(wandb_project, api=wandb_api)
    make_labels_unique(runs)
    return runs


def collect_notes(results: Sequence[RunResult], spec: MetricSpec) -> list[str]:
    notes = []
    for result in results:
        run = result.run
        notes += [f"{run.label}: {note}" for note in run.notes]
        if result.best is None:
            notes.append(f"{run.label}: no {spec.val_key} recorded (stopped before its first evaluation?); "
                         "left out of the plots and statistics")
        evaluations = [r for r in run.records if spec.val_key in r or spec.test_key in r]
        if any(not isinstance(r.get("provenance"), dict) for r in evaluations):
            notes.append(f"{run.label}: some evaluations carry no provenance, so their protocol cannot be checked")
    return notes


def group_runs(results: Sequence[RunResult], spec: MetricSpec, by: str | None
               ) -> tuple[list[RunResult], Hyperparameters, list[str], str]:
    """`results` ordered by group, each with its `group` label; their hyperparameters, the factors, and a sentence
    saying which factors were chosen and how."""
    hyperparameters = select_hyperparameters([r.run for r in results])
    if by is None:
        factors, sampled = choose_factors([r.run for r in results], hyperparameters)
    else:
        factors, sampled = parse_factors(by, [r.run for r in results], hyperparameters), []
    results = order_results(results, spec, hyperparameters, factors)
    hyperparameters = select_hyperparameters([r.run for r in results])
    for result, flat in zip(results, hyperparameters.flats):
        result.group = group_label(factors, factor_values(result.run, flat, factors))
    count = len({result.group for result in results})
    return results, hyperparameters, factors, describe_grouping(factors, by is not None, sampled, count)


def compare(inputs: Sequence[str], metric: str, direction: str | None, out: Path,
            wandb_project: str | None = None, wandb_api: Any = None, log_y: bool | None = None,
            by: str | None = None) -> int:
    if not inputs and not wandb_project:
        raise UserError(
            "No runs given. Pass run directories, sweep directories, parent directories or globs "
            "(e.g. `python -m gan.compare multirun/2024-05-01/12-00-00`), or read a W&B project with "
            "`--wandb <entity>/<project>`."
        )
    spec = metric_spec(metric, direction)
    runs = load_runs(inputs, wandb_project, wandb_api)
    results = [summarise_run(run, spec) for run in runs]
    if all(result.best is None for result in results):
        logged = available_metrics(runs)
        offer = (f"These runs log: {', '.join(logged)}; pass one of them with --metric."
                 if logged else "None of them has been evaluated yet; wait for the first evaluation.")
        raise UserError(f"None of the {len(runs)} runs recorded {spec.val_key}, so there is nothing to compare. {offer}")
    protocols = check_protocols(runs, spec)
    results, hyperparameters, factors, grouping = group_runs(results, spec, by)
    reference = real_reference(runs, spec)
    notes = collect_notes(results, spec)

    print(terminal_tables(results, spec, hyperparameters, reference, factors))
    print("\n" + "\n".join(textwrap.wrap(grouping, width=TERMINAL_WIDTH, subsequent_indent="  ")))
    table = build_table(results, spec, hyperparameters, reference, factors=factors)
    if table.highlight is not None:
        best = results[table.highlight]
        print(f"\nbest: {best.run.label} ({best.group}) {spec.val_key}={format_number(best.best)} "
              f"at g_iter {best.best_g_iter}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    bests: dict[str, list[float]] = {}
    for result in results:
        if result.best is not None:
            bests.setdefault(result.group, []).append(result.best)
    budget = {group: budget_curve(values, spec.lower_is_better) for group, values in bests.items()}
    use_log = spec.name in LOG_SCALE_METRICS if log_y is None else log_y
    report = render_report(spec=spec, results=results, table=table, budget=budget, protocols=protocols,
                           notes=notes, inputs=list(inputs) + ([f"wandb:{wandb_project}"] if wandb_project else []),
                           fmt=format_number, reference=reference,
                           seeds_table=build_seed_table(results, spec, hyperparameters, factors), log_y=use_log,
                           grouping=grouping, group_noun="model" if factors == ["model"] else "group")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report, encoding="utf-8")
    except OSError as error:
        raise UserError(f"Cannot write the report to {out}: {error.strerror}. Pass a writable path with --out.") from error
    print(f"report: {out.resolve()}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gan.compare",
        description="Compare GAN runs: a table in the terminal and a self-contained HTML report.",
    )
    parser.add_argument("inputs", nargs="*", help="run directories, sweep directories, parents of runs or globs")
    parser.add_argument("--metric", default="fid",
                        help="metric name: best on val/<metric>, final on test/<metric> (default: fid)")
    parser.add_argument("--direction", choices=("min", "max"),
                        help="whether lower or higher is better, for metrics the tool does not know")
    parser.add_argument("--out", type=Path, default=Path("report.html"),
                        help="HTML report to write (default: report.html)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT",
                        help="also read the runs of this W&B project (needs network and a login)")
    parser.add_argument("--log-y", action=argparse.BooleanOptionalAction, default=None,
                        help="log-scale y axis for the curves of the HTML report (default: on for FID-like "
                             f"metrics: {', '.join(sorted(LOG_SCALE_METRICS))}; off for the others)")
    parser.add_argument("--by", metavar="KEY[,KEY...]",
                        help="group the runs (colours, box plots, budget curves, the per-group table) by these dotted "
                             "config keys, e.g. model.augment,data.train_limit, or model, data, preset (default: the "
                             "settings that differ between the runs, seed aside; the model when nothing else does)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, wandb_api: Any = None) -> int:
    """Entry point; `wandb_api` replaces `wandb.Api()` (tests pass a stub)."""
    args = parse_args(argv)
    try:
        return compare(args.inputs, args.metric, args.direction, args.out, args.wandb, wandb_api, args.log_y, args.by)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
