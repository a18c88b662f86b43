"""The per-run request gate: at most `max_in_flight` LLM requests of a run at once, cluster-wide.

A run's `max_in_flight` exists to respect the LLM server's rate limits, so it caps *requests*,
not dialogues: before each call attempt (retries too) a dialogue takes one of the run's slots and
gives it back as soon as the response or error is in. Dialogues between two calls (saving a turn,
starting up after a hand-over) hold no slot, so a run can keep a few more dialogues open than it
has slots (`SYNTHREVIEW_DIALOGUE_HEADROOM`) and every slot stays busy across dialogue boundaries.

The slots live in Redis, the broker every worker already talks to, as three sorted sets per run:

- `holders`: slot holder -> expiry (ms, Redis server time). A holder that never comes back (its
  worker was killed mid-call) expires after the LLM timeout plus a margin; the next acquire or
  release purges it, so a dead worker's slots free themselves.
- `waiters`: waiting holder -> arrival time, served first come, first served; `waiting`: the
  same holders -> expiry, refreshed every poll, so a killed waiter drops out of the queue.

Acquiring is one script: purge, queue the caller, hand free slots to the queue in order; if the
caller got one, done. Otherwise it blocks (BLPOP) on a list of its own, to which a releasing
script pushes once it has moved the freed slot to that waiter, so a woken waiter already holds
its slot: no polling, one round trip per acquire and per release. Waiters give up the wait
every `POLL_SECONDS` to ask the caller whether to go on (the dialogue was cancelled, its lease
lost) and to refresh their place. Every key expires when its run stops using it.

Within a process, each round trip costs a GIL hand-off among a hundred threads, so the threads
of one process pass slots among themselves: a released slot goes to a waiting thread of the
same process (a condition variable, no round trip) for up to `REUSE_SECONDS` after it was taken
from Redis, then back to the run's queue, where the processes take turns. At most
`MAX_QUEUED_PER_PROCESS` threads of a process queue in Redis; the others wait locally. A slot
also goes back to Redis when one of the process's own threads has been queued there for more
than `QUEUED_PATIENCE_SECONDS`: otherwise, while slots keep passing locally, those threads
would wait until the reuse time ran out.

Scripts read keys they are not passed (the waiters' lists), which a standalone Redis allows and
Redis Cluster does not.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable

import redis
from django.conf import settings

log = logging.getLogger(__name__)

KEY_PREFIX = "synthreview:gate"
# A waiter re-queues and asks whether to go on at least this often.
POLL_SECONDS = 1.0
# A waiter that has not re-queued for this many polls is presumed dead and leaves the queue.
WAITER_TTL_POLLS = 5
# A slot passes between the threads of one process for this long after it was taken from Redis,
# then goes back to the run's queue: processes with waiting dialogues take turns.
REUSE_SECONDS = 5.0
# Threads of one process queued in Redis at once; the others wait for a slot released locally.
MAX_QUEUED_PER_PROCESS = 4
# A released slot goes back to Redis, not to a local waiter, once a thread of this process has
# been queued there this long (about what a local waiter waits at full load).
QUEUED_PATIENCE_SECONDS = 0.25
# A holder's slot outlives the LLM timeout by this much before it is presumed dead.
HOLD_MARGIN_SECONDS = 15.0

_LUA_COMMON = """
local holders, waiters, waiting = KEYS[1], KEYS[2], KEYS[3]
local limit, token = tonumber(ARGV[1]), ARGV[2]
local hold_ms, wait_ms, wake_prefix = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', waiting, '-inf', now)
for _, w in ipairs(gone) do
    redis.call('ZREM', waiters, w)
    redis.call('ZREM', waiting, w)
end

