from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from generation.models import Dialogue, GenerationRun
from tests.factories import DialogueFactory, RunFactory, dialogue_with_turns


def make_run(**kwargs):
    run = RunFactory(
        requested_count=4, status=GenerationRun.Status.RUNNING, started_at=timezone.now(), **kwargs
    )
    dialogue_with_turns(3, run=run, topic="<script>alert(1)</script>")
    DialogueFactory(
        run=run,
        status=Dialogue.Status.FAILED,
        failure_reason="HTTP 401 from the LLM server: bad key",
    )
    DialogueFactory(run=run, status=Dialogue.Status.GENERATING)
    DialogueFactory(run=run, status=Dialogue.Status.PENDING)
    return run


def test_run_page_shows_progress_failures_and_links(
    client, reviewer, django_assert_max_num_queries
):
    run = make_run()
    client.force_login(reviewer)
    with django_assert_max_num_queries(8):
        response = client.get(run.get_absolute_url())
    html = response.content.decode()
    assert response.status_code == 200
    assert '<progress max="4" value="2"' in html
    assert "HTTP 401 from the LLM server: bad key" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    for dialogue in run.dialogues.all():
        assert dialogue.get_absolute_url() in html
    assert 'hx-trigger="every 2s"' in html  # polling while active
    assert "Cancel run" not in html  # reviewers are not staff


def test_htmx_poll_returns_only_the_partial_and_stops_when_finished(
    client, admin_user, django_assert_max_num_queries
):
    run = make_run()
    client.force_login(admin_user)
    with django_assert_max_num_queries(8):
        response = client.get(run.get_absolute_url(), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="run-live"')
    assert "<html" not in html and "Cancel run" in html
    GenerationRun.objects.filter(pk=run.pk).update(
        status=GenerationRun.Status.FINISHED, finished_at=timezone.now()
    )
    html = client.get(run.get_absolute_url(), headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in html and "Cancel run" not in html


def test_admin_progress_fragment(client, admin_user):
    run = make_run()
    client.force_login(admin_user)
    html = client.get(
        run.get_absolute_url() + "?fragment=progress", headers={"HX-Request": "true"}
    ).content.decode()
    assert html.lstrip().startswith('<section class="run-progress"')
    assert 'hx-trigger="every 2s"' in html and "Dialogues" not in html


def test_cancel_is_staff_only_and_post_only(client, reviewer, admin_user):
    run = make_run()
    url = reverse("generation:run_cancel", args=[run.pk])
    client.force_login(reviewer)
    response = client.post(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.RUNNING
    client.force_login(admin_user)
    assert client.get(url).status_code == 405
    response = client.post(url, follow=True)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED
    assert "Cancelled: 2 unfinished dialogue(s) stopped." in response.content.decode()
    assert run.dialogues.filter(status=Dialogue.Status.COMPLETE).count() == 1


def test_run_list(client, reviewer, django_assert_max_num_queries):
    runs = [make_run() for _ in range(3)]
    client.force_login(reviewer)
    with django_assert_max_num_queries(6):
        response = client.get(reverse("generation:run_list"))
    assert response.status_code == 200
    for run in runs:
        assert run.get_absolute_url() in response.content.decode()


def test_run_pages_need_login(client, db):
    run = make_run()
    assert client.get(run.get_absolute_url()).status_code == 302
    assert client.get(reverse("generation:run_detail", args=[run.pk + 100])).status_code == 302
