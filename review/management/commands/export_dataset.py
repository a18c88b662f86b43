"""`manage.py export_dataset`: approved dialogues as a training set (see docs/export.md)."""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from review import export
from review.models import DatasetExport


class Command(BaseCommand):
    help = (
        "Export approved dialogues as OpenAI chat JSONL, ShareGPT JSONL or DPO preference "
        "pairs, with a manifest beside the file. Recorded as a DatasetExport (file kept in "
        "MEDIA_ROOT, downloadable from the admin)."
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
            )
            export.filters_validate(filters)
        except export.ExportError as exc:
            raise CommandError(str(exc)) from None
        to_stdout = opts["output"] == "-"
        output = None if to_stdout else Path(opts["output"]).expanduser().absolute()
        if output is not None:
            _check_writable(output)
        approved, not_approved = export.selection_counts(filters)
        if approved == 0:
            raise CommandError(export.empty_message(approved, not_approved))

        record = export.dataset_export_create(
            options=options,
            filters=filters,
            source=DatasetExport.Source.CLI,
            output_path="-" if to_stdout else str(output),
            requested_by=_os_user(),
        )
        DatasetExport.objects.filter(pk=record.pk).update(status=DatasetExport.Status.RUNNING)
        bar = _ProgressBar(self.stderr._out) if sys.stderr.isatty() else None
        try:
            export.dataset_export_run(export=record, progress=bar)
        except (export.ExportError, OSError) as exc:
            raise CommandError(export.failure_message(exc)) from None
        finally:
            if bar is not None:
                bar.close()
        stored = Path(record.file.path)
        try:
            if to_stdout:
                with stored.open("rb") as source:
                    shutil.copyfileobj(source, sys.stdout.buffer, 1 << 20)
                sys.stdout.buffer.flush()
            else:
                _publish(export.manifest_path_for(stored), export.manifest_path_for(output))
                _publish(stored, output)
        except OSError as exc:
            # A failed export leaves no files behind: not in MEDIA_ROOT, not beside --output.
            record.mark_failed(export.failure_message(exc))
            leftovers = [stored, export.manifest_path_for(stored)]
            if output is not None:
                leftovers.append(export.manifest_path_for(output))
            for path in leftovers:
                path.unlink(missing_ok=True)
            raise CommandError(export.failure_message(exc)) from None

        counts = record.manifest["counts"]
        where = "stdout" if to_stdout else str(output)
        self.stderr.write(
            f"Exported {counts['dialogues_written']} dialogues ({counts['records']} records, "
            f"format {options.format}) to {where}; "
            f"{counts['dialogues_skipped_not_approved']} skipped: not approved.\n"
            f"sha256 {record.sha256}; export #{record.pk}"
            + ("" if to_stdout else f"; manifest {export.manifest_path_for(output)}")
            + "."
        )
        pii_counts = record.manifest["pii"]
        if pii_counts["dialogues_with_pii"] and not options.scrub_pii:
            self.stderr.write(
                f"Warning: {pii_counts['dialogues_with_pii']} exported dialogues contain likely "
                "personal data; --scrub-pii replaces it."
            )


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


def _publish(source: Path, target: Path) -> None:
    """Copy `source` to `target` atomically: a temporary file beside it, renamed when complete."""
    part = export.AtomicFile(target)
    try:
        with source.open("rb") as data:
            while block := data.read(1 << 20):
                part.write(block)
        part.commit()
    except BaseException:
        part.discard()
        raise


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
