"""Admin export flow through the Django test client: intermediate page, inline and background
exports, progress polling, download, and the export task."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.urls import reverse

from generation.models import Dialogue
from review import export
from review.models import DatasetExport, DialogueReview
from review.tasks import run_dataset_export
from tests.factories import RunFactory, UserFactory, dialogue_with_turns

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:generation_dialogue_changelist"


@pytest.fixture(autouse=True)
def media(tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def approved(**kwargs):
    dialogue = dialogue_with_turns(4, **kwargs)
    DialogueReview.objects.create(dialogue=dialogue, status="approved")
    return dialogue


def selection(n_approved: int, n_other: int, run=None) -> list[int]:
    run = run or RunFactory()
    ids = [approved(run=run).pk for _ in range(n_approved)]
    ids += [dialogue_with_turns(run=run).pk for _ in range(n_other)]
    return ids


def post_action(client, ids, action="export_dialogues_action", url=CHANGELIST, **extra):
    data = {"action": action, ACTION_CHECKBOX_NAME: [str(pk) for pk in ids], "index": "0"}
    data.update(extra)
    return client.post(reverse(url), data)


def test_intermediate_page_counts_the_selection(staff_client):
    ids = selection(3, 1)
    response = post_action(staff_client, ids)
    assert response.status_code == 200
    assert response.templates[0].name == "admin/review/export_intermediate.html"
    body = response.content.decode()
    assert "3 approved dialogues will be exported" in body
    assert "1 skipped: not approved" in body
    for pk in ids:
        assert f'value="{pk}"' in body
    assert not DatasetExport.objects.exists()


def test_apply_exports_inline_and_offers_the_file(staff_client, admin_user, media):
    ids = selection(3, 1)
    response = post_action(
        staff_client, ids, apply="1", format="openai", include_system="on", scrub_pii="on"
    )
    record = DatasetExport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:review_datasetexport_change", args=[record.pk])
    assert record.status == DatasetExport.Status.DONE
    assert record.created_by == admin_user
    assert record.scrub_pii and record.include_system
    assert (record.exported_count, record.skipped_count, record.record_count) == (3, 1, 3)
    assert record.filters == {"dialogue_ids": sorted(ids)}

    page = staff_client.get(response["Location"])
    assert "3 exported, 1 skipped: not approved" in page.content.decode()
    assert "hx-get" not in page.content.decode()  # finished: no polling

    download = staff_client.get(reverse("admin:review_datasetexport_download", args=[record.pk]))
    assert download.status_code == 200
    assert "attachment" in download["Content-Disposition"]
    body = b"".join(download.streaming_content)
    assert body == Path(record.file.path).read_bytes()
    assert [len(json.loads(line)["messages"]) for line in body.splitlines()] == [4, 4, 4]

    manifest = staff_client.get(reverse("admin:review_datasetexport_manifest", args=[record.pk]))
    assert json.loads(manifest.content)["sha256"] == record.sha256


def test_nothing_approved_reports_and_records_nothing(staff_client):
    ids = selection(0, 2)
    response = post_action(staff_client, ids, apply="1", format="openai")
    assert response.status_code == 302
    assert not DatasetExport.objects.exists()
    page = staff_client.get(response["Location"])
    assert "none of the 2 selected dialogues is approved" in page.content.decode()


def test_invalid_form_shows_the_page_again(staff_client):
    ids = selection(1, 0)
    response = post_action(staff_client, ids, apply="1", format="yaml")
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not DatasetExport.objects.exists()


def test_runs_action_exports_approved_dialogues_of_the_runs(staff_client):
    run = RunFactory()
    selection(2, 3, run=run)
    other = RunFactory()
    selection(1, 0, run=other)
    page = post_action(
        staff_client,
        [run.pk],
        action="export_runs_action",
        url="admin:generation_generationrun_changelist",
    )
    assert "2 approved dialogues will be exported" in page.content.decode()
    post_action(
        staff_client,
        [run.pk],
        action="export_runs_action",
        url="admin:generation_generationrun_changelist",
        apply="1",
        format="sharegpt",
    )
    record = DatasetExport.objects.get()
    assert record.filters == {"run_ids": [run.pk]}
    assert (record.exported_count, record.skipped_count) == (2, 3)


def test_large_export_runs_in_a_task_with_polled_progress(
    staff_client, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/3"
    settings.SYNTHREVIEW_EXPORT_INLINE_MAX = 2
    ids = selection(3, 0)
    page = post_action(staff_client, ids)
    assert "runs in the background" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_action(staff_client, ids, apply="1", format="dpo")
    record = DatasetExport.objects.get()
    assert record.status == DatasetExport.Status.PENDING
    assert len(callbacks) == 1

    progress_url = reverse("admin:review_datasetexport_progress", args=[record.pk])
    change = staff_client.get(response["Location"])
    assert f'hx-get="{progress_url}"' in change.content.decode()
    partial = staff_client.get(progress_url, headers={"HX-Request": "true"})
    assert "0 of 3 dialogues" in partial.content.decode()
    assert "<html" not in partial.content.decode()

    callbacks[0]()  # the on_commit enqueue; eager, so the task runs here
    record.refresh_from_db()
    # No corrections, so no DPO pairs: recorded as failed with the reason, no file.
    assert record.status == DatasetExport.Status.FAILED
    assert "corrected assistant turn" in record.error
    partial = staff_client.get(progress_url, headers={"HX-Request": "true"}).content.decode()
    assert "Export failed" in partial and "hx-get" not in partial


def test_task_is_idempotent(media):
    selection(2, 0)
    record = export.dataset_export_create(
        options=export.ExportOptions("openai"), filters=export.ExportFilters()
    )
    run_dataset_export(record.pk)
    record.refresh_from_db()
    assert record.status == DatasetExport.Status.DONE
    first = Path(record.file.path).read_bytes()
    finished_at = record.finished_at
    run_dataset_export(record.pk)  # a redelivered message: nothing to do
    record.refresh_from_db()
    assert record.finished_at == finished_at
    assert export.dataset_export_claim_and_run(export_id=record.pk) is None
    assert Path(record.file.path).read_bytes() == first
    assert len(list((media / "exports").glob("*.jsonl"))) == 1


def test_task_reclaims_an_export_whose_worker_died(media, settings):
    from datetime import timedelta

    from django.utils import timezone

    selection(1, 0)
    record = export.dataset_export_create(
        options=export.ExportOptions("openai"), filters=export.ExportFilters()
    )
    DatasetExport.objects.filter(pk=record.pk).update(
        status=DatasetExport.Status.RUNNING, started_at=timezone.now() - timedelta(minutes=1)
    )
    assert export.dataset_export_claim_and_run(export_id=record.pk) is None  # still in flight
    DatasetExport.objects.filter(pk=record.pk).update(
        started_at=timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 1)
    )
    assert export.dataset_export_claim_and_run(export_id=record.pk).status == "done"


def test_downloads_need_staff_and_view_permission(client, media):
    selection(1, 0)
    record = export.dataset_export_create(
        options=export.ExportOptions("openai"), filters=export.ExportFilters()
    )
    export.dataset_export_run(export=record)
    url = reverse("admin:review_datasetexport_download", args=[record.pk])

    client.force_login(UserFactory(reviewer=True))  # not staff
    assert client.get(url).status_code == 302  # to the admin login
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_datasetexport"))
    client.force_login(staff)
    assert client.get(url).status_code == 200


def test_staff_without_export_permission_cannot_export(client):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_dialogue"]))
    client.force_login(staff)
    ids = selection(1, 0)
    response = post_action(client, ids, apply="1", format="openai")
    assert response.status_code in (200, 302)
    assert not DatasetExport.objects.exists()


def test_export_list_and_detail_pages(staff_client, django_assert_max_num_queries):
    for _ in range(3):
        selection(1, 0)
        record = export.dataset_export_create(
            options=export.ExportOptions("openai"), filters=export.ExportFilters()
        )
        export.dataset_export_run(export=record)
    with django_assert_max_num_queries(12):
        listing = staff_client.get(reverse("admin:review_datasetexport_changelist"))
    assert listing.content.decode().count("Download</a>") == 3
    detail = staff_client.get(reverse("admin:review_datasetexport_change", args=[record.pk]))
    body = detail.content.decode()
    assert "synthreview_version" in body  # the manifest is shown
    assert reverse("admin:review_datasetexport_download", args=[record.pk]) in body


def test_deleting_an_export_removes_its_files(staff_client, media):
    selection(1, 0)
    record = export.dataset_export_create(
        options=export.ExportOptions("openai"), filters=export.ExportFilters()
    )
    export.dataset_export_run(export=record)
    path = Path(record.file.path)
    assert path.exists() and export.manifest_path_for(path).exists()
    staff_client.post(
        reverse("admin:review_datasetexport_delete", args=[record.pk]), {"post": "yes"}
    )
    assert not DatasetExport.objects.exists()
    assert not path.exists() and not export.manifest_path_for(path).exists()


def hidden_inputs(html: str) -> list[tuple[str, str]]:
    """The hidden fields of a page's forms, as a browser would post them back."""
    return re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)


