from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from generation import services
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
    # Session, user, the permission check (2), run, dialogue count, progress, failures,
    # the personas with their endpoints, other callers (review's judges), the navigation's
    # reviewer check, dialogues.
    with django_assert_max_num_queries(12):
        response = client.get(run.get_absolute_url())
    html = response.content.decode()
    assert response.status_code == 200
    assert '<progress max="4" value="2"' in html
    assert "HTTP 401 from the LLM server: bad key" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    for dialogue in run.dialogues.all():
        assert reverse("review:dialogue", args=[dialogue.pk]) in html
    assert 'hx-trigger="every 2s"' in html  # polling while active
    assert "Cancel run" not in html  # reviewers are not staff


def test_htmx_poll_returns_only_the_partial_and_stops_when_finished(
    client, admin_user, django_assert_max_num_queries
):
    run = make_run()
    client.force_login(admin_user)
    with django_assert_max_num_queries(9):
        response = client.get(run.get_absolute_url(), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="run-live"')
    assert "<html" not in html and "Cancel run" in html
    GenerationRun.objects.filter(pk=run.pk).update(
        status=GenerationRun.Status.FINISHED, finished_at=timezone.now()
    )
    html = client.get(run.get_absolute_url(), headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in html and "Cancel run" not in html


def test_run_page_says_when_its_delayed_first_dialogues_start(
    client, reviewer, django_assert_max_num_queries
):
    run = make_run()
    now = timezone.now()
    soon, later = (
        DialogueFactory(
            run=run, status=Dialogue.Status.PENDING,
            dispatched_at=now + timezone.timedelta(seconds=seconds),
        )
        for seconds in (20, 75)  # dispatched, due in 20 s and 75 s
    )  # fmt: skip
    client.force_login(reviewer)
    with django_assert_max_num_queries(12):  # the progress query counts them too
        html = client.get(run.get_absolute_url()).content.decode()
    assert "2 waiting dialogues start within 1 min 1" in html  # 1 min 14/15 s
    assert "spaced to the endpoints' per-minute limits" in html
    Dialogue.objects.filter(pk=later.pk).update(dispatched_at=now)
    html = client.get(run.get_absolute_url()).content.decode()
    assert "1 waiting dialogue starts within" in html
    Dialogue.objects.filter(pk=soon.pk).update(dispatched_at=now)
    assert "waiting dialogue" not in client.get(run.get_absolute_url()).content.decode()


def test_admin_progress_fragment(client, admin_user):
    run = make_run()
    client.force_login(admin_user)
    html = client.get(
        run.get_absolute_url() + "?fragment=progress", headers={"HX-Request": "true"}
    ).content.decode()
    assert html.lstrip().startswith('<section class="run-progress"')
    assert 'hx-trigger="every 2s"' in html and "Dialogues" not in html


def test_cancel_is_staff_only_and_asks_first(client, reviewer, admin_user):
    run = make_run()
    url = reverse("generation:run_cancel", args=[run.pk])
    client.force_login(reviewer)
    response = client.post(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.RUNNING
    client.force_login(admin_user)
    page = client.get(run.get_absolute_url()).content.decode()
    assert f'href="{url}"' in page  # a link to the confirmation, not a form that cancels
    confirm = client.get(url)
    html = confirm.content.decode()
    assert confirm.status_code == 200
    assert "2 unfinished dialogues</strong>" in html and "Yes, cancel the run" in html
    assert f'<form method="post" action="{url}"' in html
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.RUNNING  # asking changed nothing
    response = client.post(url, follow=True)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED
    assert "Cancelled: 2 unfinished dialogue(s) stopped." in response.content.decode()
    assert run.dialogues.filter(status=Dialogue.Status.COMPLETE).count() == 1
    # Once the run has ended there is nothing to confirm.
    response = client.get(url, follow=True)
    assert "had already ended" in response.content.decode()


def test_a_cancelled_runs_bar_stops_where_the_cancellation_left_it(client, reviewer):
    run = make_run()
    client.force_login(reviewer)
    cancelled = services.run_cancel(run=run)
    assert cancelled == 2
    html = client.get(run.get_absolute_url()).content.decode()
    # One done and one failed of four: half generated, not 100 %.
    assert '<progress max="4" value="2"' in html and "50%" in html and "100%" not in html
    assert "2 of 4 generated, 2 cancelled" in html


def test_demo_runs_say_their_text_is_scripted(client, reviewer):
    run = make_run()
    client.force_login(reviewer)
    html = client.get(run.get_absolute_url()).content.decode()
    assert "writes scripted text" in html
    GenerationRun.objects.filter(pk=run.pk).update(provider="openai")
    assert "writes scripted text" not in client.get(run.get_absolute_url()).content.decode()


@pytest.mark.parametrize("fragment", ["", "?fragment=progress"])
def test_run_pages_refuse_outsiders(client, user, fragment):
    """Runs show topics, costs, who launched them and the LLM server's errors: a logged-in
    user who is neither staff nor reviewer sees none of it."""
    run = make_run()
    client.force_login(user)
    hx = {"HX-Request": "true"} if fragment else {}
    for path in (reverse("generation:run_list"), run.get_absolute_url() + fragment):
        response = client.get(path, headers=hx)
        assert response.status_code == 403, path
        assert "HTTP 401 from the LLM server" not in response.content.decode()
        assert "&lt;script&gt;" not in response.content.decode()
    assert "Runs</a>" not in client.get(reverse("review:queue")).content.decode()


def test_run_pages_are_open_to_holders_of_the_view_permission(client, user):
    user.user_permissions.add(Permission.objects.get(codename="view_generationrun"))
    client.force_login(user)
    assert client.get(make_run().get_absolute_url()).status_code == 200


def test_run_list(client, reviewer, django_assert_max_num_queries):
    runs = [make_run() for _ in range(3)]
    client.force_login(reviewer)
    with django_assert_max_num_queries(7):
        response = client.get(reverse("generation:run_list"))
    assert response.status_code == 200
    for run in runs:
        assert run.get_absolute_url() in response.content.decode()


def test_run_pages_need_login(client, db):
    run = make_run()
    assert client.get(run.get_absolute_url()).status_code == 302
    assert client.get(reverse("generation:run_detail", args=[run.pk + 100])).status_code == 302


def test_run_page_lists_each_endpoint_with_its_limits_offline(client, admin_user, settings):
    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    run = make_run()
    client.force_login(admin_user)
    html = client.get(run.get_absolute_url()).content.decode()
    assert 'id="run-endpoints"' in html and "Teacher → gpt-4o-mini" in html
    assert "offline demo provider" in html and "Offline: not paced." in html


@pytest.mark.redis
def test_run_page_shows_each_endpoints_traffic_and_pacing_live(
    client, admin_user, settings, django_assert_max_num_queries
):
    from celery import current_app

    from generation.engine import pacing
    from generation.llm import ChatRequest, ChatResult, RateLimits, TransientLLMError
    from generation.models import Endpoint, Persona

    eager = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = False  # as with workers: calls are paced
    try:
        endpoint = Endpoint.objects.create(
            name="paid", base_url="http://127.0.0.1:9/v1", requests_per_minute=1200
        )
        run = make_run(provider="openai")
        Persona.objects.filter(scenario=run.scenario).update(endpoint=endpoint, model="m1")
        pacer = pacing.endpoint_pacer(limits=pacing.Limits.of(endpoint), run_id=run.pk)
        request = ChatRequest(model="m1", messages=[], temperature=0, max_tokens=10)
        first = pacer.before(request, keep_waiting=lambda: True)
        pacer.after(first, result=ChatResult(
            text="x", model="m1", prompt_tokens=30, completion_tokens=12, finish_reason="stop",
            rate_limits=RateLimits(limit_tokens=90_000, remaining_tokens=80_000),
        ))  # fmt: skip
        second = pacer.before(request, keep_waiting=lambda: True)
        pacer.after(second, error=TransientLLMError("HTTP 429", status=429, retry_after=30))
        client.force_login(admin_user)
        with django_assert_max_num_queries(9):
            response = client.get(
                run.get_absolute_url() + "?fragment=progress", headers={"HX-Request": "true"}
            )
        html = response.content.decode()
        row = html[html.index('id="run-endpoints"') :]
        assert "<td>2 of 1200</td>" in row  # requests in the last minute, of the limit
        assert "<td>42 of 90000</td>" in row  # tokens: the usage, of the limit the server gave
        assert "<td>1 of 2</td>" in row  # 429s of calls
        assert "Retry-After: 30.0 s left" in row or "Retry-After: 29.9 s left" in row
        assert "80000 tokens left" in row
    finally:
        current_app.conf.task_always_eager = eager
