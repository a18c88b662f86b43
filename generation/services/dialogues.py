"""Dialogue services: regenerating a dialogue from one of its turns (the review screen's call)."""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from generation.engine.dispatch import enqueue
from generation.engine.leases import lease_is_live
from generation.models import Dialogue, GenerationRun, Turn


class GenerationBusy(Exception):
    """The dialogue is being generated right now; regenerating would race the worker."""


def dialogue_regenerate_from(*, dialogue: Dialogue, position: int) -> int:
    """Discard live turns after `position` and have a worker continue from there.

    Must run inside the caller's transaction: the discarded turns, the reset and the enqueue
    (on commit) happen together or not at all. The conversation so far is the turns' current
    `text`, so a reviewer's correction of turn `position` is what the next persona answers.
    The dialogue runs outside its run's window (it hands no slot over when it ends). Returns
    how many turns were discarded.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("dialogue_regenerate_from must be called inside transaction.atomic()")
    if position < 0:
        raise ValueError("position must be >= 0")
    now = timezone.now()
    locked = Dialogue.objects.select_for_update().get(pk=dialogue.pk)
    if locked.status == Dialogue.Status.GENERATING and lease_is_live(
        owner=locked.lease_owner, expires_at=locked.lease_expires_at, now=now
    ):
        raise GenerationBusy(
            "This dialogue is being generated right now. Wait for it to finish, then try again."
        )
    discarded = Turn.objects.filter(
        dialogue_id=locked.pk, discarded_at__isnull=True, position__gt=position
    ).update(discarded_at=now)
    counter = {
        Dialogue.Status.COMPLETE: "done_count",
        Dialogue.Status.FAILED: "failed_count",
    }.get(locked.status)
    if counter and locked.counted_in_run:
        GenerationRun.objects.filter(pk=locked.run_id).update(
            **{counter: Greatest(F(counter) - 1, Value(0))}
        )
    fields = {
        "status": Dialogue.Status.PENDING,
        "stop_reason": "",
        "failure_reason": "",
        "lease_owner": "",
        "lease_expires_at": None,
        "resume_from": position + 1,
        "finished_at": None,
        "dispatched_at": now,
        "counted_in_run": False,
    }
    Dialogue.objects.filter(pk=locked.pk).update(**fields)
    for name, value in fields.items():
        setattr(dialogue, name, value)
    transaction.on_commit(lambda: enqueue([locked.pk]))
    return discarded
