from __future__ import annotations

from datetime import timedelta

import pytest
from django.http import Http404
from django.test import override_settings
from django.utils import timezone

from generation.models import Dialogue, Turn
from review import services
from review.models import DialogueReview, Flag, ReviewEvent, TurnRevision
from review.selectors import QueueFilters
from tests.factories import DialogueFactory, RunFactory, UserFactory, dialogue_with_turns

pytestmark = pytest.mark.django_db


def _turn(dialogue: Dialogue, position: int = 1) -> Turn:
    return dialogue.turns.get(position=position, discarded_at__isnull=True)


# --- Claims ---------------------------------------------------------------------------------------


def test_review_for_creates_pending_review_once():
    dialogue = dialogue_with_turns(2)
    first = services.review_for(dialogue)
    again = services.review_for(dialogue)
    assert first.pk == again.pk == dialogue.pk
    assert first.status == DialogueReview.Status.PENDING


def test_claim_next_skips_claimed_decided_and_incomplete(reviewer):
    other = UserFactory(reviewer=True)
    claimed = dialogue_with_turns(2)
    services.review_claim_next(actor=other)  # takes `claimed`, the oldest
    approved = dialogue_with_turns(2, run=claimed.run)
    DialogueReview.objects.create(dialogue=approved, status=DialogueReview.Status.APPROVED)
    DialogueFactory(run=claimed.run, status=Dialogue.Status.GENERATING)
    wanted = dialogue_with_turns(2, run=claimed.run)

    got = services.review_claim_next(actor=reviewer)

    assert got == wanted
    review = DialogueReview.objects.get(dialogue=wanted)
    assert review.claimed_by == reviewer
    assert review.claim_expires_at > timezone.now() + timedelta(minutes=29)
    assert ReviewEvent.objects.filter(dialogue=wanted, kind="claim", actor=reviewer).exists()
    assert DialogueReview.objects.get(dialogue=claimed).claimed_by == other


def test_claim_next_returns_the_dialogue_already_held(reviewer):
    first = dialogue_with_turns(2)
    dialogue_with_turns(2, run=first.run)
    assert services.review_claim_next(actor=reviewer) == first
    assert services.review_claim_next(actor=reviewer) == first
    assert DialogueReview.objects.filter(claimed_by=reviewer).count() == 1


