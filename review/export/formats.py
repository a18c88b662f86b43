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
from itertools import compress
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


class DialogueTurns(NamedTuple):
    """One dialogue's live turns in order, as parallel columns (one value per turn).
    `rejected`, read for `dpo` only, holds what the model first wrote for each corrected
    assistant turn (its text differs from its original) and None for every other turn."""

    dialogue_ids: Sequence[int]
    scenario_ids: Sequence[int]
    sides: Sequence[str]
    texts: Sequence[str]
    models: Sequence[str]
    rejected: Sequence[str | None] = ()


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


class _Style(NamedTuple):
    """How a format spells a line's message list and each message's role and text."""

    messages: str
    role: str
    content: str
    names: dict[str, str]  # side (or "system") to the role written


_OPENAI = _Style(
    "messages", "role", "content", {"system": "system", USER: USER, ASSISTANT: ASSISTANT}
)
_SHAREGPT = _Style(
    "conversations", "from", "value", {"system": "system", USER: "human", ASSISTANT: "gpt"}
)


def _messages(
    style: _Style, system: str, sides: Sequence[str], texts: Sequence[str]
) -> tuple[list[dict[str, str]], int, int]:
    """(the messages, turns merged, blank turns skipped): the system message first if any,
    blank turns skipped, runs of one side merged into one message."""
    role, content, names = style.role, style.content, style.names
    messages = [{role: names["system"], content: system}] if system else []
    message: dict[str, str] = {}
    last = None
    merged = skipped = 0
    # Written as one loop over the turns, building the output dicts directly: it runs for
    # every turn exported.
    for side, text in zip(sides, texts, strict=True):
        if not text or text.isspace():  # _is_blank, inlined
            skipped += 1
        elif side == last:
            message[content] += MERGE_SEPARATOR + text
            merged += 1
        else:
            message = {role: names[side], content: text}
            messages.append(message)
            last = side
    return messages, merged, skipped


class DialogueFormatter:
    """Turns each dialogue into its output lines and accumulates the manifest counts."""

    def __init__(
        self,
        options: ExportOptions,
        system_prompts: dict[int, str],
        slugs: dict[int, str],
        dialogue_prompts: dict[int, str] | None = None,
    ):
        """`system_prompts` by scenario; `dialogue_prompts` by dialogue where the scenario's
        prompt is a template rendered for each dialogue (its topic and variables)."""
        self.options = options
        self.is_dpo = options.format == DatasetExport.Format.DPO
        self.style = _SHAREGPT if options.format == DatasetExport.Format.SHAREGPT else _OPENAI
        self.stats = ExportStats()
        self.slugs = slugs
        self.system = {
            scenario_id: self._system_message(prompt)
            for scenario_id, prompt in system_prompts.items()
        }
        self.dialogue_prompts = dialogue_prompts or {}
        # Rendered prompts repeat (a few variable values): each text's message built once.
        self.rendered: dict[str, _SystemMessage] = {}
        # Dialogues written per (scenario, records, models of its assistant turns): a handful
        # of keys, folded into the manifest's counts by `finish`.
        self.written: Counter[tuple[int, int, tuple[str, ...]]] = Counter()

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
        scenario_id = dialogue.scenario_ids[0]
        system = self.system.get(scenario_id, _NO_SYSTEM)
        prompt = self.dialogue_prompts.get(dialogue.dialogue_ids[0])
        if prompt is not None:
            if prompt not in self.rendered:
                self.rendered[prompt] = self._system_message(prompt)
            system = self.rendered[prompt]
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
            if found:
                self.stats.dialogues_with_pii += 1
                self.stats.pii.update(found)
            assistant = map(ASSISTANT.__eq__, dialogue.sides)
            self.written[scenario_id, len(lines), tuple(compress(dialogue.models, assistant))] += 1
        return lines

    @staticmethod
    def _rejected(dialogue: DialogueTurns) -> dict[int, str]:
        """{turn index: what the model first wrote} for the corrected assistant turns: the
        "rejected" side of a DPO pair."""
        return {
            index: original
            for index, original in enumerate(dialogue.rejected)
            if original is not None
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
        style = self.style
        messages, merged, skipped = _messages(style, system, sides, texts)
        # A training example ends on the assistant: a trailing user message teaches nothing.
        user = style.names[USER]
        dropped = 0
        while messages and messages[-1][style.role] == user:
            messages.pop()
            dropped += 1
        # Every side is the user's or the assistant's: with no user message left at the end, the
        # dialogue has an assistant message exactly when it ends on one.
        if not messages or messages[-1][style.role] != style.names[ASSISTANT]:
            self.stats.dialogues_without_assistant += 1
            return []
        stats = self.stats
        stats.dropped_trailing_user_turns += dropped
        stats.merged_turns += merged
        stats.skipped_blank_turns += skipped
        stats.messages += len(messages)
        return [orjson.dumps({style.messages: messages}, option=_LINE)]

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
            prompt, _, _ = _messages(_OPENAI, system, sides[:index], texts[:index])
            if not prompt:
                continue
            line = {
                "prompt": prompt,
                "chosen": [{"role": ASSISTANT, "content": chosen}],
                "rejected": [{"role": ASSISTANT, "content": original}],
            }
            lines.append(orjson.dumps(line, option=_LINE))
        self.stats.messages += len(lines)
        return lines

    def finish(self) -> ExportStats:
        """The manifest's counts, once every dialogue has been through `lines`."""
        stats = self.stats
        for (scenario_id, records, models), dialogues in self.written.items():
            stats.dialogues_written += dialogues
            stats.records += records * dialogues
            scenario = stats.per_scenario[self.slugs.get(scenario_id, str(scenario_id))]
            scenario["dialogues"] += dialogues
            scenario["records"] += records * dialogues
            for model, turns in Counter(model or "unknown" for model in models).items():
                per_model = stats.per_model[model]
                per_model["dialogues"] += dialogues
                per_model["assistant_turns"] += turns * dialogues
        self.written.clear()
        return stats
