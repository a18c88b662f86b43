"""Dataset export records: create one, run it (inline, from the task or from the command),
claim it for a worker, and report its progress to the admin while it runs."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from celery import signature
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from review.export.formats import ExportOptions
from review.export.selection import (
    EmptyExportError,
    ExportError,
    ExportFilters,
    empty_message,
    selection_breakdown,
    selection_counts,
)
from review.export.writer import ExportResult, Progress, export_stream, export_write
from review.models import DatasetExport

# The task that runs a pending export (review/tasks.py), named so this module need not import
# the tasks module that imports it.
RUN_TASK = "review.run_dataset_export"


def dataset_export_create(
    *,
    options: ExportOptions,
    filters: ExportFilters,
    created_by: Any = None,
    source: str = DatasetExport.Source.ADMIN,
    output_path: str = "",
    requested_by: str = "",
) -> DatasetExport:
    """A pending export record; `dataset_export_run` (inline or from the task) fills it.

    `output_path` is where a command-line export writes ("-" for stdout); without one the
    file goes under MEDIA_ROOT, where the admin serves it.
    """
    approved, skipped = selection_counts(filters)
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
        skipped_count=skipped,
    )


def _destination(export: DatasetExport) -> tuple[str, Path | None]:
    """(the file's name under MEDIA_ROOT for the record, the path to write; None for stdout).

    A command-line export is written once, where it was asked for; the record keeps no copy.
    """
    if export.output_path == "-":
        return "", None
    if export.output_path:
        return "", Path(export.output_path)
    stamp = export.created_at.strftime("%Y%m%dT%H%M%S")
    name = f"exports/synthreview-{export.format}-{export.pk}-{stamp}.jsonl"
    return name, Path(settings.MEDIA_ROOT) / name


def dataset_export_run(
    *,
    export: DatasetExport,
    progress: Progress | None = None,
    stdout: IO[bytes] | None = None,
) -> DatasetExport:
    """Write an export record's file and mark the record done (or failed).

    The file goes to the record's `output_path` (a command-line export; "-" writes to
    `stdout`), else into MEDIA_ROOT. Raises ExportError/OSError after recording the failure,
    so callers can report it.
    """
    options = ExportOptions(export.format, export.include_system, export.scrub_pii)
    filters = ExportFilters.from_json(export.filters)
    file_name, path = _destination(export)
    reporter = _ProgressRecorder(export.pk, progress)
    try:
        result = _write(filters, options, path, stdout, reporter, export.pk)
    except Exception as exc:
        # Whatever went wrong, the record must not stay "running" or claim a file.
        export.mark_failed(failure_message(exc))
        raise
    finally:
        reporter.close()
    counts = result.manifest["counts"]
    export.mark_done(
        file_name=file_name,
        sha256=result.sha256,
        manifest=result.manifest,
        exported_count=counts["dialogues_written"],
        skipped_count=counts["dialogues_skipped_not_approved"]
        + counts["dialogues_skipped_near_duplicate"],
        record_count=counts["records"],
        total_count=counts["dialogues_approved"],
    )
    return export


def _write(
    filters: ExportFilters,
    options: ExportOptions,
    path: Path | None,
    stdout: IO[bytes] | None,
    progress: Progress,
    export_id: int,
) -> ExportResult:
    extra = {"export_id": export_id}
    if path is not None:
        return export_write(
            filters=filters, options=options, path=path, progress=progress, extra_manifest=extra
        )
    if stdout is None:
        raise ExportError("This export writes to stdout: run it from the command line.")
    return export_stream(
        filters=filters, options=options, stream=stdout, progress=progress, extra_manifest=extra
    )


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

    On PostgreSQL the reads hold a REPEATABLE READ READ ONLY transaction on the default
    connection, which can neither write the row nor let a poller see a write; progress goes
    through a second connection so the admin's progress bar moves while the export runs.
    SQLite (one writer, small installs, exports inline in the request that polls nothing)
    skips the row updates.
    """

    def __init__(self, export_id: int, callback: Progress | None):
        self.export_id = export_id
        self.callback = callback
        self.side = None
        if connection.vendor == "postgresql":
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


def dataset_export_mark_running(*, export: DatasetExport) -> None:
    """Mark an export as running where it is started (inline or from the command line)."""
    DatasetExport.objects.filter(pk=export.pk).update(
        status=DatasetExport.Status.RUNNING, started_at=timezone.now()
    )
    export.refresh_from_db()


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
        counts = selection_breakdown(filters)
        raise EmptyExportError(empty_message(0, counts.not_approved, counts.near_duplicate))
    if settings.CELERY_BROKER_URL and export.total_count > settings.SYNTHREVIEW_EXPORT_INLINE_MAX:
        task = signature(RUN_TASK, args=(export.pk,))
        transaction.on_commit(task.delay)
        return export
    dataset_export_mark_running(export=export)
    with contextlib.suppress(ExportError, OSError):  # recorded on the export by the run
        dataset_export_run(export=export)
    return export
