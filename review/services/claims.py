"""Claims: who is reviewing a dialogue, and the row locks every review write starts with.

Writes that touch a dialogue first lock its Dialogue row and then its DialogueReview row (always
in that order, so two requests never deadlock), check that nobody else holds the claim, and
renew the actor's claim: a claim expires after SYNTHREVIEW_CLAIM_MINUTES without any action.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from generation.models import Dialogue
from review.models import DialogueReview, ReviewEvent
from review.permissions import user_groups
from review.selectors import QueueFilters, domain_groups, reviewable_dialogues
from review.services.errors import ClaimedByOther, DialogueConflict, NotAllowed, ReviewError


def claim_deadline(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(minutes=settings.SYNTHREVIEW_CLAIM_MINUTES)


def review_for(dialogue: Dialogue) -> DialogueReview:
    """The dialogue's review row, created pending on first touch."""
    review, _ = DialogueReview.objects.get_or_create(dialogue=dialogue)
    return review


def record_event(
    dialogue: Dialogue, actor: AbstractBaseUser | None, kind: str, note: str = ""
) -> None:
    ReviewEvent.objects.create(dialogue=dialogue, actor=actor, kind=kind, note=note)


def lock_dialogue(dialogue_id: int) -> tuple[Dialogue, DialogueReview]:
    """Lock the dialogue then its review (created if missing). Must run inside atomic()."""
    try:
        dialogue = Dialogue.objects.select_for_update().get(pk=dialogue_id)
    except Dialogue.DoesNotExist:
        raise Http404("No such dialogue") from None
    review, _ = DialogueReview.objects.select_for_update().get_or_create(dialogue=dialogue)
    return dialogue, review


def claim_take(
    dialogue: Dialogue, review: DialogueReview, actor: AbstractBaseUser, now: datetime
) -> None:
    """Claim or renew for `actor`; refuse if someone else holds a live claim."""
    if review.claim_is_active(now) and review.claimed_by_id != actor.pk:
        raise ClaimedByOther(review)
    newly = review.claimed_by_id != actor.pk or not review.claim_is_active(now)
    if newly:
        # Checked when a claim starts; the holder's later actions renew it without asking.
        domain_check(dialogue, actor)
    review.claimed_by = actor
    review.claim_expires_at = claim_deadline(now)
    if newly:
        record_event(dialogue, actor, ReviewEvent.Kind.CLAIM)


def domain_check(dialogue: Dialogue, actor: AbstractBaseUser) -> None:
    """Refuse a reviewer outside the groups the dialogue's review policy names."""
    if actor.is_staff:
        return
    allowed = domain_groups(dialogue)
    if allowed and not allowed & user_groups(actor).keys():
        raise NotAllowed(
            "This dialogue is reviewed by other reviewer groups (see its scenario's review "
            "policy); ask an admin to add you to one of them."
        )


def lock_for_edit(
    dialogue_id: int, actor: AbstractBaseUser, *, expected_version: int | None = None
) -> tuple[Dialogue, DialogueReview]:
    """Lock and claim a dialogue whose content is about to change; refuse when it is decided,
    being generated, or changed since the reviewer loaded it."""
    now = timezone.now()
    dialogue, review = lock_dialogue(dialogue_id)
    claim_take(dialogue, review, actor, now)
    if expected_version is not None and expected_version != review.version:
        raise DialogueConflict(review)
    if review.status != DialogueReview.Status.PENDING:
        raise ReviewError(
            f"This dialogue is {review.get_status_display().lower()} and read-only. "
            "Reopen it to make changes."
        )
    if dialogue.status in (Dialogue.Status.PENDING, Dialogue.Status.GENERATING):
        raise ReviewError("The model is still writing this dialogue. Wait until it finishes.")
    return dialogue, review


def content_changed(review: DialogueReview) -> None:
    review.version += 1
    review.save()


