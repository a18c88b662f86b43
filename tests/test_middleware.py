"""Project-wide request rules: tampered input answers 400, pages are never cached, and the
CSRF cookie is out of scripts' reach."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from generation.models import GenerationRun
from tests.factories import RunFactory, dialogue_with_turns

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path",
    [
        "/admin/generation/dialogue/?status__exact=%00",
        "/admin/review/datasetexport/?format__exact=%00",
        "/admin/generation/generationrun/?q=a%00b",
        "/review/?run=%00",
        "/runs/?page=%00",
    ],
)
def test_a_nul_character_in_the_address_is_a_bad_request(admin_client, path):
    response = admin_client.get(path)
    assert response.status_code == 400
    assert b"NUL character" in response.content


def test_a_nul_character_in_a_form_is_a_bad_request(admin_client):
    dialogue = dialogue_with_turns(2)
    turn = dialogue.turns.get(position=1)
    path = reverse("review:turn_edit", args=[dialogue.pk, turn.pk])
    assert admin_client.post(path, {"text": "fixed\x00", "version": 1}).status_code == 400
    turn.refresh_from_db()
    assert turn.version == 1


@pytest.mark.parametrize("value", ["abc", "1.5", "", "9" * 40])
@pytest.mark.parametrize(
    ("changelist", "action"),
    [
        ("admin:generation_dialogue_changelist", "export_dialogues_action"),
        ("admin:generation_generationrun_changelist", "cancel_runs_action"),
        ("admin:review_dialoguereview_changelist", "release_claims"),
        ("admin:review_datasetexport_changelist", "delete_selected"),
        ("admin:auth_user_changelist", "delete_selected"),
    ],
)
def test_an_admin_action_on_ids_that_are_not_ids_is_a_bad_request(
    admin_client, changelist, action, value
):
    run = RunFactory(status=GenerationRun.Status.RUNNING)
    data = {"action": action, ACTION_CHECKBOX_NAME: [str(run.pk), value], "index": "0"}
    response = admin_client.post(reverse(changelist), data)
    assert response.status_code == 400
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.RUNNING


def test_a_real_admin_action_still_runs(admin_client):
    run = RunFactory(status=GenerationRun.Status.RUNNING)
    data = {"action": "cancel_runs_action", ACTION_CHECKBOX_NAME: [str(run.pk)], "index": "0",
            "confirm": "yes"}  # fmt: skip
    response = admin_client.post(reverse("admin:generation_generationrun_changelist"), data)
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED


def test_pages_are_never_served_from_a_cache(client, reviewer):
    dialogue = dialogue_with_turns(2)
    client.force_login(reviewer)
    for path in (
        reverse("review:queue"),
        reverse("review:dialogue", args=[dialogue.pk]),
        reverse("review:progress", args=[dialogue.pk]),
        reverse("generation:run_list"),
        reverse("generation:run_detail", args=[dialogue.run_id]),
    ):
        cache_control = client.get(path)["Cache-Control"]
        assert "private" in cache_control and "no-store" in cache_control, path


def test_csrf_cookie_is_http_only(client):
    response = client.get(reverse("login"))
    cookie = response.cookies["csrftoken"]
    assert cookie["httponly"] is True
    assert 'name="csrfmiddlewaretoken"' in response.content.decode()
