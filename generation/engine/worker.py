"""The maintenance thread every worker process runs: lease heartbeat and recovery sweep.

Heartbeat: every LEASE/4 seconds the leases of the dialogues this process is generating are
extended, so a lease outlives slow LLM calls and long backoffs but lapses within
SYNTHREVIEW_LEASE_SECONDS of the process dying. Sweep: every SYNTHREVIEW_SWEEP_SECONDS,
`dialogues_sweep()` re-enqueues dialogues with lapsed leases (and those held by dead processes
on this host at once), tops up run windows and closes finished runs. Every worker sweeps, so
recovery does not depend on one scheduler process staying alive.

Started from the Celery worker signals in `generation.tasks`: with the prefork pool in each
child (`worker_process_init`), never in the parent, whose database connections would otherwise
be inherited by children forked later; with the other pools in the worker process.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from django.conf import settings
from django.db import connection

from .leases import leases_held, leases_renew
from .sweep import dialogues_sweep

log = logging.getLogger(__name__)

_started_in_pid: int | None = None
_start_lock = threading.Lock()


def maintenance_start_for(pool: object) -> bool:
    """On `worker_ready`: start the thread unless the pool forks children (they start their own)."""
    if type(pool).__module__.endswith("prefork"):
        return False
    return maintenance_start()


def maintenance_start() -> bool:
    """Start the thread once per process (a forked child gets its own)."""
    global _started_in_pid
    with _start_lock:
        if _started_in_pid == os.getpid():
            return False
        _started_in_pid = os.getpid()
    thread = threading.Thread(target=_loop, name="generation-maintenance", daemon=True)
    thread.start()
    return True


def _loop() -> None:
    heartbeat = max(1.0, settings.SYNTHREVIEW_LEASE_SECONDS / 4)
    sweep_every = float(settings.SYNTHREVIEW_SWEEP_SECONDS)
    # First sweep soon after start: a replacement worker picks up a dead one's work quickly.
    next_sweep = time.monotonic() + min(sweep_every, 2.0)
    next_beat = time.monotonic() + heartbeat
    while True:
        time.sleep(max(0.05, min(next_beat, next_sweep) - time.monotonic()))
        now = time.monotonic()
        try:
            if now >= next_beat:
                next_beat = now + heartbeat
                leases_renew(leases=leases_held())
            if now >= next_sweep:
                next_sweep = now + sweep_every
                requeued = dialogues_sweep()
                if requeued:
                    log.warning("sweep re-enqueued %d dialogue(s)", requeued)
        except Exception:  # the thread must survive a database blip
            log.exception("generation maintenance failed; retrying next tick")
        finally:
            connection.close()
