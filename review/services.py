"""Every write of the review screens: claims, flags, corrections, verdicts, regeneration.

Each function is one transaction. Writes that touch a dialogue first lock its Dialogue row and
then its DialogueReview row (always in that order, so two requests never deadlock), check that
nobody else holds the claim, and renew the actor's claim: a claim expires after
SYNTHREVIEW_CLAIM_MINUTES without any action. `DialogueReview.version` increases on every
change of the dialogue's content or verdict and is the optimistic-concurrency token of the
verdict buttons; `Turn.version` is the token of a turn's edit box.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from generation.models import Dialogue, Turn
from review.models import DialogueReview, Flag, ReviewEvent, TurnRevision
from review.selectors import QueueFilters, reviewable_dialogues

# --- Errors the screens show to the reviewer ------------------------------------------------------


class ReviewError(Exception):
    """A refused action, with a message written for the reviewer."""

    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ReviewError):
    status = 422


class NotAllowed(ReviewError):
    status = 403


class ClaimedByOther(ReviewError):
    def __init__(self, review: DialogueReview) -> None:
        holder = review.claimed_by.get_username() if review.claimed_by else "another reviewer"
        until = timezone.localtime(review.claim_expires_at).strftime("%H:%M")
        super().__init__(
            f"{holder} is reviewing this dialogue (claim held until {until} unless they keep "
            "working). Your change was not saved."
        )
        self.holder = review.claimed_by


class TurnConflict(ReviewError):
    """The turn changed since the reviewer opened the edit box; `turn` is the current one."""

    def __init__(self, turn: Turn, last: TurnRevision | None) -> None:
        who = last.author.get_username() if last and last.author else "someone"
        super().__init__(
            f"This turn was changed by {who} after you opened it (now version {turn.version}). "
            "Their version is shown below; your text is still in the box. Save again to "
            "replace theirs, or Cancel to keep it."
        )
        self.turn = turn
        self.last = last


class DialogueConflict(ReviewError):
    def __init__(self, review: DialogueReview) -> None:
        state = review.get_status_display().lower()
        who = review.decided_by.get_username() if review.decided_by else None
        detail = f"it is now {state}" + (f" by {who}" if who and review.status != "pending" else "")
        super().__init__(
            f"This dialogue changed since you loaded it ({detail}). Nothing was saved: "
            "look at the current version below and try again."
        )


# --- Claims ---------------------------------------------------------------------------------------


def claim_deadline(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(minutes=settings.SYNTHREVIEW_CLAIM_MINUTES)


def review_for(dialogue: Dialogue) -> DialogueReview:
    """The dialogue's review row, created pending on first touch."""
    review, _ = DialogueReview.objects.get_or_create(dialogue=dialogue)
    return review


def _event(dialogue: Dialogue, actor: AbstractBaseUser | None, kind: str, note: str = "") -> None:
    ReviewEvent.objects.create(dialogue=dialogue, actor=actor, kind=kind, note=note)


def _lock(dialogue_id: int) -> tuple[Dialogue, DialogueReview]:
    """Lock the dialogue then its review (created if missing). Must run inside atomic()."""
    try:
        dialogue = Dialogue.objects.select_for_update().get(pk=dialogue_id)
    except Dialogue.DoesNotExist:
        raise Http404("No such dialogue") from None
    review, _ = DialogueReview.objects.select_for_update().get_or_create(dialogue=dialogue)
    return dialogue, review


def _take(
    dialogue: Dialogue, review: DialogueReview, actor: AbstractBaseUser, now: datetime
) -> None:
    """Claim or renew for `actor`; refuse if someone else holds a live claim."""
    if review.claim_is_active(now) and review.claimed_by_id != actor.pk:
        raise ClaimedByOther(review)
    newly = review.claimed_by_id != actor.pk or not review.claim_is_active(now)
    review.claimed_by = actor
    review.claim_expires_at = claim_deadline(now)
    if newly:
        _event(dialogue, actor, ReviewEvent.Kind.CLAIM)


