"""`manage.py export_dataset`: approved dialogues as a training set (see docs/export.md)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from review import export
from review.models import DatasetExport


class Command(BaseCommand):
    help = (
        "Export approved dialogues as OpenAI chat JSONL, ShareGPT JSONL or DPO preference "
        "pairs, with a manifest beside the file. Recorded as a DatasetExport (who, when, "
        "filters, counts, sha256, manifest, where the file was written)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", required=True, help=f"One of {', '.join(export.FORMATS)}.")
        parser.add_argument(
            "--run",
            dest="runs",
            type=int,
            action="append",
            default=[],
            metavar="ID",
            help="Only dialogues of this generation run (repeatable).",
        )
        parser.add_argument("--scenario", default="", metavar="SLUG")
        parser.add_argument(
            "--since",
            default="",
            metavar="DATE",
            help="Only dialogues approved at or after DATE (YYYY-MM-DD or ISO 8601).",
        )
        parser.add_argument(
            "--include-system",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Start each example with the assistant persona's system prompt (default), "
            "or not (--no-system).",
        )
        parser.add_argument("--no-system", dest="include_system", action="store_false")
        parser.add_argument(
            "--scrub-pii",
            action="store_true",
            help="Replace emails, phone/card numbers, IBANs and IP addresses with placeholders.",
        )
        parser.add_argument(
            "--include-near-duplicates",
            action="store_true",
            help="Also write approved dialogues marked as near-duplicates of earlier ones "
            "(left out by default; see manage.py find_duplicates).",
        )
        parser.add_argument(
            "--output", required=True, metavar="FILE", help="Where to write; - for stdout."
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            options = export.ExportOptions(
                opts["format"], opts["include_system"], opts["scrub_pii"]
            )
            filters = export.ExportFilters(
                run_ids=tuple(opts["runs"]),
                scenario=opts["scenario"],
                since=export.parse_since(opts["since"]) if opts["since"] else None,
                include_near_duplicates=opts["include_near_duplicates"],
            )
            export.filters_validate(filters)
        except export.ExportError as exc:
            raise CommandError(str(exc)) from None
        to_stdout = opts["output"] == "-"
        output = None if to_stdout else Path(opts["output"]).expanduser().absolute()
        if output is not None:
            _check_writable(output)
        counts = export.selection_breakdown(filters)
        if counts.approved == 0:
            raise CommandError(export.empty_message(0, counts.not_approved, counts.near_duplicate))

        record = export.dataset_export_create(
            options=options,
            filters=filters,
            source=DatasetExport.Source.CLI,
            output_path="-" if to_stdout else str(output),
            requested_by=_os_user(),
        )
        export.dataset_export_mark_running(export=record)
        bar = _ProgressBar(self.stderr._out) if sys.stderr.isatty() else None
        try:
            export.dataset_export_run(
                export=record, progress=bar, stdout=sys.stdout.buffer if to_stdout else None
            )
        except (export.ExportError, OSError) as exc:
            raise CommandError(export.failure_message(exc)) from None
        finally:
            if bar is not None:
                bar.close()
        self.stderr.write(_summary(record, output))


def _summary(record: DatasetExport, output: Path | None) -> str:
    counts = record.manifest["counts"]
    skipped = export.SelectionCounts(
        approved=counts["dialogues_approved"],
        awaiting_review=counts["dialogues_skipped_awaiting_review"],
        rejected=counts["dialogues_skipped_rejected"],
        not_complete=counts["dialogues_skipped_not_complete"],
        near_duplicate=counts["dialogues_skipped_near_duplicate"],
    )
    lines = [
        f"Exported {counts['dialogues_written']} dialogues ({counts['records']} records, "
        f"format {record.format}) to {output or 'stdout'}; {skipped.skipped_summary()}.",
        f"sha256 {record.sha256}; export #{record.pk}"
        + (f"; manifest {export.manifest_path_for(output)}." if output else "."),
    ]
    found = record.manifest["pii"]["dialogues_with_pii"]
    if found and not record.scrub_pii:
        lines.append(
            f"Warning: {found} exported dialogues contain likely personal data; --scrub-pii "
            "replaces it."
        )
    return "\n".join(lines)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return ""


def _check_writable(output: Path) -> None:
    """Fail before the export runs, not after, when the target cannot be written."""
    if output.is_dir():
        raise CommandError(f"Cannot write to {output}: it is a directory.")
    if not output.parent.is_dir():
        raise CommandError(f"Cannot write to {output}: directory {output.parent} does not exist.")
    if not os.access(output.parent, os.W_OK):
        raise CommandError(f"Cannot write to {output}: directory {output.parent} is not writable.")


class _ProgressBar:
    """A one-line progress bar on the terminal (stderr), redrawn in place."""

    def __init__(self, stream: Any, width: int = 30):
        self.stream = stream
        self.width = width
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        filled = self.width * done // total if total else self.width
        percent = 100 * done // total if total else 100
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}% "
            f"{done}/{total} dialogues"
        )
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
