"""The lease: only the worker holding a dialogue's lease generates it.

Taking a lease is a conditional UPDATE whose row count says who won, so a task delivered twice,
a sweep and a live worker never generate the same dialogue at once. A lease lapses
SYNTHREVIEW_LEASE_SECONDS after its last renewal, which is how a dead worker's dialogues come
back (`generation.engine.sweep`); on the same host a dead holder's pid gives it away at once.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

from generation.models import Dialogue

OPEN_STATUSES = (Dialogue.Status.PENDING, Dialogue.Status.GENERATING)
# Overridable so one machine can stand in for several (tests of the cross-machine recovery path).
HOSTNAME = settings.SYNTHREVIEW_WORKER_HOSTNAME or socket.gethostname()

# Leases held by this process, renewed by the worker's maintenance thread.
_held: dict[int, str] = {}
_held_lock = threading.Lock()


@dataclass(frozen=True)
class Acquired:
    """The outcome of asking for a lease; `run_id` when the dialogue was read on the way."""

    won: bool
    run_id: int | None = None


def lease_owner_new() -> str:
    """host:pid:thread:nonce. Host and pid let a worker on the same machine see the holder died."""
    return f"{HOSTNAME}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def lease_owner_is_dead(owner: str) -> bool:
    """True only when the holder provably died: same host, and its process no longer exists."""
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != HOSTNAME:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def lease_is_live(*, owner: str, expires_at, now) -> bool:
    """Someone holds the lease, it has not lapsed, and its holder is not provably dead."""
    return bool(owner and expires_at and expires_at > now and not lease_owner_is_dead(owner))


def lease_acquire(*, dialogue_id: int, owner: str) -> Acquired | None:
    """Take the dialogue's lease if it is open and nobody live holds it; None: no such dialogue.

    The usual case, a lease nobody holds, is one conditional UPDATE. Otherwise the holder is
    read: a SIGKILLed child's redelivered task takes over at once from its dead holder instead
    of waiting for the lease to lapse.
    """
    now = timezone.now()
    open_dialogue = Dialogue.objects.filter(pk=dialogue_id, status__in=OPEN_STATUSES)
    free = Q(lease_owner="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
    if _lease_take(open_dialogue.filter(free), dialogue_id=dialogue_id, owner=owner, now=now):
        return Acquired(won=True)
    current = (
        Dialogue.objects.filter(pk=dialogue_id)
        .order_by()
        .values_list("status", "lease_owner", "lease_expires_at", "run_id")
        .first()
    )
    if current is None:
        return None
    status, holder, expires_at, run_id = current
    won = (
        status in OPEN_STATUSES
        and expires_at is not None
        and expires_at > now
        and lease_owner_is_dead(holder)
        and _lease_take(
            open_dialogue.filter(lease_owner=holder), dialogue_id=dialogue_id, owner=owner, now=now
        )
    )
    return Acquired(won=won, run_id=run_id)


def _lease_take(candidates, *, dialogue_id: int, owner: str, now) -> bool:
    won = candidates.update(
        status=Dialogue.Status.GENERATING,
        lease_owner=owner,
        lease_expires_at=lease_expiry(),
        attempts=F("attempts") + 1,
        updated_at=now,
    )
    if won:
        with _held_lock:
            _held[dialogue_id] = owner
    return bool(won)


def lease_expiry():
    return timezone.now() + timedelta(seconds=settings.SYNTHREVIEW_LEASE_SECONDS)


def lease_held(*, dialogue_id: int, owner: str):
    """The dialogue while `owner` still holds its lease: the condition of every write."""
    return Dialogue.objects.filter(
        pk=dialogue_id, lease_owner=owner, status=Dialogue.Status.GENERATING
    )


def leases_held() -> dict[int, str]:
    with _held_lock:
        return dict(_held)


def leases_renew(*, leases: dict[int, str]) -> int:
    """Extend the leases this process holds; a lost lease simply stops matching."""
    if not leases:
        return 0
    return Dialogue.objects.filter(
        pk__in=list(leases),
        lease_owner__in=list(leases.values()),
        status=Dialogue.Status.GENERATING,
    ).update(lease_expires_at=lease_expiry())


def lease_renew(*, dialogue_id: int, owner: str) -> bool:
    """Renew before a retried LLM call or while waiting for a request slot.

    False: cancelled, regenerated, or taken over; stop.
    """
    alive = lease_held(dialogue_id=dialogue_id, owner=owner).update(lease_expires_at=lease_expiry())
    connection_release()
    return alive == 1


def lease_forget(dialogue_id: int) -> None:
    """Stop renewing: the dialogue ended and its lease was cleared with its status change."""
    with _held_lock:
        _held.pop(dialogue_id, None)


def lease_release(*, dialogue_id: int, owner: str) -> None:
    """Give the lease up if the dialogue is still held (it stopped without ending)."""
    with _held_lock:
        still_held = _held.pop(dialogue_id, None) is not None
    if still_held:
        Dialogue.objects.filter(pk=dialogue_id, lease_owner=owner).update(
            lease_owner="", lease_expires_at=None
        )


def connection_release() -> None:
    """Hand the thread's DB connection back to the pool while it waits on the LLM.

    Inside an atomic block (tests, callers holding a transaction) closing would break it.
    """
    if not connection.in_atomic_block:
        connection.close()
