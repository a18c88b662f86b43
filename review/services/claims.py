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
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from generation.models import Dialogue
from review.models import DialogueReview, IndependentReview, ReviewEvent
from review.permissions import user_groups
from review.selectors import (
    QueueFilters,
    domain_groups,
    policy_of,
    queue_ordered,
    required_reviews_expression,
    reviewable_dialogues,
)
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
    return dialogue, _review_locked(dialogue)


def _review_locked(dialogue: Dialogue) -> DialogueReview:
    """The dialogue's review row, locked; created with its policy's number of reviews."""
    review, _ = DialogueReview.objects.select_for_update().get_or_create(
        dialogue=dialogue,
        defaults={"reviews_required": lambda: policy_of(dialogue).reviews_required},
    )
    return review


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
    if review.is_independent:
        # Each expert works on their own independent review; nobody holds the dialogue and
        # the shared version does not move until the reviews are concluded.
        _check_editable(dialogue, review)
        review.mine = independent_take(dialogue, review, actor, now)
        return dialogue, review
    claim_take(dialogue, review, actor, now)
    if expected_version is not None and expected_version != review.version:
        raise DialogueConflict(review)
    _check_editable(dialogue, review)
    return dialogue, review


def _check_editable(dialogue: Dialogue, review: DialogueReview) -> None:
    if review.status != DialogueReview.Status.PENDING:
        raise ReviewError(
            f"This dialogue is {review.get_status_display().lower()} and read-only. "
            "Reopen it to make changes."
        )
    if dialogue.status in (Dialogue.Status.PENDING, Dialogue.Status.GENERATING):
        raise ReviewError("The model is still writing this dialogue. Wait until it finishes.")


def content_changed(review: DialogueReview) -> None:
    if review.is_independent:
        return  # the expert's own review changed, not the dialogue (see lock_for_edit)
    review.version += 1
    review.save()


def independent_take(
    dialogue: Dialogue, review: DialogueReview, actor: AbstractBaseUser, now: datetime
) -> IndependentReview:
    """The actor's independent review of the locked dialogue, its claim renewed; a new one if
    a slot is free. Slots are counted under the dialogue's row lock, so a dialogue never has
    more live reviews than it requires; a lapsed draft of someone else gives its slot up."""
    reviews = list(IndependentReview.objects.select_for_update().filter(dialogue=dialogue))
    mine = next((r for r in reviews if r.reviewer_id == actor.pk), None)
    if mine is not None and mine.submitted_at is not None:
        raise ReviewError(
            "You have submitted your review of this dialogue; the other independent reviews "
            "are still awaited."
        )
    live = [r for r in reviews if r.is_live(now) and r is not mine]
    if len(live) >= review.reviews_required:
        raise ReviewError(
            f"This dialogue already has its {review.reviews_required} independent reviewers."
        )
    if mine is None:
        domain_check(dialogue, actor)
        lapsed = [r.pk for r in reviews if not r.is_live(now)]
        IndependentReview.objects.filter(pk__in=lapsed).delete()
        mine = IndependentReview(dialogue=dialogue, reviewer=actor)
        note = f"independent review {len(live) + 1} of {review.reviews_required}"
        record_event(dialogue, actor, ReviewEvent.Kind.CLAIM, note)
    mine.claim_expires_at = claim_deadline(now)
    mine.save()
    return mine


def review_claim_next(
    *, actor: AbstractBaseUser, filters: QueueFilters | None = None
) -> Dialogue | None:
    """Claim the next dialogue awaiting review for `actor`, or None if there is none.

    Candidates come in the queue's order (`filters.ordering`: run order, riskiest first...).
    A dialogue the actor already holds comes first (a second click never hoards a second one),
    then what is assigned to the actor or their groups, then unassigned work; work assigned to
    someone else is never offered. A dialogue needing several independent reviews is offered
    while it has a free slot and the actor has not reviewed it. Candidates are locked with
    SKIP LOCKED, so concurrent clicks each lock a different row; the claim is re-checked after
    the lock because a row locked late may have been claimed by a transaction that committed
    in between.
    """
    filters = filters or QueueFilters()
    now = timezone.now()
    with transaction.atomic():
        candidates = reviewable_dialogues(filters, user=actor)
        held = _held_by(actor, now)
        mine = queue_ordered(candidates.filter(held), filters.ordering).values_list("pk", flat=True)
        if mine := mine.first():
            dialogue, review = lock_dialogue(mine)
            _take(dialogue, review, actor, now)
            return dialogue
        assigned_to_me = Q(review__assigned_to=actor) | Q(
            review__assigned_group__in=list(user_groups(actor))
        )
        unassigned = Q(review__isnull=True) | Q(
            review__assigned_to__isnull=True, review__assigned_group__isnull=True
        )
        open_now = _open_to(candidates, actor, now)
        for pool in (assigned_to_me, unassigned):
            dialogue = _claim_first(open_now.filter(pool), filters.ordering, actor, now)
            if dialogue is not None:
                return dialogue
    return None


def _held_by(actor: AbstractBaseUser, now: datetime) -> Q:
    single = Q(review__claimed_by=actor, review__claim_expires_at__gt=now)
    independent = Exists(
        IndependentReview.objects.filter(
            dialogue=OuterRef("pk"),
            reviewer=actor,
            submitted_at__isnull=True,
            claim_expires_at__gt=now,
        )
    )
    return Q(review__status=DialogueReview.Status.PENDING) & (single | Q(independent))


def _open_to(candidates: QuerySet, actor: AbstractBaseUser, now: datetime) -> QuerySet:
    """Undecided dialogues nobody holds (one review), or with a free independent-review slot
    that the actor has not used (several)."""
    undecided = Q(review__isnull=True) | Q(review__status=DialogueReview.Status.PENDING)
    unclaimed = Q(review__claimed_by__isnull=True) | Q(review__claim_expires_at__lte=now)
    live = IndependentReview.objects.filter(dialogue=OuterRef("pk")).filter(
        Q(submitted_at__isnull=False) | Q(claim_expires_at__gt=now)
    )
    slots = live.order_by().values("dialogue").annotate(n=Count("pk")).values("n")
    reviewed = Exists(IndependentReview.objects.filter(dialogue=OuterRef("pk"), reviewer=actor))
    single = Q(required=1) & unclaimed
    several = Q(required__gt=1, slots__lt=F("required")) & ~Q(reviewed)
    return candidates.alias(
        required=required_reviews_expression(), slots=Coalesce(Subquery(slots), 0)
    ).filter(undecided & (single | several))


def _take(dialogue: Dialogue, review: DialogueReview, actor: AbstractBaseUser, now) -> None:
    if review.is_independent:
        independent_take(dialogue, review, actor, now)
    else:
        claim_take(dialogue, review, actor, now)
        review.save()


def _claim_first(
    candidates: QuerySet, ordering: str, actor: AbstractBaseUser, now: datetime
) -> Dialogue | None:
    # One row per statement: locking a batch would make every other clicker skip the
    # whole batch and find the queue empty.
    checked: list[int] = []
    for _ in range(50):
        pk = (
            queue_ordered(candidates.exclude(pk__in=checked), ordering)
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)
            .first()
        )
        if pk is None:
            return None
        checked.append(pk)
        dialogue = Dialogue.objects.get(pk=pk)
        review = _review_locked(dialogue)
        taken = review.claim_is_active(now) and not review.is_independent
        if review.status != DialogueReview.Status.PENDING or taken:
            continue  # claimed by a transaction that committed after our snapshot
        try:
            _take(dialogue, review, actor, now)
        except ReviewError:
            continue  # its last slot went to a transaction that committed in between
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
