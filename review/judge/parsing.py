"""Reading the judge's answer, tolerantly: code fences, text around the JSON, category labels
instead of keys, numbers as strings. What cannot be used is dropped and counted by reason."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field

from review.models import Flag

MAX_RATIONALE = 2000
_LABELS = {str(label).lower(): value for value, label in Flag.Category.choices}


class MalformedOutput(ValueError):
    """The answer holds no readable list of marks; the message says what was wrong."""


@dataclass(frozen=True)
class Mark:
    turn: int  # 1-based, as the judge saw it
    category: str
    severity: int
    rationale: str


@dataclass
class ParsedMarks:
    marks: list[Mark] = field(default_factory=list)
    dropped_turns: int = 0
    dropped_categories: int = 0
    dropped_malformed: int = 0


def parse_marks(
    text: str, *, turn_count: int, categories: Collection[str], severity_max: int
) -> ParsedMarks:
    """The usable marks of an answer. Raises MalformedOutput when there is no list of marks.

    Two marks on the same turn and category are one mark (the more severe); a severity outside
    the scale is moved to its nearest end.
    """
    items = _marks_list(_load_json(text))
    parsed = ParsedMarks()
    kept: dict[tuple[int, str], Mark] = {}
    for item in items:
        fields = _mark_fields(item)
        if fields is None:
            parsed.dropped_malformed += 1
            continue
        turn, category, severity, rationale = fields
        if not 1 <= turn <= turn_count:
            parsed.dropped_turns += 1
            continue
        category = _category_key(category)
        if category not in categories:
            parsed.dropped_categories += 1
            continue
        mark = Mark(turn, category, min(max(severity, 1), severity_max), rationale)
        previous = kept.get((turn, category))
        if previous is None or previous.severity < mark.severity:
            kept[(turn, category)] = mark
    parsed.marks = sorted(kept.values(), key=lambda m: (m.turn, m.category))
    return parsed


def _load_json(text: str) -> object:
    text = (text or "").strip()
    if not text:
        raise MalformedOutput("empty answer")
    try:
        return json.loads(text)
    except ValueError:
        pass
    # Fenced, or with a sentence before or after: decode from the first bracket on.
    starts = [i for i in (text.find("{"), text.find("[")) if i != -1]
    if not starts:
        raise MalformedOutput(f"no JSON in the answer: {text[:80]!r}")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[min(starts) :])
    except ValueError as exc:
        raise MalformedOutput(f"invalid JSON: {exc}") from None
    return value


def _marks_list(value: object) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        marks = value.get("marks")
        if isinstance(marks, list):
            return marks
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    raise MalformedOutput('the answer is JSON but has no "marks" list')


def _mark_fields(item: object) -> tuple[int, str, int, str] | None:
    if not isinstance(item, dict):
        return None
    turn = _integer(item.get("turn"))
    severity = _integer(item.get("severity"))
    category = item.get("category")
    rationale = item.get("rationale", "")
    if turn is None or severity is None or not isinstance(category, str):
        return None
    if not isinstance(rationale, str):
        rationale = str(rationale)
    return turn, category, severity, rationale.strip()[:MAX_RATIONALE]


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _category_key(raw: str) -> str:
    """ "Factual error", "factual", "Off-topic" -> the flag category's key (or as given)."""
    text = raw.strip().lower()
    if text in _LABELS:
        return _LABELS[text]
    return text.replace("-", "_").replace(" ", "_").removesuffix("_error")
