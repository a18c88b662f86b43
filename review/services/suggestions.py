"""The expert's answer to a judge suggestion: accept (it becomes a flag) or dismiss.

The answer belongs to the expert's review, like their flags: in an independent review to
their IndependentReview (nobody else sees it until all reviews are in, and the others answer
the same suggestion for themselves), otherwise to the dialogue's one review. One path serves
both: `review.mine` is the expert's independent review, or None.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.http import Http404

from generation.models import Dialogue
from review.models import Flag, IndependentReview, Suggestion, SuggestionDecision
from review.services.claims import content_changed, lock_for_edit
from review.services.errors import ReviewError
from review.services.turns import live_turn


def suggestions_undecided(
    dialogue: Dialogue, *, review: IndependentReview | None
) -> QuerySet[Suggestion]:
    """The dialogue's suggestions on live turns that `review` (an independent review, or None
    for the dialogue's one review) has not answered."""
    answered = SuggestionDecision.objects.filter(suggestion=OuterRef("pk"), review=review)
    return Suggestion.objects.filter(
        turn__dialogue=dialogue, turn__discarded_at__isnull=True
    ).exclude(Exists(answered))


def undecided_note(count: int) -> str:
    """What a verdict's event says about suggestions left unanswered (nothing for none)."""
    return f"{count} judge suggestion{'s' if count != 1 else ''} undecided" if count else ""


def _undecided(
    dialogue_id: int, turn_id: int, suggestion_id: int, review: IndependentReview | None
) -> Suggestion:
    try:
        suggestion = Suggestion.objects.get(
            pk=suggestion_id, turn_id=turn_id, turn__dialogue_id=dialogue_id
        )
    except Suggestion.DoesNotExist:
        raise Http404("No such suggestion") from None
    # The dialogue's row lock (lock_for_edit) serialises answers within a review.
    decision = SuggestionDecision.objects.filter(suggestion=suggestion, review=review).first()
    if decision is not None:
        raise ReviewError(f"This suggestion is already {decision.get_status_display().lower()}.")
    return suggestion


def suggestion_accept(
    *, dialogue_id: int, turn_id: int, suggestion_id: int, actor: AbstractBaseUser
) -> Flag:
    """The expert agrees: the mark becomes their open flag of the same category, with the
    judge's rationale as its note, resolved like any flag (correct the turn, or dismiss with a
    reason)."""
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor)
        mine = getattr(review, "mine", None)
        turn = live_turn(dialogue, turn_id)
        suggestion = _undecided(dialogue_id, turn_id, suggestion_id, mine)
        flag = Flag.objects.create(
            turn=turn,
            category=suggestion.category,
            note=f"Judge: {suggestion.rationale}"[:2000],
            created_by=actor,
            review=mine,
        )
        SuggestionDecision.objects.create(
            suggestion=suggestion,
            review=mine,
            status=SuggestionDecision.Status.ACCEPTED,
            flag=flag,
            decided_by=actor,
        )
        content_changed(review)
        return flag


def suggestion_dismiss(
    *, dialogue_id: int, turn_id: int, suggestion_id: int, actor: AbstractBaseUser
) -> SuggestionDecision:
    """The expert disagrees: the mark is kept as dismissed in their review (it counts against
    the judge)."""
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor)
        mine = getattr(review, "mine", None)
        live_turn(dialogue, turn_id)
        suggestion = _undecided(dialogue_id, turn_id, suggestion_id, mine)
        decision = SuggestionDecision.objects.create(
            suggestion=suggestion,
            review=mine,
            status=SuggestionDecision.Status.DISMISSED,
            decided_by=actor,
        )
        content_changed(review)
        return decision