def test_claim_next_takes_over_expired_claims(reviewer):
    other = UserFactory(reviewer=True)
    dialogue = dialogue_with_turns(2)
    DialogueReview.objects.create(
        dialogue=dialogue, claimed_by=other, claim_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert services.review_claim_next(actor=reviewer) == dialogue
    assert DialogueReview.objects.get(dialogue=dialogue).claimed_by == reviewer


def test_claim_next_respects_filters_and_returns_none_when_empty(reviewer):
    dialogue = dialogue_with_turns(2)
    other_run = RunFactory()
    assert (
        services.review_claim_next(actor=reviewer, filters=QueueFilters(run_id=other_run.pk))
        is None
    )
    assert (
        services.review_claim_next(actor=reviewer, filters=QueueFilters(run_id=dialogue.run_id))
        == dialogue
    )


@override_settings(SYNTHREVIEW_CLAIM_MINUTES=5)
def test_every_action_renews_the_claim(reviewer):
    dialogue = dialogue_with_turns(2)
    services.review_claim_next(actor=reviewer)
    DialogueReview.objects.filter(pk=dialogue.pk).update(
        claim_expires_at=timezone.now() + timedelta(seconds=10)
    )
    services.turn_flag(
        dialogue_id=dialogue.pk, turn_id=_turn(dialogue).pk, actor=reviewer, category="tone"
    )
    expires = DialogueReview.objects.get(pk=dialogue.pk).claim_expires_at
    assert expires > timezone.now() + timedelta(minutes=4)


def test_actions_on_a_dialogue_held_by_someone_else_are_refused_with_the_holder(reviewer):
    holder = UserFactory(reviewer=True, username="alice")
    dialogue = dialogue_with_turns(2)
    services.review_claim_next(actor=holder)
    turn = _turn(dialogue)
    with pytest.raises(services.ClaimedByOther, match="alice"):
        services.turn_correct(
            dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, text="x", expected_version=1
        )
    with pytest.raises(services.ClaimedByOther, match="alice"):
        services.dialogue_approve(dialogue_id=dialogue.pk, actor=reviewer, expected_version=1)
    turn.refresh_from_db()
    assert turn.text == turn.original_text


def test_release_by_holder_and_staff_but_not_others(reviewer):
    dialogue = dialogue_with_turns(2)
    services.review_claim_next(actor=reviewer)
    stranger = UserFactory(reviewer=True)
    with pytest.raises(services.NotAllowed):
        services.review_release(dialogue_id=dialogue.pk, actor=stranger)
    staff = UserFactory(is_staff=True)
    review = services.review_release(dialogue_id=dialogue.pk, actor=staff)
    assert review.claimed_by is None
    event = ReviewEvent.objects.get(dialogue=dialogue, kind="release")
    assert event.actor == staff and reviewer.username in event.note


# --- Corrections ----------------------------------------------------------------------------------


def test_correction_is_a_revision_and_resolves_open_flags(reviewer):
    dialogue = dialogue_with_turns(3)
    turn = _turn(dialogue)
    flag = services.turn_flag(
        dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, category="factual", note="wrong"
    )
    services.turn_correct(
        dialogue_id=dialogue.pk,
        turn_id=turn.pk,
        actor=reviewer,
        text="Fixed.\r\nLine 2",
        expected_version=1,
    )
    turn.refresh_from_db()
    flag.refresh_from_db()
    assert turn.text == "Fixed.\nLine 2" and turn.version == 2
    assert turn.original_text.startswith("Turn text")
    assert flag.resolution == Flag.Resolution.CORRECTED and flag.resolved_by == reviewer
    revision = TurnRevision.objects.get(turn=turn)
    assert (revision.before, revision.after, revision.author, revision.version) == (
        turn.original_text,
        "Fixed.\nLine 2",
        reviewer,
        2,
    )


def test_stale_version_is_refused_and_nothing_is_overwritten(reviewer):
    dialogue = dialogue_with_turns(2)
    turn = _turn(dialogue)
    services.turn_correct(
        dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, text="First", expected_version=1
    )
    with pytest.raises(services.TurnConflict) as caught:
        services.turn_correct(
            dialogue_id=dialogue.pk,
            turn_id=turn.pk,
            actor=reviewer,
            text="Second",
            expected_version=1,
        )
    assert caught.value.turn.text == "First"
    assert reviewer.username in caught.value.message
    turn.refresh_from_db()
    assert turn.text == "First" and turn.version == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "cannot be empty"), ("   \n ", "cannot be empty"), ("x" * 20_001, "limit is 20,000")],
)
def test_bad_corrections_are_refused(reviewer, text, message):
    dialogue = dialogue_with_turns(2)
    turn = _turn(dialogue)
    with pytest.raises(services.InvalidInput, match=message):
        services.turn_correct(
            dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, text=text, expected_version=1
        )
    assert not TurnRevision.objects.exists()


def test_correction_at_the_limit_is_accepted(reviewer):
    dialogue = dialogue_with_turns(2)
    turn = _turn(dialogue)
    services.turn_correct(
        dialogue_id=dialogue.pk,
        turn_id=turn.pk,
        actor=reviewer,
        text="y" * 20_000,
        expected_version=1,
    )
    turn.refresh_from_db()
    assert len(turn.text) == 20_000


def test_html_in_a_correction_is_stored_as_text(reviewer):
    dialogue = dialogue_with_turns(2)
    turn = _turn(dialogue)
    text = '<img src=x onerror="alert(1)"> <b>bold</b>'
    services.turn_correct(
        dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, text=text, expected_version=1
    )
    turn.refresh_from_db()
    assert turn.text == text


