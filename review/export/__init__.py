"""Dataset export: approved dialogues as OpenAI chat JSONL, ShareGPT JSONL or DPO pairs.

Only approved dialogues, only live turns (never ones discarded by a regeneration), always the
corrected text; docs/export.md has the formats and their rules. One module per job:

- `selection`: which dialogues an export covers, and the counts of what it writes and skips;
- `formats`: one dialogue's turns to its output lines, per format;
- `writer`: the ordered stream of turns, the file, its manifest, the snapshot;
- `records`: `DatasetExport` records, run inline, by the task or by the command.
"""

from __future__ import annotations

from review.export.formats import FORMATS, MERGE_SEPARATOR, DialogueTurns, ExportOptions
from review.export.records import (
    dataset_export_claim_and_run,
    dataset_export_create,
    dataset_export_mark_running,
    dataset_export_run,
    dataset_export_start,
    failure_message,
)
from review.export.selection import (
    EmptyExportError,
    ExportError,
    ExportFilters,
    SelectionCounts,
    dialogues_exportable,
    dialogues_selected,
    empty_message,
    filters_validate,
    parse_since,
    selection_breakdown,
    selection_counts,
)
from review.export.writer import (
    AtomicFile,
    ExportResult,
    export_stream,
    export_write,
    manifest_bytes,
    manifest_path_for,
)

__all__ = [
    "FORMATS",
    "MERGE_SEPARATOR",
    "AtomicFile",
    "DialogueTurns",
    "EmptyExportError",
    "ExportError",
    "ExportFilters",
    "ExportOptions",
    "ExportResult",
    "SelectionCounts",
    "dataset_export_claim_and_run",
    "dataset_export_create",
    "dataset_export_mark_running",
    "dataset_export_run",
    "dataset_export_start",
    "dialogues_exportable",
    "dialogues_selected",
    "empty_message",
    "export_stream",
    "export_write",
    "failure_message",
    "filters_validate",
    "manifest_bytes",
    "manifest_path_for",
    "parse_since",
    "selection_breakdown",
    "selection_counts",
]
