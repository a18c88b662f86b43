"""Dataset export: approved dialogues as OpenAI chat JSONL, ShareGPT JSONL or DPO pairs.

The contract (docs/export.md has the long form):

- Only approved dialogues, only live turns (never ones discarded by a regeneration), always the
  corrected text.
- Streamed: one query with a server-side cursor, ordered by dialogue, read in chunks; one
  chunk is all that is held in memory, so memory stays flat at any size and the query count is
  constant. On PostgreSQL every format reads one row per dialogue, assembled by PostgreSQL
  (see "PostgreSQL-assembled dialogues"); elsewhere the turns are read in (dialogue, position)
  order, `CHUNK_SIZE` rows at a time.
- One snapshot: the reads run in one REPEATABLE READ READ ONLY transaction on PostgreSQL, so an
  edit made during an export lands in the next one.
- Deterministic: stable ordering, `ensure_ascii=False`, compact separators, "\\n" line ends:
  the same filters over unchanged data give the same bytes (and the same sha256).
- Atomic: the file is written under a temporary name in its target directory and renamed into
  place only when complete; on any failure the temporary file is removed and the record says
  failed.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import queue
import re
import tempfile
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import accumulate, chain, groupby
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import psycopg.adapt
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, TextField, Value
from django.utils import timezone

import synthreview
from generation.models import Dialogue, GenerationRun, Persona, Scenario, Side, Turn
from review import pii
from review.models import DatasetExport, DialogueReview

CHUNK_SIZE = 5000
PREFETCH_CHUNKS = 4
# Progress is reported (and written to the record) at most this often, in dialogues.
PROGRESS_EVERY = 1000
# Consecutive turns of one role become one message, their texts joined by this.
MERGE_SEPARATOR = "\n\n"
FORMATS: tuple[str, ...] = tuple(DatasetExport.Format.values)
_WRITE_BUFFER_BYTES = 1 << 20
_SINK_BLOCKS = 4
# On PostgreSQL, build the lines from dialogues PostgreSQL assembles (below).
SQL_ASSEMBLY = True

# json.dumps(..., ensure_ascii=False) escapes strings with this C function; calling it directly
# skips building a dict per message and gives the same bytes (a test holds us to that).
_quote: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


class ExportError(Exception):
    """An export that cannot run as asked; the message is meant for the person who asked."""


class EmptyExportError(ExportError):
    """Nothing to write: no approved dialogue (or no usable one) matches the selection."""


# --- Selection ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFilters:
    """Which dialogues an export covers. Empty fields do not filter.

    `since` keeps dialogues approved at or after that moment (a date means its midnight in the
    current time zone), which makes "everything approved since the last export" one flag.
    """

    run_ids: tuple[int, ...] = ()
    scenario: str = ""
    since: datetime | None = None
    dialogue_ids: tuple[int, ...] = ()

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.run_ids:
            data["run_ids"] = list(self.run_ids)
        if self.scenario:
            data["scenario"] = self.scenario
        if self.since is not None:
            data["since"] = self.since.isoformat()
        if self.dialogue_ids:
            data["dialogue_ids"] = list(self.dialogue_ids)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportFilters:
        since = data.get("since")
        return cls(
            run_ids=tuple(int(pk) for pk in data.get("run_ids", ())),
            scenario=str(data.get("scenario", "")),
            since=datetime.fromisoformat(since) if since else None,
            dialogue_ids=tuple(int(pk) for pk in data.get("dialogue_ids", ())),
        )


def parse_since(value: str) -> datetime:
    """`YYYY-MM-DD` or an ISO 8601 datetime; naive values are in the current time zone."""
    try:
        parsed = (
            datetime.combine(date.fromisoformat(value), time.min)
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)
            else datetime.fromisoformat(value)
        )
    except ValueError:
        raise ExportError(
            f"Invalid date {value!r}: use YYYY-MM-DD or an ISO 8601 date-time."
        ) from None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


def filters_validate(filters: ExportFilters) -> None:
    """Raise ExportError naming any run or scenario that does not exist."""
    if filters.run_ids:
        found = set(
            GenerationRun.objects.filter(pk__in=filters.run_ids).values_list("pk", flat=True)
        )
        missing = [pk for pk in filters.run_ids if pk not in found]
        if missing:
            raise ExportError(f"Unknown run: {', '.join(map(str, missing))}.")
    if filters.scenario and not Scenario.objects.filter(slug=filters.scenario).exists():
        raise ExportError(f"Unknown scenario: {filters.scenario!r}.")


def dialogues_selected(filters: ExportFilters) -> QuerySet[Dialogue]:
    """Every dialogue the filters cover, whatever its review status."""
    dialogues = Dialogue.objects.all()
    if filters.run_ids:
        dialogues = dialogues.filter(run_id__in=filters.run_ids)
    if filters.scenario:
        dialogues = dialogues.filter(scenario__slug=filters.scenario)
    if filters.dialogue_ids:
        dialogues = dialogues.filter(pk__in=filters.dialogue_ids)
    if filters.since is not None:
        dialogues = dialogues.filter(review__decided_at__gte=filters.since)
    return dialogues


def dialogues_exportable(filters: ExportFilters) -> QuerySet[Dialogue]:
    """The selected dialogues an export writes: approved ones."""
    return dialogues_selected(filters).filter(review__status=DialogueReview.Status.APPROVED)


def selection_counts(filters: ExportFilters) -> tuple[int, int]:
    """(approved, not approved) among the selected dialogues, in one query."""
    counts = dialogues_selected(filters).aggregate(
        total=Count("pk"),
        approved=Count("pk", filter=Q(review__status=DialogueReview.Status.APPROVED)),
    )
    return counts["approved"], counts["total"] - counts["approved"]


# --- Formats --------------------------------------------------------------------------------------


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


# One live turn as fetched: (dialogue_id, scenario_id, side, text, original_text or "", model).
# Texts are encoded once as JSON string literals (quotes included) per dialogue, so merging and
# line building are plain string joins.
_Row = tuple[int, int, str, str, str, str]
SIDE, TEXT, ORIGINAL, MODEL = 2, 3, 4, 5
_JSON_MERGE_SEPARATOR = _quote(MERGE_SEPARATOR)[1:-1]
_EMPTY_JSON = '""'


@dataclass
class _Stats:
    """Everything the manifest counts, accumulated while streaming."""

    dialogues_written: int = 0
    dialogues_without_assistant: int = 0
    records: int = 0
    messages: int = 0
    merged_turns: int = 0
    dropped_trailing_user_turns: int = 0
    skipped_empty_turns: int = 0
    dialogues_with_pii: int = 0
    pii: Counter[str] = field(default_factory=Counter)
    per_scenario: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_model: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


_NO_PII: Counter[str] = Counter()
# Plain strings: comparing against the enum members costs an attribute lookup per turn.
_ASSISTANT, _USER = str(Side.ASSISTANT.value), str(Side.USER.value)
_ROLE_SHAREGPT = {"system": "system", _USER: "human", _ASSISTANT: "gpt"}
_JSON_SPACE_STARTS = frozenset(" \\\u00a0") | frozenset(chr(c) for c in range(0x1C, 0x20))


def _is_blank(literal: str) -> bool:
    """Whether a JSON string literal holds only whitespace (OpenAI rejects empty content)."""
    if len(literal) > 2 and literal[1] not in _JSON_SPACE_STARTS and not literal[1].isspace():
        return False
    return not json.loads(literal).strip()


def _messages(turns: list[_Row], texts: list[str]) -> tuple[list[str], list[str], int, int]:
    """Messages from live turns as parallel (roles, content literals) lists: blank turns
    skipped, runs of one role merged. Also returns how many turns were merged into a previous
    one and how many blank turns were skipped."""
    roles: list[str] = []
    contents: list[str] = []
    merged = skipped = 0
    for turn, text in zip(turns, texts, strict=True):
        # Inline fast path of _is_blank: a literal starting with a visible character is not.
        if (len(text) <= 2 or text[1] in _JSON_SPACE_STARTS or text[1].isspace()) and _is_blank(
            text
        ):
            skipped += 1
            continue
        side = turn[SIDE]
        if roles and roles[-1] == side:
            # Joining two literals: drop the closing and opening quotes around the separator.
            contents[-1] = contents[-1][:-1] + _JSON_MERGE_SEPARATOR + text[1:]
            merged += 1
        else:
            roles.append(side)
            contents.append(text)
    return roles, contents, merged, skipped


# Everything before a message's content literal, per format and role.
_OPENAI_PREFIX = {role: f'{{"role":"{role}","content":' for role in ("system", _USER, _ASSISTANT)}
_SHAREGPT_PREFIX = {role: f'{{"from":"{name}","value":' for role, name in _ROLE_SHAREGPT.items()}


def _encode_list(
    prefixes: dict[str, str], system: str, roles: list[str], contents: list[str]
) -> str:
    parts = [prefixes["system"] + system + "}"] if system else []
    parts += [prefixes[role] + text + "}" for role, text in zip(roles, contents, strict=True)]
    return "[" + ",".join(parts) + "]"


def _encode_chat(system: str, roles: list[str], contents: list[str], fmt: str) -> str:
    if fmt == DatasetExport.Format.OPENAI:
        return '{"messages":' + _encode_list(_OPENAI_PREFIX, system, roles, contents) + "}\n"
    return '{"conversations":' + _encode_list(_SHAREGPT_PREFIX, system, roles, contents) + "}\n"


def _pii_table() -> bytes:
    # Digits and the space/()/- separators become "0", A-Z "U"; ".", "@" and ":" stay; else "x".
    table = bytearray(b"x" * 256)
    for char in b"0123456789 ()-":
        table[char] = ord("0")
    for char in range(ord("A"), ord("Z") + 1):
        table[char] = ord("U")
    for char in b".@:":
        table[char] = char
    return bytes(table)


_PII_TABLE = _pii_table()
_IPV6_SHAPE = re.compile(rb"::|:[0Ux]{1,4}:[0Ux]{1,4}:")
_DOTTED_SHAPE = re.compile(rb"\.0{1,4}\.")


def _may_contain_pii(text: str) -> bool:
    """False only when no `review.pii` detector can match `text` (raw, or JSON-escaped: JSON
    never escapes the characters these shapes are made of).

    The exact checks are slow (regexes plus checksums), so at a million turns they run only on
    the few dialogues that pass this. Every detector needs one of: "@" (email); "::" or
    ":h:h:" (IPv6); "CCdd" (IBAN); a run of 8+ digits/separators without dots (phones and
    cards have 8+ digits); 1-4 digits between two dots (IPv4, dotted phones). Plain decimals
    such as 0.70711 pass none of them. One bytes.translate, then substring searches and two
    tiny regexes, cheapest first: single-byte searches run at memchr speed. A test checks this
    never misses what `review.pii` finds.
    """
    shape = text.encode().translate(_PII_TABLE)
    return (
        b"@" in shape
        or (b":" in shape and _IPV6_SHAPE.search(shape) is not None)
        or _DOTTED_SHAPE.search(shape) is not None
        or b"00000000" in shape
        or b"UU00" in shape
    )


class _DialogueWriter:
    """Turns one dialogue's rows into output lines and accumulates the manifest counts."""

    def __init__(
        self, options: ExportOptions, system_prompts: dict[int, str], slugs: dict[int, str]
    ):
        self.options = options
        self.is_dpo = options.format == DatasetExport.Format.DPO
        self.stats = _Stats()
        self.slugs = slugs
        self.system: dict[int, tuple[str, Counter[str]]] = {}
        for scenario_id, prompt in system_prompts.items():
            found = pii.count(prompt)
            if options.scrub_pii:
                prompt, found = pii.scrub(prompt)
            literal = _quote(prompt) if options.include_system and prompt.strip() else ""
            self.system[scenario_id] = (literal, found)
        # PII counts of the system messages written (scenarios whose prompt is included).
        self.system_pii = {
            scenario_id: found for scenario_id, (literal, found) in self.system.items() if literal
        }

    def lines(self, scenario_id: int, turns: list[_Row]) -> list[str]:
        stats = self.stats
        system, found = self.system.get(scenario_id, ("", _NO_PII))
        if not system:
            found = _NO_PII
        quote = _quote
        texts = [quote(turn[TEXT]) for turn in turns]
        # Only corrected assistant turns' originals are written (as "rejected").
        originals = (
            [
                quote(t[ORIGINAL])
                if t[SIDE] == _ASSISTANT and t[ORIGINAL] != t[TEXT]
                else _EMPTY_JSON
                for t in turns
            ]
            if self.is_dpo
            else []
        )
        out = self._build(system, turns, texts, originals)
        # Checked on the texts, not the line: JSON's own ":" and digits-free keys would only
        # make the prefilter's substring searches slower.
        if out and _may_contain_pii("\n".join(texts + originals if originals else texts)):
            found, texts, originals = self._pii(found, texts, originals)
            if self.options.scrub_pii:
                out = self._build(system, turns, texts, originals, count=False)
        if not out:
            return out
        if found:
            stats.dialogues_with_pii += 1
            stats.pii.update(found)
        self._count(scenario_id, turns, out)
        return out

    def _pii(
        self, found: Counter[str], texts: list[str], originals: list[str]
    ) -> tuple[Counter[str], list[str], list[str]]:
        """Exact detection on the raw texts; scrubbed literals when scrubbing."""
        found = Counter(found)
        results: list[list[str]] = []
        for literals in (texts, originals):
            out = []
            for literal in literals:
                if not _may_contain_pii(literal):  # most texts of a flagged dialogue
                    out.append(literal)
                    continue
                raw = json.loads(literal)
                if self.options.scrub_pii:
                    raw, kinds = pii.scrub(raw)
                    out.append(_quote(raw))
                else:
                    kinds = pii.count(raw)
                    out.append(literal)
                found.update(kinds)
            results.append(out)
        return found, results[0], results[1]

    def _build(
        self,
        system: str,
        turns: list[_Row],
        texts: list[str],
        originals: list[str],
        *,
        count: bool = True,
    ) -> list[str]:
        if self.is_dpo:
            return self._dpo(system, turns, texts, originals)
        return self._chat(system, turns, texts, count=count)

    def _count(self, scenario_id: int, turns: list[_Row], out: list[str]) -> None:
        stats = self.stats
        stats.dialogues_written += 1
        stats.records += len(out)
        scenario = stats.per_scenario[self.slugs.get(scenario_id, str(scenario_id))]
        scenario["dialogues"] += 1
        scenario["records"] += len(out)
        if self.is_dpo:
            stats.messages += len(out)
        models = [turn[MODEL] for turn in turns if turn[SIDE] == _ASSISTANT]
        if not models:
            return
        if models.count(models[0]) == len(models):  # the usual case: one model wrote them all
            counts = stats.per_model[models[0] or "unknown"]
            counts["dialogues"] += 1
            counts["assistant_turns"] += len(models)
        else:
            for model, n in Counter(model or "unknown" for model in models).items():
                counts = stats.per_model[model]
                counts["dialogues"] += 1
                counts["assistant_turns"] += n

    def _chat(
        self, system: str, turns: list[_Row], texts: list[str], *, count: bool = True
    ) -> list[str]:
        stats = self.stats
        roles, contents, merged, skipped = _messages(turns, texts)
        # A training example ends on the assistant: a trailing user message teaches nothing.
        dropped = 0
        while roles and roles[-1] == _USER:
            roles.pop()
            contents.pop()
            dropped += 1
        if _ASSISTANT not in roles:
            if count:
                stats.dialogues_without_assistant += 1
            return []
        if count:
            stats.dropped_trailing_user_turns += dropped
            stats.merged_turns += merged
            stats.skipped_empty_turns += skipped
            stats.messages += len(roles) + (1 if system else 0)
        return [_encode_chat(system, roles, contents, self.options.format)]

    def _dpo(
        self, system: str, turns: list[_Row], texts: list[str], originals: list[str]
    ) -> list[str]:
        out: list[str] = []
        for index, turn in enumerate(turns):
            if turn[SIDE] != _ASSISTANT or turn[TEXT] == turn[ORIGINAL]:
                continue
            chosen, rejected = texts[index], originals[index]
            if _is_blank(chosen) or _is_blank(rejected) or chosen == rejected:
                continue
            roles, contents, _, _ = _messages(turns[:index], texts[:index])
            if not roles and not system:
                continue
            out.append(
                '{"prompt":'
                + _encode_list(_OPENAI_PREFIX, system, roles, contents)
                + ',"chosen":[{"role":"assistant","content":'
                + chosen
                + '}],"rejected":[{"role":"assistant","content":'
                + rejected
                + "}]}\n"
            )
        return out


