"""Line charts as inline SVG, drawn on the server: no script, nothing the page's CSP forbids.

A chart is a few series of (x, y) points over one x range; a point whose y is None is a gap
(the line stops and starts again). Colours are presentation attributes, never `style`, and
every text (a title, a series' name) is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

PALETTE = ("#3451d1", "#d1495b", "#2a9d8f", "#e9a23b", "#7b2cbf", "#5d6678")
WIDTH, HEIGHT = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 26, 24


@dataclass(frozen=True)
class Series:
    """One line: its name (in the legend) and its points, in x order."""

    name: str
    points: Sequence[tuple[float, float | None]]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least `value` (> 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_range: tuple[float, float],
    x_labels: Sequence[tuple[float, str]] = (),
    y_max: float | None = None,
    y_label: Callable[[float], str] = _number,
    chart_id: str = "",
) -> Markup:
    """An SVG line chart of `series` (one `<path class="series">` each, named by
    `data-series`), with its y axis from 0 to `y_max` (by default: a round number above the
    largest value).

    Args:
        series: the lines, drawn in the palette's colours in this order.
        title: what it shows (the SVG's title, read out by screen readers, and its heading).
        x_range: the first and last x of the plot area.
        x_labels: ticks on the x axis: (x, label).
        y_max: the top of the y axis.
        y_label: how a y value is written on the axis.
        chart_id: the `id` of the `<svg>`.
    """
    low, high = x_range
    span = high - low if high > low else 1.0
    values = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    top = y_max if y_max is not None else nice_ceiling(max(values, default=0.0))
    top = top if top > 0 else 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_at(x: float) -> float:
        return LEFT + (min(max(x, low), high) - low) / span * plot_w

    def y_at(y: float) -> float:
        return TOP + plot_h - min(max(y, 0.0), top) / top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="{WIDTH}" height="{HEIGHT}" role="img"'
        + (f' id="{escape(chart_id)}"' if chart_id else "")
        + f"><title>{escape(title)}</title>",
        f'<text class="chart-title" x="{LEFT}" y="16" font-size="13" font-weight="600"'
        f' fill="#1d2330">{escape(title)}</text>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        grid = y_at(top * fraction)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{grid:.1f}" y2="{grid:.1f}"'
            ' stroke="#dde1ea" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{grid + 4:.1f}" font-size="11" text-anchor="end"'
            f' fill="#5d6678">{escape(y_label(top * fraction))}</text>'
        )
    for x, label in x_labels:
        parts.append(
            f'<text x="{x_at(x):.1f}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle"'
            f' fill="#5d6678">{escape(label)}</text>'
        )
    legend_x = WIDTH - RIGHT
    for index, line in reversed(list(enumerate(series))):
        colour = PALETTE[index % len(PALETTE)]
        commands: list[str] = []
        pen_down = False
        for x, value in line.points:
            if value is None or not math.isfinite(value):
                pen_down = False
                continue
            point = f"{x_at(x):.1f} {y_at(value):.1f}"
            # a point alone is drawn as a dot: a zero-length line with round caps
            commands.append(f"L{point}" if pen_down else f"M{point} l0 0")
            pen_down = True
        parts.append(
            f'<path class="series" data-series="{escape(line.name)}" d="{" ".join(commands)}"'
            f' fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round"'
            ' stroke-linecap="round"/>'
        )
        name = escape(line.name)
        legend_x -= 14 + 7 * len(line.name)
        parts.append(
            f'<rect x="{legend_x}" y="7" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="16" font-size="11" fill="#1d2330">{name}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
