"""Review next under concurrent clicks: row locks only behave in real transactions on a real
PostgreSQL, so these tests commit (transaction=True) and click from 20 threads at once."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.urls import reverse

from review import services
from review.models import REVIEWER_GROUP, DialogueReview, IndependentReview, ReviewPolicy
from tests.factories import DialogueFactory, RunFactory, TurnFactory

CLICKERS = 20


def _reviewers(n: int) -> list[User]:
    group, _ = Group.objects.get_or_create(name=REVIEWER_GROUP)
    users = [User.objects.create(username=f"expert{i}") for i in range(n)]
    for user in users:
        user.groups.add(group)
    return users


def _dialogues(n: int, reviews_required: int = 1) -> list[int]:
    run = RunFactory()
    if reviews_required > 1:
        ReviewPolicy.objects.create(scenario=run.scenario, reviews_required=reviews_required)
    ids = []
    for _ in range(n):
        dialogue = DialogueFactory(run=run)
        TurnFactory(dialogue=dialogue, position=0)
        ids.append(dialogue.pk)
    return ids


def _click_all(users: list[User], data: dict | None = None) -> dict[str, str | None]:
    """Every user clicks Review next at the same instant (posting `data`, the queue's filters);
    returns where each one landed."""
    barrier = threading.Barrier(len(users))
    landed: dict[str, str | None] = {}
    errors: list[BaseException] = []

    def click(user: User) -> None:
        try:
            client = Client()
            client.force_login(user)
            # Hand the connection back before waiting: with a pool of 20, twenty idle threads
            # holding connections would starve each other at the barrier.
            connection.close()
            barrier.wait(timeout=30)
            response = client.post(reverse("review:next"), data or {})
            assert response.status_code == 302
            location = response["Location"]
            landed[user.username] = None if location == reverse("review:queue") else location
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, [
        e for e in errors if not isinstance(e, threading.BrokenBarrierError)
    ] or errors
    return landed


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_review_next_clicks_get_distinct_dialogues():
    users = _reviewers(CLICKERS)
    _dialogues(CLICKERS + 5)
    landed = _click_all(users)
    assert len(landed) == CLICKERS
    assert None not in landed.values()
    assert len(set(landed.values())) == CLICKERS
    claims = DialogueReview.objects.filter(claimed_by__isnull=False)
    assert claims.count() == CLICKERS
    assert len(set(claims.values_list("claimed_by", flat=True))) == CLICKERS


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_more_clickers_than_dialogues_never_share_one():
    users = _reviewers(CLICKERS)
    ids = _dialogues(5)
    landed = _click_all(users)
    got = [location for location in landed.values() if location]
    assert len(got) == len(set(got)) == 5
    assert (
        sorted(DialogueReview.objects.filter(claimed_by__isnull=False).values_list("pk", flat=True))
        == ids
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_clicks_with_two_reviews_each_fill_exactly_two_slots():
    """N = 2: each wave of 20 simultaneous clicks takes free slots only; every expert then
    submits what they got and clicks again, until nothing is left. Every dialogue ends with
    exactly two reviews by two different experts."""
    users = _reviewers(CLICKERS)
    ids = _dialogues(15, reviews_required=2)
    for _ in range(10):
        landed = _click_all(users)
        live = IndependentReview.objects.filter(submitted_at__isnull=True)
        per_dialogue = [live.filter(dialogue_id=pk).count() for pk in ids]
        assert max(per_dialogue) <= 2
        held = [location for location in landed.values() if location]
        assert len(held) == live.count()  # one open review per expert who got a dialogue
        if not held:
            break
        for review in live.select_related("reviewer"):
            services.dialogue_approve(
                dialogue_id=review.dialogue_id, actor=review.reviewer, expected_version=1
            )
    pairs = list(IndependentReview.objects.values_list("dialogue_id", "reviewer_id"))
    assert len(pairs) == len(set(pairs)) == 2 * len(ids)  # exactly two, nobody twice
    for pk in ids:
        assert (
            IndependentReview.objects.filter(dialogue_id=pk, submitted_at__isnull=False).count()
            == 2
        )
    assert set(DialogueReview.objects.values_list("status", flat=True)) == {"approved"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_clickers_on_one_dialogue_needing_two_reviews_never_make_three():
    users = _reviewers(CLICKERS)
    (pk,) = _dialogues(1, reviews_required=2)
    for _ in range(3):
        landed = [location for location in _click_all(users).values() if location]
        reviewers = IndependentReview.objects.filter(dialogue_id=pk).values_list(
            "reviewer", flat=True
        )
        assert len(reviewers) <= 2 and len(set(reviewers)) == len(reviewers)
        assert len(landed) == len(reviewers)  # the holders land on it again, nobody else
    assert IndependentReview.objects.filter(dialogue_id=pk).count() == 2
