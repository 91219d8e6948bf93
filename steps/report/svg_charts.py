"""Inline SVG charts for the HTML report: bar chart, histogram, heat map, line chart.

Each function returns one ``<svg>`` element as a string: no script, no external
reference (not even an ``xmlns`` URL; HTML5 does not need one), every piece of
text escaped. Sizes are CSS pixels; the SVG scales down to its container
through its ``viewBox``. The same inputs always give the same string.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

PALETTE: tuple[str, ...] = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")
INK = "#333"
AXIS = "#666"
GRID = "#e6e6e6"
CHAR_WIDTH = 6.8  # rough width of one 12px sans-serif character, for layout
_SEQUENTIAL = ((247, 251, 255), (8, 69, 148))
_DIVERGING = ((178, 24, 43), (247, 247, 247), (33, 102, 172))


def compact(value: float) -> str:
    """Short human number: ``1.5k``, ``2.35M``, ``12``, ``0.25``.

    Examples
    --------
    >>> [compact(v) for v in (0, 12, 1500, 2_350_000, 0.25, -4200)]
    ['0', '12', '1.5k', '2.35M', '0.25', '-4.2k']
    """
    size = abs(value)
    for suffix, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if size >= scale:
            return f"{value / scale:.3g}{suffix}"
    if size >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``low..high`` with about ``count`` steps.

    Examples
    --------
    >>> nice_ticks(0, 87)
    [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    >>> nice_ticks(0.38, 0.56)
    [0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = 0.0, 1.0
    if high <= low:
        low, high = (low - 1, high + 1) if low else (0.0, 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(float(m * magnitude) for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def shade(value: float, diverging: bool = False) -> str:
    """Fill colour for ``value`` in 0..1 (sequential blues) or -1..1 (red-grey-blue)."""
    value = 0.0 if not math.isfinite(value) else value
    if diverging:
        value = max(-1.0, min(1.0, value))
        start, end = (_DIVERGING[1], _DIVERGING[0]) if value < 0 else (_DIVERGING[1], _DIVERGING[2])
        value = abs(value)
    else:
        value = max(0.0, min(1.0, value))
        start, end = _SEQUENTIAL
    rgb = (round(a + (b - a) * value) for a, b in zip(start, end, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _f(value: float) -> str:
    """A coordinate, to one decimal, without a trailing ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, fill: str = INK,
          extra: str = "") -> str:
    return (f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" font-size="{size}" fill="{fill}"{extra}>'
            f"{escape(text)}</text>")