def confirm(client, url: str, page, **fields):
    """Submit the confirmation page's form the way the browser does: its hidden fields, the
    chosen options and the Export button, to the address the page was shown at."""
    data: dict[str, list[str]] = {}
    for name, value in hidden_inputs(page.content.decode()):
        data.setdefault(name, []).append(value)
    data.pop("csrfmiddlewaretoken", None)
    return client.post(url, {**data, **fields, "apply": "Export"})


def test_select_all_then_export_exports_the_whole_list_and_records_the_filter(staff_client):
    """Admin › Dialogues › tick all › "Select all N" › Export › the confirmation › Export."""
    ids = selection(3, 2)
    url = reverse(CHANGELIST)
    page = staff_client.post(
        url, {"action": "export_dialogues_action", "select_across": "1", "index": "0",
              ACTION_CHECKBOX_NAME: [str(pk) for pk in ids[:2]]},  # the ticked page rows
    )  # fmt: skip
    body = page.content.decode()
    assert "5 dialogues selected" in body and 'name="select_across" value="1"' in body
    response = confirm(staff_client, url, page, format="openai")
    record = DatasetExport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:review_datasetexport_change", args=[record.pk])
    assert record.filters == {}  # the whole list: a filter, not 5 ids
    assert (record.exported_count, record.skipped_count) == (3, 2)