def test_revert_restores_original_as_new_revision_and_reopens_flags(reviewer):
    dialogue = dialogue_with_turns(2)
    turn = _turn(dialogue)
    flag = services.turn_flag(
        dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, category="tone"
    )
    services.turn_correct(
        dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, text="Better", expected_version=1
    )
    services.turn_revert(
        dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, expected_version=2
    )
    turn.refresh_from_db()
    flag.refresh_from_db()
    assert turn.text == turn.original_text and turn.version == 3
    assert list(turn.revisions.values_list("kind", flat=True)) == ["edit", "revert"]
    assert flag.resolution == Flag.Resolution.OPEN
    with pytest.raises(services.ReviewError, match="already shows"):
        services.turn_revert(
            dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, expected_version=3
        )


def test_foreign_turn_and_flag_ids_are_404(reviewer):
    dialogue = dialogue_with_turns(2)
    other = dialogue_with_turns(2)
    foreign = _turn(other)
    with pytest.raises(Http404):
        services.turn_flag(
            dialogue_id=dialogue.pk, turn_id=foreign.pk, actor=reviewer, category="tone"
        )
    flag = services.turn_flag(
        dialogue_id=other.pk, turn_id=foreign.pk, actor=reviewer, category="tone"
    )
    with pytest.raises(Http404):
        services.flag_dismiss(
            dialogue_id=dialogue.pk,
            turn_id=_turn(dialogue).pk,
            flag_id=flag.pk,
            actor=reviewer,
            reason="x",
        )


def test_unknown_flag_category_is_refused(reviewer):
    dialogue = dialogue_with_turns(2)
    with pytest.raises(services.InvalidInput):
        services.turn_flag(
            dialogue_id=dialogue.pk, turn_id=_turn(dialogue).pk, actor=reviewer, category="nope"
        )


# --- Verdicts -------------------------------------------------------------------------------------


def test_approve_needs_every_flag_resolved(reviewer):
    dialogue = dialogue_with_turns(3)
    turn = _turn(dialogue)
    flag = services.turn_flag(
        dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, category="factual"
    )
    version = DialogueReview.objects.get(pk=dialogue.pk).version
    with pytest.raises(services.ReviewError, match="1 flag"):
        services.dialogue_approve(dialogue_id=dialogue.pk, actor=reviewer, expected_version=version)
    with pytest.raises(services.InvalidInput):
        services.flag_dismiss(
            dialogue_id=dialogue.pk, turn_id=turn.pk, flag_id=flag.pk, actor=reviewer, reason=" "
        )
    services.flag_dismiss(
        dialogue_id=dialogue.pk,
        turn_id=turn.pk,
        flag_id=flag.pk,
        actor=reviewer,
        reason="It is right",
    )
    version = DialogueReview.objects.get(pk=dialogue.pk).version
    review = services.dialogue_approve(
        dialogue_id=dialogue.pk, actor=reviewer, expected_version=version
    )
    assert review.status == "approved" and review.decided_by == reviewer
    assert review.claimed_by is None
    flag.refresh_from_db()
    assert flag.resolution == "dismissed" and flag.dismiss_reason == "It is right"


def test_approved_is_read_only_until_reopened(reviewer):
    dialogue = dialogue_with_turns(2)
    turn = _turn(dialogue)
    services.dialogue_approve(dialogue_id=dialogue.pk, actor=reviewer, expected_version=1)
    with pytest.raises(services.ReviewError, match="read-only"):
        services.turn_correct(
            dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, text="x", expected_version=1
        )
    with pytest.raises(services.InvalidInput):
        services.dialogue_reopen(
            dialogue_id=dialogue.pk, actor=reviewer, reason="", expected_version=2
        )
    other = UserFactory(reviewer=True)
    review = services.dialogue_reopen(
        dialogue_id=dialogue.pk, actor=other, reason="Turn 2 is wrong", expected_version=2
    )
    assert review.status == "pending" and review.claimed_by == other
    event = ReviewEvent.objects.get(dialogue=dialogue, kind="reopen")
    assert (event.actor, event.note) == (other, "Turn 2 is wrong")
    services.turn_correct(
        dialogue_id=dialogue.pk, turn_id=turn.pk, actor=other, text="x", expected_version=1
    )


