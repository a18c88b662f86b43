"""Server-side SVG geometry: each plot kind turns a Figure's rows into shapes with computed
coordinates; templates/review/insights/_board.html draws them. No script is needed, so plots
work offline, under the CSP, after htmx swaps, and print."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .figures import Figure

WIDTH = 640
LABEL_WIDTH = 200
ROW_HEIGHT = 24
MAX_LABEL = 26


@dataclass(frozen=True)
class Plot:
    """How a panel draws its figure: the kind, the label column and the value column(s)."""

    kind: str  # "hbar", "grouped", "heatmap", "line" or "facts"
    label: str = ""
    values: tuple[str, ...] = ()
    unit: str = ""
    # Shorter column names for a heatmap's header, in the order of `values` (empty: the
    # figure's column labels).
    headers: tuple[str, ...] = ()


def _num(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _short(text: Any) -> str:
    text = str(text)
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value}{unit}"


def hbar(figure: Figure, plot: Plot) -> dict[str, Any]:
    """One horizontal bar per row (funnel stages, stop reasons, reviewers...)."""
    key = plot.values[0]
    top = max((_num(row[key]) for row in figure.rows), default=0) or 1
    span = WIDTH - LABEL_WIDTH - 70
    bars = []
    for index, row in enumerate(figure.rows):
        y = 8 + index * ROW_HEIGHT
        width = span * _num(row[key]) / top
        bars.append(
            {
                "y": y,
                "text_y": y + 15,
                "width": round(width, 1),
                "value_x": round(LABEL_WIDTH + width + 6, 1),
                "label": _short(row[plot.label]),
                "full_label": row[plot.label],
                "value": _fmt(row[key], plot.unit),
            }
        )
    return {"bars": bars, "height": 16 + len(bars) * ROW_HEIGHT, "label_x": LABEL_WIDTH - 8}


def grouped(figure: Figure, plot: Plot) -> dict[str, Any]:
    """Two or more bars per row, one per series (two models side by side)."""
    series = [(key, label) for key, label in figure.columns if key in plot.values]
    top = max((_num(row[key]) for row in figure.rows for key, _ in series), default=0) or 1
    span = WIDTH - LABEL_WIDTH - 70
    bar_h = 14
    group_h = bar_h * len(series) + 10
    groups = []
    for index, row in enumerate(figure.rows):
        y = 30 + index * group_h
        bars = []
        for number, (key, name) in enumerate(series):
            width = span * _num(row[key]) / top
            bar_y = y + number * bar_h
            bars.append(
                {
                    "series": number,
                    "name": name,
                    "y": bar_y,
                    "text_y": bar_y + 11,
                    "width": round(width, 1),
                    "value_x": round(LABEL_WIDTH + width + 6, 1),
                    "value": _fmt(row[key], plot.unit),
                }
            )
        groups.append({"label": _short(row[plot.label]), "text_y": y + group_h / 2, "bars": bars})
    legend = [
        {
            "series": n,
            "name": _short(name),
            "x": LABEL_WIDTH + n * 220,
            "text_x": LABEL_WIDTH + n * 220 + 16,
        }
        for n, (_, name) in enumerate(series)
    ]
    height = 40 + len(groups) * group_h
    return {"groups": groups, "legend": legend, "height": height, "label_x": LABEL_WIDTH - 8}


def heatmap(figure: Figure, plot: Plot) -> dict[str, Any]:
    """Rows × columns of cells whose opacity grows with the count (flags by turn × category)."""
    columns = [(key, label) for key, label in figure.columns if key in plot.values]
    top = max((_num(row[key]) for row in figure.rows for key, _ in columns), default=0) or 1
    cell_w = (WIDTH - LABEL_WIDTH) / max(len(columns), 1)
    cell_h = 20
    names = plot.headers or [label for _, label in columns]
    header = [
        {"x": round(LABEL_WIDTH + (n + 0.5) * cell_w, 1), "label": _short(name)[:12]}
        for n, name in enumerate(names)
    ]
    rows = []
    for index, row in enumerate(figure.rows):
        y = 28 + index * cell_h
        cells = []
        for n, (key, label) in enumerate(columns):
            value = _num(row[key])
            cells.append(
                {
                    "x": round(LABEL_WIDTH + n * cell_w, 1),
                    "y": y,
                    "width": round(cell_w - 2, 1),
                    "text_x": round(LABEL_WIDTH + (n + 0.5) * cell_w, 1),
                    "text_y": y + 14,
                    "opacity": round(0.12 + 0.88 * value / top, 2) if value else 0,
                    "dark": value / top > 0.55,
                    "value": _fmt(row[key], plot.unit),
                    "column": label,
                }
            )
        label = row[plot.label]
        rows.append({"label": _short(label), "full_label": label, "text_y": y + 14, "cells": cells})
    return {
        "header": header,
        "rows": rows,
        "cell_h": cell_h - 2,
        "height": 36 + len(rows) * cell_h,
        "label_x": LABEL_WIDTH - 8,
    }


def _axis_label(value: Any) -> str:
    """ISO dates show as MM-DD under an axis (the year is in the data table); others as is."""
    text = str(value)
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        return text[5:]
    return _short(text)


def line(figure: Figure, plot: Plot) -> dict[str, Any]:
    """Points joined in row order (runs oldest first, days); one series."""
    key = plot.values[0]
    left, right, top_pad, bottom = 56, WIDTH - 32, 16, 200
    values = [_num(row[key]) for row in figure.rows]
    # Shares are drawn on their whole range, so two runs' rates compare at a glance.
    top = 100.0 if plot.unit == "%" else (max(values, default=0) or 1)
    step = (right - left) / max(len(values) - 1, 1)
    points = []
    every = max(1, -(-len(values) // 7))  # at most seven x labels, so they never overlap
    for index, (row, value) in enumerate(zip(figure.rows, values, strict=True)):
        x = round(left + index * step, 1)
        y = round(bottom - (bottom - top_pad) * value / top, 1)
        points.append(
            {
                "x": x,
                "y": y,
                "label": _axis_label(row[plot.label]),
                "value": _fmt(row[key], plot.unit),
                "show_label": (len(values) - 1 - index) % every == 0,
            }
        )
    ticks = [
        {
            "y": round(bottom - (bottom - top_pad) * share, 1),
            "value": _fmt(round(top * share, 1), plot.unit),
        }
        for share in (0, 0.5, 1)
    ]
    return {
        "points": points,
        "polyline": " ".join(f"{p['x']},{p['y']}" for p in points),
        "ticks": ticks,
        "left": left,
        "right": right,
        "bottom": bottom,
        "label_y": bottom + 18,
        "height": bottom + 30,
    }


KINDS = {"hbar": hbar, "grouped": grouped, "heatmap": heatmap, "line": line}


def geometry(figure: Figure, plot: Plot) -> dict[str, Any]:
    """The shapes for `plot.kind`, or an empty dict for panels without a plot ("facts") or
    without data yet."""
    if plot.kind not in KINDS or not figure.rows:
        return {}
    return {"width": WIDTH, **KINDS[plot.kind](figure, plot)}
