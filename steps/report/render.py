"""``report.html``: one self-contained page about a run's segments, model and data.

No external assets and no JavaScript: inline CSS and inline SVG charts
(:mod:`steps.report.svg_charts`) built from aggregates (:mod:`steps.report.data`), so
the file opens offline and never embeds a customer's row. Every piece of text
is escaped; the same inputs give the same bytes (no clock is read).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from textwrap import wrap

import numpy as np
import pandas as pd

from steps import columns as c
from steps import paths
from steps.model.segmenter import SILHOUETTE_TOLERANCE
from steps.playbook import Playbook, load_playbook
from steps.report import data
from steps.report import svg_charts as svg
from steps.report.money import DASH, DEFAULT_CURRENCY, money
from steps.segments import SCORE_LEVELS, SEGMENT_GRID, SEGMENT_NAMES

# The id of every chart, in page order: each is a <figure class="chart" id=...>.
CHART_IDS: tuple[str, ...] = (
    "segment-shares",
    "segment-changes",
    "rf-heatmap",
    "recency-histogram",
    "frequency-histogram",
    "monetary-histogram",
    "cluster-profiles",
    "cluster-segment-crosstab",
    "k-selection",
    "data-quality",
)
# The id of every table section.
TABLE_IDS: tuple[str, ...] = ("segment-table", "cluster-table", "playbook-table", "quality-gate", "model-metrics",
                              "run-parameters")
# The guide to this page, in the project's documentation (the report links nothing outside itself).
GUIDE = "docs/reading-the-report.md"
# +1: higher is better; -1: lower is better (few days since the last purchase). Colours follow "better".
BETTER_DIRECTION = {c.RECENCY_DAYS: -1, c.FREQUENCY: 1, c.MONETARY: 1}

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;margin:0;
background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:0 0 12px}h3{font-size:15px;margin:18px 0 8px}
.subtitle{color:#666;margin:0 0 16px}
nav{margin:0 0 18px;font-size:13px}nav a{color:#2b5d9a;margin-right:14px;text-decoration:none}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:18px 20px;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:0 0 18px}
.card{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:10px 16px;min-width:150px}
.card b{display:block;font-size:20px}.card span{color:#666;font-size:12px}
figure{margin:0 0 12px}figure.chart{overflow-x:auto}
figcaption{color:#555;font-size:12.5px;margin:4px 0 0}
svg{max-width:100%;height:auto;font-family:inherit;display:block}
.row{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:16px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:0 0 6px}
th,td{padding:5px 9px;border-bottom:1px solid #eceef1;text-align:left;vertical-align:top}
th{background:#f3f5f8;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:600;border-top:2px solid #d5d9de}
table.crosstab td{text-align:right;min-width:64px}table.crosstab th{font-size:12px}
table.crosstab small{display:block;font-size:11px;opacity:.8}table.crosstab td.zero{color:#bbb}
table.crosstab td.stay{outline:2px solid #4a5568;outline-offset:-2px}
.note{color:#666;font-size:12.5px}.warn{color:#a4161a;font-weight:600}
.banner{border-radius:8px;padding:10px 16px;margin:0 0 14px;font-weight:600}
.banner.failed{background:#fde8e8;border:1px solid #e4a0a0;color:#7a1014}
.banner.package{background:#eaf2fb;border:1px solid #a9c6e8;color:#1d3f66}
td.up{color:#1b6e2d}td.down{color:#a4161a}
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _int(value: float) -> str:
    return f"{int(value):,}"


def _pct(value: float) -> str:
    return DASH if value is None or not math.isfinite(float(value)) else f"{float(value):.1%}"


def _num(value: float, digits: int = 1) -> str:
    return DASH if value is None or not math.isfinite(float(value)) else f"{float(value):,.{digits}f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool], table_id: str = "",
           total: Sequence[str] | None = None, css_class: str = "") -> str:
    """An HTML table; every header and cell is escaped here."""
    attributes = (f' id="{_e(table_id)}"' if table_id else "") + (f' class="{_e(css_class)}"' if css_class else "")

    def cells(values: Sequence[str], tag: str) -> str:
        return "".join(f'<{tag}{" class=n" if n else ""}>{_e(v)}</{tag}>' for v, n in zip(values, numeric,
                                                                                         strict=True))

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    if total is not None:
        body += f'<tr class="total">{cells(total, "td")}</tr>'
    return f'<div class="scroll"><table{attributes}><thead><tr>{cells(headers, "th")}</tr></thead>' \
           f"<tbody>{body}</tbody></table></div>"


def _figure(chart_id: str, content: str, caption: str = "") -> str:
    caption_html = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure class="chart" id="{_e(chart_id)}">{content}{caption_html}</figure>'


def _group_rows(table: pd.DataFrame, first_columns: Sequence[Sequence[str]], currency: str) -> list[list[str]]:
    rows = []
    for leading, (_, row) in zip(first_columns, table.iterrows(), strict=True):
        rows.append([*leading, _int(row["customers"]), _pct(row["share"]), money(row["revenue"], currency),
                     _pct(row["revenue_share"]), _num(row[c.RECENCY_DAYS], 0), _num(row[c.FREQUENCY], 1),
                     money(row[c.MONETARY], currency), money(row["avg_order_value"], currency)])
    return rows


MEASURE_HEADERS = ("Customers", "Share", "Revenue", "Revenue share", "Mean recency (days)",
                   "Mean frequency (orders)", "Mean spend", "Avg order value")


def _total_row(features: pd.DataFrame, leading: Sequence[str], currency: str) -> list[str]:
    customers = len(features)
    means = [features[name].mean() if customers else float("nan") for name in c.MODEL_FEATURES]
    revenue, orders = float(features[c.MONETARY].sum()), float(features[c.FREQUENCY].sum())
    return [*leading, _int(customers), _pct(1.0 if customers else float("nan")), money(revenue, currency),
            _pct(1.0 if customers and revenue else float("nan")),
            _num(means[0], 0), _num(means[1], 1), money(means[2], currency),
            money(revenue / orders if orders else float("nan"), currency)]


def _rounded_share(count: int, total: int) -> str:
    """Whole-percent share that never rounds a non-empty cell to 0% or a partial one to 100%."""
    share = count / total if total else 0.0
    if 0 < share < 0.005:
        return "<1%"
    if 0.995 <= share < 1:
        return ">99%"
    return f"{share:.0%}"


def _segment_section(features: pd.DataFrame, table: pd.DataFrame, currency: str) -> str:
    cells = {name: [] for name in table.index}
    for (r, f), name in sorted(SEGMENT_GRID.items()):
        cells.setdefault(name, []).append(f"{r}{f}")
    rows = _group_rows(table, [[str(name), " ".join(cells.get(name, []))] for name in table.index], currency)
    html = _table(["Segment", "R\u00d7F cells", *MEASURE_HEADERS], rows, [False, False] + [True] * 8,
                  "segment-table", _total_row(features, ["All customers", ""], currency))
    chart = svg.bar_chart([str(name) for name in table.index],
                          {"share of customers": table["share"].fillna(0).tolist(),
                           "share of revenue": table["revenue_share"].fillna(0).tolist()},
                          label="Share of customers and revenue per RFM segment", value_format=_pct)
    caption = (f"Money in {currency}. Revenue is net spend (monetary): purchases minus returns; average order "
               "value is revenue over orders. R\u00d7F cells lists the (r_score, f_score) pairs of each segment.")
    return (f'<section id="segments"><h2>RFM segments</h2>{html}'
            f"{_figure('segment-shares', chart, caption)}</section>")


def _grid_section(features: pd.DataFrame, currency: str) -> str:
    grid, revenue = data.rf_grid(features), data.rf_revenue(features)
    total = max(int(grid.sum()), 1)
    recency_levels = sorted(SCORE_LEVELS, reverse=True)
    values = [[int(grid[r - 1, f - 1]) for f in SCORE_LEVELS] for r in recency_levels]
    text = [[[*wrap(SEGMENT_GRID[(r, f)], 15), f"{int(grid[r - 1, f - 1]):,} ({grid[r - 1, f - 1] / total:.1%})",
              money(revenue[r - 1, f - 1], currency, decimals=0)]
             for f in SCORE_LEVELS] for r in recency_levels]
    chart = svg.heat_map(values, label="Customers per recency and frequency score", cell_text=text,
                         row_labels=[f"R = {r}" for r in recency_levels],
                         col_labels=[f"F = {f}" for f in SCORE_LEVELS],
                         x_label="frequency score (5 = most orders)", y_label="recency score (5 = most recent)",
                         cell_height=70)
    caption = ("Customers per (r_score, f_score) cell (count, share) and the cell's revenue, labelled with its RFM "
               "segment; darker = more customers.")
    return f'<section id="grid"><h2>R \u00d7 F grid</h2>{_figure("rf-heatmap", chart, caption)}</section>'


def _distribution_section(features: pd.DataFrame, currency: str) -> str:
    specs = (
        ("recency-histogram", c.RECENCY_DAYS, "recency (days since last purchase)", False, False),
        ("frequency-histogram", c.FREQUENCY, "frequency (orders)", True, True),
        ("monetary-histogram", c.MONETARY, f"monetary (net spend, {currency})", True, False),
    )
    figures = []
    for index, (chart_id, column, title, log_scale, discrete) in enumerate(specs):
        values = features[column].to_numpy(dtype=float)
        binned = data.histogram(values, log_scale=log_scale, discrete=discrete)
        x_label = title + (", log-scale bins" if binned.log_scale else "")
        chart = svg.histogram(binned.counts, label=f"Distribution of {column}", x_label=x_label,
                              edge_labels=binned.edge_labels, bin_labels=binned.bin_labels,
                              color=svg.PALETTE[index])
        finite = values[np.isfinite(values)]
        caption = "no customers" if not finite.size else (
            "median {}, middle half {}{}{}, max {}".format(
                *(svg.compact(v) for v in np.percentile(finite, [50, 25])), DASH,
                *(svg.compact(v) for v in np.percentile(finite, [75, 100]))))
        figures.append(_figure(chart_id, chart, caption))
    return f'<section id="distributions"><h2>Distributions</h2><div class="row">{"".join(figures)}</div></section>'


def _cluster_section(features: pd.DataFrame, model_meta: dict, evaluation: dict, cluster_of: np.ndarray,
                     segment_of: pd.Series, currency: str) -> str:
    k = int(model_meta.get("k", len(model_meta.get("names", []))))
    names = [str(name) for name in model_meta.get("names", [])]
    dominant = [str(name) for name in model_meta.get("dominant_segments", [])]
    table = data.segment_table(features, pd.Series(cluster_of), list(range(k)))
    label_of = {i: (names[i] if i < len(names) else f"cluster {i}") for i in table.index}
    silhouettes = {int(entry.get("cluster", -1)): entry.get("silhouette") for entry in evaluation.get("clusters", [])}
    rows = _group_rows(table, [[str(i), label_of[i], dominant[i] if i < len(dominant) else ""]
                               for i in table.index], currency)
    rows = [[*row, _num(silhouettes.get(i), 2) if silhouettes.get(i) is not None else DASH]
            for i, row in zip(table.index, rows, strict=True)]
    overall = evaluation.get("segmentation_metrics", {}).get("silhouette", {}).get("value")
    html = _table(["Cluster", "Name", "Dominant RFM segment", *MEASURE_HEADERS, "Silhouette"], rows,
                  [True, False, False] + [True] * 9, "cluster-table",
                  [*_total_row(features, ["", "All customers", ""], currency),
                   _num(overall, 2) if overall is not None else DASH])

    centers = [list(map(float, row)) for row in model_meta.get("centers", [])]
    profiles = model_meta.get("profiles", [])
    cell_text = []
    for i, row in enumerate(centers):
        median = profiles[i].get("median", {}) if i < len(profiles) else {}
        cell_text.append([[f"{v:+.2f}", f"median {svg.compact(median[name])}" if name in median else ""]
                          for v, name in zip(row, c.MODEL_FEATURES, strict=True)])
    better = [[v * BETTER_DIRECTION[name] for v, name in zip(row, c.MODEL_FEATURES, strict=True)] for row in centers]
    profile_chart = svg.heat_map(better, label="Scaled cluster centres", cell_text=cell_text,
                                 row_labels=[f"{i}: {label_of.get(i, i)}" for i in range(len(centers))],
                                 col_labels=[f"{name}: {'lower' if BETTER_DIRECTION[name] < 0 else 'higher'} "
                                             "is better" for name in c.MODEL_FEATURES],
                                 diverging=True, cell_width=200, cell_height=40)
    profile_caption = ("Cluster centres on the model's scale (log1p, then standardised): 0 is the average "
                       "customer. Colour means the same on every axis: blue is better than average (recent, "
                       "frequent, high spend), red is worse; so a low recency, which is good, is blue. "
                       "Each cell also shows the cluster's median in the original units.")

    counts = data.crosstab(cluster_of, segment_of, k)
    header = "".join(f"<th>{_e(name)}</th>" for name in counts.columns)
    body = []
    for cluster, row in counts.iterrows():
        size = max(int(row.sum()), 1)
        cells = []
        for value in row:
            share = int(value) / size
            if not value:
                cells.append('<td class="zero">0</td>')
                continue
            style = f"background:{svg.shade(share)};color:{'#fff' if share > 0.55 else '#222'}"
            cells.append(f'<td style="{style}">{int(value):,}<small>{_rounded_share(int(value), size)}</small></td>')
        body.append(f"<tr><th>{_e(f'{cluster}: {label_of.get(cluster, cluster)}')}</th>{''.join(cells)}</tr>")
    crosstab = (f'<div class="scroll"><table class="crosstab"><thead><tr><th>Cluster \\ RFM segment</th>'
                f"{header}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")
    crosstab_caption = "Customers per cluster and RFM segment; shading and percentages are shares of the cluster."
    return (f'<section id="clusters"><h2>Clusters (k = {k})</h2>{html}'
            f"<h3>Cluster profiles</h3>{_figure('cluster-profiles', profile_chart, profile_caption)}"
            f"<h3>Clusters \u00d7 RFM segments</h3>"
            f"{_figure('cluster-segment-crosstab', crosstab, crosstab_caption)}</section>")


def _model_section(model_meta: dict, evaluation: dict) -> str:
    k = int(model_meta.get("k", 0))
    selection = model_meta.get("k_selection") or evaluation.get("k_selection") or []
    if selection:
        xs = [row["k"] for row in selection]
        charts = "".join((
            svg.line_chart(xs, [row["silhouette"] for row in selection], label="Silhouette by k", x_label="k",
                           y_label="silhouette (higher is better)", marker_x=k, marker_label=f"chosen k = {k}",
                           y_format=lambda v: f"{v:.2f}"),
            svg.line_chart(xs, [row["inertia"] for row in selection], label="Inertia by k", x_label="k",
                           y_label="inertia (within-cluster SS)", marker_x=k, marker_label=f"chosen k = {k}",
                           color=svg.PALETTE[1]),
        ))
        content = f'<div class="row">{charts}</div>'
        caption = (f"k was chosen by a vote: each selection seed fits every k on its own sample and votes for the "
                   f"largest k within {SILHOUETTE_TOLERANCE} of its best silhouette; the curves are the means. "
                   "Inertia always falls as k grows.")
    else:
        content = f'<p class="note">k was given (k = {k}): no k-selection curve was computed.</p>'
        caption = ""
    metrics = evaluation.get("segmentation_metrics", {})
    rows = []
    for name in sorted(metrics):
        entry = metrics[name] if isinstance(metrics[name], dict) else {"value": metrics[name]}
        value, spread = entry.get("value"), entry.get("standard_deviation")
        shown = _int(value) if isinstance(value, int) else _num(value, 3) if value is not None else DASH
        rows.append([name, shown, DASH if spread is None else _num(spread, 3)])
    note = _metric_sample_note(evaluation)
    table = _table(["Metric", "Value", "Std. dev."], rows, [False, True, True], "model-metrics")
    votes = model_meta.get("k_votes") or {}
    votes_note = ""
    if votes:
        counted = ", ".join(f"k = {k}: {n}" for k, n in sorted(votes.items(), key=lambda item: int(item[0])))
        votes_note = (f'<p class="note">k was chosen over {sum(votes.values())} seeds; how often each k won: '
                      f"{_e(counted)}.</p>")
    return (f'<section id="model"><h2>Model selection and quality</h2>{_figure("k-selection", content, caption)}'
            f"{votes_note}{_training_sample_note(model_meta)}<h3>Quality gate</h3>{_gate_table(evaluation)}"
            f"<h3>Evaluation metrics</h3>{table}{note}</section>")


def _gate_table(evaluation: dict) -> str:
    """The thresholds CheckQuality applies, the measured values and the verdict."""
    gate = evaluation.get("quality_gate") or {}
    metrics = evaluation.get("segmentation_metrics", {})
    silhouette = metrics.get("silhouette", {}).get("value")
    share = metrics.get("min_cluster_share", {}).get("value")
    failed = set(gate.get("failed", []))

    def verdict(name: str) -> str:
        if gate.get("passed") is None:
            return DASH
        return "failed" if name in failed else "passed"

    rows = [["Silhouette", _num(silhouette, 3) if silhouette is not None else DASH,
             f">= {_num(gate['min_silhouette'], 2)}" if gate.get("min_silhouette") is not None else DASH,
             verdict("silhouette")],
            ["Smallest cluster share", _pct(share) if share is not None else DASH,
             f">= {_pct(gate['min_cluster_share'])}" if gate.get("min_cluster_share") is not None else DASH,
             verdict("min_cluster_share")]]
    return _table(["Check", "Value", "Threshold", "Verdict"], rows, [False, True, True, False], "quality-gate")


def _quality_section(quality: dict | None) -> str:
    if quality is None:
        content = f'<p class="note">No data-quality accounting: {_e(paths.QUALITY_FILE)} was not available ' \
                  "for this run.</p>"
        return f'<section id="quality"><h2>Data quality</h2>{_figure("data-quality", content)}</section>'
    read, used, quarantined = (int(quality.get(key, 0)) for key in ("rows_read", "rows_used", "rows_quarantined"))
    reasons = sorted(quality.get("quarantined_by_reason", {}).items(), key=lambda item: (-int(item[1]), item[0]))
    excluded = int(quality.get("rows_excluded", 0))
    rows = [["Rows read", _int(read), _pct(1.0 if read else float("nan"))],
            ["Rows used", _int(used), _pct(used / read if read else float("nan"))]]
    if excluded:
        rows.append(["Rows excluded (not purchases)", _int(excluded), _pct(excluded / read if read else float("nan"))])
        rows += [[f"\u2003{reason}", _int(count), _pct(int(count) / read if read else float("nan"))]
                 for reason, count in sorted(quality.get("excluded_by_reason", {}).items())]
    rows.append(["Rows quarantined", _int(quarantined), _pct(quarantined / read if read else float("nan"))])
    rows += [[f"\u2003{reason}", _int(count), _pct(int(count) / read if read else float("nan"))]
             for reason, count in reasons]
    for key, title in (("returns_netted", "Returns netted"), ("customers", "Customers"),
                       ("customers_with_only_returns", "Customers with only returns")):
        if key in quality:
            rows.append([title, _int(quality[key]), ""])
    table = _table(["", "Rows", "Share of read"], rows, [False, True, True])
    balanced = read == used + excluded + quarantined and quarantined == sum(int(v) for _, v in reasons)
    check = ('<p class="note">Every row is accounted for: read = used + excluded + quarantined.</p>' if balanced
             else '<p class="warn">The accounting does not add up: read \u2260 used + excluded + quarantined.</p>')
    check += "".join(f'<p class="warn">{_e(str(warning))}</p>' for warning in quality.get("warnings", []))
    check += _increment_note(quality.get("increment"), quality.get("customers"))
    chart = ""
    if reasons:
        chart = svg.bar_chart([reason for reason, _ in reasons], {"rows": [int(v) for _, v in reasons]},
                              label="Quarantined rows by reason", value_format=lambda v: f"{int(v):,}", width=520)
    mapping = quality.get("column_mapping") or {}
    mapping_html = ""
    if mapping:
        mapping_html = "<h3>Column mapping</h3>" + _table(
            ["Column", "Input column"], [[key, str(mapping[key])] for key in sorted(mapping)], [False, False])
    content = f'<div class="row"><div>{table}{check}</div><div>{chart}</div></div>'
    caption = "Quarantined rows are kept, with their reason, in features/quarantine/."
    figure = _figure("data-quality", content, caption)
    return f'<section id="quality"><h2>Data quality</h2>{figure}{mapping_html}</section>'


def _increment_note(increment: dict | None, customers: object) -> str:
    """What an incremental run read: the rows above are this run's objects, the customers the whole history's."""
    if not increment:
        return ""
    if increment.get("rebuild"):
        return ('<p class="note" id="increment">Built from the whole history: every object was read '
                f"({_int(increment.get('objects_added', 0))} objects).</p>")
    read = {key: int(increment.get(f"objects_{key}", 0)) for key in ("added", "replaced", "removed", "redated")}
    unchanged = int(increment.get("objects_unchanged", 0))
    if not any(read.values()):
        return (f'<p class="note" id="increment">Incremental run: the history is unchanged ({_int(unchanged)} '
                "objects), so no row was read; the customers are those of the state, as the last run left "
                "them.</p>")
    parts = ", ".join(f"{_int(n)} {key}" for key, n in read.items() if n)
    customers = f"; the {_int(customers)} customers are the whole history's" if customers is not None else ""
    return (f'<p class="note" id="increment">Incremental run: the rows above are those of the objects {parts} '
            f"since the last run ({_int(unchanged)} unchanged objects not read again){customers}.</p>")


def _value(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={_value(value[key])}" for key in sorted(value)) or DASH
    if isinstance(value, list | tuple):
        return ", ".join(_value(item) for item in value) or DASH
    return DASH if value is None or value == "" else str(value)


def _run_section(run_info: dict, model_meta: dict) -> str:
    info = dict(run_info)
    info.setdefault("hyperparameters", model_meta.get("hyperparameters", {}))
    known = ("execution_id", "parameters", "input_location", "as_of_date", "input_format", "hyperparameters")
    titles = {"execution_id": "Execution id", "parameters": "Parameters", "input_location": "Input",
              "as_of_date": "As-of date", "input_format": "Input format",
              "hyperparameters": "Model hyperparameters"}
    rows = [[titles[key], _value(info.get(key))] for key in known]
    rows += [[key, _value(info[key])] for key in sorted(set(info) - set(known) - {"currency"})]
    rows.append(["Model", f"k = {model_meta.get('k', DASH)}, transform {model_meta.get('transform', DASH)}, "
                          f"features {', '.join(model_meta.get('features', c.MODEL_FEATURES))}"])
    table = _table(["", "Value"], rows, [False, False], "run-parameters")
    return f'<section id="run"><h2>Run parameters</h2>{table}</section>'


def _header(features: pd.DataFrame, model_meta: dict, evaluation: dict, run_info: dict, currency: str) -> str:
    silhouette = evaluation.get("segmentation_metrics", {}).get("silhouette", {}).get("value")
    gate = evaluation.get("quality_gate") or {}
    verdict = {True: "passed", False: "FAILED"}.get(gate.get("passed"), DASH)
    cards = [("Customers", _int(len(features))), ("Net revenue", money(features[c.MONETARY].sum(), currency)),
             ("Clusters", str(model_meta.get("k", DASH))),
             ("Silhouette", _num(silhouette, 3) if silhouette is not None else DASH),
             ("As-of date", _value(run_info.get("as_of_date"))), ("Quality gate", verdict)]
    cards_html = "".join(f'<div class="card"><b>{_e(value)}</b><span>{_e(title)}</span></div>'
                         for title, value in cards)
    execution = run_info.get("execution_id") or ""
    subtitle = f"Execution {execution}" if execution else "RFM scores, segments and k-means clusters"
    links = (("playbook", "What to do"), ("segments", "Segments"), ("changes", "Changes"), ("grid", "R\u00d7F grid"),
             ("distributions", "Distributions"), ("clusters", "Clusters"), ("model", "Model"),
             ("quality", "Data quality"), ("run", "Run"), ("guide", "How to read this report"))
    nav = "".join(f'<a href="#{anchor}">{_e(text)}</a>' for anchor, text in links)
    banner = ""
    if gate.get("passed") is False:
        banner = (f'<p class="banner failed" id="gate-banner">Quality gate failed: this segmentation was not '
                  f"registered. {_e(gate.get('message', ''))}</p>")
    return (f'<h1>RFM segmentation report</h1><p class="subtitle">{_e(subtitle)}</p>{banner}'
            f'<nav>{nav}</nav><div class="cards">{cards_html}</div>')


def _playbook_section(model_meta: dict, segment_table: pd.DataFrame, playbook: Playbook, currency: str) -> str:
    """What to do with each RFM segment and each cluster (the playbook), largest groups first."""
    rows = []
    for name, row in segment_table.sort_values("customers", ascending=False, kind="stable").iterrows():
        if row["customers"]:
            rows.append([f"segment: {name}", _int(row["customers"]), money(row["revenue"], currency),
                         playbook.for_segment(str(name)) or DASH])
    names = [str(name) for name in model_meta.get("names", [])]
    dominant = [str(name) for name in model_meta.get("dominant_segments", [])]
    for i, name in enumerate(names):
        rows.append([f"cluster {i}: {name}", "", "",
                     playbook.for_cluster(name, dominant[i] if i < len(dominant) else "") or DASH])
    table = _table(["Group", "Customers", "Revenue", "Recommended action"], rows, [False, True, True, False],
                   "playbook-table")
    note = (f'<p class="note">Actions from the playbook ({_e(playbook.source)}); edit steps/playbook.yaml or set '
            "RFM_PLAYBOOK to your own file. The export carries each customer's action as recommended_action.</p>")
    return f'<section id="playbook"><h2>What to do</h2>{table}{note}</section>'


def _training_sample_note(model_meta: dict) -> str:
    """Say when the model was fitted on a sample of the customers (model.json's ``training_sample``)."""
    sample = model_meta.get("training_sample") or {}
    customers, fitted = sample.get("customers"), sample.get("fitted_on")
    if not customers or not fitted or fitted >= customers:
        return ""
    return (f'<p class="note" id="training-sample">The model was fitted on a sample of {_int(fitted)} of the '
            f"{_int(customers)} customers (TrainingSampleSize; the same sample whatever the seed): k was chosen "
            "and the centres were fitted on it, then every customer was assigned to the nearest centre.</p>")


def _metric_sample_note(evaluation: dict) -> str:
    """Which customers the evaluation metrics were computed on: all of them, or a seeded sample."""
    sample = evaluation.get("metric_sample")
    if not sample:  # evaluation.json of an older version: only the size
        size = evaluation.get("metric_sample_size")
        return f'<p class="note">Metrics computed on {_int(size)} customers.</p>' if size is not None else ""
    if not sample.get("is_sample"):
        return f'<p class="note" id="metric-sample">Metrics computed on all {_int(sample["customers"])} customers.</p>'
    return (f'<p class="note" id="metric-sample">Computed on a random sample of {_int(sample["sampled"])} of the '
            f'{_int(sample["customers"])} customers (seed {_int(sample["seed"])}): silhouette (overall and per '
            "cluster), Davies-Bouldin, Calinski-Harabasz and stability, which compare customers with each other. "
            "Cluster sizes and shares count every customer.</p>")


def _changes_section(features: pd.DataFrame, segment_table: pd.DataFrame, previous: pd.DataFrame | None,
                     changes: pd.DataFrame | None, currency: str, note: str = "") -> str:
    """Sizes and revenue against the previous published run, and the migration matrix when given.

    Sizes and revenue before come from ``previous`` (the published ``segments.parquet``); without it,
    sizes before are counted from ``changes`` (its ``previous_segment``: only the customers who changed).
    ``note`` says what was compared (or why nothing could be).
    """
    have_changes = changes is not None and not changes.empty
    have_previous = previous is not None and not previous.empty
    shown_note = f'<p class="note" id="changes-baseline">{_e(note)}</p>' if note else ""
    if not have_previous and not have_changes:
        content = (shown_note if note.startswith("No comparison") else
                   '<p class="note">First run: no previously published segments to compare with.</p>')
        return (f'<section id="changes"><h2>Changes since the last published run</h2>'
                f'{_figure("segment-changes", content)}</section>')
    # With the full last publish, one join of it with this run gives the matrix's cells, and from them
    # the sizes and revenue before; otherwise only the changers are known (no revenue).
    cells = _cells_of_everyone(previous, features) if have_previous else _cells_of_changers(changes)
    published = cells[cells["before"] != ENTERED].groupby("before")
    sizes_before = published["customers"].sum()
    revenue_before = (published["revenue_before"].sum() if have_previous and c.MONETARY in previous else None)
    rows = []
    for name in segment_table.index:
        now_n, now_r = int(segment_table.loc[name, "customers"]), float(segment_table.loc[name, "revenue"])
        was_n = int(sizes_before.get(name, 0))
        row = [str(name), _int(was_n), _int(now_n), f"{now_n - was_n:+,}"]
        if revenue_before is not None:
            was_r = float(revenue_before.get(name, 0.0))
            row += [money(was_r, currency), money(now_r, currency),
                    ("+" if now_r >= was_r else "") + money(now_r - was_r, currency)]
        else:
            row += [DASH, money(now_r, currency), DASH]
        rows.append(row)
    table = _table(["Segment", "Customers before", "Customers now", "Change", "Revenue before", "Revenue now",
                    "Revenue change"], rows, [False] + [True] * 6, "segment-comparison")
    if have_previous:
        matrix = _migration_matrix(cells, currency)
        caption = ("Before: the segments published last (what your destinations hold now). The migration matrix "
                   "puts every customer in a cell: previous segment (rows) \u00d7 current segment (columns), with "
                   "the cell's customers and their revenue now (for (left), at the last publish); the diagonal "
                   "(outlined) is the customers who stayed. (entered) and (left) are customers new to or gone "
                   "from the data.")
    else:
        matrix = (_migration_matrix(cells, currency) if have_changes else
                  '<p class="note">No customer changed segment or cluster.</p>' if changes is not None else "")
        caption = ("The migration matrix counts only the customers whose segment or cluster changed (the last "
                   "publish's full segments could not be read): previous segment (rows) \u00d7 current segment "
                   "(columns); (entered) and (left) are customers new to or gone from the data.")
    return (f'<section id="changes"><h2>Changes since the last published run</h2>{shown_note}'
            f'{_figure("segment-changes", table + matrix, caption)}</section>')


ENTERED, LEFT = "(entered)", "(left)"


def _cells_of_everyone(previous: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (``before``, ``now``): its ``customers``, ``revenue`` and ``revenue_before``, over
    every customer of the last publish and of this run (an Arrow join: millions of customers cost
    seconds, not their objects).

    ``revenue`` is net spend now, and a customer who left counts with the last publish's (NaN when
    unknown); ``revenue_before`` is net spend at the last publish.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    def side(frame: pd.DataFrame, segment: str, revenue: str) -> pa.Table:
        spend = (pa.array(frame[c.MONETARY].to_numpy(dtype=float), pa.float64()) if c.MONETARY in frame
                 else pa.nulls(len(frame), pa.float64()))
        return pa.table({c.CUSTOMER_ID: pa.array(frame[c.CUSTOMER_ID].astype(str).to_numpy(), pa.string()),
                         segment: pa.array(data.segments(frame).to_numpy(), pa.string()), revenue: spend})

    joined = side(previous, "before", "revenue_before").join(
        side(features, "now", "revenue_now"), keys=c.CUSTOMER_ID, join_type="full outer", use_threads=False)
    moves = pa.table({"before": pc.fill_null(joined["before"], ENTERED), "now": pc.fill_null(joined["now"], LEFT),
                      "revenue": pc.coalesce(joined["revenue_now"], joined["revenue_before"]),
                      "revenue_before": joined["revenue_before"],
                      "one": pa.array(np.ones(joined.num_rows, dtype=np.int64))})
    cells = moves.group_by(["before", "now"]).aggregate(
        [("one", "sum"), ("revenue", "sum"), ("revenue_before", "sum")]).to_pandas()
    return cells.rename(columns={"one_sum": "customers", "revenue_sum": "revenue",
                                 "revenue_before_sum": "revenue_before"})


def _cells_of_changers(changes: pd.DataFrame) -> pd.DataFrame:
    """The cells of the customers in ``changes.parquet`` (its rows have no revenue)."""
    moves = pd.DataFrame({"before": changes["previous_segment"].fillna(ENTERED).astype(str).to_numpy(),
                          "now": changes["segment"].fillna(LEFT).astype(str).to_numpy()})
    cells = moves.groupby(["before", "now"]).size().rename("customers").reset_index()
    return cells.assign(revenue=np.nan, revenue_before=np.nan)


def _migration_matrix(cells: pd.DataFrame, currency: str) -> str:
    """Previous segment (rows, plus "(entered)") x current segment (columns, plus "(left)"): each cell's
    customers and, when known, their revenue."""
    counts = cells.pivot_table(index="before", columns="now", values="customers", aggfunc="sum", fill_value=0)
    revenue = cells.set_index(["before", "now"])["revenue"]

    def order(names: pd.Index, last: str) -> list[str]:
        return ([n for n in SEGMENT_NAMES if n in names] + sorted(n for n in names if n not in SEGMENT_NAMES
                                                                     and n != last) + ([last] if last in names else []))

    counts = counts.reindex(index=order(counts.index, ENTERED), columns=order(counts.columns, LEFT), fill_value=0)
    header = "".join(f"<th>{_e(name)}</th>" for name in counts.columns)
    body = []
    for before, row in counts.iterrows():
        cells_html = []
        for now, n in row.items():
            classes = " ".join(name for name, on in (("zero", not n), ("stay", before == now)) if on)
            attribute = f' class="{classes}"' if classes else ""
            spent = revenue.get((before, now), np.nan) if n else np.nan
            money_html = "" if pd.isna(spent) else f"<small>{money(float(spent), currency, decimals=0)}</small>"
            cells_html.append(f"<td{attribute}>{int(n):,}{money_html}</td>")
        body.append(f"<tr><th>{_e(before)}</th>{''.join(cells_html)}</tr>")
    return (f'<h3>Migration matrix</h3><div class="scroll"><table class="crosstab" id="migration-matrix"><thead>'
            f"<tr><th>Previous \\ current</th>{header}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _guide_section() -> str:
    text = ("Start with What to do: each RFM segment and cluster with its recommended action. RFM scores run 1..5, "
            "5 best: R = recent purchase, F = many orders, M = high net spend; the segment comes from R and F "
            "(the R\u00d7F grid). Clusters are k-means groups of customers with a similar recency, frequency and "
            "spend; their names describe their median customer. The quality gate judges the clustering "
            "(silhouette: how well separated, -1..1; smallest cluster share). Every chart is explained in "
            f"{GUIDE} in the project's documentation.")
    return f'<section id="guide"><h2>How to read this report</h2><p class="guide">{_e(text)}</p></section>'


def render_report(features: pd.DataFrame, model_meta: dict, evaluation: dict, quality: dict | None,
                  run_info: dict, cluster_of: np.ndarray | None = None, playbook: Playbook | None = None,
                  previous: pd.DataFrame | None = None, changes: pd.DataFrame | None = None,
                  baseline_note: str = "") -> str:
    """Render the run's report as one self-contained HTML page.

    Parameters
    ----------
    features : DataFrame
        ``rfm.parquet``: one row per customer with ``recency_days`` (days),
        ``frequency`` (orders), ``monetary`` (net spend), ``r_score``,
        ``f_score`` and ``rfm_segment``; a ``cluster`` column is used when
        present, else clusters are assigned from ``model_meta``. Only
        aggregates reach the page.
    model_meta : dict
        ``model.json`` (``k``, ``names``, ``centers``, ``profiles``,
        ``k_selection``, ``dominant_segments``, ``hyperparameters``, ...).
    evaluation : dict
        ``evaluation.json`` (``segmentation_metrics``, ...).
    quality : dict or None
        ``quality.json``; None says the accounting is unavailable.
    run_info : dict
        ``execution_id``, ``parameters``, ``as_of_date``, ``input_format``,
        ``hyperparameters`` (default: the model's); other keys are listed too.
    cluster_of : ndarray, optional
        Each customer's cluster, when the caller has assigned them already;
        default: the ``cluster`` column, else the nearest centre of ``model_meta``.
    playbook : Playbook, optional
        Recommended actions; default :func:`steps.playbook.load_playbook`.
    previous : DataFrame, optional
        The previously published ``segments.parquet`` (``rfm_segment``, ``monetary``, ...): sizes and
        revenue are compared with it; None says this is the first run.
    changes : DataFrame, optional
        ``segments/changes.parquet`` (``previous_segment``, ``segment``, ``change``): the migration matrix.
    baseline_note : str, optional
        One sentence on what was compared (which publish), or why nothing could be.

    Returns
    -------
    str
        The HTML document; identical for identical inputs.

    Examples
    --------
    >>> import pandas as pd
    >>> features = pd.DataFrame({"recency_days": [3, 40, 400], "frequency": [9, 2, 1],
    ...                          "monetary": [900.0, 80.0, 15.0], "r_score": [5, 3, 1],
    ...                          "f_score": [5, 3, 1], "rfm_segment": ["Champions", "Need Attention", "Hibernating"],
    ...                          "cluster": [0, 1, 1]})
    >>> html = render_report(features, {"k": 2, "names": ["Best", "Rest"]}, {}, None, {"execution_id": "x"})
    >>> html.startswith("<!DOCTYPE html>") and 'id="rf-heatmap"' in html
    True
    """
    if cluster_of is None:
        cluster_of = data.clusters(features, model_meta)
    elif len(cluster_of) != len(features):
        raise ValueError(f"cluster_of has {len(cluster_of)} entries for {len(features)} customers")
    segment_of = data.segments(features)
    segment_table = data.segment_table(features, segment_of, list(SEGMENT_NAMES))
    currency = run_info.get("currency") or DEFAULT_CURRENCY
    execution = run_info.get("execution_id") or ""
    title = "RFM segmentation report" + (f" \u2013 {execution}" if execution else "")
    body = "".join((
        _header(features, model_meta, evaluation, run_info, currency),
        _playbook_section(model_meta, segment_table, playbook or load_playbook(), currency),
        _segment_section(features, segment_table, currency),
        _changes_section(features, segment_table, previous, changes, currency, baseline_note),
        _grid_section(features, currency),
        _distribution_section(features, currency),
        _cluster_section(features, model_meta, evaluation, cluster_of, segment_of, currency),
        _model_section(model_meta, evaluation),
        _quality_section(quality),
        _run_section(run_info, model_meta),
        _guide_section(),
    ))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def write_report(output_dir: Path, features: pd.DataFrame, model_meta: dict, evaluation: dict,
                 quality: dict | None, run_info: dict, cluster_of: np.ndarray | None = None,
                 **extra: object) -> Path:
    """Render the report (see ``render_report``; ``extra``: its optional arguments) to ``output_dir/report.html``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / paths.REPORT_FILE
    target.write_text(render_report(features, model_meta, evaluation, quality, run_info, cluster_of, **extra),
                      encoding="utf-8")
    return target


PACKAGE_MARK = '<main>'


def stamp_package(page: str, package_arn: str, status: str, kept_at: str) -> str:
    """``page`` with a banner naming the model package it belongs to (added after registration).

    The evaluation step renders the report before the package exists; the local runner stamps
    the copy it keeps for the package (``reports/<version>.html``) and ``report.html``.

    Examples
    --------
    >>> stamp_package("<main><h1>x</h1></main>", "arn:p/3", "PendingManualApproval", "output/reports/3.html")[:60]
    '<main><p class="banner package" id="model-package">This repo'
    """
    banner = (f'<p class="banner package" id="model-package">This report belongs to model package '
              f"{_e(package_arn)} ({_e(status)} when registered), kept at {_e(kept_at)}. "
              f"rfm approve {_e(package_arn)} publishes exactly these segments.</p>")
    return page.replace(PACKAGE_MARK, PACKAGE_MARK + banner, 1)


def read_quality(features_location: Path) -> dict | None:
    """``quality.json`` next to the features (a folder, or the ``rfm.parquet`` in it); None when absent."""
    location = Path(features_location)
    folder = location.parent if location.is_file() else location
    path = folder / paths.QUALITY_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
