"""The format rules: one dialogue's live turns in, its output lines (and manifest counts) out.

Every format starts from the same messages: blank turns skipped, consecutive turns of one
side merged. `openai` and `sharegpt` write one line per dialogue ending on the assistant;
`dpo` writes one line per corrected assistant turn. Personal data is counted (and scrubbed
when asked) through `review.pii` only. docs/export.md states the rules and their reasons.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from generation.models import Side
from review import pii
from review.export.selection import ExportError
from review.models import DatasetExport

FORMATS: tuple[str, ...] = tuple(DatasetExport.Format.values)
# Consecutive turns of one role become one message, their texts joined by this.
MERGE_SEPARATOR = "\n\n"
# Plain strings: comparing against the enum members costs an attribute lookup per turn.
ASSISTANT, USER = str(Side.ASSISTANT.value), str(Side.USER.value)
_SHAREGPT_ROLES = {"system": "system", USER: "human", ASSISTANT: "gpt"}
# orjson's output equals json.dumps(..., ensure_ascii=False, separators=(",", ":")) for every
# string PostgreSQL or SQLite can hold; a line is one JSON object and its newline.
_LINE = orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True)
class ExportOptions:
    format: str
    include_system: bool = True
    scrub_pii: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(
                f"Unknown format {self.format!r}: choose one of {', '.join(FORMATS)}."
            )


@dataclass(frozen=True, slots=True)
class DialogueTurns:
    """One dialogue's live turns in order, as parallel columns. `originals` (what the model
    first wrote) is read for `dpo` only, the one format that writes them."""

    scenario_id: int
    sides: Sequence[str]
    texts: Sequence[str]
    models: Sequence[str]
    originals: Sequence[str] = ()


@dataclass
class ExportStats:
    """Everything the manifest counts, accumulated while streaming."""

    dialogues_written: int = 0
    dialogues_without_assistant: int = 0
    records: int = 0
    messages: int = 0
    merged_turns: int = 0
    dropped_trailing_user_turns: int = 0
    skipped_blank_turns: int = 0
    dialogues_with_pii: int = 0
    pii: Counter[str] = field(default_factory=Counter)
    per_scenario: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_model: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


@dataclass(frozen=True)
class _SystemMessage:
    text: str  # empty when the example gets no system message
    pii: Counter[str]


_NO_SYSTEM = _SystemMessage("", Counter())


def _is_blank(text: str) -> bool:
    # OpenAI rejects empty or whitespace-only content.
    return not text or text.isspace()


class _Messages(NamedTuple):
    roles: list[str]
    contents: list[str]
    merged: int
    skipped: int


def _messages(sides: Sequence[str], texts: Sequence[str]) -> _Messages:
    """Blank turns skipped, runs of one side merged into one message."""
    roles: list[str] = []
    contents: list[str] = []
    merged = skipped = 0
    for side, text in zip(sides, texts, strict=True):
        if not text or text.isspace():  # _is_blank, inlined: this runs once per turn
            skipped += 1
        elif roles and roles[-1] == side:
            contents[-1] += MERGE_SEPARATOR + text
            merged += 1
        else:
            roles.append(side)
            contents.append(text)
    return _Messages(roles, contents, merged, skipped)


def _openai_messages(system: str, messages: _Messages) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [
        {"role": role, "content": content}
        for role, content in zip(messages.roles, messages.contents, strict=True)
    ]


def _sharegpt_messages(system: str, messages: _Messages) -> list[dict[str, str]]:
    head = [{"from": "system", "value": system}] if system else []
    return head + [
        {"from": _SHAREGPT_ROLES[role], "value": content}
        for role, content in zip(messages.roles, messages.contents, strict=True)
    ]


class DialogueFormatter:
    """Turns each dialogue into its output lines and accumulates the manifest counts."""

    def __init__(
        self, options: ExportOptions, system_prompts: dict[int, str], slugs: dict[int, str]
    ):
        self.options = options
        self.is_dpo = options.format == DatasetExport.Format.DPO
        self.stats = ExportStats()
        self.slugs = slugs
        self.system = {
            scenario_id: self._system_message(prompt)
            for scenario_id, prompt in system_prompts.items()
        }

    def _system_message(self, prompt: str) -> _SystemMessage:
        if self.options.scrub_pii:
            prompt, found = pii.scrub(prompt)
        else:
            found = pii.count(prompt)
        if not self.options.include_system or _is_blank(prompt):
            return _NO_SYSTEM
        return _SystemMessage(prompt, found)

    def lines(self, dialogue: DialogueTurns) -> list[bytes]:
        """The dialogue's output lines; the manifest counts of the lines written."""
        system = self.system.get(dialogue.scenario_id, _NO_SYSTEM)
        texts = dialogue.texts
        rejected = self._rejected(dialogue) if self.is_dpo else {}
        found = system.pii
        # A whole dialogue is checked at once: most hold no personal data at all.
        checked = texts if not rejected else [*texts, *rejected.values()]
        if pii.could_contain("\n".join(checked)):
            texts, rejected, in_turns = self._personal_data(texts, rejected)
            found = found + in_turns
        if self.is_dpo:
            lines = self._pairs(system.text, dialogue.sides, texts, rejected)
        else:
            lines = self._chat(system.text, dialogue.sides, texts)
        if lines:
            self._count(dialogue, len(lines), found)
        return lines

    @staticmethod
    def _rejected(dialogue: DialogueTurns) -> dict[int, str]:
        """{turn index: what the model first wrote} for the corrected assistant turns: the
        "rejected" side of a DPO pair."""
        return {
            index: original
            for index, (side, text, original) in enumerate(
                zip(dialogue.sides, dialogue.texts, dialogue.originals, strict=True)
            )
            if side == ASSISTANT and original != text
        }

    def _personal_data(
        self, texts: Sequence[str], rejected: dict[int, str]
    ) -> tuple[Sequence[str], dict[int, str], Counter[str]]:
        """Counts what `review.pii` finds in the texts and originals; scrubs them if asked."""
        found: Counter[str] = Counter()
        if not self.options.scrub_pii:
            for text in (*texts, *rejected.values()):
                found.update(pii.count(text))
            return texts, rejected, found
        scrubbed_texts = []
        for text in texts:
            text, kinds = pii.scrub(text)
            scrubbed_texts.append(text)
            found.update(kinds)
        scrubbed_rejected = {}
        for index, original in rejected.items():
            scrubbed_rejected[index], kinds = pii.scrub(original)
            found.update(kinds)
        return scrubbed_texts, scrubbed_rejected, found

    def _chat(self, system: str, sides: Sequence[str], texts: Sequence[str]) -> list[bytes]:
        stats = self.stats
        messages = _messages(sides, texts)
        # A training example ends on the assistant: a trailing user message teaches nothing.
        dropped = 0
        while messages.roles and messages.roles[-1] == USER:
            messages.roles.pop()
            messages.contents.pop()
            dropped += 1
        if ASSISTANT not in messages.roles:
            stats.dialogues_without_assistant += 1
            return []
        stats.dropped_trailing_user_turns += dropped
        stats.merged_turns += messages.merged
        stats.skipped_blank_turns += messages.skipped
        stats.messages += len(messages.roles) + (1 if system else 0)
        if self.options.format == DatasetExport.Format.OPENAI:
            line = {"messages": _openai_messages(system, messages)}
        else:
            line = {"conversations": _sharegpt_messages(system, messages)}
        return [orjson.dumps(line, option=_LINE)]

    def _pairs(
        self,
        system: str,
        sides: Sequence[str],
        texts: Sequence[str],
        rejected: dict[int, str],
    ) -> list[bytes]:
        """One line per corrected assistant turn: the conversation before it as the prompt,
        the reviewer's text as chosen, the model's original as rejected."""
        lines = []
        for index, original in rejected.items():
            chosen = texts[index]
            if _is_blank(chosen) or _is_blank(original) or chosen == original:
                continue
            prompt = _messages(sides[:index], texts[:index])
            if not prompt.roles and not system:
                continue
            line = {
                "prompt": _openai_messages(system, prompt),
                "chosen": [{"role": ASSISTANT, "content": chosen}],
                "rejected": [{"role": ASSISTANT, "content": original}],
            }
            lines.append(orjson.dumps(line, option=_LINE))
        return lines

    def _count(self, dialogue: DialogueTurns, records: int, found: Counter[str]) -> None:
        stats = self.stats
        stats.dialogues_written += 1
        stats.records += records
        if self.is_dpo:
            stats.messages += records
        if found:
            stats.dialogues_with_pii += 1
            stats.pii.update(found)
        slug = self.slugs.get(dialogue.scenario_id, str(dialogue.scenario_id))
        scenario = stats.per_scenario[slug]
        scenario["dialogues"] += 1
        scenario["records"] += records
        models = [
            model or "unknown"
            for side, model in zip(dialogue.sides, dialogue.models, strict=True)
            if side == ASSISTANT
        ]
        # One model usually wrote every assistant turn: no Counter for that case.
        per_dialogue = (
            {models[0]: len(models)}
            if models and models.count(models[0]) == len(models)
            else Counter(models)
        )
        for model, turns in per_dialogue.items():
            per_model = stats.per_model[model]
            per_model["dialogues"] += 1
            per_model["assistant_turns"] += turns
