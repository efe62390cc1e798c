"""Compare finished runs: a table in the terminal and one self-contained HTML report.

    python -m gan.compare <run dirs, sweep dirs or globs> [--metric fid] [--out report.html]
    python -m gan.compare --wandb <entity/project> [--metric fid]

The best value of a run is selected on the validation curve (val/<metric>); the reported final
value is the held-out test evaluation (test/<metric>) where the run has one. Values computed
under different evaluation protocols are never put side by side.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from gan.errors import UserError
from gan.report.analysis import (
    MetricSpec,
    RunResult,
    available_metrics,
    budget_curve,
    check_protocols,
    differing_hyperparameters,
    metric_spec,
    summarise_run,
)
from gan.report.html import Table, render_report
from gan.report.runs import Run, assign_directory_labels, find_run_dirs, load_run_dir, make_labels_unique

MISSING = "-"
VAL_FALLBACK_MARK = "*"


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


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _signed_best(result: RunResult, spec: MetricSpec) -> float:
    assert result.best is not None
    return result.best if spec.lower_is_better else -result.best


def _sort_key(result: RunResult, spec: MetricSpec) -> tuple:
    if result.best is None:
        return (result.run.model, 1, 0.0, result.run.label)
    return (result.run.model, 0, _signed_best(result, spec), result.run.label)


def build_table(results: Sequence[RunResult], spec: MetricSpec) -> Table:
    hyperparameters, flats = differing_hyperparameters([r.run for r in results])
    flat_of = {id(r.run): flat for r, flat in zip(results, flats)}
    headers = ["run", "model", "data", "seed", "status", f"best {spec.val_key}", "at g_iter", f"final {spec.name}",
               "wall time", *hyperparameters]
    rows, uses_fallback = [], False
    for result in results:
        run = result.run
        final = format_number(result.final)
        if result.final_split == "val":
            final += VAL_FALLBACK_MARK
            uses_fallback = True
        rows.append([
            run.label, run.model, run.data, format_config_value(run.seed), run.status,
            format_number(result.best), format_number(result.best_g_iter), final, format_duration(run.wall_time_s),
            *(format_config_value(flat_of[id(run)].get(key)) for key in hyperparameters),
        ])
    scored = [i for i, r in enumerate(results) if r.best is not None]
    highlight = min(scored, key=lambda i: _signed_best(results[i], spec)) if scored else None
    footnotes = [f"final is {spec.test_key} (held-out split, fresh samples)."]
    if uses_fallback:
        footnotes.append(f"{VAL_FALLBACK_MARK} no {spec.test_key} in this run: its last {spec.val_key} is shown instead.")
    return Table(headers, rows, numeric_columns=frozenset({3, 5, 6, 7, 8}), highlight=highlight, footnotes=footnotes)


def format_text_table(table: Table) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(table.headers, *table.rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in table.numeric_columns else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(table.headers), rule, *(line(row) for row in table.rows), *table.footnotes])


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


def compare(inputs: Sequence[str], metric: str, direction: str | None, out: Path,
            wandb_project: str | None = None, wandb_api: Any = None) -> int:
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
    results.sort(key=lambda r: _sort_key(r, spec))
    notes = collect_notes(results, spec)

    table = build_table(results, spec)
    print(format_text_table(table))
    if table.highlight is not None:
        best = results[table.highlight]
        print(f"\nbest: {best.run.label} ({best.run.model}) {spec.val_key}={format_number(best.best)} "
              f"at g_iter {best.best_g_iter}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    by_model: dict[str, list[float]] = {}
    for result in results:
        if result.best is not None:
            by_model.setdefault(result.run.model, []).append(result.best)
    budget = {model: budget_curve(values, spec.lower_is_better) for model, values in by_model.items()}
    report = render_report(spec=spec, results=results, table=table, budget=budget, protocols=protocols,
                           notes=notes, inputs=list(inputs) + ([f"wandb:{wandb_project}"] if wandb_project else []),
                           fmt=format_number)
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, wandb_api: Any = None) -> int:
    """Entry point; `wandb_api` replaces `wandb.Api()` (tests pass a stub)."""
    args = parse_args(argv)
    try:
        return compare(args.inputs, args.metric, args.direction, args.out, args.wandb, wandb_api)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
