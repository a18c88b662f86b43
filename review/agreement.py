"""Agreement between independent reviewers, as chance-corrected coefficients.

Two reviewers: Cohen's kappa, (p_o - p_e) / (1 - p_e), computed here (five lines need no
library). More: Krippendorff's alpha (nominal) from the `krippendorff` package, which also
copes with reviewers who did not rate every item. Both are None where they are undefined:
no items, or a single value given throughout (agreement that chance alone explains).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import krippendorff
import numpy as np


def cohen_kappa(first: Sequence[object], second: Sequence[object]) -> float | None:
    """Cohen's kappa of two raters who rated the same items in the same order."""
    n = len(first)
    if n == 0 or n != len(second):
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    categories = set(first) | set(second)
    expected = sum(list(first).count(c) * list(second).count(c) for c in categories) / n**2
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def krippendorff_alpha(ratings: Sequence[Sequence[object | None]]) -> float | None:
    """Krippendorff's alpha (nominal) of ratings[rater][item]; None marks a missing rating."""
    values = sorted({v for row in ratings for v in row if v is not None}, key=repr)
    if len(values) < 2 or len(ratings) < 2:
        return None
    code = {value: float(i) for i, value in enumerate(values)}
    data = np.array([[code[v] if v is not None else np.nan for v in row] for row in ratings])
    try:
        alpha = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    except ValueError:  # e.g. no item rated by two raters
        return None
    return None if math.isnan(alpha) else float(alpha)


@dataclass(frozen=True)
class Agreement:
    measure: str  # "Cohen's kappa" or "Krippendorff's alpha"
    value: float | None
    items: int

    @property
    def shown(self) -> str:
        return "n/a" if self.value is None else f"{self.value:.2f}"


def agreement(ratings: Sequence[Sequence[object | None]]) -> Agreement:
    """Kappa for two complete raters, alpha otherwise."""
    items = len(ratings[0]) if ratings else 0
    complete = all(v is not None for row in ratings for v in row)
    if len(ratings) == 2 and complete:
        return Agreement("Cohen's kappa", cohen_kappa(ratings[0], ratings[1]), items)
    return Agreement("Krippendorff's alpha", krippendorff_alpha(ratings), items)
