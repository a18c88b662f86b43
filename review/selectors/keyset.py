"""The queue's orderings and their keyset cursors: the key values of a page's first or last
row, and the condition "after (or before) that key" in the ordering's columns."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db.models import Q

from generation.models import Dialogue


@dataclass(frozen=True)
class QueueOrdering:
    """Columns (the last one unique) the queue is sorted and paged by. A computed key (a
    score, say) is named in `fields` and defined in `annotations`: {name: () -> expression}."""

    label: str
    fields: tuple[str, ...]
    descending: bool = False
    annotations: dict[str, Callable[[], object]] = field(default_factory=dict)


def encode_cursor(values: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, ordering: QueueOrdering) -> list[object] | None:
    """The key values in a cursor, or None for a missing or mangled one (first page)."""
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(values, list) or len(values) != len(ordering.fields):
        return None
    for name, value in zip(ordering.fields, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return None
        if name in ordering.annotations:
            continue
        try:  # a hand-edited cursor must not reach the query with the wrong type
            Dialogue._meta.get_field(name).get_prep_value(value)
        except (TypeError, ValueError, ValidationError):
            return None
    return values


def keyset_q(fields: tuple[str, ...], values: list[object], *, descending: bool) -> Q:
    """Rows strictly after `values` in the order of `fields`."""
    op = "lt" if descending else "gt"
    after = Q()
    for i, name in enumerate(fields):
        equal = dict(zip(fields[:i], values[:i], strict=True))
        after |= Q(**equal, **{f"{name}__{op}": values[i]})
    # Redundant, but an index on the first column can start its scan here.
    return Q(**{f"{fields[0]}__{op}e": values[0]}) & after
