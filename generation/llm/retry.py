"""Bounded retries with exponential backoff, full jitter and Retry-After.

The SDK's own retry loop is switched off (max_retries=0) so every attempt goes through here:
we can renew the dialogue's lease and notice a cancellation between attempts, and the number
of retries a turn needed is recorded on the turn.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from django.conf import settings

from .base import (
    ChatRequest,
    ChatResult,
    LLMClient,
    LLMError,
    PermanentLLMError,
    TransientLLMError,
)

log = logging.getLogger(__name__)

# A Retry-After longer than this fails the call instead of parking a worker thread for hours
# (a bogus header); anything shorter is waited out in full.
RETRY_AFTER_CEILING_SECONDS = 600.0

# Shared by every thread: seeding a Random per call reads os.urandom, on the path of every turn.
_jitter = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    base_seconds: float
    max_seconds: float

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        return cls(
            max_retries=settings.SYNTHREVIEW_LLM_MAX_RETRIES,
            base_seconds=settings.SYNTHREVIEW_LLM_RETRY_BASE_SECONDS,
            max_seconds=settings.SYNTHREVIEW_LLM_RETRY_MAX_SECONDS,
        )

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        ceiling = min(self.max_seconds, self.base_seconds * (2 ** (retry - 1)))
        # Full jitter spreads the retries of many threads hit by the same 429 burst.
        backoff = rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            # The server said when: never call it back sooner.
            return max(backoff, retry_after)
        return backoff


class RetriesExhausted(PermanentLLMError):
    """The last transient error, after the retry budget ran out."""


class Aborted(Exception):
    """`before_attempt` said stop (the dialogue was cancelled or its lease lost)."""


class RequestSlots(Protocol):
    """A cap on concurrent calls shared with other threads and processes (generation.gate)."""

    def acquire(self, *, keep_waiting: Callable[[], bool]) -> str | None: ...

    def release(self, holder: str) -> None: ...


class Pacer(Protocol):
    """Paces calls to one endpoint (generation.engine.pacing): `before` waits for the call's
    turn and returns a ticket (None: `keep_waiting` said stop); `after` reports how it went."""

    def before(
        self, request: ChatRequest, *, keep_waiting: Callable[[], bool]
    ) -> object | None: ...

    def after(
        self, ticket: object, *, result: ChatResult | None = None, error: LLMError | None = None
    ) -> None: ...


@dataclass
class Outcome:
    result: ChatResult
    retries: int


def complete_with_retries(
    client: LLMClient,
    request: ChatRequest,
    *,
    policy: RetryPolicy | None = None,
    before_attempt: Callable[[], bool] = lambda: True,
    slots: RequestSlots | None = None,
    pacer: Pacer | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> Outcome:
    """Call the LLM until it answers, a permanent error occurs or the retries run out.

    An empty reply counts as a transient error, like a 5xx.

    With `slots`, each attempt holds a slot only for the call itself: never while backing off.
    While it waits for one, `before_attempt` is asked again (every poll) whether to go on.
    With `pacer`, each attempt (holding its slot) then waits for its turn at the endpoint's
    limits, and reports its outcome back. A Retry-After is always waited out in full (over
    RETRY_AFTER_CEILING_SECONDS the call fails instead).
    """
    policy = policy or RetryPolicy.from_settings()
    rng = rng or _jitter
    retry = 0
    while True:
        if not before_attempt():
            raise Aborted()
        try:
            result = _attempt(
                client, request, slots=slots, pacer=pacer, keep_waiting=before_attempt
            )
            if not result.text.strip():
                # Nothing for the next persona to answer: another try usually writes something.
                raise TransientLLMError("empty reply")
        except PermanentLLMError:
            raise
        except TransientLLMError as exc:
            if retry >= policy.max_retries:
                attempts = retry + 1
                raise RetriesExhausted(
                    f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: {exc.reason}"
                ) from exc
            if exc.retry_after is not None and exc.retry_after > RETRY_AFTER_CEILING_SECONDS:
                raise RetriesExhausted(
                    f"the server asked to wait {exc.retry_after:.0f} s before retrying "
                    f"(more than {RETRY_AFTER_CEILING_SECONDS:.0f} s): {exc.reason}"
                ) from exc
            retry += 1
            wait = policy.delay(retry, exc.retry_after, rng)
            log.warning("LLM call failed (%s); retry %d in %.2fs", exc.reason, retry, wait)
            sleep(wait)
            continue
        return Outcome(result=result, retries=retry)


def _attempt(
    client: LLMClient,
    request: ChatRequest,
    *,
    slots: RequestSlots | None,
    pacer: Pacer | None,
    keep_waiting: Callable[[], bool],
) -> ChatResult:
    """One call, holding a slot for exactly its duration; the latency excludes the waits."""
    holder = None
    if slots is not None:
        holder = slots.acquire(keep_waiting=keep_waiting)
        if holder is None:
            raise Aborted()
    try:
        ticket = None
        if pacer is not None:
            ticket = pacer.before(request, keep_waiting=keep_waiting)
            if ticket is None:
                raise Aborted()
        started = time.monotonic()
        try:
            result = client.complete(request)
        except LLMError as exc:
            if ticket is not None:
                pacer.after(ticket, error=exc)
            raise
        latency_ms = int((time.monotonic() - started) * 1000)
        if ticket is not None:
            pacer.after(ticket, result=result)
    finally:
        if holder is not None:
            slots.release(holder)
    return result if result.latency_ms else replace(result, latency_ms=latency_ms)
