"""The maintenance thread every worker process runs: lease heartbeat and recovery sweep.

Heartbeat: every LEASE/4 seconds the leases of the dialogues this process is generating are
extended, so a lease outlives slow LLM calls and long backoffs but lapses within
SYNTHREVIEW_LEASE_SECONDS of the process dying. Sweep: every SYNTHREVIEW_SWEEP_SECONDS,
`services.dialogues_sweep()` re-enqueues dialogues with lapsed leases (and those held by dead
processes on this host at once), tops up run windows and closes finished runs. Every worker
sweeps, so recovery does not depend on one scheduler process staying alive.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
import types

from django.conf import settings
from django.db import connection

from . import services

log = logging.getLogger(__name__)

_started_in_pid: int | None = None
_start_lock = threading.Lock()


# How often the worker's consumer loop wakes up even when no socket is ready (seconds).
CONSUMER_TICK_SECONDS = 0.01


def consumer_wake_often(consumer) -> bool:
    """Make the consumer notice a freed prefetch slot within CONSUMER_TICK_SECONDS.

    With acks_late and the prefetch limit reached (every thread busy), kombu's Redis transport
    stops reading the queue; it starts again on the event loop's next pass, but a task's ack
    from a pool thread does not wake the loop, which then sleeps until its next timer (up to
    a second). A successor handed over by a finishing dialogue would wait that long in Redis
    while its window slot sits idle. A no-op timer bounds the wait.
    """
    hub = getattr(consumer, "hub", None)
    if hub is None or not hasattr(hub, "call_repeatedly"):
        return False
    hub.call_repeatedly(CONSUMER_TICK_SECONDS, _noop)
    return True


def _noop() -> None:
    pass


def gevent_tune() -> bool:
    """Under gevent (`--pool gevent`), let httpcore probe idle sockets with the OS's poll.

    Before each request and after each response, httpcore checks every idle keep-alive
    connection of the SDK's pool for a server-side close with a zero-timeout `select.poll()`.
    gevent's patched poll sets up hub watchers for each probe: with 80 connections that was
    the worker's largest single cost (~13 % of its CPU). A zero-timeout poll never blocks,
    so the original is safe inside a greenlet.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("select"):
        return False
    import httpcore2._utils

    httpcore2._utils.select = types.SimpleNamespace(
        poll=monkey.get_original("select", "poll"),
        select=monkey.get_original("select", "select"),
        POLLIN=select.POLLIN,
    )
    return True


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
        now = time.monotonic()
        time.sleep(max(0.05, min(next_beat, next_sweep) - now))
        now = time.monotonic()
        try:
            if now >= next_beat:
                next_beat = now + heartbeat
                services.leases_renew(leases=services.held_leases())
            if now >= next_sweep:
                next_sweep = now + sweep_every
                requeued = services.dialogues_sweep()
                if requeued:
                    log.warning("sweep re-enqueued %d dialogue(s)", requeued)
        except Exception:  # the thread must survive a database blip
            log.exception("generation maintenance failed; retrying next tick")
        finally:
            connection.close()
