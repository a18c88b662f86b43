"""Endpoint pacing: the provider's headers parsed; on a real Redis, budgets reserved and
reconciled, headers followed, concurrency cut by half on any 429 and recovered
additively, Retry-After honoured by every call to the endpoint."""

from __future__ import annotations

import random

import httpx2
import pytest
import redis
from django.conf import settings

from generation.engine import pacing
from generation.llm import ChatRequest, ChatResult, RateLimits, TransientLLMError
from generation.llm.ratelimits import parse_duration, parse_rate_limits


def test_reset_durations_in_openai_format():
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("2.5") == 2.5
    assert parse_duration("soon") is None and parse_duration("") is None


def test_rate_limit_headers_are_read_in_any_case_and_absent_ones_are_none():
    headers = httpx2.Headers(
        {
            "X-RateLimit-Limit-Requests": "1200",
            "x-ratelimit-remaining-requests": "1199",
            "x-ratelimit-reset-requests": "50ms",
            "x-ratelimit-remaining-tokens": "299400",
        }
    )
    assert parse_rate_limits(headers) == RateLimits(
        limit_requests=1200,
        remaining_requests=1199,
        reset_requests=pytest.approx(0.05),
        remaining_tokens=299400,
    )
    assert parse_rate_limits(httpx2.Headers({"content-type": "json"})) is None


def test_a_call_is_estimated_from_its_prompt_characters_and_max_tokens():
    request = ChatRequest(
        model="m",
        messages=[{"role": "system", "content": "x" * 10}, {"role": "user", "content": "y" * 3}],
        temperature=0.5,
        max_tokens=100,
    )
    assert pacing.estimate_tokens(request) == 4 + 100  # ceil(13 / 4) + max_tokens


# --- on Redis -------------------------------------------------------------------------------------


def request(prompt_chars: int = 0, max_tokens: int = 10) -> ChatRequest:
    return ChatRequest(
        model="m",
        messages=[{"role": "user", "content": "x" * prompt_chars}],
        temperature=0.5,
        max_tokens=max_tokens,
    )


def ok(tokens: int, limits: RateLimits | None = None) -> ChatResult:
    return ChatResult(
        text="fine",
        model="m",
        prompt_tokens=tokens,
        completion_tokens=0,
        finish_reason="stop",
        rate_limits=limits,
    )


@pytest.fixture
def endpoint_id():
    """An endpoint id no real endpoint uses; its keys are deleted afterwards."""
    endpoint_id = random.randrange(10**9, 2 * 10**9)
    yield endpoint_id
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for pattern in (f"{pacing.KEY_PREFIX}:{endpoint_id}:*", f"*endpoint:{endpoint_id}:*"):
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)


class Pacer:
    """An endpoint pacer whose sleeps are recorded, not slept: each `call` returns how long it
    would have waited (a sleep does not advance Redis's clock, so the queue shows as is)."""

    def __init__(self, endpoint_id: int, **limits: int) -> None:
        self.sleeps: list[float] = []
        self.pacer = pacing.EndpointPacer(
            limits=pacing.Limits(endpoint_key=str(endpoint_id), **limits),
            url=settings.CELERY_BROKER_URL,
            run_id=7,
            hold_seconds=30,
            sleep=self.sleeps.append,
        )

    def call(self, req: ChatRequest | None = None) -> tuple[pacing.Ticket, float]:
        before = len(self.sleeps)
        ticket = self.pacer.before(req or request(), keep_waiting=lambda: True)
        assert ticket is not None
        return ticket, sum(self.sleeps[before:])

    def state(self) -> dict[str, str]:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, decode_responses=True)
        return client.hgetall(pacing.state_key(self.pacer.limits.endpoint_key))


@pytest.mark.redis
def test_requests_per_minute_queue_calls_evenly(endpoint_id):
    paced = Pacer(endpoint_id, requests_per_minute=60)  # one a second, a bucket of one
    waits = [paced.call()[1] for _ in range(4)]
    assert waits[0] == 0
    assert waits[1:] == pytest.approx([1.0, 2.0, 3.0], abs=0.05)


