"""The run's window of open dialogues, and sending dialogue tasks.

A run keeps `run_window()` dialogues dispatched or generating. `run_dispatch` fills the window
(at launch, and from the sweep); after that each dialogue that ends hands its slot to the run's
next pending dialogue in the same commit as its end (`successor_claim`), so "dispatched +
generating" never shrinks at a commit, without counting or locking the run's row. Over the
run's last stretch the hand-over grows the window (two successors per ending).

Tasks are sent by name, so the engine never imports `generation.tasks`. Without a broker
(`task_always_eager`) they run in this process, one after another, in the order enqueued: in
the calling thread, or for a launch from the browser on a thread of its own, so the request
returns at once and the run page shows the progress.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

from generation.models import Dialogue, GenerationRun

from . import gate

TASK_NAME = "generation.generate_dialogue"

log = logging.getLogger(__name__)
# A launch never holds a dialogue back longer than this, whatever the spacing.
MAX_SPREAD_SECONDS = 600.0

_inline = threading.local()


def tasks_run_inline() -> bool:
    """No broker: tasks run in the calling process (settings: CELERY_TASK_ALWAYS_EAGER)."""
    return bool(current_app.conf.task_always_eager)


def requests_gated() -> bool:
    """True when each LLM call takes one of its run's request slots (`gate`).

    That needs the workers' shared Redis. With no broker, tasks run inline one at a time, and
    one dialogue per slot caps the requests by construction.
    """
    return not tasks_run_inline() and gate.broker_is_redis()


def run_window(*, max_in_flight: int) -> int:
    """How many of a run's dialogues may be dispatched or generating at once.

    Gated, a run keeps SYNTHREVIEW_DIALOGUE_HEADROOM more dialogues open than it has request
    slots: a dialogue saving its turn or on its way to a worker holds no slot, and another one
    is waiting to use it. Ungated, one dialogue per slot.
    """
    if not requests_gated():
        return max_in_flight
    return max_in_flight + math.ceil(max_in_flight * settings.SYNTHREVIEW_DIALOGUE_HEADROOM)


def enqueue(
    dialogue_ids: list[int], *, background: bool = False, delays: list[float] | None = None
) -> None:
    """Send each dialogue's task (call on commit: the rows must be visible to the worker),
    each after its delay in seconds if `delays` are given (`admission`).

    Without a broker the tasks run in this process, at once: in the calling thread, or with
    `background` on a new thread (its successors join that thread's queue).
    """
    if not dialogue_ids:
        return
    if tasks_run_inline():
        if background:
            _run_inline_in_thread(dialogue_ids)
        else:
            _run_inline(dialogue_ids)
        return
    for dialogue_id, delay in zip(dialogue_ids, delays or [0.0] * len(dialogue_ids), strict=True):
        current_app.send_task(
            TASK_NAME,
            args=(dialogue_id,),
            queue=settings.CELERY_TASK_DEFAULT_QUEUE,
            countdown=delay or None,
        )


def _run_inline(dialogue_ids: list[int], *, keep_going: bool = False) -> None:
    """Run the tasks here, in order. A task that enqueues more (a finishing dialogue's
    successor) adds to the queue being drained instead of nesting, so the stack stays flat
    whatever the run's size. `keep_going` logs a task's error and goes on with the next one
    (a background thread has no caller to raise to)."""
    pending = getattr(_inline, "pending", None)
    if pending is not None:
        pending.extend(dialogue_ids)
        return
    _inline.pending = pending = deque(dialogue_ids)
    try:
        task = _dialogue_task()
        while pending:
            dialogue_id = pending.popleft()
            try:
                task.apply((dialogue_id,), throw=True)
            except Exception:
                if not keep_going:
                    raise
                log.exception("dialogue %s: generation failed in the background", dialogue_id)
    finally:
        _inline.pending = None


def _run_inline_in_thread(dialogue_ids: list[int]) -> None:
    """Drain the tasks on a daemon thread of this process (it stops with the process)."""

    def drain() -> None:
        try:
            _run_inline(dialogue_ids, keep_going=True)
        finally:
            connections.close_all()

    threading.Thread(target=drain, name="synthreview-inline-generation", daemon=True).start()


def _dialogue_task():
    """The registered task; a web process has not imported the apps' task modules yet."""
    if TASK_NAME not in current_app.tasks:
        current_app.loader.import_default_modules()
    return current_app.tasks[TASK_NAME]


def run_dispatch(*, run_id: int, background: bool = False, spacing: float = 0.0) -> int:
    """Enqueue pending dialogues up to the run's window; returns how many were claimed.

    Called at launch and by the sweep (which tops windows up if a hand-over was lost);
    `background` as for `enqueue`. `spacing` > 0 (from `admission`) starts the claimed
    dialogues that many seconds apart; each one's `dispatched_at` is then the time it is due,
    from which the sweep's wait for its task to start counts.
    """
    with transaction.atomic():
        run = GenerationRun.objects.select_for_update().filter(pk=run_id).order_by().first()
        if run is None or run.status not in GenerationRun.ACTIVE_STATUSES:
            return 0
        dialogues = Dialogue.objects.filter(run_id=run_id)
        in_flight = dialogues.filter(
            Q(status=Dialogue.Status.GENERATING)
            | Q(status=Dialogue.Status.PENDING, dispatched_at__isnull=False)
        ).count()
        free = run_window(max_in_flight=run.max_in_flight) - in_flight
        if free <= 0:
            return 0
        # Elsewhere dialogue rows are locked before the run row (a finishing dialogue locks
        # itself, then claims a successor); holding the run here, never wait for a dialogue
        # row: skip the ones another transaction holds.
        ids = list(
            dialogues.select_for_update(skip_locked=True)
            .filter(status=Dialogue.Status.PENDING, dispatched_at__isnull=True)
            .order_by("index")
            .values_list("pk", flat=True)[:free]
        )
        if ids:
            delays = start_delays(len(ids), spacing=spacing)
            now = timezone.now()
            Dialogue.objects.bulk_update(
                [
                    Dialogue(pk=pk, dispatched_at=now + timedelta(seconds=delay))
                    for pk, delay in zip(ids, delays, strict=True)
                ],
                ["dispatched_at"],
            )
            transaction.on_commit(lambda: enqueue(ids, background=background, delays=delays))
    return len(ids)


def successor_claim(*, run: GenerationRun) -> int | None:
    """Claim the run's next undispatched dialogue, and in the run's last stretch (the claimed
    dialogue is among its last `max_in_flight`) the one after it too; they are enqueued on
    commit. Returns the first one claimed.

    Runs inside the transaction that ends the dialogue handing its slot over. Growing the
    window at the end starts the last dialogues sooner: the run ends when its last dialogue
    has made all its turns, one after another, so the later it starts the longer the
    request slots wait idle at the end (the gate still caps the requests; the sweep tops a
    window up only when it is short). Its figure: docs/benchmarks.md, *Generation*.
    """
    claimed = _next_claim(run_id=run.pk)
    if claimed is None:
        return None
    pk, index = claimed
    if index >= run.requested_count - run.max_in_flight:
        _next_claim(run_id=run.pk)
    return pk


def _next_claim(*, run_id: int) -> tuple[int, int] | None:
    """(pk, index) of the run's next undispatched dialogue, now claimed; None if none is left.

    One row is locked, `SKIP LOCKED` passing over rows other finishing dialogues are claiming
    (locking more would starve them), and PostgreSQL re-checks the row is still undispatched
    when it locks it. Where row locks do not exist (SQLite) the conditional UPDATE settles a
    race, and the loser tries the next row. A cancelled run has no pending dialogue left (its
    cancel changes them in the same transaction), so the run's row is not read.
    """
    candidates = (
        Dialogue.objects.select_for_update(skip_locked=True)
        .filter(run_id=run_id, status=Dialogue.Status.PENDING, dispatched_at__isnull=True)
        .order_by("index")
        .values_list("pk", "index")
    )
    for _ in range(3):
        found = candidates.first()
        if found is None:
            return None
        pk = found[0]
        if Dialogue.objects.filter(pk=pk, dispatched_at__isnull=True).update(
            dispatched_at=timezone.now()
        ):
            transaction.on_commit(lambda pk=pk: enqueue([pk]))
            return found
    return None


def start_delays(count: int, *, spacing: float) -> list[float]:
    """Each of `count` dialogues' delay: `spacing` apart, the last at most MAX_SPREAD_SECONDS."""
    if count < 2 or spacing <= 0:
        return [0.0] * count
    step = min(spacing, MAX_SPREAD_SECONDS / (count - 1))
    return [index * step for index in range(count)]
