"""Server-side enforcement: reviewer access, foreign ids, CSRF, HTTP methods."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from review.models import DialogueReview, Flag
from tests.factories import UserFactory, dialogue_with_turns
from tests.review.helpers import HX, turn_of, url

pytestmark = pytest.mark.django_db


def _review_endpoints(dialogue):
    turn = turn_of(dialogue)
    flag = Flag.objects.create(turn=turn, category="tone")
    get = [
        reverse("review:queue"),
        url("dialogue", dialogue),
        url("progress", dialogue),
        url("reject", dialogue),
        url("turn", dialogue, turn),
        url("turn_edit", dialogue, turn),
        url("turn_flag", dialogue, turn),
    ]
    post = [
        reverse("review:next"),
        url("approve", dialogue),
        url("reject", dialogue),
        url("reopen", dialogue),
        url("release", dialogue),
        url("turn_edit", dialogue, turn),
        url("turn_flag", dialogue, turn),
        url("turn_revert", dialogue, turn),
        url("turn_regenerate", dialogue, turn),
        reverse("review:flag_dismiss", args=[dialogue.pk, turn.pk, flag.pk]),
    ]
    return get, post


def test_user_without_reviewer_group_gets_a_polite_403_everywhere(client, user, dialogue):
    client.force_login(user)
    get, post = _review_endpoints(dialogue)
    for path in get:
        response = client.get(path)
        assert response.status_code == 403, path
        assert b"ask an admin for reviewer access" in response.content.lower(), path
    for path in post:
        assert client.post(path, {"text": "x", "version": 1, "reason": "r"}).status_code == 403, (
            path
        )
    turn = turn_of(dialogue)
    turn.refresh_from_db()
    assert turn.text == turn.original_text
    assert DialogueReview.objects.filter(claimed_by=user).count() == 0


def test_staff_without_the_group_may_review(client, dialogue):
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    assert client.get(url("dialogue", dialogue)).status_code == 200


def test_unknown_and_foreign_ids_are_404(rclient, dialogue):
    other = dialogue_with_turns(2)
    foreign_turn = turn_of(other)
    flag = Flag.objects.create(turn=foreign_turn, category="tone")
    own_turn = turn_of(dialogue)
    assert rclient.get(reverse("review:dialogue", args=[999_999])).status_code == 404
    assert rclient.get(url("turn_edit", dialogue, foreign_turn)).status_code == 404
    assert (
        rclient.post(
            url("turn_edit", dialogue, foreign_turn), {"text": "x", "version": 1}
        ).status_code
        == 404
    )
    assert (
        rclient.post(url("turn_flag", dialogue, foreign_turn), {"category": "tone"}).status_code
        == 404
    )
    dismiss = reverse("review:flag_dismiss", args=[dialogue.pk, own_turn.pk, flag.pk])
    assert rclient.post(dismiss, {"reason": "x"}).status_code == 404
    assert (
        rclient.post(
            url("approve", other).replace(str(other.pk), "999999"), {"version": 1}
        ).status_code
        == 404
    )
    foreign_turn.refresh_from_db()
    assert foreign_turn.text == foreign_turn.original_text


def test_missing_csrf_token_is_403(reviewer, dialogue):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    turn = turn_of(dialogue)
    response = client.post(url("turn_edit", dialogue, turn), {"text": "x", "version": 1}, **HX)
    assert response.status_code == 403
    assert client.post(url("approve", dialogue), {"version": 1}).status_code == 403
    assert client.post(reverse("review:next")).status_code == 403
    turn.refresh_from_db()
    assert turn.text == turn.original_text


def test_wrong_methods_are_405(rclient, dialogue):
    assert rclient.get(url("approve", dialogue)).status_code == 405
    assert rclient.post(url("dialogue", dialogue)).status_code == 405
    assert rclient.get(reverse("review:next")).status_code == 405