def review_claim_next(
    *, actor: AbstractBaseUser, filters: QueueFilters | None = None
) -> Dialogue | None:
    """Claim the next dialogue awaiting review for `actor`, or None if there is none.

    A dialogue the actor already holds comes first (a second click never hoards a second one),
    then what is assigned to the actor or their groups, then unassigned work; work assigned to
    someone else is never offered. Candidates are locked with SKIP LOCKED, so concurrent clicks
    each lock a different row; the claim is re-checked after the lock because a row locked
    late may have been claimed by a transaction that committed in between.
    """
    filters = filters or QueueFilters()
    now = timezone.now()
    with transaction.atomic():
        candidates = reviewable_dialogues(filters, user=actor)
        mine = (
            candidates.filter(
                review__claimed_by=actor,
                review__claim_expires_at__gt=now,
                review__status=DialogueReview.Status.PENDING,
            )
            .order_by("run_id", "index")
            .values_list("pk", flat=True)
            .first()
        )
        if mine:
            dialogue, review = lock_dialogue(mine)
            claim_take(dialogue, review, actor, now)
            review.save()
            return dialogue
        free = (Q(review__isnull=True) | Q(review__status=DialogueReview.Status.PENDING)) & (
            Q(review__claimed_by__isnull=True) | Q(review__claim_expires_at__lte=now)
        )
        assigned_to_me = Q(review__assigned_to=actor) | Q(
            review__assigned_group__in=list(user_groups(actor))
        )
        unassigned = Q(review__isnull=True) | Q(
            review__assigned_to__isnull=True, review__assigned_group__isnull=True
        )
        for pool in (assigned_to_me, unassigned):
            dialogue = _claim_first(candidates.filter(free & pool), actor, now)
            if dialogue is not None:
                return dialogue
    return None


def _claim_first(candidates, actor: AbstractBaseUser, now: datetime) -> Dialogue | None:
    # One row per statement: locking a batch would make every other clicker skip the
    # whole batch and find the queue empty.
    checked: list[int] = []
    for _ in range(50):
        pk = (
            candidates.exclude(pk__in=checked)
            .order_by("run_id", "index")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)
            .first()
        )
        if pk is None:
            return None
        checked.append(pk)
        dialogue = Dialogue.objects.get(pk=pk)
        review, _ = DialogueReview.objects.select_for_update().get_or_create(dialogue=dialogue)
        if review.status != DialogueReview.Status.PENDING or review.claim_is_active(now):
            continue  # claimed by a transaction that committed after our snapshot
        claim_take(dialogue, review, actor, now)
        review.save()
        return dialogue
    return None


def review_release(*, dialogue_id: int, actor: AbstractBaseUser) -> DialogueReview:
    """Give a dialogue back to the queue. The holder may release their own claim; staff any."""
    with transaction.atomic():
        dialogue, review = lock_dialogue(dialogue_id)
        if review.claimed_by_id is None:
            return review
        if review.claimed_by_id != actor.pk and not actor.is_staff:
            raise NotAllowed("Only the reviewer holding this dialogue or an admin can release it.")
        holder = review.claimed_by.get_username() if review.claimed_by else ""
        review.claimed_by = None
        review.claim_expires_at = None
        review.save()
        note = "" if holder == actor.get_username() else f"claim held by {holder}"
        record_event(dialogue, actor, ReviewEvent.Kind.RELEASE, note)
        return review


def reviews_release(*, dialogue_ids: list[int], actor: AbstractBaseUser) -> int:
    """Admin bulk release; returns how many claims were released."""
    released = 0
    for pk in dialogue_ids:
        review = review_release(dialogue_id=pk, actor=actor)
        released += review.claimed_by_id is None
    return released


def reviews_assign(
    *,
    dialogue_ids: list[int],
    actor: AbstractBaseUser,
    assignee: AbstractBaseUser | None = None,
    group: Group | None = None,
) -> int:
    """Staff hand dialogues to a reviewer or a group (neither: unassign). Decided dialogues
    are left alone; returns how many were assigned."""
    if not actor.is_staff:
        raise NotAllowed("Only admins can assign dialogues.")
    label = assignee.get_username() if assignee else (group.name if group else "nobody")
    assigned = 0
    for pk in dialogue_ids:
        with transaction.atomic():
            dialogue, review = lock_dialogue(pk)
            if review.status != DialogueReview.Status.PENDING:
                continue
            review.assigned_to = assignee
            review.assigned_group = group
            review.save()
            record_event(dialogue, actor, ReviewEvent.Kind.ASSIGN, f"to {label}")
            assigned += 1
    return assigned