@pytest.mark.redis
def test_tokens_are_reserved_by_estimate_and_reconciled_with_the_usage(endpoint_id):
    paced = Pacer(endpoint_id, tokens_per_minute=12000)  # 200 a second, a bucket of 100
    first, wait = paced.call(request(max_tokens=80))
    assert wait == 0
    second, wait = paced.call(request(max_tokens=80))  # 60 short: 0.3 s
    assert wait == pytest.approx(0.3, abs=0.03)
    paced.pacer.after(first, result=ok(20))  # used 20 of 80: 60 back
    paced.pacer.after(second, result=ok(20))
    _, wait = paced.call(request(max_tokens=80))
    # 100 - 80 - 80 + 60 + 60 = 60 left: 20 short of the next 80, 0.1 s (less by the refill
    # since the second call, which a loaded machine stretches); without the 120 given back the
    # wait would be 0.7 s.
    assert 0.0 <= wait <= 0.13


@pytest.mark.redis
def test_the_servers_headers_set_the_limit_and_remaining_budget(endpoint_id):
    paced = Pacer(endpoint_id)  # nothing configured
    ticket, wait = paced.call()
    assert wait == 0
    headers = RateLimits(limit_requests=60, remaining_requests=0, reset_requests=60.0)
    paced.pacer.after(ticket, result=ok(5, headers))
    _, wait = paced.call()  # learned 60/min and none left: the next one in a second
    assert wait == pytest.approx(1.0, abs=0.05)
    snapshot = pacing.pacing_snapshot(limits=paced.pacer.limits, run_id=7)
    assert snapshot.requests_per_minute == 60 and snapshot.learned_requests_per_minute == 60
    assert snapshot.server_remaining_requests == 0
    assert snapshot.requests_total == 1 and snapshot.tokens_last_minute == 5


@pytest.mark.redis
def test_none_remaining_without_a_known_limit_waits_for_the_reset(endpoint_id):
    paced = Pacer(endpoint_id)
    ticket, _ = paced.call()
    paced.pacer.after(ticket, result=ok(5, RateLimits(remaining_tokens=0, reset_tokens=2.0)))
    _, wait = paced.call()
    assert wait == pytest.approx(2.0, abs=0.05)


@pytest.mark.redis
def test_retry_after_pauses_every_call_to_the_endpoint(endpoint_id):
    paced = Pacer(endpoint_id)
    ticket, _ = paced.call()
    error = TransientLLMError("HTTP 429", retry_after=1.5, status=429)
    paced.pacer.after(ticket, error=error)
    other_worker = Pacer(endpoint_id)
    _, wait = other_worker.call()
    assert wait == pytest.approx(1.5, abs=0.05)
    assert pacing.pacing_snapshot(limits=paced.pacer.limits, run_id=7).rate_limited_total == 1


@pytest.mark.redis
def test_a_429_halves_concurrency_once_per_wave_then_recovers_additively(
    endpoint_id,
):
    paced = Pacer(endpoint_id)
    tickets = [paced.call()[0] for _ in range(8)]
    limited = TransientLLMError("HTTP 429", status=429)
    paced.pacer.after(tickets[0], error=limited)  # 8 in flight: cut to 4
    assert float(paced.state()["cap"]) == 4
    paced.pacer.after(tickets[1], error=limited)  # sent before the cut: no second cut
    assert float(paced.state()["cap"]) == 4
    for ticket in tickets[2:]:
        paced.pacer.after(ticket, result=ok(1))  # 6 successes: +1/cap each
    cap = 4.0
    for _ in range(6):
        cap += 1 / cap
    assert float(paced.state()["cap"]) == pytest.approx(cap)
    # Now only floor(cap) = 5 calls get a slot: the sixth waits (and gives up when told).
    held = [paced.call()[0] for _ in range(5)]
    answers = iter([False])
    assert paced.pacer.before(request(), keep_waiting=lambda: next(answers)) is None
    late = TransientLLMError("HTTP 429", status=429)
    paced.pacer.after(held[0], error=late)  # sent after the cut: cuts again, from 5 in flight
    assert float(paced.state()["cap"]) == 2
    for ticket in held[1:]:
        paced.pacer.after(ticket, result=ok(1))


@pytest.mark.redis
def test_a_429_with_headers_halves_concurrency_too(endpoint_id):
    """Under the budget the headers announce, a 429 means calls arrived bunched: fewer in
    flight, as without headers."""
    paced = Pacer(endpoint_id, requests_per_minute=6000)  # a bucket of 50
    tickets = [paced.call()[0] for _ in range(6)]
    headers = RateLimits(limit_requests=6000, remaining_requests=0, reset_requests=0.01)
    paced.pacer.after(tickets[0], error=TransientLLMError("HTTP 429", status=429,
                                                          rate_limits=headers))  # fmt: skip
    assert float(paced.state()["cap"]) == 3
    assert pacing.pacing_snapshot(limits=paced.pacer.limits, run_id=7).concurrency_cap == 3
