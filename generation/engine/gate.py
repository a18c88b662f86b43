"""The per-run request gate: at most `max_in_flight` LLM requests of a run at once, cluster-wide.

A run's `max_in_flight` exists to respect the LLM server's rate limits, so it caps *requests*,
not dialogues: before each call attempt (retries too) a dialogue takes one of the run's slots and
gives it back as soon as the response or error is in. Dialogues between two calls (saving a turn,
starting up) hold no slot, so a run can keep a few more dialogues open than it has slots
(`SYNTHREVIEW_DIALOGUE_HEADROOM`) and every slot stays busy across dialogue boundaries.

The slots live in Redis, the broker every worker already talks to, as three sorted sets per run:

- `holders`: slot holder -> expiry (ms, Redis server time). A holder that never comes back (its
  worker was killed mid-call) expires after the LLM timeout plus a margin; the next acquire or
  release purges it, so a dead worker's slots free themselves.
- `waiters`: waiting holder -> arrival time, served first come, first served; `waiting`: the
  same holders -> expiry, refreshed every poll, so a killed waiter drops out of the queue.

Acquiring is one script (`gate_acquire.lua`): purge, queue the caller, hand free slots to the
queue in order; if the caller got one, done. Otherwise it blocks (BLPOP) on a list of its own,
to which the releasing script (`gate_release.lua`) pushes once it has moved the freed slot to
that waiter, so a woken waiter already holds its slot: one round trip per acquire and per
release. Waiters give up the wait every `POLL_SECONDS` to ask the caller whether to go on (the
dialogue was cancelled, its lease lost) and to refresh their place. Every key expires when its
run stops using it.

The scripts touch the waiters' lists without being passed them as keys, which a standalone Redis
(the broker) allows and Redis Cluster does not.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from django.conf import settings

log = logging.getLogger(__name__)

KEY_PREFIX = "synthreview:gate"
# A waiter re-queues and asks whether to go on at least this often.
POLL_SECONDS = 1.0
# A waiter that has not re-queued for this many polls is presumed dead and leaves the queue.
WAITER_TTL_POLLS = 5
# A holder's slot outlives the LLM timeout by this much before it is presumed dead.
HOLD_MARGIN_SECONDS = 20.0

_HERE = Path(__file__).resolve().parent
_COMMON = (_HERE / "gate_common.lua").read_text(encoding="utf-8")
ACQUIRE_SCRIPT = _COMMON + (_HERE / "gate_acquire.lua").read_text(encoding="utf-8")
RELEASE_SCRIPT = _COMMON + (_HERE / "gate_release.lua").read_text(encoding="utf-8")


class RequestGate:
    """The request slots of one run, shared by every thread and worker process."""

    def __init__(
        self,
        *,
        run_id: int | str,
        limit: int,
        url: str,
        hold_seconds: float,
        poll_seconds: float = POLL_SECONDS,
        cap_key: str = "",
    ) -> None:
        """`run_id` names the slots (an endpoint's are "endpoint:<id>"); `cap_key`, a hash whose
        `cap` field lowers `limit` while it is set (an endpoint's concurrency after 429s)."""
        self.limit = limit
        self.poll_seconds = poll_seconds
        self._redis, self._acquire, self._release = redis_scripts(url)
        base = f"{KEY_PREFIX}:{run_id}"
        self._keys = [f"{base}:holders", f"{base}:waiters", f"{base}:waiting"]
        self.holders_key = self._keys[0]
        if cap_key:
            self._keys.append(cap_key)
        self._wake_prefix = f"{base}:wake:"
        self._hold_ms = max(1, int(hold_seconds * 1000))
        self._wait_ms = max(1, int(poll_seconds * WAITER_TTL_POLLS * 1000))

    def acquire(self, *, keep_waiting: Callable[[], bool] = lambda: True) -> str | None:
        """Take a slot, waiting as long as `keep_waiting()` (asked every poll) says so.

        Returns the slot to release, or None if `keep_waiting()` said stop.
        """
        holder = f"{os.getpid()}:{uuid.uuid4().hex[:16]}"
        wake = self._wake_prefix + holder
        try:
            while True:
                if self._acquire(keys=self._keys, args=self._args(holder)) == 1:
                    return holder
                if self._redis.blpop([wake], timeout=self.poll_seconds):
                    return holder
                if not keep_waiting():
                    break
        except Exception:
            self.release(holder)
            raise
        self.release(holder)  # leaves the queue, or frees a slot handed over meanwhile
        return None

    def release(self, holder: str) -> None:
        """Give the slot back (or the place in the queue). A failure is logged, not raised:
        the call's result is already in, and the slot expires on its own."""
        try:
            self._release(keys=self._keys, args=self._args(holder))
        except redis.RedisError as exc:
            log.warning("could not release request slot %s (it will expire): %s", holder, exc)

    def holders(self) -> list[str]:
        """Who holds a slot now, lapsed holders not yet purged included."""
        return [h.decode() for h in self._redis.zrange(self._keys[0], 0, -1)]

    def _args(self, holder: str) -> list:
        return [self.limit, holder, self._hold_ms, self._wait_ms, self._wake_prefix]


_connections: dict[str, tuple] = {}
_connections_lock = threading.Lock()


def redis_scripts(url: str) -> tuple:
    """(client, acquire script, release script): one connection pool per process and URL.

    redis-py resets a pool inherited by a forked child; the scripts go out as EVALSHA, loaded
    only when the server does not know them yet.
    """
    with _connections_lock:
        found = _connections.get(url)
        if found is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=POLL_SECONDS + 10,
                socket_connect_timeout=5,
                health_check_interval=30,
            )
            found = _connections[url] = (
                client,
                client.register_script(ACQUIRE_SCRIPT),
                client.register_script(RELEASE_SCRIPT),
            )
        return found


def broker_is_redis() -> bool:
    return settings.CELERY_BROKER_URL.split(":", 1)[0] in ("redis", "rediss")


def request_gate(*, run_id: int, limit: int) -> RequestGate:
    """The run's gate on the broker's Redis (callers check `broker_is_redis()` first)."""
    return RequestGate(
        run_id=run_id,
        limit=limit,
        url=settings.CELERY_BROKER_URL,
        hold_seconds=settings.SYNTHREVIEW_LLM_TIMEOUT + HOLD_MARGIN_SECONDS,
    )
