"""Reading the selection in one ordered stream and writing the lines, the file and its manifest.

- One query: the selected approved dialogues' live turns ordered by (dialogue, position), on a
  server-side cursor read `CHUNK_SIZE` rows at a time (the next chunk by a thread while this
  one is formatted), so memory stays flat at any size and the query count is constant.
  `itertools.groupby` cuts it into dialogues for the formatter.
- One snapshot: every read runs in one REPEATABLE READ READ ONLY transaction on PostgreSQL, so
  an edit made during an export lands in the next one.
- Deterministic: stable ordering and encoding give the same bytes (and sha256) for the same
  filters over unchanged data.
- Atomic: a file is written under a temporary name beside its target and renamed into place
  only when complete, manifest included; on any failure neither is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, groupby, islice
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from django.db import connection, transaction
from django.db.models import Case, QuerySet, When
from django.db.models.functions import NullIf

import synthreview
from generation.models import Dialogue, Persona, Scenario, Side, Turn
from generation.rules import render_template
from review import pii
from review.export.formats import DialogueFormatter, DialogueTurns, ExportOptions, ExportStats
from review.export.selection import (
    EmptyExportError,
    ExportFilters,
    SelectionCounts,
    dialogues_exportable,
    empty_message,
    selection_breakdown,
)
from review.models import DatasetExport

# Rows per fetch from the server-side cursor.
CHUNK_SIZE = 20000
# Lines are written, and progress reported, once per this many dialogues.
PROGRESS_EVERY = 1000

Progress = Callable[[int, int], None]


@dataclass
class ExportResult:
    path: Path | None  # None when streamed
    manifest_path: Path | None
    sha256: str
    manifest: dict[str, Any]


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
        # On disk before the rename: a crash must not leave a complete name on partial data.
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


def manifest_path_for(path: Path) -> Path:
    """`train.jsonl` → `train.manifest.json`, beside it."""
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(f"{stem}.manifest.json")


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def export_write(
    *,
    filters: ExportFilters,
    options: ExportOptions,
    path: Path,
    progress: Progress | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> ExportResult:
    """Write the export to `path`, and its manifest beside it, from one snapshot.

    Raises EmptyExportError (and writes nothing) when no record would be written, and lets
    OSError through after removing the temporary files.
    """
    target = AtomicFile(path)
    manifest_path = manifest_path_for(path)
    try:
        sha256, manifest = _export(filters, options, target.write, path.name, progress)
        manifest.update(extra_manifest or {})
        manifest_file = AtomicFile(manifest_path)
        try:
            manifest_file.write(manifest_bytes(manifest))
            manifest_file.commit()
            target.commit()
        except BaseException:
            # Neither file stays under its final name if either could not be completed.
            manifest_file.discard()
            if manifest_file.committed and not target.committed:
                manifest_path.unlink(missing_ok=True)
            raise
    except BaseException:
        target.discard()
        raise
    return ExportResult(path, manifest_path, sha256, manifest)


def export_stream(
    *,
    filters: ExportFilters,
    options: ExportOptions,
    stream: IO[bytes],
    progress: Progress | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> ExportResult:
    """Write the export to an open binary stream (stdout); the manifest is only returned."""
    sha256, manifest = _export(filters, options, stream.write, "-", progress)
    stream.flush()
    manifest.update(extra_manifest or {})
    return ExportResult(None, None, sha256, manifest)


def _export(
    filters: ExportFilters,
    options: ExportOptions,
    write: Callable[[bytes], Any],
    file_name: str,
    progress: Progress | None,
) -> tuple[str, dict[str, Any]]:
    """Stream every line through `write`: (sha256 of the bytes written, the manifest)."""
    digest = hashlib.sha256()
    with _snapshot():
        counts = selection_breakdown(filters)
        if counts.approved == 0:
            raise EmptyExportError(empty_message(0, counts.not_approved, counts.near_duplicate))
        dialogues = dialogues_exportable(filters)
        scenario_ids = dialogues.values("scenario_id")
        prompts = _system_prompts(scenario_ids)
        formatter = DialogueFormatter(
            options,
            prompts,
            _scenario_slugs(scenario_ids),
            _rendered_prompts(dialogues, prompts) if options.include_system else {},
        )
        block: list[bytes] = []
        dialogue_turns = _dialogue_turns(dialogues, with_rejected=formatter.is_dpo)
        for done, dialogue in enumerate(dialogue_turns, start=1):
            block += formatter.lines(dialogue)
            if done % PROGRESS_EVERY == 0:
                _write_block(block, digest, write)
                if progress is not None:
                    progress(done, counts.approved)
        _write_block(block, digest, write)
    stats = formatter.finish()
    if stats.records == 0:
        raise EmptyExportError(
            f"Nothing to export: none of the {counts.approved} approved dialogues has "
            + (
                "a corrected assistant turn (DPO pairs come from corrections)."
                if formatter.is_dpo
                else "an assistant turn."
            )
        )
    if progress is not None:
        progress(counts.approved, counts.approved)
    sha256 = digest.hexdigest()
    return sha256, _manifest(filters, options, stats, counts, sha256, file_name)


def _write_block(block: list[bytes], digest: Any, write: Callable[[bytes], Any]) -> None:
    data = b"".join(block)
    block.clear()
    digest.update(data)
    write(data)


@contextlib.contextmanager
def _snapshot() -> Iterator[None]:
    """One consistent view of the data for every read of the export.

    Inside a caller's transaction (tests, or a service composing this) that transaction is the
    snapshot already. SQLite serialises writers, so its transaction is consistent as is;
    PostgreSQL's default READ COMMITTED would let each read see newer data.
    """
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _dialogue_turns(
    dialogues: QuerySet[Dialogue], *, with_rejected: bool
) -> Iterator[DialogueTurns]:
    """The dialogues' live turns, one dialogue at a time, in dialogue id order.

    Rows come as plain tuples: at a million turns per-row model instances would cost more than
    the rest of the export.
    """
    columns = ["dialogue_id", "dialogue__scenario_id", "side", "text", "model"]
    live = Turn.objects.filter(dialogue__in=dialogues.values("pk"), discarded_at__isnull=True)
    if with_rejected:
        # What the model first wrote, only where a reviewer changed an assistant turn: the one
        # original DPO writes; NULL elsewhere, so the other originals are never transferred.
        corrected = Case(When(side=Side.ASSISTANT, then=NullIf("original_text", "text")))
        live = live.annotate(rejected=corrected)
        columns.append("rejected")
    rows = (
        live.order_by("dialogue_id", "position", "pk")
        .values_list(*columns)
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for _, turns in groupby(chain.from_iterable(_read_ahead(rows)), key=itemgetter(0)):
        yield DialogueTurns(*zip(*turns, strict=True))


def _read_ahead(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    """`rows` in chunks, the next one fetched by a thread while the caller handles this one.

    A server-side cursor makes the database produce each chunk only when it is fetched; read
    one chunk ahead, the database works while Python formats. The first chunk is read here, so
    the query runs on this thread's connection, inside the export's snapshot; the thread then
    only fetches from that cursor, never while this thread does.
    """
    chunk = list(islice(rows, CHUNK_SIZE))
    with ThreadPoolExecutor(max_workers=1) as reader:
        while chunk:
            ahead = reader.submit(list, islice(rows, CHUNK_SIZE))
            yield chunk
            chunk = ahead.result()


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


def _rendered_prompts(dialogues: QuerySet[Dialogue], prompts: dict[int, str]) -> dict[int, str]:
    """{dialogue: its system prompt as generation rendered it} for the scenarios whose prompt
    is a template ({topic}, scenario variables, {{ for a brace)); one query, only for those.
    A prompt that does not render (edited after the run) is written as it stands."""
    templated = [pk for pk, prompt in prompts.items() if "{" in prompt or "}" in prompt]
    if not templated:
        return {}
    names: dict[int, dict[str, str]] = {}
    for scenario_id, side, name in Persona.objects.filter(scenario_id__in=templated).values_list(
        "scenario_id", "side", "name"
    ):
        names.setdefault(scenario_id, {})[side] = name
    rendered = {}
    rows = dialogues.filter(scenario_id__in=templated).values_list(
        "pk", "scenario_id", "scenario__name", "topic", "variables"
    )
    for pk, scenario_id, scenario, topic, chosen in rows.iterator(chunk_size=CHUNK_SIZE):
        sides = names.get(scenario_id, {})
        try:
            rendered[pk] = render_template(
                prompts[scenario_id],
                topic=topic,
                scenario=scenario,
                persona=sides.get(Side.ASSISTANT, ""),
                partner=sides.get(Side.USER, ""),
                variables=chosen if isinstance(chosen, dict) else {},
            ).strip()
        except (KeyError, IndexError, ValueError):
            continue
    return rendered


def _scenario_slugs(scenario_ids: QuerySet) -> dict[int, str]:
    return dict(Scenario.objects.filter(pk__in=scenario_ids).values_list("pk", "slug"))


def _manifest(
    filters: ExportFilters,
    options: ExportOptions,
    stats: ExportStats,
    counts: SelectionCounts,
    sha256: str,
    file_name: str,
) -> dict[str, Any]:
    return {
        "synthreview_version": synthreview.__version__,
        "format": options.format,
        "file": file_name,
        "sha256": sha256,
        "filters": filters.as_json(),
        "options": {
            "include_system": options.include_system,
            "scrub_pii": options.scrub_pii,
            "include_near_duplicates": filters.include_near_duplicates,
        },
        "counts": _manifest_counts(options, stats, counts),
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


def _manifest_counts(
    options: ExportOptions, stats: ExportStats, counts: SelectionCounts
) -> dict[str, int]:
    is_dpo = options.format == DatasetExport.Format.DPO
    return {
        "dialogues_selected": counts.selected,
        "dialogues_approved": counts.approved,
        # Every selected dialogue that is not approved; the three below say why.
        "dialogues_skipped_not_approved": counts.not_approved,
        "dialogues_skipped_awaiting_review": counts.awaiting_review,
        "dialogues_skipped_rejected": counts.rejected,
        "dialogues_skipped_not_complete": counts.not_complete,
        # Approved, but nearly a copy of a dialogue completed earlier (review.duplicates).
        "dialogues_skipped_near_duplicate": counts.near_duplicate,
        "dialogues_skipped_no_assistant_turn": stats.dialogues_without_assistant,
        "dialogues_without_pairs": counts.approved - stats.dialogues_written if is_dpo else 0,
        "dialogues_written": stats.dialogues_written,
        "records": stats.records,
        "messages": stats.messages,
        "merged_turns": stats.merged_turns,
        "dropped_trailing_user_turns": stats.dropped_trailing_user_turns,
        "skipped_blank_turns": stats.skipped_blank_turns,
    }
