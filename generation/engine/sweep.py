"""Recovery: dialogues whose worker died are enqueued again; windows topped up, runs closed.

Runs every SYNTHREVIEW_SWEEP_SECONDS in every worker process (`generation.engine.worker`). Each
re-enqueue is claimed with a conditional UPDATE, so several workers sweeping at once enqueue a
dialogue once; the lease makes a duplicate delivery harmless anyway.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from generation.models import Dialogue, GenerationRun

from .dispatch import enqueue, run_dispatch
from .finish import run_finalize
from .leases import HOSTNAME, lease_owner_is_dead
from .usage import usage_rollup

log = logging.getLogger(__name__)


def dialogues_sweep() -> int:
    """Re-enqueue dialogues whose worker died; top up and close runs. Returns re-enqueued count."""
    requeue = _lapsed_leases() + _stale_dispatches()
    enqueue(requeue)
    # Outcomes or usage a crash left out of the run totals (normally rolled up on commit).
    now = timezone.now()
    leftovers = Dialogue.objects.filter(
        Q(status__in=(Dialogue.Status.COMPLETE, Dialogue.Status.FAILED), counted_in_run=False)
        | Q(status=Dialogue.Status.CANCELLED, pending_prompt_tokens__gt=0)
    ).filter(finished_at__lt=now - timedelta(seconds=settings.SYNTHREVIEW_SWEEP_SECONDS))
    for pk in leftovers.values_list("pk", flat=True)[:1000]:
        usage_rollup(dialogue_id=pk)
    for run_id in GenerationRun.objects.filter(
        status__in=GenerationRun.ACTIVE_STATUSES
    ).values_list("pk", flat=True):
        run_dispatch(run_id=run_id)
        run_finalize(run_id=run_id)
    return len(requeue)


def _lapsed_leases() -> list[int]:
    """Generating dialogues nobody live holds, put back to pending and claimed for re-enqueue.

    Lapsed leases, leases nobody holds (a task that crashed on an unexpected error released
    its lease), and leases of processes on this host that are gone.
    """
    now = timezone.now()
    candidates = Dialogue.objects.filter(status=Dialogue.Status.GENERATING).filter(
        Q(lease_expires_at__lt=now)
        | Q(lease_expires_at__isnull=True)
        | Q(lease_owner="")
        | Q(lease_owner__startswith=f"{HOSTNAME}:")
    )
    claimed = []
    for pk, owner, expires in candidates.values_list("pk", "lease_owner", "lease_expires_at"):
        if expires and expires >= now and not lease_owner_is_dead(owner):
            continue
        if Dialogue.objects.filter(
            pk=pk, status=Dialogue.Status.GENERATING, lease_owner=owner
        ).update(
            status=Dialogue.Status.PENDING, lease_owner="", lease_expires_at=None, dispatched_at=now
        ):
            log.warning("re-enqueueing dialogue %s: lease of %s lapsed", pk, owner or "nobody")
            claimed.append(pk)
    return claimed


def _stale_dispatches() -> list[int]:
    """Dispatched dialogues whose task never started (a message lost in a dead worker's
    prefetch), claimed for re-enqueue."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.SYNTHREVIEW_DISPATCH_STALE_SECONDS)
    stale = Dialogue.objects.filter(status=Dialogue.Status.PENDING, dispatched_at__lt=stale_before)
    return [
        pk
        for pk in stale.values_list("pk", flat=True)
        if stale.filter(pk=pk).update(dispatched_at=now)
    ]
