"""The shape every dashboard selector returns: labelled columns, rows, and a sentence.

One `Figure` feeds the plot, its data table (the text alternative) and its CSV download, so
the three always show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Figure:
    columns: tuple[tuple[str, str], ...]
    rows: list[dict[str, Any]]
    summary: str = ""
    # Figures a panel states in words beside its plot (e.g. the date the backlog clears).
    facts: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # Aggregates other selectors build on (see `Panel.needs`); not shown.
    totals: dict[str, Any] = field(default_factory=dict)

    def column_labels(self, keys: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        wanted = keys or tuple(key for key, _ in self.columns)
        labels = dict(self.columns)
        return [(key, labels[key]) for key in wanted]


def ratio(numerator: float | Decimal | None, denominator: float | Decimal | None) -> float | None:
    """numerator / denominator, or None when there is nothing to divide by."""
    if not denominator or numerator is None:
        return None
    return float(numerator) / float(denominator)


def rounded(value: float | None, digits: int = 2) -> float | int | None:
    """Rounded to `digits` decimals; whole numbers for 0 digits (token counts)."""
    if value is None:
        return None
    return round(value) if digits == 0 else round(value, digits)


def percent(part: int, whole: int) -> float | None:
    share = ratio(part, whole)
    return None if share is None else round(100 * share, 1)
