"""Judge suggestions on the review screen: shown apart from flags, accepted (a flag) or
dismissed, and approving with undecided ones is allowed and counted."""

from __future__ import annotations

import pytest
from django.urls import reverse

from review import services
from review.models import DialogueReview, JudgeConfig, Judgement, ReviewEvent, Suggestion
from tests.factories import dialogue_with_turns
from tests.review.helpers import HX, url

pytestmark = pytest.mark.django_db


@pytest.fixture
def suggested():
    dialogue = dialogue_with_turns(4)
    JudgeConfig.objects.create(scenario=dialogue.scenario, rubric="r", severity_max=3)
    Judgement.objects.create(dialogue=dialogue, status="done", transcript="t", mark_count=2)
    turn = dialogue.turns.get(position=1)
    first = Suggestion.objects.create(
        turn=turn, category="factual", severity=3, rationale="<b>sin 30</b> is 1/2"
    )
    second = Suggestion.objects.create(
        turn=dialogue.turns.get(position=2), category="tone", severity=1, rationale="curt"
    )
    return dialogue, first, second


def action(name: str, suggestion: Suggestion) -> str:
    turn = suggestion.turn
    return reverse(f"review:suggestion_{name}", args=[turn.dialogue_id, turn.pk, suggestion.pk])


def test_the_page_shows_suggestions_apart_from_flags(rclient, suggested):
    dialogue, first, _ = suggested
    html = rclient.get(url("dialogue", dialogue)).content.decode()
    assert html.count('class="suggestion suggestion-undecided"') == 2
    assert "severity 3/3" in html and "Factual error" in html
    # A model's text is escaped, never markup.
    assert "&lt;b&gt;sin 30&lt;/b&gt; is 1/2" in html and "<b>sin 30</b>" not in html
    assert 'data-action="accept-suggestion"' in html and 'data-action="dismiss-suggestion"' in html
    assert "2 judge suggestions undecided" in html


def test_accept_makes_a_flag_htmx(rclient, reviewer, suggested):
    dialogue, first, _ = suggested
    response = rclient.post(action("accept", first), **HX)
    assert response.status_code == 200
    body = response.content.decode()
    assert f'<article id="turn-{first.turn_id}"' in body
    assert "accepted as a flag" in body and 'id="panel"' in body  # the panel out-of-band
    decision = first.decisions.get()
    assert decision.status == "accepted" and decision.decided_by == reviewer
    assert decision.review is None  # the dialogue's one review
    flag = decision.flag
    assert (flag.turn_id, flag.category, flag.resolution) == (first.turn_id, "factual", "open")
    assert flag.note.startswith("Judge: ")


def test_dismiss_without_htmx_redirects_to_the_turn(rclient, suggested):
    dialogue, _, second = suggested
    response = rclient.post(action("dismiss", second))
    assert response.status_code == 302
    assert response["Location"].endswith(f"#turn-{second.turn_id}")
    decision = second.decisions.get()
    assert decision.status == "dismissed" and decision.flag is None


def test_a_decided_suggestion_cannot_be_decided_again(rclient, suggested):
    _, first, _ = suggested
    rclient.post(action("dismiss", first), **HX)
    response = rclient.post(action("accept", first), **HX)
    assert response.status_code == 409
    assert "already dismissed" in response.content.decode()


def test_a_suggestion_of_another_turn_is_404(rclient, suggested):
    dialogue, first, second = suggested
    wrong = reverse("review:suggestion_accept", args=[dialogue.pk, second.turn_id, first.pk])
    assert rclient.post(wrong, **HX).status_code == 404


def test_approving_with_undecided_suggestions_is_allowed_and_counted(reviewer, suggested):
    dialogue, first, _ = suggested
    services.suggestion_dismiss(
        dialogue_id=dialogue.pk, turn_id=first.turn_id, suggestion_id=first.pk, actor=reviewer
    )
    review = DialogueReview.objects.get(pk=dialogue.pk)
    services.dialogue_approve(
        dialogue_id=dialogue.pk, actor=reviewer, expected_version=review.version
    )
    review.refresh_from_db()
    assert review.status == "approved" and review.undecided_suggestions == 1
    event = ReviewEvent.objects.filter(dialogue=dialogue, kind="approve").get()
    assert event.note == "1 judge suggestion undecided"


def test_a_failed_judge_is_shown_and_review_goes_on(rclient, reviewer):
    dialogue = dialogue_with_turns(2)
    Judgement.objects.create(
        dialogue=dialogue, status="failed", transcript="t",
        error="judge failed: gave up after 6 attempts: HTTP 429 from the LLM server",
    )  # fmt: skip
    html = rclient.get(url("dialogue", dialogue)).content.decode()
    assert "Judge failed: gave up after 6 attempts" in html
    assert 'id="approve-button" type="submit" class="primary approve wide">' in html


def test_a_running_judge_is_said_and_does_not_block(rclient):
    dialogue = dialogue_with_turns(2)
    Judgement.objects.create(dialogue=dialogue, status="running", transcript="t")
    html = rclient.get(url("dialogue", dialogue)).content.decode()
    assert "The judge is reading this dialogue" in html
    assert 'id="approve-button" type="submit" class="primary approve wide">' in html


def test_a_judge_names_only_known_categories(db):
    from django.core.exceptions import ValidationError

    dialogue = dialogue_with_turns(1)
    config = JudgeConfig(scenario=dialogue.scenario, rubric="r", categories=["factual", "typo"])
    with pytest.raises(ValidationError, match="Unknown flag categories: typo"):
        config.full_clean()
