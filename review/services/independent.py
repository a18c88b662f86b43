"""Independent reviews: submitting one, concluding a dialogue when all are in, adjudication.

Slots are taken in claims.py (`independent_take`, under the dialogue's row lock). Submissions
run under the same lock, so the submission that completes the set concludes it exactly once:
agreeing verdicts without conflicting corrections finish the dialogue (the corrections are
applied); anything else waits for staff to adjudicate. Until then no turn changes, so an
export never sees a correction nobody settled.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from generation.models import Dialogue, Turn
from review.models import DialogueReview, IndependentReview, ReviewEvent, TurnRevision
from review.selectors import conflicting_turns, latest_proposals
from review.services.claims import lock_dialogue, record_event
from review.services.errors import InvalidInput, NotAllowed, ReviewError
from review.services.suggestions import suggestions_undecided, undecided_note
from review.services.turns import clean_text, turn_text_set


def independent_submit(
    dialogue: Dialogue,
    review: DialogueReview,
    mine: IndependentReview,
    actor: AbstractBaseUser,
    verdict: str,
    reason: str,
) -> None:
    """Record the expert's verdict (the caller holds the dialogue's lock); conclude the
    dialogue if this was the last review it needed."""
    now = timezone.now()
    mine.verdict, mine.reason, mine.submitted_at, mine.claim_expires_at = verdict, reason, now, now
    mine.save()
    undecided = suggestions_undecided(dialogue, review=mine).count()
    record_event(dialogue, actor, ReviewEvent.Kind.SUBMIT, undecided_note(undecided))
    submitted = list(
        IndependentReview.objects.filter(dialogue=dialogue, submitted_at__isnull=False)
    )
    if len(submitted) >= review.reviews_required:
        _conclude(dialogue, review, submitted, actor)


def _conclude(
    dialogue: Dialogue,
    review: DialogueReview,
    submitted: list[IndependentReview],
    actor: AbstractBaseUser,
) -> None:
    proposals = latest_proposals(dialogue)
    verdicts = {r.verdict for r in submitted}
    if len(verdicts) > 1 or conflicting_turns(proposals):
        review.status = DialogueReview.Status.ADJUDICATION
        review.version += 1
        review.save()
        return
    for by_review in proposals.values():
        proposal = next(iter(by_review.values()))
        turn = Turn.objects.select_for_update().get(pk=proposal.turn_id)
        turn_text_set(turn, proposal.after, proposal.author, TurnRevision.Kind.EDIT)
    verdict = verdicts.pop()
    reasons = "; ".join(r.reason for r in submitted if r.reason)
    note = f"{len(submitted)} independent reviews agreed" + (f": {reasons}" if reasons else ".")
    _finish(dialogue, review, actor, verdict, note)


def _finish(
    dialogue: Dialogue, review: DialogueReview, actor: AbstractBaseUser, verdict: str, note: str
) -> None:
    review.status = verdict
    review.decided_by = actor
    review.decided_at = timezone.now()
    review.reason = note[:5000]
    review.version += 1
    review.save()
    kind = ReviewEvent.Kind.APPROVE if verdict == "approved" else ReviewEvent.Kind.REJECT
    record_event(dialogue, actor, kind, note[:5000])


def dialogue_adjudicate(
    *, dialogue_id: int, actor: AbstractBaseUser, texts: dict[int, str], verdict: str, reason: str
) -> DialogueReview:
    """Staff settle a disagreement: the text each disputed turn keeps (picked from the
    proposals or merged), and the verdict. Only now do the turns change."""
    if not actor.is_staff:
        raise NotAllowed("Only admins can adjudicate.")
    if verdict not in IndependentReview.Verdict.values:
        raise InvalidInput("Choose Approve or Reject.")
    reason = (reason or "").strip()
    if verdict == IndependentReview.Verdict.REJECTED and not reason:
        raise InvalidInput("Say why this dialogue is rejected; the reason is kept with it.")
    with transaction.atomic():
        dialogue, review = lock_dialogue(dialogue_id)
        if review.status != DialogueReview.Status.ADJUDICATION:
            raise ReviewError("This dialogue is not awaiting adjudication.")
        turns = Turn.objects.select_for_update().filter(
            dialogue=dialogue, discarded_at__isnull=True, pk__in=list(texts)
        )
        by_pk = {turn.pk: turn for turn in turns}
        for turn_id, text in texts.items():
            if turn_id not in by_pk:
                raise InvalidInput(f"Turn {turn_id} is not a turn of this dialogue.")
            text = clean_text(text)
            if text != by_pk[turn_id].text:
                turn_text_set(by_pk[turn_id], text, actor, TurnRevision.Kind.EDIT)
        record_event(dialogue, actor, ReviewEvent.Kind.ADJUDICATE, reason[:5000])
        _finish(dialogue, review, actor, verdict, reason or "Adjudicated.")
        return review
