"""Queueing near-duplicate checks: a completed dialogue waits in a pending row, and the check
task takes every pending dialogue, CHECK_BATCH at a time.

A burst of completions becomes one task: the first completion claims a flag in the broker's
Redis and sends the task CHECK_DELAY_SECONDS later; the completions after it only add their
pending row while the flag is up. The task lowers the flag before it reads the pending rows,
so a dialogue queued after the read raises it again and sends another task: no pending row
is left without a task coming for it. Without a broker every completion's task runs at once.

The flag holds the time before which its task does not start (Celery holds a task with a
countdown until then). A process that has seen it needs no word with Redis for the
completions it queues until shortly before that time: the task will read their rows.

A check can still be lost before its pending row is written (the worker that completed the
dialogue stopped after the commit, or the row's INSERT failed): the check task sweeps for
complete dialogues with neither a signature nor a pending row, in each worker process the
first time it runs and then every SWEEP_SECONDS at most, and queues them.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction

from generation.engine.dispatch import tasks_run_inline
from generation.engine.gate import redis_scripts
from generation.models import Dialogue
from review.models import PendingDuplicateCheck

from . import statements
from .index import completed_at, locked_batch_check

# Dialogues per transaction of the check task.
CHECK_BATCH = 200
# How long the first completion of a burst waits for the others before its task runs.
CHECK_DELAY_SECONDS = 1.0
# The flag's lifetime: a task lost on its way (a broker failure) holds up the next one this
# long at most.
FLAG_SECONDS = 60
FLAG_KEY = "synthreview:near-duplicate-check-queued"
# How often a worker process looks for lost checks (one anti-join over the complete
# dialogues), at most: a lost check is rare, and its dialogue waits this long.
SWEEP_SECONDS = 600

# Clocks of the machines that run workers may disagree by this much.
CLOCK_SKEW_SECONDS = 0.25

# When this process last swept (time.monotonic()); None: not yet.
_swept_at: float | None = None
# The check task this process knows of starts no earlier than this (time.time()); 0: none.
_task_due = 0.0

log = logging.getLogger(__name__)


def check_queue(*, dialogue_id: int) -> bool:
    """Queue the dialogue for its check; True when the caller must send the check task (no
    task is on its way yet)."""
    global _task_due
    statements.pending_add(dialogue_id)
    if tasks_run_inline():
        return True
    now = time.time()
    if now < _task_due - CLOCK_SKEW_SECONDS:
        return False  # the task on its way starts after this row's commit: it reads it
    due = now + CHECK_DELAY_SECONDS
    pipeline = _redis().pipeline(transaction=False)
    pipeline.set(FLAG_KEY, repr(due), nx=True, ex=FLAG_SECONDS)
    pipeline.get(FLAG_KEY)
    claimed, flag = pipeline.execute()
    _task_due = due if claimed else _due(flag)
    return bool(claimed)


def _due(flag: bytes | None) -> float:
    """The start time a flag holds; 0 (ask again next time) for none or one that holds no
    time (set by an earlier version)."""
    try:
        return float(flag or 0)
    except ValueError:
        return 0.0


def check_requeue(*, dialogue_id: int) -> None:
    """Queue the check of a dialogue whose regeneration starts, in its transaction, without
    sending the task: the next check takes its old signature out of the index (it is no
    longer complete), and its completion queues it again. A regeneration that never
    completes leaves no stale signature behind."""
    statements.pending_add(dialogue_id)


def check_queue_reset() -> None:
    """Lower the flag: a task is starting, or the one claimed could not be sent."""
    global _task_due
    _task_due = 0.0
    if not tasks_run_inline():
        _redis().delete(FLAG_KEY)


def pending_check(*, batch_size: int = CHECK_BATCH) -> int:
    """Check every pending dialogue, oldest completion first, a batch per transaction.
    Returns how many were taken."""
    check_queue_reset()
    sweep = _sweep_due()
    taken = 0
    while True:
        with transaction.atomic():
            statements.index_lock()
            if sweep:
                lost_checks_queue()
                sweep = False
            ids = list(
                PendingDuplicateCheck.objects.annotate(completed=completed_at("dialogue__"))
                .order_by("completed", "dialogue_id")
                .values_list("dialogue_id", flat=True)[:batch_size]
            )
            if ids:
                locked_batch_check(dialogue_ids=ids)
        taken += len(ids)
        if len(ids) < batch_size:
            return taken


def _sweep_due() -> bool:
    global _swept_at
    now = time.monotonic()
    if _swept_at is not None and now - _swept_at < SWEEP_SECONDS:
        return False
    _swept_at = now
    return True


def lost_checks_queue() -> int:
    """Queue the complete dialogues that have neither a signature nor a pending row (their
    check was lost, or they predate the index). Run under the index lock, so no batch is
    between taking its pending rows and writing its signatures. Returns how many."""
    lost = list(
        Dialogue.objects.filter(status=Dialogue.Status.COMPLETE, signature__isnull=True)
        .exclude(pk__in=PendingDuplicateCheck.objects.values("dialogue_id"))
        .values_list("pk", flat=True)
    )
    if lost:
        log.info("queueing %d complete dialogues without a near-duplicate check", len(lost))
        PendingDuplicateCheck.objects.bulk_create(
            [PendingDuplicateCheck(dialogue_id=pk) for pk in lost], ignore_conflicts=True
        )
    return len(lost)


def _redis():
    return redis_scripts(settings.CELERY_BROKER_URL)[0]