-- Free slots go to the waiters in arrival order; each is woken through its own list.
local function hand_over(skip)
    local free = limit - redis.call('ZCARD', holders)
    if free <= 0 then return end
    for _, w in ipairs(redis.call('ZRANGE', waiters, 0, free - 1)) do
        redis.call('ZADD', holders, now + hold_ms, w)
        redis.call('ZREM', waiters, w)
        redis.call('ZREM', waiting, w)
        if w ~= skip then
            redis.call('RPUSH', wake_prefix .. w, '1')
            redis.call('PEXPIRE', wake_prefix .. w, wait_ms)
        end
    end
end
"""

# 1: the caller holds a slot; 0: it is queued and should wait on its list.
_ACQUIRE = (
    _LUA_COMMON
    + """
if redis.call('ZSCORE', holders, token) then
    -- handed a slot just after the caller's last wait timed out
    redis.call('DEL', wake_prefix .. token)
    return 1
end
redis.call('ZADD', waiters, 'NX', now, token)
redis.call('ZADD', waiting, now + wait_ms, token)
hand_over(token)
redis.call('PEXPIRE', holders, hold_ms)
redis.call('PEXPIRE', waiters, hold_ms)
redis.call('PEXPIRE', waiting, hold_ms)
if redis.call('ZSCORE', holders, token) then return 1 end
return 0
"""
)

# Gives up the caller's slot or its place in the queue, whichever it has.
_RELEASE = (
    _LUA_COMMON
    + """
