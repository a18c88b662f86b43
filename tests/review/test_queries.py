"""The dialogue screen and a turn save cost a fixed number of queries, whatever the length."""

from __future__ import annotations

import pytest
from django.urls import reverse

from review import services
from review.models import Flag, Suggestion, TurnRevision
from tests.factories import UserFactory, dialogue_with_turns
from tests.review.helpers import url

pytestmark = pytest.mark.django_db

# Session, user, group check, then the selector: dialogue (with run, scenario, review and its
# users, judge and judgement), personas, live turns, their flags, their revisions, their judge
# suggestions, discarded turns, events.
DIALOGUE_PAGE_QUERIES = 11
# The save's own transaction (locks, claim, turn, revision, flags) plus the page's queries.
TURN_SAVE_QUERIES = 20
# Accepting a suggestion: locks, claim, turn, suggestion, the new flag, plus the page's queries.
SUGGESTION_ACCEPT_QUERIES = 20


def _busy_dialogue(n_turns: int, reviewer):
    """A dialogue with flags, revisions, warnings and a regeneration's discarded turns, so every
    prefetch has rows to fetch."""
    dialogue = dialogue_with_turns(n_turns)
    turns = list(dialogue.turns.order_by("position"))
    author = UserFactory()
    for turn in turns:
        turn.warnings = ["repetition"] if turn.position % 3 == 0 else []
        turn.save()
        Flag.objects.create(turn=turn, category="tone", created_by=author, note="hmm")
        TurnRevision.objects.create(turn=turn, author=author, before="a", after="b", version=2)
        Suggestion.objects.create(turn=turn, category="factual", severity=2, rationale="why")
    services.review_claim_next(actor=reviewer)
    return dialogue


@pytest.mark.parametrize("n_turns", [4, 60])
def test_dialogue_screen_query_count_is_constant(
    client, reviewer, n_turns, django_assert_max_num_queries
):
    dialogue = _busy_dialogue(n_turns, reviewer)
    client.force_login(reviewer)
    with django_assert_max_num_queries(DIALOGUE_PAGE_QUERIES) as captured:
        response = client.get(url("dialogue", dialogue))
    assert response.status_code == 200
    # The same figure at 4 and at 60 turns (not merely below the ceiling).
    assert len(captured.captured_queries) == DIALOGUE_PAGE_QUERIES
    assert response.content.decode().count('class="turn side-') == n_turns


@pytest.mark.parametrize("n_turns", [4, 60])
def test_turn_save_query_count_is_constant(
    client, reviewer, n_turns, django_assert_max_num_queries
):
    dialogue = _busy_dialogue(n_turns, reviewer)
    client.force_login(reviewer)
    turn = dialogue.turns.get(position=1)
    path = reverse("review:turn_edit", args=[dialogue.pk, turn.pk])
    with django_assert_max_num_queries(TURN_SAVE_QUERIES) as captured:
        response = client.post(path, {"text": "Corrected", "version": 1}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert len(captured.captured_queries) == TURN_SAVE_QUERIES


@pytest.mark.parametrize("n_turns", [4, 60])
def test_suggestion_accept_query_count_is_constant(
    client, reviewer, n_turns, django_assert_max_num_queries
):
    dialogue = _busy_dialogue(n_turns, reviewer)
    client.force_login(reviewer)
    suggestion = Suggestion.objects.get(turn__dialogue=dialogue, turn__position=1)
    path = reverse(
        "review:suggestion_accept", args=[dialogue.pk, suggestion.turn_id, suggestion.pk]
    )
    with django_assert_max_num_queries(SUGGESTION_ACCEPT_QUERIES) as captured:
        response = client.post(path, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert len(captured.captured_queries) == SUGGESTION_ACCEPT_QUERIES


@pytest.mark.parametrize("n_dialogues", [3, 30])
def test_queue_query_count_is_constant(
    client, reviewer, n_dialogues, django_assert_max_num_queries
):
    holder = UserFactory(reviewer=True)
    first = dialogue_with_turns(3)
    for _ in range(n_dialogues - 1):
        dialogue_with_turns(3, run=first.run)
    services.review_claim_next(actor=holder)
    client.force_login(reviewer)
    # Session, user, group check, counts, rows (turns, flags and warnings as subqueries),
    # and the filter form's run and scenario choices.
    with django_assert_max_num_queries(7) as captured:
        response = client.get(reverse("review:queue"), {"status": "all"})
    assert response.status_code == 200 and len(response.context["rows"]) == n_dialogues
    assert len(captured.captured_queries) == 7
