"""Ending a dialogue (complete or failed), handing its window slot on, closing the run."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from generation.models import Dialogue, GenerationRun, Turn
from generation.signals import dialogue_completed

from . import dispatch, statements
from .leases import OPEN_STATUSES, lease_forget, lease_held
from .usage import NO_USAGE, Usage, run_totals_add

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """A dialogue this worker ended; `successor` is the dialogue it handed its slot to."""

    successor: int | None


def dialogue_complete(
    *,
    dialogue: Dialogue,
    owner: str,
    reason: str,
    turn: Turn | None = None,
    usage: Usage = NO_USAGE,
) -> Finished | None:
    return dialogue_finish(
        dialogue=dialogue,
        owner=owner,
        fields={"status": Dialogue.Status.COMPLETE, "stop_reason": reason[:200]},
        turn=turn,
        usage=usage,
    )


def dialogue_fail(
    *,
    dialogue: Dialogue,
    owner: str,
    reason: str,
    turn: Turn | None = None,
    usage: Usage = NO_USAGE,
) -> Finished | None:
    log.warning("dialogue %s failed: %s", dialogue.pk, reason)
    return dialogue_finish(
        dialogue=dialogue,
        owner=owner,
        fields={"status": Dialogue.Status.FAILED, "failure_reason": reason},
        turn=turn,
        usage=usage,
    )


def dialogue_finish(
    *,
    dialogue: Dialogue,
    owner: str,
    fields: dict,
    turn: Turn | None = None,
    usage: Usage = NO_USAGE,
) -> Finished | None:
    """End the dialogue, save its last `turn`, hand its window slot on, count it: one commit.

    The first statement ends the dialogue if the lease is still ours (None if not: nothing is
    written). Its pending usage, which the lease holder knows (`generation.engine.usage`),
    plus the last turn's `usage`, moves to the run with the outcome, so the dialogue is
    counted exactly once. Handing the slot over in the same transaction keeps "dispatched +
    generating" from shrinking at any commit, so a concurrent counting dispatch (launch, sweep)
    never sees a gap to fill. Lock order: the dialogue rows, then the run's.
    """
    total = Usage.pending_of(dialogue) + usage
    with transaction.atomic():
        won = lease_held(dialogue_id=dialogue.pk, owner=owner).update(
            finished_at=timezone.now(),
            lease_owner="",
            lease_expires_at=None,
            counted_in_run=True,
            **NO_USAGE.as_pending(),
            **fields,
        )
        if not won:
            return None
        if turn is not None:
            statements.turn_insert(turn)
        successor = dispatch.successor_claim(run=dialogue.run) if hands_over(dialogue) else None
        run_totals_add(run_id=dialogue.run_id, usage=total, outcome=fields["status"])
        transaction.on_commit(lambda: lease_forget(dialogue.pk))
        if fields["status"] == Dialogue.Status.COMPLETE:
            transaction.on_commit(lambda: _announce_completed(dialogue))
    return Finished(successor=successor)


def _announce_completed(dialogue: Dialogue) -> None:
    dialogue_completed.send(
        sender=Dialogue,
        dialogue_id=dialogue.pk,
        run_id=dialogue.run_id,
        regenerated=dialogue.resume_from is not None,
    )


def hands_over(dialogue: Dialogue) -> bool:
    """Whether the dialogue's end frees a window slot: regenerations run outside the window."""
    return dialogue.resume_from is None


def run_finalize(*, run_id: int) -> str | None:
    """Close the run once no dialogue is open; returns the final status if this call closed it."""
    counts = Dialogue.objects.filter(run_id=run_id).aggregate(
        open=Count("pk", filter=Q(status__in=OPEN_STATUSES)),
        complete=Count("pk", filter=Q(status=Dialogue.Status.COMPLETE)),
        failed=Count("pk", filter=Q(status=Dialogue.Status.FAILED)),
    )
    if counts["open"]:
        return None
    error = ""
    if counts["failed"] and not counts["complete"]:
        status = GenerationRun.Status.FAILED
        first = (
            Dialogue.objects.filter(run_id=run_id, status=Dialogue.Status.FAILED)
            .order_by("index")
            .values_list("failure_reason", flat=True)
            .first()
        )
        error = f"Every dialogue failed. First reason: {first}"
    elif counts["failed"]:
        status = GenerationRun.Status.FINISHED_WITH_FAILURES
    else:
        status = GenerationRun.Status.FINISHED
    closed = GenerationRun.objects.filter(
        pk=run_id, status__in=GenerationRun.ACTIVE_STATUSES
    ).update(status=status, finished_at=timezone.now(), error=error)
    return status if closed else None
