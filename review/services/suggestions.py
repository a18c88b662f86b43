"""The expert's answer to a judge suggestion: accept (it becomes a flag) or dismiss."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from review.models import Flag, Suggestion
from review.services.claims import content_changed, lock_for_edit
from review.services.errors import ReviewError
from review.services.turns import live_turn


def _undecided(dialogue_id: int, turn_id: int, suggestion_id: int) -> Suggestion:
    try:
        suggestion = Suggestion.objects.select_for_update().get(
            pk=suggestion_id, turn_id=turn_id, turn__dialogue_id=dialogue_id
        )
    except Suggestion.DoesNotExist:
        raise Http404("No such suggestion") from None
    if suggestion.status != Suggestion.Status.UNDECIDED:
        raise ReviewError(f"This suggestion is already {suggestion.get_status_display().lower()}.")
    return suggestion


def _decide(suggestion: Suggestion, status: str, actor: AbstractBaseUser) -> None:
    suggestion.status = status
    suggestion.decided_by = actor
    suggestion.decided_at = timezone.now()
    suggestion.save()


def suggestion_accept(
    *, dialogue_id: int, turn_id: int, suggestion_id: int, actor: AbstractBaseUser
) -> Flag:
    """The expert agrees: the mark becomes an open flag of the same category, with the judge's
    rationale as its note, resolved like any flag (correct the turn, or dismiss with a reason)."""
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor)
        turn = live_turn(dialogue, turn_id)
        suggestion = _undecided(dialogue_id, turn_id, suggestion_id)
        flag = Flag.objects.create(
            turn=turn,
            category=suggestion.category,
            note=f"Judge: {suggestion.rationale}"[:2000],
            created_by=actor,
            review=getattr(review, "mine", None),  # in an independent review, one's own
        )
        suggestion.flag = flag
        _decide(suggestion, Suggestion.Status.ACCEPTED, actor)
        content_changed(review)
        return flag


def suggestion_dismiss(
    *, dialogue_id: int, turn_id: int, suggestion_id: int, actor: AbstractBaseUser
) -> Suggestion:
    """The expert disagrees: the mark is kept as dismissed (it counts against the judge)."""
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor)
        live_turn(dialogue, turn_id)
        suggestion = _undecided(dialogue_id, turn_id, suggestion_id)
        _decide(suggestion, Suggestion.Status.DISMISSED, actor)
        content_changed(review)
        return suggestion
