"""N independent reviews: blind, never the same expert twice, exactly N, agreement, and
adjudication; the export only ever sees settled text."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from review import services
from review.models import DialogueReview, Flag, IndependentReview, ReviewPolicy, Suggestion
from review.selectors import adjudication_for, run_agreement
from review.services import ReviewError
from tests.factories import RunFactory, UserFactory, dialogue_with_turns
from tests.review.helpers import turn_of, url
from tests.review.test_export import run_export
from tests.review.test_queries import DIALOGUE_PAGE_QUERIES

pytestmark = pytest.mark.django_db


def _run(n_dialogues: int, required: int = 2, n_turns: int = 4):
    run = RunFactory()
    ReviewPolicy.objects.create(scenario=run.scenario, reviews_required=required)
    return [dialogue_with_turns(n_turns, run=run) for _ in range(n_dialogues)]


def _act(dialogue, reviewer, position: int = 1) -> dict:
    return {
        "dialogue_id": dialogue.pk,
        "turn_id": turn_of(dialogue, position).pk,
        "actor": reviewer,
    }


def _correct(dialogue, reviewer, text: str, position: int = 1) -> None:
    services.turn_correct(**_act(dialogue, reviewer, position), text=text, expected_version=1)


def _approve(dialogue, reviewer) -> None:
    services.dialogue_approve(dialogue_id=dialogue.pk, actor=reviewer, expected_version=1)


def _reject(dialogue, reviewer, reason="Not useful") -> None:
    services.dialogue_reject(
        dialogue_id=dialogue.pk, actor=reviewer, reason=reason, expected_version=1
    )


def test_two_experts_share_a_dialogue_and_a_third_gets_the_next(reviewer):
    d1, d2 = _run(2)
    second, third = UserFactory(reviewer=True), UserFactory(reviewer=True)
    assert services.review_claim_next(actor=reviewer).pk == d1.pk
    assert services.review_claim_next(actor=reviewer).pk == d1.pk  # held: no second one
    assert services.review_claim_next(actor=second).pk == d1.pk  # the second slot
    assert services.review_claim_next(actor=third).pk == d2.pk  # d1 is full
    assert DialogueReview.objects.get(pk=d1.pk).reviews_required == 2
    assert DialogueReview.objects.get(pk=d1.pk).claimed_by is None  # nobody holds it alone
    with pytest.raises(ReviewError, match="already has its 2 independent reviewers"):
        services.turn_flag(**_act(d1, third), category="tone")


def test_flags_and_corrections_change_no_turn_and_stay_hidden_from_the_other(client, reviewer):
    (d1,) = _run(1)
    other = UserFactory(reviewer=True)
    flag = services.turn_flag(**_act(d1, reviewer), category="factual", note="secret note A")
    _correct(d1, reviewer, "Reviewer A's secret fix.")
    assert turn_of(d1).text == turn_of(d1).original_text  # the turn is untouched
    assert Flag.objects.get(pk=flag.pk).resolution == "corrected"  # by A's own proposal

    client.force_login(other)
    body = client.get(url("dialogue", d1)).content.decode()
    assert "secret note A" not in body and "secret fix" not in body
    client.force_login(reviewer)
    body = client.get(url("dialogue", d1)).content.decode()
    assert "secret note A" in body and "secret fix." in body
    # Nor can the other expert touch A's flag.
    services.turn_flag(**_act(d1, other, 2), category="tone")
    with pytest.raises(Http404):
        services.flag_dismiss(**_act(d1, other), flag_id=flag.pk, reason="no")


def test_an_accepted_judge_suggestion_is_the_experts_own_flag(reviewer):
    (d1,) = _run(1)
    suggestion = Suggestion.objects.create(
        turn=turn_of(d1), category="factual", severity=2, rationale="wrong identity"
    )
    services.review_claim_next(actor=reviewer)
    flag = services.suggestion_accept(
        dialogue_id=d1.pk, turn_id=suggestion.turn_id, suggestion_id=suggestion.pk,
        actor=reviewer,
    )  # fmt: skip
    assert flag.review is not None and flag.review.reviewer == reviewer


def _answer(action, suggestion, actor):
    call = services.suggestion_accept if action == "accept" else services.suggestion_dismiss
    return call(
        dialogue_id=suggestion.turn.dialogue_id, turn_id=suggestion.turn_id,
        suggestion_id=suggestion.pk, actor=actor,
    )  # fmt: skip


def _suggestions_shown(client, user, dialogue) -> str:
    client.force_login(user)
    return client.get(url("dialogue", dialogue)).content.decode()


def test_each_expert_answers_the_judge_blind_and_for_themselves(client, reviewer):
    (d1,) = _run(1)
    other = UserFactory(reviewer=True, username="expert-b")
    suggestion = Suggestion.objects.create(
        turn=turn_of(d1), category="factual", severity=2, rationale="wrong identity"
    )
    flag = _answer("accept", suggestion, reviewer)
    # B sees the suggestion undecided, with nothing of A's answer, and may answer it.
    html = _suggestions_shown(client, other, d1)
    assert 'class="suggestion suggestion-undecided"' in html
    assert "accepted as a flag" not in html and "1 judge suggestion undecided" in html
    assert 'data-action="dismiss-suggestion"' in html
    decision = _answer("dismiss", suggestion, other)
    # Each answer is its author's, in their own review; the flag stays A's.
    a_review = IndependentReview.objects.get(dialogue=d1, reviewer=reviewer)
    b_review = IndependentReview.objects.get(dialogue=d1, reviewer=other)
    assert decision.review == b_review and decision.status == "dismissed"
    assert suggestion.decisions.get(review=a_review).flag == flag
    assert flag.review == a_review
    # Each sees only their own answer, not the other's, while the reviews are under way.
    html = _suggestions_shown(client, other, d1)
    assert 'dismissed</span> <span class="muted">by you' in html
    assert "accepted as a flag" not in html
    html = _suggestions_shown(client, reviewer, d1)
    assert 'accepted as a flag</span> <span class="muted">by you' in html
    assert "dismissed</span>" not in html
    assert "Dismissed the judge" not in html  # nor in the activity
    # Nobody answers twice within their review.
    with pytest.raises(ReviewError, match="already dismissed"):
        _answer("accept", suggestion, other)
    # When both reviews are in, everyone sees both answers.
    services.flag_dismiss(**_act(d1, reviewer), flag_id=flag.pk, reason="on reflection, fine")
    _approve(d1, reviewer)
    _approve(d1, other)
    html = _suggestions_shown(client, reviewer, d1)
    assert 'accepted as a flag</span> <span class="muted">by you' in html
    assert 'dismissed</span> <span class="muted">by expert-b' in html


def test_an_expert_who_left_the_judge_unanswered_says_so_on_submit(reviewer):
    (d1,) = _run(1)
    other = UserFactory(reviewer=True)
    suggestion = Suggestion.objects.create(turn=turn_of(d1), category="tone", severity=1)
    _answer("dismiss", suggestion, reviewer)
    _approve(d1, reviewer)
    services.review_claim_next(actor=other)
    _approve(d1, other)  # B never answered: A's dismissal was not B's
    notes = list(
        d1.review_events.filter(kind="submit").order_by("pk").values_list("note", flat=True)
    )
    assert notes == ["", "1 judge suggestion undecided"]


def test_nobody_reviews_the_same_dialogue_twice(reviewer):
    d1, d2 = _run(2)
    services.review_claim_next(actor=reviewer)
    _approve(d1, reviewer)
    assert services.review_claim_next(actor=reviewer).pk == d2.pk
    with pytest.raises(ReviewError, match="submitted your review"):
        services.turn_flag(**_act(d1, reviewer), category="tone")


def test_a_lapsed_draft_gives_its_slot_to_the_next_expert(reviewer):
    (d1,) = _run(1)
    second, third = UserFactory(reviewer=True), UserFactory(reviewer=True)
    services.turn_flag(**_act(d1, reviewer), category="tone")
    services.review_claim_next(actor=second)
    assert services.review_claim_next(actor=third) is None  # full
    IndependentReview.objects.filter(reviewer=reviewer).update(
        claim_expires_at=timezone.now() - timedelta(minutes=1)
    )
    assert services.review_claim_next(actor=third).pk == d1.pk
    assert set(IndependentReview.objects.values_list("reviewer", flat=True)) == {
        second.pk,
        third.pk,
    }
    assert not Flag.objects.exists()  # the lapsed draft went with its slot


def test_agreeing_reviews_finish_on_their_own_and_apply_the_correction(tmp_path, reviewer):
    (d1,) = _run(1)
    other = UserFactory(reviewer=True)
    _correct(d1, reviewer, "The agreed fix.")
    _approve(d1, reviewer)
    assert DialogueReview.objects.get(pk=d1.pk).status == "pending"  # one of two is in
    with pytest.raises(Exception, match="Nothing to export"):
        run_export(tmp_path)  # nothing approved yet
    _approve(d1, other)
    review = DialogueReview.objects.get(pk=d1.pk)
    assert review.status == "approved" and "2 independent reviews agreed" in review.reason
    assert turn_of(d1).text == "The agreed fix."
    _, lines = run_export(tmp_path, name="after.jsonl")
    assert "The agreed fix." in str(lines)


@pytest.mark.parametrize("disagreement", ["corrections", "verdicts"])
def test_disagreement_goes_to_adjudication_and_export_waits(tmp_path, reviewer, disagreement):
    (d1,) = _run(1)
    other = UserFactory(reviewer=True)
    if disagreement == "corrections":
        _correct(d1, reviewer, "Fix by A.")
        _correct(d1, other, "Fix by B.")
        _approve(d1, reviewer)
        _approve(d1, other)
    else:
        _approve(d1, reviewer)
        _reject(d1, other)
    assert DialogueReview.objects.get(pk=d1.pk).status == "adjudication"
    assert turn_of(d1).text == turn_of(d1).original_text
    with pytest.raises(Exception, match="Nothing to export"):
        run_export(tmp_path)


def test_adjudication_picks_or_merges_and_only_then_the_text_changes(
    client, admin_user, reviewer, tmp_path
):
    (d1,) = _run(1)
    other = UserFactory(reviewer=True)
    _correct(d1, reviewer, "Fix by A.")
    _correct(d1, other, "Fix by B.")
    _correct(d1, other, "B also fixes turn 3.", position=2)
    _approve(d1, reviewer)
    _approve(d1, other)
    case = adjudication_for(pk=d1.pk)
    assert case.conflicts == {turn_of(d1).pk}
    assert [t.proposed for t in case.turns] == [False, True, True, False]

    client.force_login(admin_user)
    page = client.get(reverse("review:adjudicate", args=[d1.pk]))
    assert page.status_code == 200 and "Fix by A." in page.content.decode()
    b_review = IndependentReview.objects.get(reviewer=other)
    response = client.post(reverse("review:adjudicate", args=[d1.pk]), {
        f"choice-{turn_of(d1).pk}": f"r{b_review.pk}",
        f"choice-{turn_of(d1, 2).pk}": "merge", f"merged-{turn_of(d1, 2).pk}": "Merged turn 3.",
        "verdict": "approved", "reason": "",
    })  # fmt: skip
    assert response.status_code == 302
    assert turn_of(d1).text == "Fix by B." and turn_of(d1, 2).text == "Merged turn 3."
    assert DialogueReview.objects.get(pk=d1.pk).status == "approved"
    _, lines = run_export(tmp_path)
    assert "Fix by B." in str(lines) and "Fix by A." not in str(lines)


def test_adjudication_is_for_staff_and_a_reject_needs_a_reason(client, admin_user, reviewer):
    (d1,) = _run(1)
    other = UserFactory(reviewer=True)
    _approve(d1, reviewer)
    _reject(d1, other)
    client.force_login(reviewer)
    assert client.get(reverse("review:adjudicate", args=[d1.pk])).status_code == 403
    client.force_login(admin_user)
    response = client.post(reverse("review:adjudicate", args=[d1.pk]), {"verdict": "rejected"})
    assert response.status_code == 422 and "Say why" in response.content.decode()


def test_agreement_figures_match_hand_computed_values(client, admin_user):
    """Three dialogues of four turns, two reviewers each (A first, then B).

    Verdicts A: approve, approve, reject; B: approve, reject, reject.
      p_o = 2/3; p_e = (2/3)(1/3) + (1/3)(2/3) = 4/9; kappa = (2/3 - 4/9) / (5/9) = 0.4.
    Flags (12 turns): A flags turns d1t1, d2t1, d3t0; B flags d1t1, d3t0, d3t2.
      agree on 10 of 12: p_o = 5/6; each flags 3 of 12: p_e = (1/4)(1/4) + (3/4)(3/4) = 5/8;
      kappa = (5/6 - 5/8) / (3/8) = 5/9 = 0.5556.
    Per reviewer: each agreed with the peer on 2 of 3 dialogues: 67%.
    """
    a, b = UserFactory(reviewer=True, username="ann"), UserFactory(reviewer=True, username="ben")
    d1, d2, d3 = _run(3)
    for dialogue, verdicts, flags in (
        (d1, ("a", "a"), ({1}, {1})), (d2, ("a", "r"), ({1}, set())), (d3, ("r", "r"), ({0}, {0, 2})),
    ):  # fmt: skip
        for expert, verdict, positions in zip((a, b), verdicts, flags, strict=True):
            for position in positions:
                flag = services.turn_flag(**_act(dialogue, expert, position), category="tone")
                services.flag_dismiss(
                    **_act(dialogue, expert, position), flag_id=flag.pk, reason="ok"
                )
            (_approve if verdict == "a" else _reject)(dialogue, expert)
    figures = run_agreement(pk=d1.run_id)
    assert figures.verdicts.measure == "Cohen's kappa"
    assert figures.verdicts.value == pytest.approx(0.4)
    assert figures.flags.value == pytest.approx(5 / 9)
    assert [(r.reviewer.username, r.dialogues, r.share) for r in figures.reviewers] == [
        ("ann", 3, "67%"), ("ben", 3, "67%"),
    ]  # fmt: skip
    per_dialogue = {d.pk: agreement for d, agreement in figures.dialogues}
    assert per_dialogue[d1.pk].verdicts_agree and not per_dialogue[d2.pk].verdicts_agree
    assert per_dialogue[d1.pk].flags.value == pytest.approx(1.0)
    client.force_login(admin_user)
    body = client.get(reverse("review:agreement_run", args=[d1.run_id])).content.decode()
    assert "0.40" in body and "0.56" in body


def test_three_reviewers_use_krippendorffs_alpha(reviewer):
    """Flags of three reviewers over four turns: (1,1,1), (1,0,1), (0,0,0), (0,0,0).
    Coincidences (pairs within a turn over m - 1 = 2): o11 = 3 + 1, o10 = o01 = 1, o00 = 3 + 3;
    n1 = 5, n0 = 7, n = 12. alpha = 1 - (n - 1)(o10 + o01) / (2 n1 n0) = 1 - 22 / 70 = 0.6857."""
    (d1,) = _run(1, required=3)
    experts = [reviewer, UserFactory(reviewer=True), UserFactory(reviewer=True)]
    for expert, positions in zip(experts, ({0, 1}, {0}, {0, 1}), strict=True):
        for position in positions:
            flag = services.turn_flag(**_act(d1, expert, position), category="tone")
            services.flag_dismiss(**_act(d1, expert, position), flag_id=flag.pk, reason="ok")
        _approve(d1, expert)
    figures = adjudication_for(pk=d1.pk).agreement
    assert figures.flags.measure == "Krippendorff's alpha"
    assert figures.flags.value == pytest.approx(1 - 22 / 70)
    assert DialogueReview.objects.get(pk=d1.pk).status == "approved"  # all agreed


def test_dialogue_page_with_independent_reviews_costs_one_more_query(
    client, reviewer, django_assert_max_num_queries
):
    (d1,) = _run(1)
    services.turn_flag(**_act(d1, reviewer), category="tone")
    # A suggestion, so the page fetches the decisions too, as DIALOGUE_PAGE_QUERIES counts.
    Suggestion.objects.create(turn=turn_of(d1), category="factual", severity=1)
    client.force_login(reviewer)
    with django_assert_max_num_queries(DIALOGUE_PAGE_QUERIES + 1) as captured:
        response = client.get(url("dialogue", d1))
    assert len(captured.captured_queries) == DIALOGUE_PAGE_QUERIES + 1  # the reviews. list
    assert "0 of 2 submitted" in response.content.decode()


def test_reopening_a_decided_dialogue_hands_it_to_a_single_reviewer(reviewer):
    (d1,) = _run(1)
    other = UserFactory(reviewer=True)
    _approve(d1, reviewer)
    _approve(d1, other)
    services.dialogue_reopen(
        dialogue_id=d1.pk, actor=other, reason="Second look", expected_version=2
    )
    review = DialogueReview.objects.get(pk=d1.pk)
    assert review.reviews_required == 1 and review.claimed_by == other