# --- Snapshot and streaming -----------------------------------------------------------------------


@contextlib.contextmanager
def _snapshot() -> Iterator[None]:
    """One consistent view of the data for every read of the export.

    Inside a caller's transaction (tests, or a service composing this) that transaction is the
    snapshot already. SQLite serialises writers, so its transaction is consistent as is.
    """
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _stream_turns(dialogues: QuerySet[Dialogue], *, with_original: bool) -> Iterator[list[tuple]]:
    """Chunks of rows (dialogue_id, scenario_id, side, text, original_text, model), in order,
    texts raw (original_text only for DPO, else "").

    A server-side cursor on PostgreSQL (`chunked_cursor`), fetched CHUNK_SIZE rows at a time:
    one query whatever the size. The ORM builds the SQL; raw fetching skips per-row model
    machinery, which is most of the cost at a million rows.
    """
    turns = (
        Turn.objects.filter(dialogue__in=dialogues.values("pk"), discarded_at__isnull=True)
        .order_by("dialogue_id", "position", "pk")
        .values_list(
            "dialogue_id",
            "dialogue__scenario_id",
            "side",
            "text",
            "original_text" if with_original else Value("", output_field=TextField()),
            "model",
        )
    )
    sql, params = turns.query.sql_with_params()
    cursor = connection.chunked_cursor()
    try:
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            chunks = _prefetched(cursor.cursor)
        else:
            chunks = iter(lambda: cursor.fetchmany(CHUNK_SIZE), [])
        yield from chunks
    finally:
        cursor.close()


