"""Verdicts: approve, reject, reopen.

`DialogueReview.version` increases on every change of the dialogue's content or verdict and is
the optimistic-concurrency token of the verdict buttons.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from generation.models import Dialogue
from review.models import DialogueReview, Flag, ReviewEvent
from review.services.claims import (
    claim_take,
    content_changed,
    lock_dialogue,
    lock_for_edit,
    record_event,
)
from review.services.errors import DialogueConflict, InvalidInput, NotAllowed, ReviewError
from review.services.independent import independent_submit
from review.services.suggestions import suggestions_undecided, undecided_note


def dialogue_approve(
    *, dialogue_id: int, actor: AbstractBaseUser, expected_version: int
) -> DialogueReview:
    """Approve for export. Every flag on a live turn must be resolved first."""
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor, expected_version=expected_version)
        if dialogue.status != Dialogue.Status.COMPLETE:
            raise ReviewError("Only a completely generated dialogue can be approved.")
        mine = getattr(review, "mine", None)
        open_flags = Flag.objects.filter(
            turn__dialogue=dialogue,
            turn__discarded_at__isnull=True,
            resolution=Flag.Resolution.OPEN,
            review=mine,  # in an independent review, the expert's own
        ).count()
        if open_flags:
            raise ReviewError(
                f"{open_flags} flag(s) still open. Correct each flagged turn or dismiss the flag "
                "with a reason, then approve."
            )
        if mine is not None:
            independent_submit(dialogue, review, mine, actor, DialogueReview.Status.APPROVED, "")
        else:
            _decide(dialogue, review, actor, DialogueReview.Status.APPROVED, "")
        return review


def dialogue_reject(
    *, dialogue_id: int, actor: AbstractBaseUser, reason: str, expected_version: int
) -> DialogueReview:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why this dialogue is rejected; the reason is kept with it.")
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor, expected_version=expected_version)
        mine = getattr(review, "mine", None)
        if mine is not None:
            independent_submit(
                dialogue, review, mine, actor, DialogueReview.Status.REJECTED, reason[:5000]
            )
        else:
            _decide(dialogue, review, actor, DialogueReview.Status.REJECTED, reason[:5000])
        return review


def _decide(
    dialogue: Dialogue, review: DialogueReview, actor: AbstractBaseUser, status: str, reason: str
) -> None:
    # Deciding with judge suggestions left undecided is allowed; how many is kept and said.
    undecided = suggestions_undecided(dialogue, review=None).count()
    review.undecided_suggestions = undecided
    review.status = status
    review.decided_by = actor
    review.decided_at = timezone.now()
    review.reason = reason
    # The verdict ends the reviewer's work on it: the dialogue leaves their hands.
    review.claimed_by = None
    review.claim_expires_at = None
    content_changed(review)
    kind = ReviewEvent.Kind.APPROVE if status == "approved" else ReviewEvent.Kind.REJECT
    reason = "\n".join(filter(None, [reason, undecided_note(undecided)]))
    record_event(dialogue, actor, kind, reason)


def dialogue_reopen(
    *, dialogue_id: int, actor: AbstractBaseUser, reason: str, expected_version: int
) -> DialogueReview:
    """Make an approved or rejected dialogue editable again; records who and why."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why this dialogue is reopened; the reason is kept in its history.")
    with transaction.atomic():
        now = timezone.now()
        dialogue, review = lock_dialogue(dialogue_id)
        if expected_version != review.version:
            raise DialogueConflict(review)
        if review.status in (DialogueReview.Status.PENDING, DialogueReview.Status.ADJUDICATION):
            raise ReviewError("This dialogue is not decided; there is nothing to reopen.")
        # A second look is one expert's: the independent reviews stay as its history.
        review.reviews_required = 1
        claim_take(dialogue, review, actor, now)
        review.status = DialogueReview.Status.PENDING
        review.decided_by = None
        review.decided_at = None
        review.reason = ""
        content_changed(review)
        record_event(dialogue, actor, ReviewEvent.Kind.REOPEN, reason[:5000])
        return review


def reviews_reject(*, dialogue_ids: list[int], actor: AbstractBaseUser, reason: str) -> int:
    """Staff reject many dialogues with one reason (e.g. a broken run). Dialogues already
    decided or not completely generated are left alone; a claim someone holds is ended, and
    the event says whose it was. Returns how many were rejected."""
    if not actor.is_staff:
        raise NotAllowed("Only admins can reject dialogues in bulk.")
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why these dialogues are rejected; the reason is kept with each.")
    rejected = 0
    for pk in dialogue_ids:
        with transaction.atomic():
            dialogue, review = lock_dialogue(pk)
            if review.status != DialogueReview.Status.PENDING:
                continue
            if dialogue.status != Dialogue.Status.COMPLETE:
                continue
            holder = review.claimed_by if review.claim_is_active() else None
            note = reason[:5000]
            if holder is not None and holder.pk != actor.pk:
                note += f" (claim held by {holder.get_username()} ended)"
            _decide(dialogue, review, actor, DialogueReview.Status.REJECTED, note)
            rejected += 1
    return rejected
