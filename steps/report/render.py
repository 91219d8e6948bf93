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
from steps.report import data
from steps.report import svg_charts as svg
from steps.segments import SCORE_LEVELS, SEGMENT_GRID, SEGMENT_NAMES

# The id of every chart, in page order: each is a <figure class="chart" id=...>.
CHART_IDS: tuple[str, ...] = (
    "segment-shares",
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
TABLE_IDS: tuple[str, ...] = ("segment-table", "cluster-table", "model-metrics", "run-parameters")
DASH = "\u2013"

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
.note{color:#666;font-size:12.5px}.warn{color:#a4161a;font-weight:600}
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


def _group_rows(table: pd.DataFrame, first_columns: Sequence[Sequence[str]]) -> list[list[str]]:
    rows = []
    for leading, (_, row) in zip(first_columns, table.iterrows(), strict=True):
        rows.append([*leading, _int(row["customers"]), _pct(row["share"]), _pct(row["revenue_share"]),
                     _num(row[c.RECENCY_DAYS], 0), _num(row[c.FREQUENCY], 1), _num(row[c.MONETARY], 2)])
    return rows


MEASURE_HEADERS = ("Customers", "Share", "Revenue share", "Mean recency (days)", "Mean frequency (orders)",
                   "Mean monetary")


def _total_row(features: pd.DataFrame, leading: Sequence[str]) -> list[str]:
    customers = len(features)
    means = [features[name].mean() if customers else float("nan") for name in c.MODEL_FEATURES]
    return [*leading, _int(customers), _pct(1.0 if customers else float("nan")),
            _pct(1.0 if customers and features[c.MONETARY].sum() else float("nan")),
            _num(means[0], 0), _num(means[1], 1), _num(means[2], 2)]


def _rounded_share(count: int, total: int) -> str:
    """Whole-percent share that never rounds a non-empty cell to 0% or a partial one to 100%."""
    share = count / total if total else 0.0
    if 0 < share < 0.005:
        return "<1%"
    if 0.995 <= share < 1:
        return ">99%"
    return f"{share:.0%}"


def _segment_section(features: pd.DataFrame, table: pd.DataFrame) -> str:
    cells = {name: [] for name in table.index}
    for (r, f), name in sorted(SEGMENT_GRID.items()):
        cells.setdefault(name, []).append(f"{r}{f}")
    rows = _group_rows(table, [[str(name), " ".join(cells.get(name, []))] for name in table.index])
    html = _table(["Segment", "R\u00d7F cells", *MEASURE_HEADERS], rows, [False, False] + [True] * 6,
                  "segment-table", _total_row(features, ["All customers", ""]))
    chart = svg.bar_chart([str(name) for name in table.index],
                          {"share of customers": table["share"].fillna(0).tolist(),
                           "share of revenue": table["revenue_share"].fillna(0).tolist()},
                          label="Share of customers and revenue per RFM segment", value_format=_pct)
    caption = "Revenue is net spend (monetary): purchases minus returns. R\u00d7F cells lists the (r_score, " \
              "f_score) pairs of each segment."
    return (f'<section id="segments"><h2>RFM segments</h2>{html}'
            f"{_figure('segment-shares', chart, caption)}</section>")


def _grid_section(features: pd.DataFrame) -> str:
    grid = data.rf_grid(features)
    total = max(int(grid.sum()), 1)
    recency_levels = sorted(SCORE_LEVELS, reverse=True)
    values = [[int(grid[r - 1, f - 1]) for f in SCORE_LEVELS] for r in recency_levels]
    text = [[[*wrap(SEGMENT_GRID[(r, f)], 15), f"{int(grid[r - 1, f - 1]):,} ({grid[r - 1, f - 1] / total:.1%})"]
             for f in SCORE_LEVELS] for r in recency_levels]
    chart = svg.heat_map(values, label="Customers per recency and frequency score", cell_text=text,
                         row_labels=[f"R = {r}" for r in recency_levels],
                         col_labels=[f"F = {f}" for f in SCORE_LEVELS],
                         x_label="frequency score (5 = most orders)", y_label="recency score (5 = most recent)")
    caption = "Customer counts per (r_score, f_score) cell, labelled with the cell's RFM segment; darker = more."
    return f'<section id="grid"><h2>R \u00d7 F grid</h2>{_figure("rf-heatmap", chart, caption)}</section>'


def _distribution_section(features: pd.DataFrame) -> str:
    specs = (
        ("recency-histogram", c.RECENCY_DAYS, "recency (days since last purchase)", False, False),
        ("frequency-histogram", c.FREQUENCY, "frequency (orders)", True, True),
        ("monetary-histogram", c.MONETARY, "monetary (net spend)", True, False),
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


def _cluster_section(features: pd.DataFrame, model_meta: dict, cluster_of: np.ndarray,
                     segment_of: pd.Series) -> str:
    k = int(model_meta.get("k", len(model_meta.get("names", []))))
    names = [str(name) for name in model_meta.get("names", [])]
    dominant = [str(name) for name in model_meta.get("dominant_segments", [])]
    table = data.segment_table(features, pd.Series(cluster_of), list(range(k)))
    label_of = {i: (names[i] if i < len(names) else f"cluster {i}") for i in table.index}
    rows = _group_rows(table, [[str(i), label_of[i], dominant[i] if i < len(dominant) else ""]
                               for i in table.index])
    html = _table(["Cluster", "Name", "Dominant RFM segment", *MEASURE_HEADERS], rows,
                  [True, False, False] + [True] * 6, "cluster-table", _total_row(features, ["", "All customers", ""]))

    centers = [list(map(float, row)) for row in model_meta.get("centers", [])]
    profiles = model_meta.get("profiles", [])
    cell_text = []
    for i, row in enumerate(centers):
        median = profiles[i].get("median", {}) if i < len(profiles) else {}
        cell_text.append([[f"{v:+.2f}", f"median {svg.compact(median[name])}" if name in median else ""]
                          for v, name in zip(row, c.MODEL_FEATURES, strict=True)])
    profile_chart = svg.heat_map(centers, label="Scaled cluster centres", cell_text=cell_text,
                                 row_labels=[f"{i}: {label_of.get(i, i)}" for i in range(len(centers))],
                                 col_labels=list(c.MODEL_FEATURES), diverging=True, cell_width=130,
                                 cell_height=40)
    profile_caption = ("Cluster centres on the model's scale (log1p, then standardised): 0 is the average "
                       "customer, blue above it, red below. High recency means long since the last purchase. "
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
        caption = (f"k was chosen by silhouette on a sample: the largest k within {SILHOUETTE_TOLERANCE} of the best "
                   "silhouette. Inertia always falls as k grows.")
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
    sample = evaluation.get("metric_sample_size")
    note = f'<p class="note">Metrics computed on {_int(sample)} customers.</p>' if sample is not None else ""
    table = _table(["Metric", "Value", "Std. dev."], rows, [False, True, True], "model-metrics")
    return (f'<section id="model"><h2>Model selection and quality</h2>{_figure("k-selection", content, caption)}'
            f"<h3>Evaluation metrics</h3>{table}{note}</section>")


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


def _value(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={_value(value[key])}" for key in sorted(value)) or DASH
    if isinstance(value, list | tuple):
        return ", ".join(_value(item) for item in value) or DASH
    return DASH if value is None or value == "" else str(value)


def _run_section(run_info: dict, model_meta: dict) -> str:
    info = dict(run_info)
    info.setdefault("hyperparameters", model_meta.get("hyperparameters", {}))
    known = ("execution_id", "parameters", "as_of_date", "input_format", "hyperparameters")
    titles = {"execution_id": "Execution id", "parameters": "Parameters", "as_of_date": "As-of date",
              "input_format": "Input format", "hyperparameters": "Model hyperparameters"}
    rows = [[titles[key], _value(info.get(key))] for key in known]
    rows += [[key, _value(info[key])] for key in sorted(set(info) - set(known))]
    rows.append(["Model", f"k = {model_meta.get('k', DASH)}, transform {model_meta.get('transform', DASH)}, "
                          f"features {', '.join(model_meta.get('features', c.MODEL_FEATURES))}"])
    table = _table(["", "Value"], rows, [False, False], "run-parameters")
    return f'<section id="run"><h2>Run parameters</h2>{table}</section>'


def _header(features: pd.DataFrame, model_meta: dict, evaluation: dict, run_info: dict) -> str:
    silhouette = evaluation.get("segmentation_metrics", {}).get("silhouette", {}).get("value")
    cards = [("Customers", _int(len(features))), ("Net revenue", _num(features[c.MONETARY].sum(), 2)),
             ("Clusters", str(model_meta.get("k", DASH))),
             ("Silhouette", _num(silhouette, 3) if silhouette is not None else DASH),
             ("As-of date", _value(run_info.get("as_of_date")))]
    cards_html = "".join(f'<div class="card"><b>{_e(value)}</b><span>{_e(title)}</span></div>'
                         for title, value in cards)
    execution = run_info.get("execution_id") or ""
    subtitle = f"Execution {execution}" if execution else "RFM scores, segments and k-means clusters"
    links = (("segments", "Segments"), ("grid", "R\u00d7F grid"), ("distributions", "Distributions"),
             ("clusters", "Clusters"), ("model", "Model"), ("quality", "Data quality"), ("run", "Run"))
    nav = "".join(f'<a href="#{anchor}">{_e(text)}</a>' for anchor, text in links)
    return (f'<h1>RFM segmentation report</h1><p class="subtitle">{_e(subtitle)}</p>'
            f'<nav>{nav}</nav><div class="cards">{cards_html}</div>')


def render_report(features: pd.DataFrame, model_meta: dict, evaluation: dict, quality: dict | None,
                  run_info: dict, cluster_of: np.ndarray | None = None) -> str:
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
    execution = run_info.get("execution_id") or ""
    title = "RFM segmentation report" + (f" \u2013 {execution}" if execution else "")
    body = "".join((
        _header(features, model_meta, evaluation, run_info),
        _segment_section(features, segment_table),
        _grid_section(features),
        _distribution_section(features),
        _cluster_section(features, model_meta, cluster_of, segment_of),
        _model_section(model_meta, evaluation),
        _quality_section(quality),
        _run_section(run_info, model_meta),
    ))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def write_report(output_dir: Path, features: pd.DataFrame, model_meta: dict, evaluation: dict,
                 quality: dict | None, run_info: dict, cluster_of: np.ndarray | None = None) -> Path:
    """Render the report (see ``render_report``) to ``output_dir/report.html``; return its path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / paths.REPORT_FILE
    target.write_text(render_report(features, model_meta, evaluation, quality, run_info, cluster_of),
                      encoding="utf-8")
    return target


def read_quality(features_location: Path) -> dict | None:
    """``quality.json`` next to the features (a folder, or the ``rfm.parquet`` in it); None when absent."""
    location = Path(features_location)
    folder = location.parent if location.is_file() else location
    path = folder / paths.QUALITY_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