def _for_edit(
    dialogue_id: int, actor: AbstractBaseUser, *, expected_version: int | None = None
) -> tuple[Dialogue, DialogueReview]:
    """Lock and claim a dialogue whose content is about to change; refuse when it is decided,
    being generated, or changed since the reviewer loaded it."""
    now = timezone.now()
    dialogue, review = _lock(dialogue_id)
    _take(dialogue, review, actor, now)
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


def _changed(review: DialogueReview) -> None:
    review.version += 1
    review.save()


def review_claim_next(
    *, actor: AbstractBaseUser, filters: QueueFilters | None = None
) -> Dialogue | None:
    """Claim the next dialogue awaiting review for `actor`, or None if there is none.

    A dialogue the actor already holds comes first (a second click never hoards a second one).
    Otherwise candidates are locked with SKIP LOCKED, so concurrent clicks each lock a different
    row; the claim is re-checked after the lock because a row locked late may have been claimed
    by a transaction that committed in between.
    """
    filters = filters or QueueFilters()
    now = timezone.now()
    with transaction.atomic():
        mine = (
            reviewable_dialogues(filters)
            .filter(
                review__claimed_by=actor,
                review__claim_expires_at__gt=now,
                review__status=DialogueReview.Status.PENDING,
            )
            .order_by("run_id", "index")
            .values_list("pk", flat=True)
            .first()
        )
        if mine:
            dialogue, review = _lock(mine)
            _take(dialogue, review, actor, now)
            review.save()
            return dialogue
        free = (Q(review__isnull=True) | Q(review__status=DialogueReview.Status.PENDING)) & (
            Q(review__claimed_by__isnull=True) | Q(review__claim_expires_at__lte=now)
        )
        # One row per statement: locking a batch would make every other clicker skip the
        # whole batch and find the queue empty.
        checked: list[int] = []
        for _ in range(50):
            pk = (
                reviewable_dialogues(filters)
                .filter(free)
                .exclude(pk__in=checked)
                .order_by("run_id", "index")
                .select_for_update(skip_locked=True, of=("self",))
                .values_list("pk", flat=True)
                .first()
            )
            if pk is None:
                break
            checked.append(pk)
            dialogue = Dialogue.objects.get(pk=pk)
            review, _ = DialogueReview.objects.select_for_update().get_or_create(dialogue=dialogue)
            if review.status != DialogueReview.Status.PENDING or review.claim_is_active(now):
                continue  # claimed by a transaction that committed after our snapshot
            _take(dialogue, review, actor, now)
            review.save()
            return dialogue
    return None


def review_release(*, dialogue_id: int, actor: AbstractBaseUser) -> DialogueReview:
    """Give a dialogue back to the queue. The holder may release their own claim; staff any."""
    with transaction.atomic():
        dialogue, review = _lock(dialogue_id)
        if review.claimed_by_id is None:
            return review
        if review.claimed_by_id != actor.pk and not actor.is_staff:
            raise NotAllowed("Only the reviewer holding this dialogue or an admin can release it.")
        holder = review.claimed_by.get_username() if review.claimed_by else ""
        review.claimed_by = None
        review.claim_expires_at = None
        review.save()
        note = "" if holder == actor.get_username() else f"claim held by {holder}"
        _event(dialogue, actor, ReviewEvent.Kind.RELEASE, note)
        return review


def reviews_release(*, dialogue_ids: list[int], actor: AbstractBaseUser) -> int:
    """Admin bulk release; returns how many claims were released."""
    released = 0
    for pk in dialogue_ids:
        review = review_release(dialogue_id=pk, actor=actor)
        released += review.claimed_by_id is None
    return released


# --- Turns and flags ------------------------------------------------------------------------------


def _live_turn(dialogue: Dialogue, turn_id: int) -> Turn:
    try:
        turn = Turn.objects.select_for_update().get(pk=turn_id, dialogue=dialogue)
    except Turn.DoesNotExist:
        raise Http404("No such turn") from None
    if turn.discarded_at is not None:
        raise ReviewError("This turn was discarded by a regeneration; it can no longer change.")
    return turn


