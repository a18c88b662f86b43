"""Turn edits: corrections with full history, reverts, flags, and regeneration from a turn.

`Turn.version` is the optimistic-concurrency token of a turn's edit box: a save against an older
version is refused with TurnConflict, never silently applied.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from generation.models import Dialogue, Turn
from generation.services import GenerationBusy, dialogue_regenerate_from
from review import duplicates
from review.models import Flag, IndependentReview, ReviewEvent, TurnRevision
from review.services.claims import content_changed, lock_for_edit, record_event
from review.services.errors import InvalidInput, NothingChanged, ReviewError, TurnConflict


def live_turn(dialogue: Dialogue, turn_id: int) -> Turn:
    try:
        turn = Turn.objects.select_for_update().get(pk=turn_id, dialogue=dialogue)
    except Turn.DoesNotExist:
        raise Http404("No such turn") from None
    if turn.discarded_at is not None:
        raise ReviewError("This turn was discarded by a regeneration; it can no longer change.")
    return turn


def clean_text(text: str) -> str:
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


def turn_text_set(turn: Turn, text: str, actor: AbstractBaseUser, kind: str) -> TurnRevision:
    before = turn.text
    turn.text = text
    turn.version += 1
    turn.save(update_fields=["text", "version", "updated_at"])
    return TurnRevision.objects.create(
        turn=turn, author=actor, kind=kind, before=before, after=text, version=turn.version
    )


def proposed_text(turn: Turn, mine: IndependentReview | None) -> str:
    """The turn as this expert sees it: in an independent review, their latest proposal."""
    if mine is None:
        return turn.text
    latest = turn.revisions.filter(review=mine).order_by("-created_at", "-pk").first()
    return latest.after if latest else turn.text


def _change(
    turn: Turn,
    mine: IndependentReview | None,
    actor: AbstractBaseUser,
    before: str,
    after: str,
    kind: str = TurnRevision.Kind.EDIT,
) -> None:
    """Correct the turn, or in an independent review record a proposal and leave it as is."""
    if mine is None:
        turn_text_set(turn, after, actor, kind)
        return
    TurnRevision.objects.create(
        turn=turn, author=actor, kind=kind, before=before, after=after,
        version=turn.version, review=mine,
    )  # fmt: skip


def turn_correct(
    *, dialogue_id: int, turn_id: int, actor: AbstractBaseUser, text: str, expected_version: int
) -> Turn:
    """Save a reviewer's correction as a new revision; resolves the turn's open flags.

    Refused with TurnConflict if the turn changed since the edit box was opened, so nothing is
    overwritten silently. The model's original text stays in `original_text`. Saving the text
    unchanged renews the claim and raises NothingChanged, so the screen can say so.
    """
    text = clean_text(text)
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor)
        turn = live_turn(dialogue, turn_id)
        if turn.version != expected_version:
            raise TurnConflict(turn, turn.revisions.select_related("author").last())
        mine = getattr(review, "mine", None)
        current = proposed_text(turn, mine)
        unchanged = text == current
        if unchanged:
            review.save()  # renews the claim
        else:
            _change(turn, mine, actor, current, text)
            turn.flags.filter(resolution=Flag.Resolution.OPEN, review=mine).update(
                resolution=Flag.Resolution.CORRECTED, resolved_by=actor, resolved_at=timezone.now()
            )
            content_changed(review)
    if unchanged:
        raise NothingChanged()
    return turn


def turn_revert(
    *, dialogue_id: int, turn_id: int, actor: AbstractBaseUser, expected_version: int
) -> Turn:
    """Restore the model's original text (as a new revision, so the correction stays in the
    history). Flags that the correction had resolved are open again."""
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor)
        turn = live_turn(dialogue, turn_id)
        if turn.version != expected_version:
            raise TurnConflict(turn, turn.revisions.select_related("author").last())
        mine = getattr(review, "mine", None)
        current = proposed_text(turn, mine)
        # In an independent review, "original" is the turn as it stands (nothing proposed).
        original = turn.text if mine else turn.original_text
        if current == original:
            raise ReviewError("This turn already shows the model's original text.")
        _change(turn, mine, actor, current, original, kind=TurnRevision.Kind.REVERT)
        turn.flags.filter(resolution=Flag.Resolution.CORRECTED, review=mine).update(
            resolution=Flag.Resolution.OPEN, resolved_by=None, resolved_at=None
        )
        content_changed(review)
        return turn


def turn_flag(
    *, dialogue_id: int, turn_id: int, actor: AbstractBaseUser, category: str, note: str = ""
) -> Flag:
    if category not in Flag.Category.values:
        raise InvalidInput("Choose what is wrong with this turn.")
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor)
        turn = live_turn(dialogue, turn_id)
        flag = Flag.objects.create(
            turn=turn,
            category=category,
            note=note.strip()[:2000],
            created_by=actor,
            review=getattr(review, "mine", None),
        )
        content_changed(review)
        return flag


def flag_dismiss(
    *, dialogue_id: int, turn_id: int, flag_id: int, actor: AbstractBaseUser, reason: str
) -> Flag:
    """Resolve a flag without changing the turn; the reason is required and kept."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why this flag is dismissed (for example: the turn is correct).")
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor)
        try:
            flag = Flag.objects.select_for_update().get(
                pk=flag_id,
                turn_id=turn_id,
                turn__dialogue=dialogue,
                review=getattr(review, "mine", None),  # in an independent review, one's own
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
        content_changed(review)
        return flag


def dialogue_regenerate(
    *, dialogue_id: int, turn_id: int, actor: AbstractBaseUser, expected_version: int | None = None
) -> int:
    """Discard the turns after `turn` and let the worker continue from it (usually right after
    the reviewer corrected it). Returns how many turns were discarded; they stay in history."""
    with transaction.atomic():
        dialogue, review = lock_for_edit(dialogue_id, actor)
        turn = live_turn(dialogue, turn_id)
        if expected_version is not None and turn.version != expected_version:
            raise TurnConflict(turn, turn.revisions.select_related("author").last())
        if review.is_independent:
            raise ReviewError(
                "Regeneration is not available during independent reviews: flag or correct "
                "the turn instead."
            )
        try:
            discarded = dialogue_regenerate_from(dialogue=dialogue, position=turn.position)
        except GenerationBusy:
            raise ReviewError(
                "The model is writing this dialogue right now; try again when it finishes."
            ) from None
        duplicates.check_requeue(dialogue_id=dialogue.pk)
        record_event(
            dialogue,
            actor,
            ReviewEvent.Kind.REGENERATE,
            f"from turn {turn.position + 1}; {discarded} later turn(s) kept in history",
        )
        content_changed(review)
        return discarded
