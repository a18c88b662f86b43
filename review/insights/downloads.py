"""A panel's data as CSV: the same columns and rows as its table."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from .panels import Figures, Panel, panel_figure
from .scope import Scope

# A spreadsheet runs a cell starting with these as a formula; model and topic names are
# untrusted, so such cells get a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def panel_csv(panel: Panel, scope: Scope) -> str:
    figure, header, rows = panel_figure(panel, Figures(scope))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()


def csv_filename(parts: Sequence[object]) -> str:
    return "-".join(str(part) for part in parts) + ".csv"