def _svg(width: float, height: float, label: str, body: list[str]) -> str:
    return (f'<svg viewBox="0 0 {_f(width)} {_f(height)}" width="{_f(width)}" height="{_f(height)}" '
            f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>{"".join(body)}</svg>')


def _no_data(width: float, height: float, label: str) -> str:
    return _svg(width, height, label, [_text(width / 2, height / 2, "no data", "middle", fill=AXIS)])


def _thin(count: int, slot_width: float, longest: int) -> int:
    """Label every n-th slot so labels of ``longest`` characters do not overlap."""
    return max(1, math.ceil((longest * CHAR_WIDTH + 6) / max(slot_width, 1e-9)))


def bar_chart(labels: Sequence[str], series: Mapping[str, Sequence[float]], *, label: str,
              value_format: Callable[[float], str] = compact, width: int = 720) -> str:
    """Horizontal grouped bars: one row per label, one bar per series (values >= 0).

    Parameters
    ----------
    labels : sequence of str
        Row names, top to bottom.
    series : mapping of str to sequence of float
        Series name -> one value per label; a legend is drawn for two or more series.
    label : str
        Accessible name of the chart.
    value_format : callable
        Formats the value printed at the end of each bar.
    width : int
        Width in pixels.
    """
    names = list(series)
    if not labels or not names:
        return _no_data(width, 80, label)
    label_width = min(240.0, max(len(text) for text in labels) * CHAR_WIDTH + 14)
    legend = 24 if len(names) > 1 else 0
    bar, gap = 14, 2
    group = len(names) * bar + (len(names) - 1) * gap + 12
    plot_width = width - label_width - 64
    values = [[max(float(v), 0.0) if math.isfinite(float(v)) else 0.0 for v in series[name]] for name in names]
    high = max((v for row in values for v in row), default=0.0) or 1.0
    top = 6 + legend
    body: list[str] = []
    for index, name in enumerate(names if legend else []):
        x = label_width + index * 150
        body.append(f'<rect x="{_f(x)}" y="6" width="12" height="12" fill="{PALETTE[index % len(PALETTE)]}"/>')
        body.append(_text(x + 17, 16, _clip(name, 20)))
    for row, text in enumerate(labels):
        y0 = top + row * group + 6
        body.append(_text(label_width - 8, y0 + (group - 12) / 2 + 4, _clip(text, 34), "end"))
        for index in range(len(names)):
            value = values[index][row]
            y = y0 + index * (bar + gap)
            length = value / high * plot_width
            body.append(f'<rect x="{_f(label_width)}" y="{_f(y)}" width="{_f(length)}" height="{bar}" '
                        f'fill="{PALETTE[index % len(PALETTE)]}"/>')
            body.append(_text(label_width + length + 4, y + bar - 3, value_format(series[names[index]][row]),
                              size=11, fill=AXIS))
    height = top + len(labels) * group + 6
    body.append(f'<line x1="{_f(label_width)}" y1="{top}" x2="{_f(label_width)}" y2="{_f(height - 6)}" '
                f'stroke="{AXIS}"/>')
    return _svg(width, height, label, body)


def histogram(counts: Sequence[int], *, label: str, x_label: str, edge_labels: Sequence[str] | None = None,
              bin_labels: Sequence[str] | None = None, width: int = 360, height: int = 240,
              color: str = PALETTE[0]) -> str:
    """Equal-width bars of ``counts``, labelled at the bin edges or under each bin.

    Bins are drawn equally wide whatever their value range, so geometric
    (log-scale) bins read as a log axis; say so in ``x_label``.

    Parameters
    ----------
    counts : sequence of int
        Customers per bin.
    label : str
        Accessible name of the chart.
    x_label : str
        Axis title.
    edge_labels : sequence of str, optional
        ``len(counts) + 1`` labels at the bin boundaries.
    bin_labels : sequence of str, optional
        ``len(counts)`` labels under the bins (for discrete values); wins over ``edge_labels``.
    width, height : int
        Size in pixels.
    """
    if not len(counts):
        return _no_data(width, height, label)
    left, right, top, bottom = 48, 24, 10, 46
    plot_width, plot_height = width - left - right, height - top - bottom
    slot = plot_width / len(counts)
    ticks = [tick for tick in nice_ticks(0, max(max(counts), 1), 4) if tick == int(tick)]  # whole customers
    scale = plot_height / ticks[-1]
    base = top + plot_height
    body: list[str] = []
    for tick in ticks:
        y = base - tick * scale
        body.append(f'<line x1="{left}" y1="{_f(y)}" x2="{_f(left + plot_width)}" y2="{_f(y)}" stroke="{GRID}"/>')
        body.append(_text(left - 5, y + 4, compact(tick), "end", 11, AXIS))
    for index, count in enumerate(counts):
        bar_height = count * scale
        body.append(f'<rect x="{_f(left + index * slot + 1)}" y="{_f(base - bar_height)}" '
                    f'width="{_f(max(slot - 2, 1))}" height="{_f(bar_height)}" fill="{color}">'
                    f"<title>{escape(f'{int(count):,}')}</title></rect>")
    body.append(f'<line x1="{left}" y1="{_f(base)}" x2="{_f(left + plot_width)}" y2="{_f(base)}" stroke="{AXIS}"/>')
    if bin_labels is not None:
        every = _thin(len(bin_labels), slot, max((len(t) for t in bin_labels), default=1))
        for index, text in enumerate(bin_labels):
            if index % every == 0:
                body.append(_text(left + (index + 0.5) * slot, base + 15, text, "middle", 11, AXIS))
    elif edge_labels is not None:
        every = _thin(len(edge_labels), slot, max((len(t) for t in edge_labels), default=1))
        for index, text in enumerate(edge_labels):
            if index % every == 0 or index == len(edge_labels) - 1 and every == 1:
                body.append(f'<line x1="{_f(left + index * slot)}" y1="{_f(base)}" x2="{_f(left + index * slot)}" '
                            f'y2="{_f(base + 4)}" stroke="{AXIS}"/>')
                body.append(_text(left + index * slot, base + 15, text, "middle", 11, AXIS))
    body.append(_text(left + plot_width / 2, height - 8, x_label, "middle", 12))
    return _svg(width, height, label, body)


def heat_map(values: Sequence[Sequence[float]], *, label: str, row_labels: Sequence[str],
             col_labels: Sequence[str], cell_text: Sequence[Sequence[Sequence[str]]] | None = None,
             x_label: str = "", y_label: str = "", diverging: bool = False, cell_width: int = 120,
             cell_height: int = 56) -> str:
    """A grid of shaded cells with optional lines of text in each.

    Parameters
    ----------
    values : 2-D sequence of float
        One row per row label; shading is relative to the largest value
        (or the largest absolute value when ``diverging``).
    label : str
        Accessible name of the chart.
    row_labels, col_labels : sequence of str
        Row names (left, top to bottom) and column names (below, left to right).
    cell_text : 3-D sequence of str, optional
        Lines of text per cell; default the value.
    x_label, y_label : str
        Axis titles.
    diverging : bool
        Red for negative, blue for positive values, grey at zero.
    cell_width, cell_height : int
        Cell size in pixels.
    """
    if not len(values) or not len(col_labels):
        return _no_data(cell_width * 3, cell_height * 2, label)
    flat = [float(v) for row in values for v in row if math.isfinite(float(v))]
    limit = max((abs(v) for v in flat), default=0.0) or 1.0
    y_title = 20 if y_label else 0
    left = y_title + min(420.0, max(len(t) for t in row_labels) * CHAR_WIDTH + 14)
    top, bottom = 6, 22 + (20 if x_label else 0)
    width = left + len(col_labels) * cell_width + 8
    height = top + len(row_labels) * cell_height + bottom
    body: list[str] = []
    for row, row_values in enumerate(values):
        y = top + row * cell_height
        body.append(_text(left - 8, y + cell_height / 2 + 4, _clip(row_labels[row], 60), "end"))
        for col, value in enumerate(row_values):
            x = left + col * cell_width
            intensity = float(value) / limit if math.isfinite(float(value)) else 0.0
            text_fill = "#fff" if abs(intensity) > 0.55 else INK
            body.append(f'<rect x="{_f(x)}" y="{_f(y)}" width="{cell_width - 2}" height="{cell_height - 2}" '
                        f'fill="{shade(intensity, diverging)}"/>')
            lines = cell_text[row][col] if cell_text is not None else [compact(float(value))]
            first = y + (cell_height - 2) / 2 - (len(lines) - 1) * 7 + 4
            for number, line in enumerate(lines):
                body.append(_text(x + (cell_width - 2) / 2, first + number * 14, line, "middle", 11, text_fill))
    for col, text in enumerate(col_labels):
        body.append(_text(left + (col + 0.5) * cell_width, top + len(row_labels) * cell_height + 14,
                          _clip(text, int(cell_width / CHAR_WIDTH)), "middle", 12, AXIS))
    if x_label:
        body.append(_text(left + len(col_labels) * cell_width / 2, height - 6, x_label, "middle"))
    if y_label:
        middle = top + len(row_labels) * cell_height / 2
        body.append(_text(14, middle, y_label, "middle", extra=f' transform="rotate(-90 14 {_f(middle)})"'))
    return _svg(width, height, label, body)


def line_chart(xs: Sequence[float], ys: Sequence[float], *, label: str, x_label: str, y_label: str,
               marker_x: float | None = None, marker_label: str = "", y_format: Callable[[float], str] = compact,
               width: int = 360, height: int = 240, color: str = PALETTE[0]) -> str:
    """A line with points, integer x ticks, and an optional dashed marker at ``marker_x``.

    Parameters
    ----------
    xs, ys : sequence of float
        The points, in x order.
    label : str
        Accessible name of the chart.
    x_label, y_label : str
        Axis titles.
    marker_x : float, optional
        Where to draw a dashed vertical line (e.g. the chosen k), labelled ``marker_label``.
    y_format : callable
        Formats the y tick labels.
    width, height : int
        Size in pixels.
    """
    points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(float(y))]
    if not points:
        return _no_data(width, height, label)
    left, right, top, bottom = 62, 16, 22, 46
    plot_width, plot_height = width - left - right, height - top - bottom
    x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    ticks = nice_ticks(min(p[1] for p in points), max(p[1] for p in points), 4)
    y_low, y_high = ticks[0], ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_width

    def sy(y: float) -> float:
        return top + plot_height - (y - y_low) / (y_high - y_low) * plot_height

    body: list[str] = []
    for tick in ticks:
        body.append(f'<line x1="{left}" y1="{_f(sy(tick))}" x2="{_f(left + plot_width)}" y2="{_f(sy(tick))}" '
                    f'stroke="{GRID}"/>')
        body.append(_text(left - 5, sy(tick) + 4, y_format(tick), "end", 11, AXIS))
    x_ticks = sorted({p[0] for p in points})
    every = _thin(len(x_ticks), plot_width / max(len(x_ticks), 1), 3)
    for index, tick in enumerate(x_ticks):
        if index % every == 0:
            body.append(_text(sx(tick), top + plot_height + 15, compact(tick), "middle", 11, AXIS))
    base = top + plot_height
    body.append(f'<line x1="{left}" y1="{_f(base)}" x2="{_f(left + plot_width)}" y2="{_f(base)}" stroke="{AXIS}"/>')
    if marker_x is not None and x_low <= marker_x <= x_high:
        body.append(f'<line x1="{_f(sx(marker_x))}" y1="{top}" x2="{_f(sx(marker_x))}" y2="{_f(base)}" '
                    f'stroke="{PALETTE[3]}" stroke-dasharray="4 3"/>')
        anchor = "end" if sx(marker_x) > left + plot_width * 0.7 else "start"
        offset = -4 if anchor == "end" else 4
        body.append(_text(sx(marker_x) + offset, top - 8, marker_label, anchor, 11, PALETTE[3]))
    path = " ".join(f"{_f(sx(x))},{_f(sy(y))}" for x, y in points)
    body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
    for x, y in points:
        chosen = marker_x is not None and x == marker_x
        body.append(f'<circle cx="{_f(sx(x))}" cy="{_f(sy(y))}" r="{5 if chosen else 3}" '
                    f'fill="{PALETTE[3] if chosen else color}"/>')
    body.append(_text(left + plot_width / 2, height - 8, x_label, "middle"))
    middle = top + plot_height / 2
    body.append(_text(14, middle, y_label, "middle", extra=f' transform="rotate(-90 14 {_f(middle)})"'))
    return _svg(width, height, label, body)