def _clean_text(text: str) -> str:
    # Line endings from browsers are \r\n; store \n so diffs do not show invisible changes.
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InvalidInput(
            "A correction cannot be empty. Write the corrected turn, or Cancel to keep it."
        )
    limit = settings.SYNTHREVIEW_MAX_CORRECTION_CHARS
    if len(text) > limit:
        raise InvalidInput(
            f"The correction is {len(text):,} characters long; the limit is {limit:,}. "
            "Shorten it and save again."
        )
    return text


def _set_text(turn: Turn, text: str, actor: AbstractBaseUser, kind: str) -> TurnRevision:
    before = turn.text
    turn.text = text
    turn.version += 1
    turn.save(update_fields=["text", "version", "updated_at"])
    return TurnRevision.objects.create(
        turn=turn, author=actor, kind=kind, before=before, after=text, version=turn.version
    )


def turn_correct(
    *, dialogue_id: int, turn_id: int, actor: AbstractBaseUser, text: str, expected_version: int
) -> Turn:
    """Save a reviewer's correction as a new revision; resolves the turn's open flags.

    Refused with TurnConflict if the turn changed since the edit box was opened, so nothing is
    overwritten silently. The model's original text stays in `original_text`.
    """
    text = _clean_text(text)
    with transaction.atomic():
        dialogue, review = _for_edit(dialogue_id, actor)
        turn = _live_turn(dialogue, turn_id)
        if turn.version != expected_version:
            raise TurnConflict(turn, turn.revisions.select_related("author").last())
        if text == turn.text:
            review.save()  # renews the claim
            return turn
        _set_text(turn, text, actor, TurnRevision.Kind.EDIT)
        turn.flags.filter(resolution=Flag.Resolution.OPEN).update(
            resolution=Flag.Resolution.CORRECTED, resolved_by=actor, resolved_at=timezone.now()
        )
        _changed(review)
        return turn


def turn_revert(
    *, dialogue_id: int, turn_id: int, actor: AbstractBaseUser, expected_version: int
) -> Turn:
    """Restore the model's original text (as a new revision, so the correction stays in the
    history). Flags that the correction had resolved are open again."""
    with transaction.atomic():
        dialogue, review = _for_edit(dialogue_id, actor)
        turn = _live_turn(dialogue, turn_id)
        if turn.version != expected_version:
            raise TurnConflict(turn, turn.revisions.select_related("author").last())
        if not turn.is_corrected:
            raise ReviewError("This turn already shows the model's original text.")
        _set_text(turn, turn.original_text, actor, TurnRevision.Kind.REVERT)
        turn.flags.filter(resolution=Flag.Resolution.CORRECTED).update(
            resolution=Flag.Resolution.OPEN, resolved_by=None, resolved_at=None
        )
        _changed(review)
        return turn


def turn_flag(
    *, dialogue_id: int, turn_id: int, actor: AbstractBaseUser, category: str, note: str = ""
) -> Flag:
    if category not in Flag.Category.values:
        raise InvalidInput("Choose what is wrong with this turn.")
    with transaction.atomic():
        dialogue, review = _for_edit(dialogue_id, actor)
        turn = _live_turn(dialogue, turn_id)
        flag = Flag.objects.create(
            turn=turn, category=category, note=note.strip()[:2000], created_by=actor
        )
        _changed(review)
        return flag


