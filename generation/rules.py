"""Pure dialogue logic: what each persona sees, output warnings, and when to stop.

No database access here, so the rules are unit-tested directly and reused by the worker.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher

from .models import Turn

PLACEHOLDERS = ("topic", "scenario", "persona", "partner")

# Near-duplicate threshold for "the same or nearly the same turn repeated".
SIMILARITY_THRESHOLD = 0.9
# Closing pleasantries longer than this are real content that happens to say thanks.
CLOSING_MAX_WORDS = 25
_CLOSING_RE = re.compile(
    r"\b(thanks?|thank you|thx|goodbye|good bye|bye|you'?re welcome|take care|have a (?:good|great|nice) "
    r"(?:day|one|evening)|my pleasure|cheers)\b",
    re.IGNORECASE,
)


def template_fields(template: str) -> list[str]:
    """The placeholder names a str.format template uses. Raises ValueError on bad syntax."""
    names = []
    for _literal, field, _spec, _conv in string.Formatter().parse(template):
        if field is not None:
            names.append(field)
    return names


def unknown_placeholders(template: str, variables: Collection[str] = ()) -> list[str]:
    """Placeholders other than the supported ones and the scenario's `variables` ("{topic.x}"
    and "{}" count as unknown)."""
    known = {*PLACEHOLDERS, *variables}
    return [name or "{}" for name in template_fields(template) if name not in known]


def render_template(
    template: str,
    *,
    topic: str,
    scenario: str,
    persona: str,
    partner: str,
    variables: Mapping[str, str] | None = None,
) -> str:
    """The template with its placeholders filled (KeyError names one with no value)."""
    values = {**(variables or {}), "topic": topic, "scenario": scenario}
    return template.format_map({**values, "persona": persona, "partner": partner})


@dataclass(frozen=True)
class Speaker:
    """What the rules need to know about a persona."""

    position: int
    name: str
    system_prompt: str


@dataclass(frozen=True)
class PastTurn:
    speaker_position: int
    text: str


def build_messages(
    *,
    speaker: Speaker,
    opener_position: int,
    opening_instruction: str,
    turns: list[PastTurn],
) -> list[dict[str, str]]:
    """The conversation from `speaker`'s side: its own turns as assistant, the other's as user.

    The opening persona also gets the (rendered) opening instruction as its first user message,
    so both personas' message lists alternate user/assistant as chat models expect.
    """
    messages = [{"role": "system", "content": speaker.system_prompt}]
    if speaker.position == opener_position:
        messages.append({"role": "user", "content": opening_instruction})
    for turn in turns:
        role = "assistant" if turn.speaker_position == speaker.position else "user"
        messages.append({"role": role, "content": turn.text})
    return messages


def strip_end_marker(text: str, end_marker: str) -> tuple[str, bool]:
    if not end_marker or end_marker not in text:
        return text, False
    return text.replace(end_marker, "").strip(), True


def _normalise(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def similar(a: str, b: str) -> bool:
    """Word-level similarity >= SIMILARITY_THRESHOLD.

    Words rather than characters: any two English texts share most letters, so a character
    comparison is both slower (quadratic in the text length, and it runs against every
    earlier turn) and worse at telling a repeat from a new sentence.
    """
    wa, wb = _normalise(a).split(), _normalise(b).split()
    if not wa or not wb:
        return False
    if wa == wb:
        return True
    matcher = SequenceMatcher(None, wa, wb, autojunk=False)
    # Cheap upper bounds first: most pairs are ruled out by length or vocabulary alone.
    return (
        matcher.real_quick_ratio() >= SIMILARITY_THRESHOLD
        and matcher.quick_ratio() >= SIMILARITY_THRESHOLD
        and matcher.ratio() >= SIMILARITY_THRESHOLD
    )


def is_closing(text: str) -> bool:
    """A short thanks/goodbye message with no real content."""
    return bool(_CLOSING_RE.search(text)) and len(text.split()) <= CLOSING_MAX_WORDS


def speaks_as(text: str, name: str) -> bool:
    """The text contains a line written as `name:` (a script-style role prefix)."""
    if not name.strip():
        return False
    pattern = rf"(?im)^\s*[*_]*\s*{re.escape(name.strip())}\s*[*_]*\s*:"
    return re.search(pattern, text) is not None


@dataclass(frozen=True)
class Verdict:
    text: str
    warnings: list[str]
    stop_reason: str  # empty: go on


def assess(
    *,
    raw_text: str,
    finish_reason: str,
    speaker_name: str,
    partner_name: str,
    previous: list[str],
    end_marker: str,
    position: int,
    min_turns: int,
    max_turns: int,
) -> Verdict:
    """Warnings for a new turn at `position` and whether the dialogue stops after it.

    `previous` holds the live texts before it. Problems are recorded for reviewers, never
    dropped. Stop rules (CAMEL style): the end marker, the turn cap, a repeated turn, a
    thanks/goodbye exchange; none of them before `min_turns` except unusable (empty) output,
    which gives the next persona nothing to answer.
    """
    text, ended = strip_end_marker(raw_text.strip(), end_marker)
    warnings: list[str] = []
    if not text:
        warnings.append(Turn.Warning.EMPTY.value)
    if finish_reason == "length":
        warnings.append(Turn.Warning.TRUNCATED.value)
    if text and speaks_as(text, partner_name) and not speaks_as(text, speaker_name):
        warnings.append(Turn.Warning.ROLE_FLIP.value)
    repeated = bool(text) and any(similar(text, earlier) for earlier in previous)
    if repeated:
        warnings.append(Turn.Warning.REPETITION.value)
    closing_loop = bool(text and previous) and is_closing(text) and is_closing(previous[-1])
    if closing_loop:
        warnings.append(Turn.Warning.LOOP.value)

    count = position + 1
    stop = ""
    if not text:
        stop = "end marker" if ended else "unusable output (empty)"
    elif count >= max_turns:
        stop = "turn limit reached"
    elif count >= min_turns:
        if ended:
            stop = "end marker"
        elif repeated:
            stop = "loop: repeated turn"
        elif closing_loop:
            stop = "loop: thanks/goodbye exchange"
    return Verdict(text=text, warnings=warnings, stop_reason=stop)