def _prefetched(raw_cursor: Any, size: int | None = None) -> Iterator[list[tuple]]:
    """Fetch the next chunks in a thread while this one is processed.

    PostgreSQL computes and sends rows while Python encodes the previous chunk (psycopg
    releases the GIL while it waits), which takes the export from "query time + encoding
    time" towards the larger of the two. At most PREFETCH_CHUNKS chunks wait in memory.
    """
    chunks: queue.Queue[list[tuple] | BaseException | None] = queue.Queue(PREFETCH_CHUNKS)
    stop = threading.Event()

    def put(item: list[tuple] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            while rows := raw_cursor.fetchmany(size or CHUNK_SIZE):
                if not put(rows):
                    return
            put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    thread = threading.Thread(target=fetch, name="export-fetch", daemon=True)
    thread.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _group_dialogues(chunks: Iterable[list[_Row]]) -> Iterator[tuple[int, int, list[_Row]]]:
    """(dialogue_id, scenario_id, turns) from row chunks ordered by dialogue. groupby and chain
    do the per-row work in C, which matters at a million rows."""
    for dialogue_id, group in groupby(chain.from_iterable(chunks), key=itemgetter(0)):
        turns = list(group)
        yield dialogue_id, turns[0][1], turns


# --- PostgreSQL-assembled dialogues ---------------------------------------------------------------
#
# At a million turns the per-turn Python work (fetching a row, escaping its text, building its
# message) is what makes an export slow, not PostgreSQL. So on PostgreSQL the chat formats read
# one row per dialogue: PostgreSQL concatenates the dialogue's raw texts in order, each behind a
# one-character marker giving its side (\x1e assistant, \x1f user), and computes with
# order-free aggregates whether the dialogue is "plain": sides strictly alternating over
# contiguous positions, no blank turn, one assistant model, no marker character inside a text.
# Python then handles a whole fetched block of plain dialogues with a few C-speed passes over
# bytes: one bytes.translate gives both the personal-data prefilter's shape and which JSON
# escapes are needed; bytes.replace applies the escapes and turns the markers into message
# boundaries (single-byte searches run at memchr speed); each dialogue only gets its line
# frame. The rules (merging, blank turns, personal data, several models) stay in
# `_DialogueWriter`: a dialogue that is not plain comes with its turns as JSON (a correlated
# subquery PostgreSQL evaluates only for those rows), a plain one the prefilter flags is split
# back into turns, and both go through `_DialogueWriter.lines`, so one implementation decides
# every byte. A test compares both paths on data built to hit every rule.
#
# DPO works the same way: PostgreSQL sends only the dialogues with a corrected assistant turn
# (no other dialogue gives a pair or counts in the manifest), each such turn's text followed by
# a fourth marker and its original. A plain dialogue with exactly one such turn gets its pair
# from slices of the escaped block (the prompt is the messages before the turn); the rest, and
# what the prefilter flags, go through `_DialogueWriter.lines` with their originals.

# Dialogue rows per fetch: each holds a whole dialogue (about ten turns).
_DIALOGUE_CHUNK_DIVISOR = 5
_MARK_ASSISTANT, _MARK_USER, _MARK_DIALOGUE = "\x1e", "\x1f", "\x1d"
# DPO: between a corrected assistant turn's text and its original.
_MARK_ORIGINAL = "\x1c"
_MARK_DIALOGUE_BYTE = _MARK_DIALOGUE.encode()
_MARK_SIDES = {_MARK_ASSISTANT: _ASSISTANT, _MARK_USER: _USER}
_MARKS_RE = re.compile(f"([{_MARK_ASSISTANT}{_MARK_USER}])")
# Every character str.isspace() accepts: a text starting with none of them is not blank. The
# SQL check only needs to be a superset of "blank" (the rules run in Python on what it flags).
_SPACE_CODES = tuple(c for c in range(0x3001) if chr(c).isspace())


def _escape_table() -> bytes:
    """The prefilter's shape table, plus one class per character JSON escapes: `"` Q,
    backslash B, newline N, return R, tab T, any other control character E; the markers M
    (dialogues) and S (turns). The prefilter's shapes contain none of these classes, and they
    all separate shapes as "x" did, so it finds what it found with `_PII_TABLE`."""
    table = bytearray(_PII_TABLE)
    for char in range(0x20):
        table[char] = ord("E")
    for char, cls in (
        ('"', "Q"),
        ("\\", "B"),
        ("\n", "N"),
        ("\r", "R"),
        ("\t", "T"),
        (_MARK_DIALOGUE, "M"),
        (_MARK_ASSISTANT, "S"),
        (_MARK_USER, "S"),
    ):
        table[ord(char)] = ord(cls)
    return bytes(table)


_ESCAPE_TABLE = _escape_table()
# (shape class, raw byte, its JSON escape), backslash first so later escapes are not doubled.
_BLOCK_ESCAPES = (
    (b"B", b"\\", b"\\\\"),
    (b"Q", b'"', b'\\"'),
    (b"N", b"\n", b"\\n"),
    (b"R", b"\r", b"\\r"),
    (b"T", b"\t", b"\\t"),
)
# The substring shapes of `_may_contain_pii` (its two regexes run as they are).
_PII_NEEDLES = (b"@", b"00000000")
# IBAN's "CCdd": a regex finds it in a third of the time bytes.find(b"UU") takes (capital
# letters start every sentence) and bytes.find(b"UU00") would take (its last byte stands
# for every space too).
_IBAN_SHAPE = re.compile(rb"UU00")


def _plain_dialogues_sql(
    dialogues: QuerySet[Dialogue], *, dpo: bool = False
) -> tuple[str, list[Any]]:
    """One row per exportable dialogue, in id order: (dialogue_id, scenario_id, plain, turn
    count, assistant turn count, last turn is the assistant's, assistant model, marked texts,
    turns as JSON when not plain).

    For DPO only dialogues with a corrected assistant turn (the only ones that give pairs, or
    count in the manifest), each such turn's text followed by `_MARK_ORIGINAL` and its original;
    "plain" also asks for exactly one such turn whose original is not blank, and the JSON turns
    carry their originals. Whether a text contains a marker is not asked here (four `strpos`
    per turn cost PostgreSQL a fifth of the query): `_escape_block` counts the markers.
    """
    ids_sql, ids_params = dialogues.order_by().values("pk").query.sql_with_params()
    turn, dialogue = Turn._meta.db_table, Dialogue._meta.db_table
    spaces = ", ".join(str(code) for code in _SPACE_CODES if code > 32)
    # v: "this turn's side is the one its position's parity gives when even positions are the
    # assistant's". Strict alternation over contiguous positions <=> v is the same everywhere.
    v = "((t.position %% 2 = 0) = t.is_assistant)"
    model = 'min(t.model COLLATE "C") FILTER (WHERE t.is_assistant)'
    # varchar, not text: the cursor loads text as bytes (`_TextAsBytes`), the model stays str.
    a, u = _ASSISTANT, _USER
    if dpo:
        # Compared as Python compares them: byte for byte.
        corrected = 't.side = %s AND t.original_text COLLATE "C" <> t.text COLLATE "C"'
        columns = f", t.original_text, ({corrected}) AS corrected"
        columns_params: list[Any] = [a]
        pair_plain = f"""
                    AND count(*) FILTER (WHERE t.corrected) = 1
                    AND NOT bool_or(t.corrected AND (
                        ascii(t.original_text) <= 32 OR ascii(t.original_text) IN ({spaces})))"""
        original = " || CASE WHEN t.corrected THEN %s || t.original_text ELSE '' END"
        original_params: list[Any] = [_MARK_ORIGINAL]
        having = "HAVING bool_or(t.corrected)"
        json_original = "s.original_text, "
    else:
        columns, columns_params = "", []
        pair_plain = ""
        original, original_params = "", []
        having = ""
        json_original = ""
    # The turns reach the aggregates in (dialogue, position) order from a sorted subquery (its
    # ORDER BY keeps it from being flattened, and live positions are unique). PostgreSQL 16+
    # is told the order too and skips re-sorting presorted input; 15 would sort every
    # dialogue's texts again, a sixth of the query, and feeds string_agg in input order
    # anyway: it cannot split a group between parallel workers (no string_agg combine
    # function before 16) and hash aggregation keeps each group's input order.
    in_order = " ORDER BY t.position" if connection.pg_version >= 160000 else ""
    sql = f"""
        SELECT a.dialogue_id, d.scenario_id, a.plain, a.turns, a.assistant_turns,
            a.last_assistant, a.model, a.marked,
            CASE WHEN NOT a.plain THEN (
                SELECT json_agg(json_build_array(s.side, s.text, {json_original}s.model)
                                ORDER BY s.position, s.id)::text
                FROM {turn} s WHERE s.dialogue_id = a.dialogue_id AND s.discarded_at IS NULL
            ) END
        FROM (
            SELECT t.dialogue_id, count(*) AS turns,
                count(*) FILTER (WHERE t.is_assistant) AS assistant_turns,
                ((max(t.position) %% 2 = 0) = bool_and({v})) AS last_assistant,
                ({model})::varchar AS model,
                COALESCE(
                    (bool_and({v}) OR NOT bool_or({v}))
                    AND max(t.position) - min(t.position) + 1 = count(*)
                    AND bool_and(t.is_assistant OR t.side = %s)
                    AND NOT bool_or(ascii(t.text) <= 32 OR ascii(t.text) IN ({spaces}))
                    AND {model} IS NOT DISTINCT FROM {model.replace("min(", "max(")}{pair_plain},
                    false
                ) AS plain,
                string_agg(CASE WHEN t.is_assistant THEN %s ELSE %s END || t.text{original}, ''
                           {in_order}) AS marked
            FROM (
                SELECT t.dialogue_id, t.position, t.side, t.text, t.model,
                    (t.side = %s) AS is_assistant{columns}
                FROM {turn} t
                WHERE t.dialogue_id IN ({ids_sql}) AND t.discarded_at IS NULL
                ORDER BY t.dialogue_id, t.position
            ) t
            GROUP BY t.dialogue_id
            {having}
        ) a
        JOIN {dialogue} d ON d.id = a.dialogue_id
        ORDER BY a.dialogue_id
    """
    params: list[Any] = [u, _MARK_ASSISTANT, _MARK_USER, *original_params]
    params += [a, *columns_params, *ids_params]
    return sql, params


def _split_chat(row: tuple) -> list[_Row] | None:
    """A plain row's turns, split at its side markers; None when a text holds a marker byte
    itself (then the row has more markers than turns)."""
    dialogue_id, scenario_id, model = row[0], row[1], row[6]
    parts = _MARKS_RE.split(row[7].decode())
    if len(parts) != 2 * row[3] + 1 or parts[0]:
        return None
    return [
        (dialogue_id, scenario_id, _MARK_SIDES[mark], text, "", model)
        for mark, text in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _row_turns(row: tuple, reread: dict[int, bytes], *, pairs: bool) -> list[_Row]:
    """A dialogue row's turns for `_DialogueWriter.lines` (with originals for `pairs`; a turn
    that was not corrected has its own text as original): from the JSON PostgreSQL sent (not
    plain) or `_reread_marked` read, else split at the markers."""
    dialogue_id, scenario_id = row[0], row[1]
    turns_json = row[8] or reread.get(dialogue_id)
    if turns_json is None:
        turns = (_split_pair if pairs else _split_chat)(row)
        if turns is not None:
            return turns
        turns_json = _exact_turns([dialogue_id], with_original=pairs)[dialogue_id]
    rows: list[_Row] = []
    for side, text, *original, turn_model in json.loads(turns_json):
        rows.append(
            (dialogue_id, scenario_id, side, text, original[0] if pairs else "", turn_model)
        )
    return rows


def _reread_marked(rows: list[tuple], *, pairs: bool) -> dict[int, bytes]:
    """The turns, as JSON, of the plain rows whose texts hold a marker byte (they do not split
    into their turns), in one query: an adversarial text costs a query per block at most."""
    split = _split_pair if pairs else _split_chat
    ids = [row[0] for row in rows if row[2] and row[8] is None and split(row) is None]
    return _exact_turns(ids, with_original=pairs) if ids else {}


def _fill_per_turn(
    writer: _DialogueWriter, out: list, slow: list[tuple[int, tuple]], *, pairs: bool
) -> None:
    """Put the lines of the rows that take the per-turn rules at the places kept for them in
    `out`; rows whose texts hold a marker byte are read again first, all in one query."""
    if not slow:
        return
    reread = _reread_marked([row for _, row in slow], pairs=pairs)
    for at, row in slow:
        lines = writer.lines(row[1], _row_turns(row, reread, pairs=pairs))
        out[at] = "".join(lines).encode()


def _pii_suspects(shape: bytes) -> list[int]:
    """Offsets in `shape` where `_may_contain_pii` would say yes (and maybe a few more).

    Each pass is the fastest way measured for its shape on a block of prose.
    """
    hits: list[int] = []
    for needle in _PII_NEEDLES:
        at = shape.find(needle)
        while at >= 0:
            hits.append(at)
            at = shape.find(needle, at + 1)
    hits += [match.start() for match in _IBAN_SHAPE.finditer(shape)]
    if b":" in shape:
        hits += [match.start() for match in _IPV6_SHAPE.finditer(shape)]
    # One regex pass: four bytes.find loops for ".0." to ".0000." cost four times as much.
    hits += [match.start() for match in _DOTTED_SHAPE.finditer(shape)]
    return hits


def _escape_block(
    plain_rows: list[tuple],
    escape_table: bytes,
    boundaries: list[tuple[bytes, bytes]],
) -> tuple[bytes, list[int], set[int]]:
    """JSON-escape a block of plain dialogues at once: (the escaped block, where each
    dialogue's body starts in it, indexes of the dialogues that must take the per-turn path).

    Body i is `block[starts[i] : starts[i + 1] - 1]` (`starts` ends one past the block's end).
    The per-turn path takes all of them when the block holds a rare control character or a
    text holding a side or dialogue marker byte (each dialogue has one side marker per turn
    unless a text adds one), else those the PII prefilter flags. (A DPO body also holds one
    original marker unless a text adds one, which `_PlainPairs` checks.)
    """
    if not plain_rows:
        return b"", [0], set()
    texts = [row[7] for row in plain_rows]
    raw = _MARK_DIALOGUE_BYTE.join(texts)
    shape = raw.translate(escape_table)
    every = set(range(len(plain_rows)))
    if b"E" in shape:
        return raw, [], every
    for cls, char, escaped in _BLOCK_ESCAPES:
        if cls in shape:
            raw = raw.replace(char, escaped)
    suspects: set[int] = set()
    hits = _pii_suspects(shape)
    if hits:
        # Where each dialogue starts in the unescaped block: its byte length, plus a marker.
        offsets = list(accumulate((len(text) + 1 for text in texts), initial=0))
        suspects = {bisect.bisect_right(offsets, hit) - 1 for hit in hits}
    # Each replaced one-byte marker lengthens the block by its boundary's length minus one:
    # the markers are counted for free.
    sides = sum(row[3] for row in plain_rows)
    for mark, boundary in boundaries:
        before = len(raw)
        raw = raw.replace(mark, boundary)
        sides -= (len(raw) - before) // (len(boundary) - 1)
    # Offsets rather than raw.split(): the bodies are written from slices of one memoryview,
    # so each byte is copied once more, into the output buffer.
    starts = [0]
    find = raw.find
    at = find(_MARK_DIALOGUE_BYTE)
    while at >= 0:
        starts.append(at + 1)
        at = find(_MARK_DIALOGUE_BYTE, at + 1)
    starts.append(len(raw) + 1)
    if sides or len(starts) != len(plain_rows) + 1:
        return raw, [], every
    return raw, starts, suspects


class _BlockCounts:
    """The manifest counts of a block's fast-path dialogues, added up per (scenario, model)
    and folded into the stats once per block instead of a dozen dictionary updates per row."""

    def __init__(self) -> None:
        self.dialogues: Counter[tuple[int, str]] = Counter()
        self.assistant_turns: Counter[str] = Counter()
        self.messages = 0

    def add(self, scenario_id: int, model: str, messages: int, assistant_turns: int) -> None:
        self.dialogues[scenario_id, model] += 1
        self.assistant_turns[model] += assistant_turns
        self.messages += messages

    def fold(self, writer: _DialogueWriter, system_pii: dict[int, Counter[str]]) -> None:
        stats = writer.stats
        stats.messages += self.messages
        for (scenario_id, model), dialogues in self.dialogues.items():
            stats.dialogues_written += dialogues
            stats.records += dialogues
            scenario = stats.per_scenario[writer.slugs.get(scenario_id, str(scenario_id))]
            scenario["dialogues"] += dialogues
            scenario["records"] += dialogues
            stats.per_model[model or "unknown"]["dialogues"] += dialogues
            found = system_pii.get(scenario_id)
            if found:
                stats.dialogues_with_pii += dialogues
                for kind, count in found.items():
                    stats.pii[kind] += count * dialogues
        for model, turns in self.assistant_turns.items():
            stats.per_model[model or "unknown"]["assistant_turns"] += turns


def _exact_turns(dialogue_ids: list[int], *, with_original: bool) -> dict[int, bytes]:
    """The live turns of these dialogues as JSON arrays (side, text, [original,] model), read
    in the export's snapshot; for the rare blocks where a text contains a marker byte."""
    turn = Turn._meta.db_table
    original = "original_text, " if with_original else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT dialogue_id, json_agg(json_build_array(side, text, {original}model)
                                         ORDER BY position, id)::text
            FROM {turn} WHERE dialogue_id = ANY(%s) AND discarded_at IS NULL
            GROUP BY dialogue_id
            """,
            [dialogue_ids],
        )
        return dict(cursor.fetchall())


class _PlainDialogues:
    """The chat formats on PostgreSQL: whole blocks of plain dialogues at C speed, the rest
    through `_DialogueWriter.lines`."""

    def __init__(self, writer: _DialogueWriter):
        self.writer = writer
        openai = writer.options.format == DatasetExport.Format.OPENAI
        prefixes = _OPENAI_PREFIX if openai else _SHAREGPT_PREFIX
        head = b'{"messages":[' if openai else b'{"conversations":['
        # A marker becomes the end of the previous message and the start of its own.
        self.boundaries = [
            (mark.encode(), ('"},' + prefixes[side] + '"').encode())
            for mark, side in _MARK_SIDES.items()
        ]
        self.cut = ('"},' + prefixes[_USER] + '"').encode()
        # What goes before a dialogue's first message, per scenario: the line's head and the
        # system message.
        self.heads = {
            scenario_id: head + ((prefixes["system"] + literal + "},").encode() if literal else b"")
            for scenario_id, (literal, _) in writer.system.items()
        }
        self.head = head
        self.system_pii = writer.system_pii

    def block(self, rows: list[tuple]) -> list[bytes | memoryview]:
        """The rows' output, in order, as parts to be concatenated."""
        writer = self.writer
        plain_rows = [row for row in rows if row[2] and row[4]]
        raw, starts, suspects = _escape_block(plain_rows, _ESCAPE_TABLE, self.boundaries)
        view = memoryview(raw)
        out: list[bytes | memoryview] = []
        slow: list[tuple[int, tuple]] = []  # (place in out, row) for the per-turn rules
        counts = _BlockCounts()
        heads, head, cut, system_pii = self.heads, self.head, self.cut, self.system_pii
        index = -1
        for row in rows:
            _, scenario_id, is_plain, turns, assistant_turns, last_assistant, model = row[:7]
            if is_plain and assistant_turns:
                index += 1
                if index not in suspects:
                    # The body opens with the end of a previous message ('"},'): skipped.
                    start, end = starts[index] + 3, starts[index + 1] - 1
                    if not last_assistant:
                        end = raw.rfind(cut, start, end)
                        turns -= 1
                        writer.stats.dropped_trailing_user_turns += 1
                    line_head = heads.get(scenario_id, head)
                    out += (line_head, view[start:end], b'"}]}\n')
                    messages = turns + (1 if scenario_id in system_pii else 0)
                    counts.add(scenario_id, model, messages, assistant_turns)
                    continue
            slow.append((len(out), row))
            out.append(b"")
        _fill_per_turn(writer, out, slow, pairs=False)
        counts.fold(writer, system_pii)
        return out


def _pair_escape_table() -> bytes:
    """`_ESCAPE_TABLE` with `_MARK_ORIGINAL` as its own class O (not E): in the DPO rows it is a
    marker, and no plain text contains it. O separates the prefilter's shapes as E did."""
    table = bytearray(_ESCAPE_TABLE)
    table[ord(_MARK_ORIGINAL)] = ord("O")
    return bytes(table)


_PAIR_ESCAPE_TABLE = _pair_escape_table()
_MARKS_ORIGINAL_RE = re.compile(f"([{_MARK_ASSISTANT}{_MARK_USER}{_MARK_ORIGINAL}])")


def _split_pair(row: tuple) -> list[_Row] | None:
    """A plain DPO row's turns with originals (a turn that was not corrected gets its own text
    as original, which is what "not corrected" means), split at its markers: one original
    marker and one side marker per turn, else (a text holds a marker byte) None."""
    dialogue_id, scenario_id, model = row[0], row[1], row[6]
    parts = _MARKS_ORIGINAL_RE.split(row[7].decode())
    marks = parts[1::2]
    if len(marks) != row[3] + 1 or marks.count(_MARK_ORIGINAL) != 1 or parts[0]:
        return None
    turns: list[_Row] = []
    for mark, text in zip(marks, parts[2::2], strict=True):
        if mark == _MARK_ORIGINAL:
            turns[-1] = (*turns[-1][:ORIGINAL], text, model)
        else:
            turns.append((dialogue_id, scenario_id, _MARK_SIDES[mark], text, text, model))
    return turns


class _PlainPairs:
    """DPO on PostgreSQL: PostgreSQL sends only dialogues with a corrected assistant turn; the
    plain ones with exactly one such turn get their pair line from a few slices of a block
    escaped at C speed (as `_PlainDialogues` does), the rest go through
    `_DialogueWriter.lines`."""

    CHOSEN = b'"}],"chosen":[{"role":"assistant","content":"'
    REJECTED = b'"}],"rejected":[{"role":"assistant","content":"'
    END = b'"}]}\n'

    def __init__(self, writer: _DialogueWriter):
        self.writer = writer
        prefixes = _OPENAI_PREFIX
        self.boundaries = [
            (mark.encode(), ('"},' + prefixes[side] + '"').encode())
            for mark, side in _MARK_SIDES.items()
        ]
        self.assistant = self.boundaries[0][1]
        self.user = self.boundaries[1][1]
        self.original = _MARK_ORIGINAL.encode()
        # Per scenario, the line up to the prompt's first turn (a system message or none).
        self.heads = {
            scenario_id: b'{"prompt":[' + (prefixes["system"] + literal + "},").encode()
            for scenario_id, (literal, _) in writer.system.items()
            if literal
        }
        self.system_pii = writer.system_pii

    def block(self, rows: list[tuple]) -> list[bytes | memoryview]:
        """The rows' output, in order, as parts to be concatenated."""
        writer = self.writer
        plain_rows = [row for row in rows if row[2]]
        raw, starts, suspects = _escape_block(plain_rows, _PAIR_ESCAPE_TABLE, self.boundaries)
        view = memoryview(raw)
        out: list[bytes | memoryview] = []
        slow: list[tuple[int, tuple]] = []  # (place in out, row) for the per-turn rules
        counts = _BlockCounts()
        find, rfind = raw.find, raw.rfind
        assistant, user, original = self.assistant, self.user, self.original
        skip, heads, head = len(assistant), self.heads, b'{"prompt":['
        chosen_, rejected_, end_ = self.CHOSEN, self.REJECTED, self.END
        index = -1
        for row in rows:
            if row[2] and starts:
                index += 1
                # The body: the turns as messages, each opened by its boundary; the corrected
                # turn's text is followed by the original marker and its original, up to the
                # next turn. A second original marker means a text holds one itself.
                start, end = starts[index], starts[index + 1] - 1
                cut = find(original, start, end)
                if index not in suspects and find(original, cut + 1, end) < 0:
                    chosen = rfind(assistant, start, cut)
                    line_head = heads.get(row[1])
                    # The first turn corrected with no system message has no prompt at all,
                    # which the per-turn rules decide on.
                    if chosen > start or line_head:
                        rejected = find(user, cut, end)
                        if rejected < 0:
                            rejected = end
                        if chosen > start:
                            out += (line_head or head, view[start + 3 : chosen], chosen_)
                        else:  # the first turn corrected: the prompt is the system message
                            out += (line_head[:-1], chosen_[2:])
                        out += (view[chosen + skip : cut], rejected_, view[cut + 1 : rejected])
                        out.append(end_)
                        counts.add(row[1], row[6], 1, row[4])
                        continue
            slow.append((len(out), row))
            out.append(b"")
        _fill_per_turn(writer, out, slow, pairs=True)
        counts.fold(writer, self.system_pii)
        return out


_PLANNER_SETTINGS = (
    "SET LOCAL jit = off; SET LOCAL enable_sort = {sort}; "
    "SET LOCAL enable_incremental_sort = {sort}"
)


class _TextAsBytes(psycopg.adapt.Loader):
    def load(self, data: Any) -> bytes:
        return bytes(data)


def _dialogue_blocks(
    dialogues: QuerySet[Dialogue], writer: _DialogueWriter
) -> Iterator[tuple[int, bytes]]:
    """The exportable dialogues' output, encoded, in id order, a block at a time: (how many
    dialogues the block covers, their lines). Each block is joined at once, so nothing holds
    on to the fetched rows it was sliced from."""
    if SQL_ASSEMBLY and connection.vendor == "postgresql":
        plain = _PlainPairs(writer) if writer.is_dpo else _PlainDialogues(writer)
        sql, params = _plain_dialogues_sql(dialogues, dpo=writer.is_dpo)
        with connection.cursor() as cursor:
            # Compiling this query costs more than JIT saves on it. And the live turns come
            # in (dialogue, position) order straight from their unique index, where the
            # planner would rather sort the rows of another index again: a fifth more work.
            cursor.execute(_PLANNER_SETTINGS.format(sort="off"))
        cursor = connection.chunked_cursor()
        # The texts stay UTF-8 bytes: they are escaped and written as bytes, so decoding them
        # to str and encoding them back would be two wasted passes over every byte.
        cursor.cursor.adapters.register_loader("text", _TextAsBytes)
        try:
            cursor.execute(sql, params)  # DECLARE: planned here
            with connection.cursor() as settings_cursor:
                settings_cursor.execute(_PLANNER_SETTINGS.format(sort="DEFAULT"))
            size = max(1, CHUNK_SIZE // _DIALOGUE_CHUNK_DIVISOR)
            for rows in _prefetched(cursor.cursor, size):
                yield len(rows), b"".join(plain.block(rows))
        finally:
            cursor.close()
        return
    rows = _stream_turns(dialogues, with_original=writer.is_dpo)
    for _, scenario_id, turns in _group_dialogues(rows):
        yield 1, "".join(writer.lines(scenario_id, turns)).encode()


class AtomicFile:
    """Bytes written to a temporary file beside `path`, renamed onto `path` on commit."""

    def __init__(self, path: Path):
        self.path = path
        self.committed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        self.tmp = Path(tmp)
        self.file: IO[bytes] = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)
        self.committed = True

    def discard(self) -> None:
        if self.committed:
            return
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


@dataclass
class ExportResult:
    path: Path
    manifest_path: Path
    sha256: str
    manifest: dict[str, Any]


def manifest_path_for(path: Path) -> Path:
    """`train.jsonl` → `train.manifest.json`, beside it."""
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(f"{stem}.manifest.json")


def export_write(
    *,
    filters: ExportFilters,
    options: ExportOptions,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> ExportResult:
    """Write the export to `path` (and its manifest beside it) from one snapshot.

    Raises EmptyExportError (and writes nothing) when no record would be written, and lets
    OSError through after removing the temporary file.
    """
    target = AtomicFile(path)
    sink: _BackgroundSink | None = None
    try:
        with _snapshot():
            approved, not_approved = selection_counts(filters)
            if approved == 0:
                raise EmptyExportError(empty_message(approved, not_approved))
            dialogues = dialogues_exportable(filters)
            scenario_ids = dialogues.values("scenario_id")
            slugs = dict(Scenario.objects.filter(pk__in=scenario_ids).values_list("pk", "slug"))
            writer = _DialogueWriter(options, _system_prompts(scenario_ids), slugs)
            sink = _BackgroundSink(target)
            buffer: list[bytes] = []
            buffered = 0
            done = reported = 0
            for count, data in _dialogue_blocks(dialogues, writer):
                buffer.append(data)
                buffered += len(data)
                if buffered >= _WRITE_BUFFER_BYTES:
                    sink.write(b"".join(buffer))
                    buffer.clear()
                    buffered = 0
                done += count
                if progress is not None and done - reported >= PROGRESS_EVERY:
                    reported = done
                    progress(done, approved)
            if buffer:
                sink.write(b"".join(buffer))
            sha256 = sink.close()
        stats = writer.stats
        if stats.records == 0:
            raise EmptyExportError(
                f"Nothing to export: none of the {approved} approved dialogues has "
                + (
                    "a corrected assistant turn (DPO pairs come from corrections)."
                    if options.format == "dpo"
                    else "an assistant turn."
                )
            )
        if progress is not None:
            progress(approved, approved)
        manifest = _manifest(filters, options, stats, approved, not_approved, sha256, path)
        manifest.update(extra_manifest or {})
        manifest_file = AtomicFile(manifest_path_for(path))
        try:
            manifest_file.write(manifest_bytes(manifest))
            manifest_file.commit()
            target.commit()
        except BaseException:
            # Neither file stays under its final name if either could not be completed.
            manifest_file.discard()
            if manifest_file.committed and not target.committed:
                manifest_path_for(path).unlink(missing_ok=True)
            raise
    except BaseException:
        if sink is not None:
            sink.abandon()
        target.discard()
        raise
    return ExportResult(path, manifest_path_for(path), sha256, manifest)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


class _BackgroundSink:
    """Hashes and writes the output in a thread. hashlib and file writes release the GIL, so
    they run on another core while the next block is encoded; at most `_SINK_BLOCKS` blocks
    wait. A write error is raised on the next `write` or on `close`."""

    def __init__(self, target: AtomicFile):
        self.target = target
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None
        self.blocks: queue.Queue[bytes | None] = queue.Queue(_SINK_BLOCKS)
        self.thread = threading.Thread(target=self._run, name="export-write", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # Keeps draining after an error so the producer never blocks on a full queue.
        while (block := self.blocks.get()) is not None:
            if self.error is not None:
                continue
            try:
                self.digest.update(block)
                self.target.write(block)
            except BaseException as exc:  # handed to the producer
                self.error = exc

    def write(self, block: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.blocks.put(block)

    def close(self) -> str:
        """Wait for every block to be written; the sha256 of all of them."""
        self.blocks.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()

    def abandon(self) -> None:
        if self.thread.is_alive():
            self.blocks.put(None)
            self.thread.join()


def empty_message(approved: int, not_approved: int) -> str:
    if not_approved:
        return f"Nothing to export: none of the {not_approved} selected dialogues is approved."
    return "Nothing to export: no dialogues match the selection."


def _system_prompts(scenario_ids: QuerySet) -> dict[int, str]:
    """Each scenario's assistant-side persona's system prompt (the lowest position wins)."""
    prompts: dict[int, str] = {}
    personas = (
        Persona.objects.filter(scenario_id__in=scenario_ids, side=Side.ASSISTANT)
        .order_by("scenario_id", "-position")
        .values_list("scenario_id", "system_prompt")
    )
    for scenario_id, prompt in personas:
        prompts[scenario_id] = prompt.strip()
    return prompts


def _manifest(
    filters: ExportFilters,
    options: ExportOptions,
    stats: _Stats,
    approved: int,
    not_approved: int,
    sha256: str,
    path: Path,
) -> dict[str, Any]:
    return {
        "synthreview_version": synthreview.__version__,
        "format": options.format,
        "file": path.name,
        "sha256": sha256,
        "filters": filters.as_json(),
        "options": {"include_system": options.include_system, "scrub_pii": options.scrub_pii},
        "counts": {
            "dialogues_selected": approved + not_approved,
            "dialogues_approved": approved,
            "dialogues_skipped_not_approved": not_approved,
            "dialogues_skipped_no_assistant_turn": stats.dialogues_without_assistant,
            "dialogues_without_pairs": approved - stats.dialogues_written
            if options.format == "dpo"
            else 0,
            "dialogues_written": stats.dialogues_written,
            "records": stats.records,
            "messages": stats.messages,
            "merged_turns": stats.merged_turns,
            "dropped_trailing_user_turns": stats.dropped_trailing_user_turns,
            "skipped_blank_turns": stats.skipped_empty_turns,
        },
        "per_scenario": {
            key: dict(sorted(v.items())) for key, v in sorted(stats.per_scenario.items())
        },
        "per_model": {key: dict(sorted(v.items())) for key, v in sorted(stats.per_model.items())},
        "pii": {
            "scrubbed": options.scrub_pii,
            "dialogues_with_pii": stats.dialogues_with_pii,
            ("replacements" if options.scrub_pii else "detected"): {
                kind: stats.pii.get(kind, 0) for kind in pii.KINDS
            },
        },
        "rules": {
            "same_role_turns": "merged, joined by a blank line",
            "trailing_user_turns": "dropped",
            "blank_turns": "skipped",
            "system_message": "assistant-side persona's system prompt"
            if options.include_system
            else "omitted",
        },
    }


# --- Records --------------------------------------------------------------------------------------


def dataset_export_create(
    *,
    options: ExportOptions,
    filters: ExportFilters,
    created_by: Any = None,
    source: str = DatasetExport.Source.ADMIN,
    output_path: str = "",
    requested_by: str = "",
) -> DatasetExport:
    """A pending export record; `dataset_export_run` (inline or from the task) fills it."""
    approved, not_approved = selection_counts(filters)
    return DatasetExport.objects.create(
        format=options.format,
        include_system=options.include_system,
        scrub_pii=options.scrub_pii,
        filters=filters.as_json(),
        created_by=created_by,
        source=source,
        output_path=output_path,
        requested_by=requested_by,
        total_count=approved,
        skipped_count=not_approved,
    )


def _export_path(export: DatasetExport) -> tuple[str, Path]:
    stamp = export.created_at.strftime("%Y%m%dT%H%M%S")
    name = f"exports/synthreview-{export.format}-{export.pk}-{stamp}.jsonl"
    return name, Path(settings.MEDIA_ROOT) / name


def dataset_export_run(
    *, export: DatasetExport, progress: Callable[[int, int], None] | None = None
) -> DatasetExport:
    """Write an export record's file into MEDIA_ROOT and mark the record done (or failed).

    Raises ExportError/OSError after recording the failure, so callers can report it.
    """
    name, path = _export_path(export)
    options = ExportOptions(export.format, export.include_system, export.scrub_pii)
    filters = ExportFilters.from_json(export.filters)
    reporter = _ProgressRecorder(export.pk, progress)
    try:
        result = export_write(
            filters=filters,
            options=options,
            path=path,
            progress=reporter,
            extra_manifest={"export_id": export.pk},
        )
    except Exception as exc:
        # Whatever went wrong, the record must not stay "running" or claim a file.
        export.mark_failed(failure_message(exc))
        raise
    finally:
        reporter.close()
    counts = result.manifest["counts"]
    export.mark_done(
        file_name=name,
        sha256=result.sha256,
        manifest=result.manifest,
        exported_count=counts["dialogues_written"],
        skipped_count=counts["dialogues_skipped_not_approved"],
        record_count=counts["records"],
        total_count=counts["dialogues_approved"],
    )
    return export


def failure_message(exc: BaseException) -> str:
    """What to tell the person who started the export."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        return f"Could not write the export file: {reason}{where}."
    if isinstance(exc, ExportError):
        return str(exc)
    return f"Unexpected error ({type(exc).__name__}): {exc}"


class _ProgressRecorder:
    """Writes progress to the export row from outside the export's read-only snapshot.

    The reads hold a READ ONLY transaction on the default connection; progress goes through a
    second connection so pollers see it while the export runs. SQLite (one writer, small
    installs, inline exports) skips the row updates.
    """

    def __init__(self, export_id: int, callback: Callable[[int, int], None] | None):
        self.export_id = export_id
        self.callback = callback
        self.side = None
        if connection.vendor == "postgresql":
            from django.db import connections

            self.side = connections.create_connection("default")

    def __call__(self, done: int, total: int) -> None:
        if self.side is not None:
            with self.side.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {DatasetExport._meta.db_table} SET progress_count = %s "
                    "WHERE id = %s AND status = %s",
                    [done, self.export_id, DatasetExport.Status.RUNNING],
                )
        if self.callback is not None:
            self.callback(done, total)

    def close(self) -> None:
        if self.side is not None:
            self.side.close()


def dataset_export_claim_and_run(*, export_id: int) -> DatasetExport | None:
    """Run a pending export once, for the task: claim it with a conditional UPDATE (so two
    workers never write the same export), or reclaim it when its worker died mid-run (started
    longer ago than the task time limit). Returns None when there is nothing to do."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    claimed = (
        DatasetExport.objects.filter(pk=export_id)
        .filter(
            Q(status=DatasetExport.Status.PENDING)
            | Q(status=DatasetExport.Status.RUNNING, started_at__lt=stale)
        )
        .update(status=DatasetExport.Status.RUNNING, started_at=now, progress_count=0)
    )
    if not claimed:
        return None
    return dataset_export_run(export=DatasetExport.objects.get(pk=export_id))


def dataset_export_start(
    *, options: ExportOptions, filters: ExportFilters, created_by: Any
) -> DatasetExport:
    """Create an export record and run it: inline when small or without a broker, otherwise in
    a Celery task (enqueued once the record is committed) so no web worker is tied up.

    Raises EmptyExportError (and records nothing) when no selected dialogue is approved; any
    later failure is recorded on the returned export (status failed, error).
    """
    export = dataset_export_create(options=options, filters=filters, created_by=created_by)
    if export.total_count == 0:
        export.delete()
        raise EmptyExportError(empty_message(0, export.skipped_count))
    if settings.CELERY_BROKER_URL and export.total_count > settings.SYNTHREVIEW_EXPORT_INLINE_MAX:
        from review.tasks import run_dataset_export

        transaction.on_commit(lambda: run_dataset_export.delay(export.pk))
        return export
    DatasetExport.objects.filter(pk=export.pk).update(
        status=DatasetExport.Status.RUNNING, started_at=timezone.now()
    )
    export.refresh_from_db()
    with contextlib.suppress(ExportError, OSError):  # recorded on the export by the run
        dataset_export_run(export=export)
    return export