def test_reject_needs_a_reason(reviewer):
    dialogue = dialogue_with_turns(2)
    with pytest.raises(services.InvalidInput, match="why"):
        services.dialogue_reject(
            dialogue_id=dialogue.pk, actor=reviewer, reason="  ", expected_version=1
        )
    review = services.dialogue_reject(
        dialogue_id=dialogue.pk, actor=reviewer, reason="Loops", expected_version=1
    )
    assert (review.status, review.reason) == ("rejected", "Loops")


def test_verdict_on_a_stale_dialogue_version_is_refused(reviewer):
    dialogue = dialogue_with_turns(2)
    services.turn_flag(
        dialogue_id=dialogue.pk, turn_id=_turn(dialogue).pk, actor=reviewer, category="tone"
    )
    with pytest.raises(services.DialogueConflict):
        services.dialogue_reject(
            dialogue_id=dialogue.pk, actor=reviewer, reason="x", expected_version=1
        )
    assert DialogueReview.objects.get(pk=dialogue.pk).status == "pending"


def test_approve_refuses_incomplete_dialogue(reviewer):
    dialogue = dialogue_with_turns(2, status=Dialogue.Status.FAILED)
    with pytest.raises(services.ReviewError, match="completely generated"):
        services.dialogue_approve(dialogue_id=dialogue.pk, actor=reviewer, expected_version=1)


def test_writes_refused_while_generating(reviewer):
    dialogue = dialogue_with_turns(2, status=Dialogue.Status.GENERATING)
    with pytest.raises(services.ReviewError, match="still writing"):
        services.turn_flag(
            dialogue_id=dialogue.pk, turn_id=_turn(dialogue).pk, actor=reviewer, category="tone"
        )


# --- Regeneration ---------------------------------------------------------------------------------


def test_regenerate_discards_later_turns_and_continues(
    reviewer, django_capture_on_commit_callbacks
):
    dialogue = dialogue_with_turns(4)
    turn = _turn(dialogue, 1)
    services.turn_correct(
        dialogue_id=dialogue.pk,
        turn_id=turn.pk,
        actor=reviewer,
        text="Corrected.",
        expected_version=1,
    )
    with django_capture_on_commit_callbacks(execute=True):
        discarded = services.dialogue_regenerate(
            dialogue_id=dialogue.pk, turn_id=turn.pk, actor=reviewer, expected_version=2
        )
    assert discarded == 2
    dialogue.refresh_from_db()
    assert dialogue.status == Dialogue.Status.COMPLETE
    old = Turn.objects.filter(dialogue=dialogue, discarded_at__isnull=False)
    assert sorted(old.values_list("position", flat=True)) == [2, 3]
    live = list(
        Turn.objects.filter(dialogue=dialogue, discarded_at__isnull=True).order_by("position")
    )
    assert [t.position for t in live[:2]] == [0, 1]
    assert live[1].text == "Corrected."
    assert len(live) >= 3  # the demo provider continued the conversation
    event = ReviewEvent.objects.get(dialogue=dialogue, kind="regenerate")
    assert "from turn 2" in event.note and event.actor == reviewer


def test_regenerate_refused_while_the_model_is_writing(reviewer, monkeypatch):
    from generation.services import GenerationBusy
    from review.services import turns

    def busy(**kwargs):
        raise GenerationBusy("busy")

    monkeypatch.setattr(turns, "dialogue_regenerate_from", busy)
    dialogue = dialogue_with_turns(3)
    with pytest.raises(services.ReviewError, match="right now"):
        services.dialogue_regenerate(
            dialogue_id=dialogue.pk, turn_id=_turn(dialogue).pk, actor=reviewer
        )
    assert not ReviewEvent.objects.filter(kind="regenerate").exists()
