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
# suggestions, the experts' decisions on those, discarded turns, events.
DIALOGUE_PAGE_QUERIES = 12
# The save's own transaction (locks, claim, turn, revision, flags) plus the page's queries.
TURN_SAVE_QUERIES = 21
# Accepting a suggestion: locks, claim, turn, suggestion, the review's decision on it (none
# yet), the new flag, the decision, plus the page's queries.
SUGGESTION_ACCEPT_QUERIES = 22


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


# Session, user, the user's groups, review policies, counts, one page of rows (turns, flags and
# warnings as subqueries), reviewers and groups to assign to, the run and scenario choices.
QUEUE_PAGE_QUERIES = 10


@pytest.mark.parametrize("n_dialogues", [3, 120])
def test_queue_query_count_is_constant(
    client, reviewer, n_dialogues, django_assert_max_num_queries
):
    holder = UserFactory(reviewer=True)
    first = dialogue_with_turns(3)
    for _ in range(n_dialogues - 1):
        dialogue_with_turns(3, run=first.run)
    services.review_claim_next(actor=holder)
    client.force_login(reviewer)
    params = {"status": "all", "q": "the unit circle", "flags": "none", "sort": "topic"}
    # A new sort is remembered in the session once (Review next on a dialogue page follows it).
    client.get(reverse("review:queue"), params)
    with django_assert_max_num_queries(QUEUE_PAGE_QUERIES) as captured:
        response = client.get(reverse("review:queue"), params)
    assert response.status_code == 200
    assert len(response.context["rows"]) == min(n_dialogues, 50)
    assert len(captured.captured_queries) == QUEUE_PAGE_QUERIES
    if n_dialogues > 100:  # a later page costs the same (keyset, not OFFSET)
        params["after"] = response.context["page"].next_cursor
        with django_assert_max_num_queries(QUEUE_PAGE_QUERIES) as captured:
            response = client.get(reverse("review:queue"), params)
        assert len(captured.captured_queries) == QUEUE_PAGE_QUERIES
        assert len(response.context["rows"]) == 50
