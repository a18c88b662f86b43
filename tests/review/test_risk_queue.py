"""Riskiest first: the queue and "Review next" ordered by the judge's most severe standing mark,
then automatic warnings, then a near-duplicate mark, then run order; and the queue filtered by
what the judge marked."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from generation.models import Turn
from review import services
from review.models import DialogueSignature, IndependentReview, Suggestion, SuggestionDecision
from review.selectors import QueueFilters, queue_page
from tests.factories import RunFactory, dialogue_with_turns

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue():
    """Six dialogues of one run, in run order A..F; their risk is worked out by hand:
    C (severity 3), B (1), D (warnings only), E (a near-duplicate of A; its judge mark was
    dismissed), then A, F in run order (F's mark sits on a turn a regeneration discarded)."""
    run = RunFactory()
    names = "ABCDEF"
    dialogues = {name: dialogue_with_turns(3, run=run, index=i) for i, name in enumerate(names)}

    def mark(name, severity, category="factual", **fields):
        turn = dialogues[name].turns.get(position=1)
        return Suggestion.objects.create(turn=turn, category=category, severity=severity, **fields)

    mark("B", 1, "tone")
    mark("C", 3)
    mark("C", 1, "tone")
    turn = dialogues["D"].turns.get(position=2)
    turn.warnings = ["repetition"]
    turn.save()
    mark("E", 3).decisions.create(status=SuggestionDecision.Status.DISMISSED)
    mark("F", 2)
    dialogues["F"].turns.filter(position=1).update(discarded_at=timezone.now())
    DialogueSignature.objects.create(
        dialogue=dialogues["E"], minhash=b"", completed_us=1, twin=dialogues["A"], similarity=0.9
    )
    return {d.pk: name for name, d in dialogues.items()}


def order_of(names, filters):
    page = queue_page(filters, user=None)
    return "".join(names[row.pk] for row in page.rows)


def test_run_order_is_the_default(queue):
    assert order_of(queue, QueueFilters()) == "ABCDEF"


def test_riskiest_first(queue):
    assert order_of(queue, QueueFilters(ordering="risk")) == "CBDEAF"


def test_a_dismissal_in_a_blind_review_leaves_the_mark_its_weight(queue, reviewer):
    """E's mark dismissed by one of several independent experts: it still weighs 3 (plus the
    near-duplicate), so E comes first."""
    e = next(pk for pk, name in queue.items() if name == "E")
    decision = SuggestionDecision.objects.get(suggestion__turn__dialogue_id=e)
    decision.review = IndependentReview.objects.create(
        dialogue_id=e, reviewer=reviewer, claim_expires_at=timezone.now()
    )
    decision.save()
    assert order_of(queue, QueueFilters(ordering="risk")) == "ECBDAF"


def test_filter_by_what_the_judge_marked(queue):
    # F's factual mark is on a discarded turn; E's dismissed one still says what the judge saw.
    assert order_of(queue, QueueFilters(choices=(("judge", "factual"),))) == "CE"
    tone_by_risk = QueueFilters(choices=(("judge", "tone"),), ordering="risk")
    assert order_of(queue, tone_by_risk) == "CB"


def test_review_next_follows_the_order(queue, reviewer):
    from tests.factories import UserFactory

    others = [UserFactory(reviewer=True) for _ in range(3)]
    claimed = [
        services.review_claim_next(actor=user, filters=QueueFilters(ordering="risk"))
        for user in [reviewer, *others]
    ]
    assert "".join(queue[d.pk] for d in claimed) == "CBDE"
    # A second click keeps the dialogue already held.
    again = services.review_claim_next(actor=reviewer, filters=QueueFilters(ordering="risk"))
    assert queue[again.pk] == "C"


def test_the_queue_page_orders_and_filters(rclient, queue, django_assert_max_num_queries):
    from tests.review.test_queries import QUEUE_PAGE_QUERIES

    params = {"sort": "risk", "judge": "tone"}
    rclient.get(reverse("review:queue"), params)  # remembers the order in the session
    with django_assert_max_num_queries(QUEUE_PAGE_QUERIES):
        response = rclient.get(reverse("review:queue"), params)
    html = response.content.decode()
    assert '<option value="risk" selected>Riskiest first</option>' in html
    assert '<input type="hidden" name="sort" value="risk">' in html
    positions = [
        html.index(f"/review/dialogues/{pk}/") for pk, name in queue.items() if name in "CB"
    ]
    assert positions == sorted(positions, reverse=True)  # C (listed first) has the larger pk


def test_review_next_on_a_dialogue_page_follows_the_queue_order(rclient, queue):
    rclient.get(reverse("review:queue"), {"sort": "risk"})
    response = rclient.post(reverse("review:next"))
    assert response.status_code == 302
    first = next(pk for pk, name in queue.items() if name == "C")
    assert response["Location"] == reverse("review:dialogue", args=[first])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_clicks_in_risk_order_get_distinct_dialogues():
    from tests.review.test_concurrency import CLICKERS, _click_all, _dialogues, _reviewers

    ids = _dialogues(CLICKERS + 5)
    risky = ids[-3:]  # last in run order, first in risk order
    for severity, pk in zip((3, 2, 1), risky, strict=True):
        turn = Turn.objects.get(dialogue_id=pk)
        Suggestion.objects.create(turn=turn, category="factual", severity=severity)
    landed = _click_all(_reviewers(CLICKERS), {"sort": "risk"})
    got = [location for location in landed.values() if location]
    assert len(got) == len(set(got)) == CLICKERS
    assert {reverse("review:dialogue", args=[pk]) for pk in risky} <= set(got)