def test_select_all_of_one_scenario_records_the_scenario(staff_client):
    run = RunFactory()
    selection(2, 1, run=run)
    selection(1, 0)  # another scenario
    url = reverse(CHANGELIST) + f"?scenario__id__exact={run.scenario_id}"
    data = {"action": "export_dialogues_action", "select_across": "1", "index": "0"}
    page = staff_client.post(url, {**data, ACTION_CHECKBOX_NAME: ["1"]})
    assert "3 dialogues selected" in page.content.decode()
    confirm(staff_client, url, page, format="sharegpt")
    record = DatasetExport.objects.get()
    assert record.filters == {"scenario": run.scenario.slug}
    assert (record.exported_count, record.skipped_count) == (2, 1)


def test_select_all_of_a_search_records_the_ids_it_found(staff_client):
    ids = selection(2, 1)
    Dialogue.objects.filter(pk=ids[0]).update(topic="cosine rule")
    url = reverse(CHANGELIST) + "?q=cosine"
    data = {"action": "export_dialogues_action", "select_across": "1", "index": "0"}
    page = staff_client.post(url, {**data, ACTION_CHECKBOX_NAME: [str(ids[0])]})
    assert "1 dialogue selected" in page.content.decode()
    confirm(staff_client, url, page, format="openai")
    record = DatasetExport.objects.get()
    assert record.filters == {"dialogue_ids": [ids[0]]}


def test_select_all_runs_records_every_run(staff_client):
    run = RunFactory()
    selection(2, 1, run=run)
    url = reverse("admin:generation_generationrun_changelist")
    data = {"action": "export_runs_action", "select_across": "1", "index": "0"}
    page = staff_client.post(url, {**data, ACTION_CHECKBOX_NAME: [str(run.pk)]})
    confirm(staff_client, url, page, format="openai")
    record = DatasetExport.objects.get()
    assert record.filters == {}
    assert (record.exported_count, record.skipped_count) == (2, 1)


def test_outcome_reports_dialogues_without_an_assistant_turn(staff_client):
    from generation.models import Turn

    ids = selection(3, 0)
    Turn.objects.filter(dialogue_id=ids[0], side="assistant").update(text="  ")
    response = post_action(staff_client, ids, apply="1", format="openai")
    page = staff_client.get(response["Location"]).content.decode()
    assert "2 exported, 0 skipped: not approved, 1 skipped: no assistant turn." in page