redis.call('ZREM', holders, token)
redis.call('ZREM', waiters, token)
redis.call('ZREM', waiting, token)
redis.call('DEL', wake_prefix .. token)
hand_over(nil)
return 1
"""
)


class RequestGate:
    """The request slots of one run, shared by every thread and worker process.

    Use `request_gate()`, which gives every thread of a process the same instance: slots are
    passed between a process's own threads without a round trip (see the module docstring).
    """

    def __init__(
        self,
        *,
        run_id: int,
        limit: int,
        url: str,
        hold_seconds: float,
        poll_seconds: float = POLL_SECONDS,
        reuse_seconds: float = REUSE_SECONDS,
        max_queued: int = MAX_QUEUED_PER_PROCESS,
        queued_patience: float = QUEUED_PATIENCE_SECONDS,
    ) -> None:
        self.limit = limit
        self.poll_seconds = poll_seconds
        self.reuse_seconds = reuse_seconds
        self.max_queued = max(1, max_queued)
        self.queued_patience = queued_patience
        self._redis, self._acquire, self._release = _connection(url)
        base = f"{KEY_PREFIX}:{run_id}"
        self._keys = [f"{base}:holders", f"{base}:waiters", f"{base}:waiting"]
        self._wake_prefix = f"{base}:wake:"
        self._hold_ms = max(1, int(hold_seconds * 1000))
        self._wait_ms = max(1, int(poll_seconds * WAITER_TTL_POLLS * 1000))
        self._lock = threading.Condition(threading.Lock())
        self._taken_at: dict[str, float] = {}  # slot -> when this process took it from Redis
        self._idle: list[str] = []  # released slots promised to this process's waiters
        self._local_waiters = 0  # threads waiting for a slot another thread of ours releases
        self._queued = 0  # threads of ours queued in Redis
        self._queued_since: dict[int, float] = {}  # id of a queued call -> when it queued

    def acquire(self, *, keep_waiting: Callable[[], bool] = lambda: True) -> str | None:
        """Take a slot, waiting as long as `keep_waiting()` (asked every poll) says so.

        Returns the slot to release, or None if `keep_waiting()` said stop.
        """
        asked_at = time.monotonic()
        with self._lock:
            # First come, first served among this process's threads: a newcomer neither takes
            # a slot set aside for the threads already waiting here nor queues in Redis ahead
            # of them. (Letting it barge in starved some waiters for seconds under gevent,
            # where the thread releasing a slot runs on to its next acquire before the waiter
            # it woke gets to run.)
            first = not self._local_waiters
            if first and self._idle:
                return self._idle.pop()
            queue = first and self._queued < self.max_queued
            if queue:
                self._queued += 1
        while True:
            if not queue:
                with self._lock:
                    self._local_waiters += 1
                    self._lock.wait(self.poll_seconds)
                    self._local_waiters -= 1
                    if self._idle:
                        return self._idle.pop()
                    queue = self._queued < self.max_queued
                    if queue:
                        self._queued += 1
            if queue:
                ticket = object()
                with self._lock:
                    self._queued_since[id(ticket)] = time.monotonic()
                try:
                    return self._take(keep_waiting)
                finally:
                    with self._lock:
                        self._queued -= 1
                        del self._queued_since[id(ticket)]
                        self._lock.notify()  # a local waiter may queue in Redis now
            if time.monotonic() - asked_at >= self.poll_seconds:
                if not keep_waiting():
                    return None
                asked_at = time.monotonic()

    def _take(self, keep_waiting: Callable[[], bool]) -> str | None:
        """Queue in Redis until handed a slot; None if `keep_waiting()` said stop."""
        holder = f"{os.getpid()}:{uuid.uuid4().hex[:16]}"
        args = [self.limit, holder, self._hold_ms, self._wait_ms, self._wake_prefix]
        wake = self._wake_prefix + holder
        try:
            while True:
                if self._acquire(keys=self._keys, args=args) == 1 or self._redis.blpop(
                    [wake], timeout=self.poll_seconds
                ):
                    with self._lock:
                        self._taken_at[holder] = time.monotonic()
                    return holder
                if not keep_waiting():
                    break
        except Exception:
            self._redis_release(holder)
            raise
        self._redis_release(holder)  # leaves the queue, or frees a slot handed over meanwhile
        return None

    def release(self, holder: str) -> None:
        """Give the slot back: to a waiting thread of this process, else to Redis.

        A slot passes between this process's threads for at most `reuse_seconds` after it was
        taken from Redis; then it goes back to the run's queue, so other processes get their
        turn. A failure to release is logged, not raised: the call's result is already in, and
        the slot expires on its own.
        """
        with self._lock:
            taken_at = self._taken_at.get(holder)
            now = time.monotonic()
            if (
                taken_at is not None
                and self._local_waiters > len(self._idle)
                and now - taken_at < self.reuse_seconds
                and now - min(self._queued_since.values(), default=now) < self.queued_patience
            ):
                self._idle.append(holder)
                self._lock.notify()
                return
            self._taken_at.pop(holder, None)
        self._redis_release(holder)

    def _redis_release(self, holder: str) -> None:
        args = [self.limit, holder, self._hold_ms, self._wait_ms, self._wake_prefix]
        try:
            self._release(keys=self._keys, args=args)
        except redis.RedisError as exc:
            log.warning("could not release request slot %s (it will expire): %s", holder, exc)

    def holders(self) -> list[str]:
        """Who holds a slot now, lapsed holders not yet purged included."""
        return [h.decode() for h in self._redis.zrange(self._keys[0], 0, -1)]


_connections: dict[str, tuple] = {}
_connections_lock = threading.Lock()


def _connection(url: str) -> tuple:
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
                client.register_script(_ACQUIRE),
                client.register_script(_RELEASE),
            )
        return found


def broker_is_redis() -> bool:
    return settings.CELERY_BROKER_URL.split(":", 1)[0] in ("redis", "rediss")


_gates: weakref.WeakValueDictionary[tuple, RequestGate] = weakref.WeakValueDictionary()
_gates_lock = threading.Lock()


def request_gate(*, run_id: int, limit: int) -> RequestGate:
    """The run's gate on the broker's Redis (callers check `broker_is_redis()` first).

    One instance per process and run while any thread uses it, so the threads pass slots
    among themselves.
    """
    hold = settings.SYNTHREVIEW_LLM_TIMEOUT + REUSE_SECONDS + HOLD_MARGIN_SECONDS
    key = (settings.CELERY_BROKER_URL, run_id, limit, hold)
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = RequestGate(
                run_id=run_id, limit=limit, url=settings.CELERY_BROKER_URL, hold_seconds=hold
            )
        return gate
