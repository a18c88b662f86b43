"""The export task on a real `celery worker` process, against Redis and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from review import export
from review.models import DatasetExport, DialogueReview
from review.tasks import run_dataset_export
from tests.factories import dialogue_with_turns
from tests.tooling.workers import CeleryWorker, unique_queue


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_export_task_runs_on_a_worker(tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    for _ in range(5):
        dialogue = dialogue_with_turns(6)
        DialogueReview.objects.create(dialogue=dialogue, status="approved")
    record = export.dataset_export_create(
        options=export.ExportOptions("sharegpt"), filters=export.ExportFilters()
    )
    queue = unique_queue("export")
    with CeleryWorker(
        queue=queue, concurrency=1, env={"MEDIA_ROOT": settings.MEDIA_ROOT}
    ) as worker:
        run_dataset_export.apply_async((record.pk,), queue=queue)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record.refresh_from_db()
            if record.is_finished:
                break
            time.sleep(0.2)
        assert record.status == DatasetExport.Status.DONE, worker.output()

    expected = export.export_write(
        filters=export.ExportFilters(),
        options=export.ExportOptions("sharegpt"),
        path=tmp_path / "here.jsonl",
    )
    assert Path(record.file.path).read_bytes() == expected.path.read_bytes()
    assert record.sha256 == expected.sha256
    assert record.exported_count == 5