def flag_dismiss(
    *, dialogue_id: int, turn_id: int, flag_id: int, actor: AbstractBaseUser, reason: str
) -> Flag:
    """Resolve a flag without changing the turn; the reason is required and kept."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why this flag is dismissed (for example: the turn is correct).")
    with transaction.atomic():
        dialogue, review = _for_edit(dialogue_id, actor)
        try:
            flag = Flag.objects.select_for_update().get(
                pk=flag_id, turn_id=turn_id, turn__dialogue=dialogue
            )
        except Flag.DoesNotExist:
            raise Http404("No such flag") from None
        if flag.resolution != Flag.Resolution.OPEN:
            raise ReviewError("This flag is already resolved.")
        flag.resolution = Flag.Resolution.DISMISSED
        flag.dismiss_reason = reason[:2000]
        flag.resolved_by = actor
        flag.resolved_at = timezone.now()
        flag.save()
        _changed(review)
        return flag


# --- Regeneration ---------------------------------------------------------------------------------


def dialogue_regenerate(
    *, dialogue_id: int, turn_id: int, actor: AbstractBaseUser, expected_version: int | None = None
) -> int:
    """Discard the turns after `turn` and let the worker continue from it (usually right after
    the reviewer corrected it). Returns how many turns were discarded; they stay in history."""
    from generation.services import GenerationBusy, dialogue_regenerate_from

    with transaction.atomic():
        dialogue, review = _for_edit(dialogue_id, actor)
        turn = _live_turn(dialogue, turn_id)
        if expected_version is not None and turn.version != expected_version:
            raise TurnConflict(turn, turn.revisions.select_related("author").last())
        try:
            discarded = dialogue_regenerate_from(dialogue=dialogue, position=turn.position)
        except GenerationBusy:
            raise ReviewError(
                "The model is writing this dialogue right now; try again when it finishes."
            ) from None
        _event(
            dialogue,
            actor,
            ReviewEvent.Kind.REGENERATE,
            f"from turn {turn.position + 1}; {discarded} later turn(s) kept in history",
        )
        _changed(review)
        return discarded


# --- Verdicts -------------------------------------------------------------------------------------


def dialogue_approve(
    *, dialogue_id: int, actor: AbstractBaseUser, expected_version: int
) -> DialogueReview:
    """Approve for export. Every flag on a live turn must be resolved first."""
    with transaction.atomic():
        dialogue, review = _for_edit(dialogue_id, actor, expected_version=expected_version)
        if dialogue.status != Dialogue.Status.COMPLETE:
            raise ReviewError("Only a completely generated dialogue can be approved.")
        open_flags = Flag.objects.filter(
            turn__dialogue=dialogue,
            turn__discarded_at__isnull=True,
            resolution=Flag.Resolution.OPEN,
        ).count()
        if open_flags:
            raise ReviewError(
                f"{open_flags} flag(s) still open. Correct each flagged turn or dismiss the flag "
                "with a reason, then approve."
            )
        _decide(dialogue, review, actor, DialogueReview.Status.APPROVED, "")
        return review


def dialogue_reject(
    *, dialogue_id: int, actor: AbstractBaseUser, reason: str, expected_version: int
) -> DialogueReview:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why this dialogue is rejected; the reason is kept with it.")
    with transaction.atomic():
        dialogue, review = _for_edit(dialogue_id, actor, expected_version=expected_version)
        _decide(dialogue, review, actor, DialogueReview.Status.REJECTED, reason[:5000])
        return review


def _decide(
    dialogue: Dialogue, review: DialogueReview, actor: AbstractBaseUser, status: str, reason: str
) -> None:
    review.status = status
    review.decided_by = actor
    review.decided_at = timezone.now()
    review.reason = reason
    # The verdict ends the reviewer's work on it: the dialogue leaves their hands.
    review.claimed_by = None
    review.claim_expires_at = None
    _changed(review)
    kind = ReviewEvent.Kind.APPROVE if status == "approved" else ReviewEvent.Kind.REJECT
    _event(dialogue, actor, kind, reason)


def dialogue_reopen(
    *, dialogue_id: int, actor: AbstractBaseUser, reason: str, expected_version: int
) -> DialogueReview:
    """Make an approved or rejected dialogue editable again; records who and why."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why this dialogue is reopened; the reason is kept in its history.")
    with transaction.atomic():
        now = timezone.now()
        dialogue, review = _lock(dialogue_id)
        if expected_version != review.version:
            raise DialogueConflict(review)
        if review.status == DialogueReview.Status.PENDING:
            raise ReviewError("This dialogue is not decided; there is nothing to reopen.")
        _take(dialogue, review, actor, now)
        review.status = DialogueReview.Status.PENDING
        review.decided_by = None
        review.decided_at = None
        review.reason = ""
        _changed(review)
        _event(dialogue, actor, ReviewEvent.Kind.REOPEN, reason[:5000])
        return review
