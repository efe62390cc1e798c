"""The comparison as one self-contained HTML file: tables, plots as inline SVG images, sample grids
as base64 PNG. It opens from disk with no server, no network and no script."""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from gan.report.analysis import MetricSpec, Reference, RunResult

LINE_STYLES = ("-", "--", ":", "-.")
MAX_RUNS_IN_LEGEND = 12
PLOT_RC = {"svg.hashsalt": "gan.compare", "svg.fonttype": "path", "font.size": 9}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d1d1f; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
tr.best td { background: #e8f5e9; font-weight: 600; }
tr.reference td { background: #f4f6fb; font-style: italic; border-top: 2px solid #99a; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.plots figure, .samples figure { margin: 0; }
.plots img { width: 560px; max-width: 100%; border: 1px solid #eee; }
.samples { display: flex; flex-wrap: wrap; gap: 12px; }
.samples img { width: 256px; image-rendering: pixelated; border: 1px solid #ccc; }
figcaption { font-size: 12px; color: #444; max-width: 560px; }
.wide { overflow-x: auto; max-width: 100%; }
.notes li { font-size: 13px; color: #8a4b00; }
"""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric_columns: frozenset[int] = frozenset()  # right-aligned; the others hold text
    highlight: int | None = None  # index of the row holding the best run
    footnotes: list[str] = field(default_factory=list)
    reference_row: int | None = None  # index of the "real data" row (the metric on real held-out images)
    full_names: dict[str, str] = field(default_factory=dict)  # short column name -> dotted config key


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table_html(table: Table, css_class: str) -> str:
    def cell(tag: str, index: int, value: str) -> str:
        align = "" if index in table.numeric_columns else ' class="text"'
        return f"<{tag}{align}>{_escape(value)}</{tag}>"

    def header(index: int, value: str) -> str:
        full = table.full_names.get(value)
        title = f' title="{_escape(full)}"' if full and full != value else ""
        align = "" if index in table.numeric_columns else ' class="text"'
        return f"<th{align}{title}>{_escape(value)}</th>"

    head = "".join(header(i, h) for i, h in enumerate(table.headers))
    body = []
    for r, row in enumerate(table.rows):
        marker = ' class="best"' if r == table.highlight else ' class="reference"' if r == table.reference_row else ""
        body.append(f"<tr{marker}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    notes = "".join(f'<p class="meta">{_escape(n)}</p>' for n in table.footnotes)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{notes}'


def _svg_image(figure: Any, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_escape(alt)}" src="data:image/svg+xml;base64,{encoded}">'


def _group_colors(groups: Sequence[str]) -> dict[str, Any]:
    """A colour per group, in the order the groups first appear."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {group: palette(i % 10) for i, group in enumerate(dict.fromkeys(groups))}


def describe_protocol(protocol: dict[str, Any] | None) -> str:
    if not protocol or all(v is None for v in protocol.values()):
        return "protocol not recorded"
    parts = [
        f"{protocol.get('backbone')} features (weights {protocol.get('weights_sha256')})",
        f"{protocol.get('num_fake')} generated vs {protocol.get('num_real')} real",
        f"{protocol.get('dataset')} {protocol.get('split')} split",
        f"{protocol.get('image_size')} px, resize {protocol.get('resize')}",
    ]
    return "; ".join(parts)


def _minor_log_label(value: float, _position: Any = None) -> str:
    """Minor ticks of a log axis labelled at 2, 3 and 5 times a power of ten (20, 30, 50), the others left blank."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def positive(values: Sequence[float]) -> bool:
    return bool(values) and all(v > 0 for v in values)


def _reference_line(axes: Any, reference: Reference | None, label: str = "real data (held-out)") -> None:
    """The metric on real held-out data as a dashed horizontal line: the ceiling the runs are read against."""
    if reference is not None and reference.val is not None:
        if axes.get_yscale() != "log" or reference.val > 0:
            axes.axhline(reference.val, color="0.3", linestyle="--", linewidth=1.0, label=label)


def _curve_figures(results: Sequence[RunResult], spec: MetricSpec, colors: dict[str, Any],
                   reference: Reference | None = None, log_y: bool = False) -> list[str]:
    """The validation metric against generator iterations and against training wall-clock time (`elapsed_s`)."""
    from matplotlib.figure import Figure

    plotted = [r for r in results if r.curve]
    per_run_legend = len(plotted) <= MAX_RUNS_IN_LEGEND
    values = [p[2] for r in plotted for p in r.curve]
    log = log_y and positive(values)
    images = []
    for axis_name, index, unit in (("generator iterations", 0, ""), ("wall-clock time", 1, " (s)")):
        figure = Figure(figsize=(6.4, 3.8))
        axes = figure.add_subplot()
        if log:
            from matplotlib.ticker import FuncFormatter

            axes.set_yscale("log")
            axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 10 rather than 10^1
            axes.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
        seen_groups: dict[str, int] = {}
        drawn = 0
        for result in plotted:
            points = [(p[index], p[2]) for p in result.curve if p[index] is not None]
            if not points:
                continue
            drawn += 1
            group = result.group
            style = LINE_STYLES[seen_groups.get(group, 0) % len(LINE_STYLES)]
            label = f"{result.run.label} ({group})" if per_run_legend else (group if group not in seen_groups else None)
            seen_groups[group] = seen_groups.get(group, 0) + 1
            xs, ys = zip(*points)
            axes.plot(xs, ys, style, color=colors[group], label=label, linewidth=1.4, alpha=0.9)
            best = [p for p in points if p[1] == result.best]
            if best:
                axes.plot(*best[0], "o", color=colors[group], markersize=5)
        _reference_line(axes, reference)
        axes.set_xlabel(f"{axis_name}{unit}")
        axes.set_ylabel(spec.val_key + (" (log scale)" if log else ""))
        axes.set_title(f"{spec.val_key} against {axis_name} (dots: best of each run)")
        axes.grid(alpha=0.3, which="both" if log else "major")
        if not drawn:
            axes.text(0.5, 0.5, f"no {spec.val_key} with {'elapsed_s' if index else 'g_iter'} recorded",
                      transform=axes.transAxes, ha="center", va="center", color="0.4")
        if drawn or (reference is not None and reference.val is not None):
            axes.legend(fontsize=7, loc="best")
        images.append(_svg_image(figure, f"{spec.val_key} against {axis_name}"))
    return images


def _distribution_figure(results: Sequence[RunResult], spec: MetricSpec, colors: dict[str, Any],
                         reference: Reference | None = None, group_noun: str = "model") -> str:
    from matplotlib.figure import Figure

    by_group: dict[str, list[float]] = {}
    for result in results:
        if result.best is not None:
            by_group.setdefault(result.group, []).append(result.best)
    groups = list(by_group)
    figure = Figure(figsize=(6.4, 3.8))
    axes = figure.add_subplot()
    axes.boxplot([by_group[g] for g in groups], positions=range(1, len(groups) + 1), widths=0.5,
                 showfliers=False, medianprops={"color": "black"})
    for position, group in enumerate(groups, start=1):
        values = by_group[group]
        offsets = [0.0] if len(values) == 1 else [-0.15 + 0.3 * i / (len(values) - 1) for i in range(len(values))]
        axes.scatter([position + o for o in offsets], values, color=colors[group], zorder=3, s=18)
    crowded = sum(len(g) for g in groups) > 60  # e.g. "augment=diffaugment, train_limit=0.25" x 9: slanted labels
    labels = [f"{g}{' ' if crowded else chr(10)}(n={len(by_group[g])})" for g in groups]
    axes.set_xticks(range(1, len(groups) + 1), labels, rotation=30 if crowded else 0, ha="right" if crowded else "center",
                    fontsize=7 if crowded else None)
    best_word = "lowest" if spec.lower_is_better else "highest"
    axes.set_ylabel(f"best {spec.val_key} ({best_word} over the run)")
    axes.set_title("Best value per run, across trials and seeds")
    axes.grid(axis="y", alpha=0.3)
    _reference_line(axes, reference)
    if reference is not None and reference.val is not None:
        axes.legend(fontsize=7, loc="best")
    return _svg_image(figure, f"distribution of the best {spec.val_key} per {group_noun}")


def _budget_figure(budget: dict[str, list[float]], spec: MetricSpec, colors: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.8))
    axes = figure.add_subplot()
    for group, curve in budget.items():
        axes.plot(range(1, len(curve) + 1), curve, "o-", color=colors[group], label=group, markersize=4)
    axes.set_xlabel("number of trials k (runs drawn at random without replacement)")
    axes.set_ylabel(f"expected best {spec.val_key} of k trials")
    axes.set_title("Budget curve (Lucic et al. 2018)")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    if budget:
        axes.legend(fontsize=8)
    return _svg_image(figure, "expected best metric against the number of trials")


def budget_table(budget: dict[str, list[float]], spec: MetricSpec, fmt: Any, group_noun: str = "model") -> Table:
    longest = max((len(c) for c in budget.values()), default=0)
    headers = [group_noun] + [f"k={k}" for k in range(1, longest + 1)]
    rows = [[group] + [fmt(v) for v in curve] + [""] * (longest - len(curve)) for group, curve in budget.items()]
    return Table(headers, rows, numeric_columns=frozenset(range(1, longest + 1)),
                 footnotes=[f"Expected best {spec.val_key} of k runs drawn without replacement, exact from order statistics."])


def _samples_html(results: Sequence[RunResult]) -> str:
    figures = []
    for result in results:
        run = result.run
        if not run.samples_png:
            continue
        encoded = base64.b64encode(run.samples_png).decode("ascii")
        caption = f"{run.label}: {run.model}, seed {run.seed}, {run.samples_name}"
        figures.append(
            f'<figure><img alt="samples of {_escape(run.label)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{_escape(caption)}</figcaption></figure>"
        )
    if not figures:
        return '<p class="meta">No run has a sample grid.</p>'
    return f'<div class="samples">{"".join(figures)}</div>'


def render_report(
    *,
    spec: MetricSpec,
    results: Sequence[RunResult],
    table: Table,
    budget: dict[str, list[float]],
    protocols: dict[str, dict[str, Any]],
    notes: Sequence[str],
    inputs: Sequence[str],
    fmt: Any,
    reference: Reference | None = None,
    seeds_table: Table | None = None,
    log_y: bool = False,
    grouping: str = "",
    group_noun: str = "model",
) -> str:
    """`budget` maps each group (the results' `group`) to its budget curve; `grouping` says how the runs were grouped,
    and `group_noun` names a group in headings ("model" when the groups are the models)."""
    import matplotlib

    colors = _group_colors([r.group for r in results])
    with matplotlib.rc_context(PLOT_RC):
        curves = _curve_figures(results, spec, colors, reference, log_y)
        distribution = _distribution_figure(results, spec, colors, reference, group_noun)
        budget_plot = _budget_figure(budget, spec, colors)
    values = [p[2] for r in results for p in r.curve]
    if log_y and not positive(values):
        scale_note = "Curves on a linear scale: some values are not positive, which a log scale cannot show."
    else:
        scale_note = ("Curves on a log scale (--no-log-y for linear)." if log_y
                      else "Curves on a linear scale (--log-y for a log scale).")
    if reference is not None and reference.val is not None:
        scale_note += " Dashed line: the metric on real held-out data."
    seeds_html = (f'<h2>Over seeds</h2><div class="wide">{table_html(seeds_table, "seeds")}</div>'
                  if seeds_table is not None else "")
    generated = datetime.datetime.now().isoformat(timespec="seconds")
    protocol_lines = "".join(
        f"<li>{_escape(split)}: {_escape(describe_protocol(protocol))}</li>" for split, protocol in protocols.items()
    )
    notes_html = (
        '<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{_escape(n)}</li>" for n in notes) + "</ul>" if notes else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>GAN comparison: {_escape(spec.val_key)}</title>
<style>{STYLE}</style></head>
<body>
<h1>GAN comparison: {_escape(spec.name)}</h1>
<p class="meta">{len(results)} runs from {_escape(" ".join(inputs))}; generated {generated} by <code>python -m gan.compare</code>.
{"Lower" if spec.lower_is_better else "Higher"} is better; best is selected on {_escape(spec.val_key)},
final is {_escape(spec.test_key)} where the run has it.</p>
<ul class="meta">{protocol_lines}</ul>
<p class="meta">{_escape(grouping)}</p>
<h2>Runs</h2>
<div class="wide">{table_html(table, "runs")}</div>
{seeds_html}
{notes_html}
<h2>Curves</h2>
<p class="meta">{_escape(scale_note)}</p>
<div class="plots">{"".join(f"<figure>{c}</figure>" for c in curves)}</div>
<h2>Best value per {_escape(group_noun)}</h2>
<div class="plots"><figure>{distribution}</figure><figure>{budget_plot}</figure></div>
<div class="wide">{table_html(budget_table(budget, spec, fmt, group_noun), "budget")}</div>
<h2>Latest samples</h2>
{_samples_html(results)}
</body></html>
"""
