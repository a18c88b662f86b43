"""Endpoint pacing: each endpoint's limits held across every run and worker process, in Redis.

An endpoint may cap its concurrent requests and its requests and tokens per minute (configured
on the endpoint, or announced by the server in `x-ratelimit-limit-*` headers). Before a call:

1. it takes one of the endpoint's request slots (the run's request gate, `gate.RequestGate`,
   keyed by the endpoint): `max_concurrent`, lowered while 429s have cut it;
2. it reserves one request and its estimated tokens (prompt characters / 4 + `max_tokens`) in
   two token buckets and sleeps until they cover it (`pace_reserve.lua`). Buckets refill
   continuously at the per-minute rate and hold `BURST_SECONDS` of it, so calls go out evenly
   rather than a minute's budget at once (providers enforce limits over shorter periods too);
   a bucket goes negative, so later calls queue behind earlier ones, first come first served.

After it (`pace_settle.lua`): the estimate is reconciled with the response's `usage`; the
server's `x-ratelimit-remaining-*` lower the buckets when they say less is left (another client
on the key), and with no known limit, "none left" waits for `x-ratelimit-reset-*`; a 429's
`Retry-After` pauses every call to the endpoint until then; any 429 (with rate-limit headers
or without) halves the endpoint's concurrency (once per wave of calls), and each success adds
back about one call per window (AIMD); the run's counters feed the run page.

Why not `limits` or `pyrate-limiter`: both count hits against a window, but this needs, in one
atomic step, tokens given back after the call (the estimate against the usage), a budget set
from the server's remaining count, and a concurrency cap that moves; and a reservation that
tells the caller how long to wait (one round trip, no polling). The request gate already had
the Redis scripts, the connection and the server clock: pacing extends it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from django.conf import settings

from generation.llm import ChatRequest, ChatResult, LLMError

from .gate import HOLD_MARGIN_SECONDS, POLL_SECONDS, RequestGate, redis_scripts
from .gate import KEY_PREFIX as KEY_PREFIX_GATE

log = logging.getLogger(__name__)

KEY_PREFIX = "synthreview:pace"
# How many seconds of its per-minute budget a bucket holds: less than a provider that
# enforces its limit per second holds, so the milliseconds between a call's turn here and its
# arrival there (which differ from call to call) never find the provider's bucket short.
BURST_SECONDS = 0.5
# An endpoint with no max_concurrent has no cap until a 429 sets one.
UNCAPPED = 1_000_000
# A run's per-endpoint totals outlive the run by this much (the run page shows them).
TOTALS_SECONDS = 7 * 86400
# Characters per token in the estimate made before a call (OpenAI's rule of thumb).
CHARS_PER_TOKEN = 4

_HERE = Path(__file__).resolve().parent
_COMMON = (_HERE / "pace_common.lua").read_text(encoding="utf-8")
RESERVE_SCRIPT = _COMMON + (_HERE / "pace_reserve.lua").read_text(encoding="utf-8")
SETTLE_SCRIPT = _COMMON + (_HERE / "pace_settle.lua").read_text(encoding="utf-8")

_scripts: dict[str, tuple] = {}


def estimate_tokens(request: ChatRequest) -> int:
    """Tokens a call may use, known before it: its prompt's characters / 4 plus max_tokens."""
    characters = sum(len(str(message.get("content") or "")) for message in request.messages)
    return math.ceil(characters / CHARS_PER_TOKEN) + request.max_tokens


def state_key(endpoint_key: str) -> str:
    return f"{KEY_PREFIX}:{endpoint_key}:state"


def run_keys(endpoint_key: str, run_id: int) -> tuple[str, str]:
    """(prefix of the 10-second counters, totals) of one run's calls to one endpoint."""
    base = f"{KEY_PREFIX}:{endpoint_key}:run:{run_id}"
    return f"{base}:at:", f"{base}:total"


def gate_name(endpoint_key: str) -> str:
    return f"endpoint:{endpoint_key}"


@dataclass(frozen=True)
class Limits:
    """An endpoint's configured limits (0: none). `endpoint_key` names its state in Redis: the
    row's id and creation time, so an endpoint deleted and created again, or a database
    reset on the same Redis, starts afresh instead of inheriting what another one learned."""

    endpoint_key: str
    max_concurrent: int = 0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0

    @classmethod
    def of(cls, endpoint) -> Limits:
        return cls(
            endpoint_key=f"{endpoint.pk}-{int(endpoint.created_at.timestamp() * 1000)}",
            max_concurrent=endpoint.max_concurrent or 0,
            requests_per_minute=endpoint.requests_per_minute or 0,
            tokens_per_minute=endpoint.tokens_per_minute or 0,
        )


@dataclass(frozen=True)
class Ticket:
    holder: str
    estimate: int
    sent_ms: int


def _header(value: float | int | None, scale: float = 1) -> int:
    return -1 if value is None else round(value * scale)


class EndpointPacer:
    """Paces one endpoint's calls (`generation.llm.retry.Pacer`), for one run's calls."""

    def __init__(
        self,
        *,
        limits: Limits,
        url: str,
        run_id: int | None = None,
        hold_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = limits
        self._sleep = sleep
        self._state = state_key(limits.endpoint_key)
        self._gate = RequestGate(
            run_id=gate_name(limits.endpoint_key),
            limit=limits.max_concurrent or UNCAPPED,
            url=url,
            hold_seconds=hold_seconds,
            cap_key=self._state,
        )
        self._run_keys = run_keys(limits.endpoint_key, run_id) if run_id else ()
        self._redis, self._reserve, self._settle = _pace_connection(url)

    def _budget_args(self) -> list:
        return [self.limits.requests_per_minute, self.limits.tokens_per_minute, BURST_SECONDS]

    def before(self, request: ChatRequest, *, keep_waiting: Callable[[], bool]) -> Ticket | None:
        holder = self._gate.acquire(keep_waiting=keep_waiting)
        if holder is None:
            return None
        estimate = estimate_tokens(request)
        try:
            wait_ms, now_ms = self._reserve(
                keys=[self._state], args=[*self._budget_args(), estimate]
            )
        except Exception:
            self._gate.release(holder)
            raise
        ticket = Ticket(holder=holder, estimate=estimate, sent_ms=int(now_ms) + int(wait_ms))
        remaining = wait_ms / 1000
        while remaining > 0:
            step = min(remaining, POLL_SECONDS)
            self._sleep(step)
            remaining -= step
            if remaining > 0 and not keep_waiting():
                self._report(ticket, outcome="aborted")
                return None
        return ticket

    def after(
        self, ticket: Ticket, *, result: ChatResult | None = None, error: LLMError | None = None
    ) -> None:
        if result is not None:
            used = result.prompt_tokens + result.completion_tokens
            self._report(ticket, outcome="ok", used=used if used else -1, limits=result.rate_limits)
            return
        assert error is not None
        outcome = "429" if error.status == 429 else "error"
        retry_after = getattr(error, "retry_after", None)
        self._report(ticket, outcome=outcome, limits=error.rate_limits, retry_after=retry_after)

    def _report(
        self,
        ticket: Ticket,
        *,
        outcome: str,
        used: int = -1,
        limits=None,
        retry_after: float | None = None,
    ) -> None:
        """Settle the call and give its slot back. A Redis failure is logged, not raised: the
        call's result is already in, and the slot expires on its own."""
        headers = [-1] * 6
        if limits is not None:
            headers = [
                _header(limits.limit_requests),
                _header(limits.remaining_requests),
                _header(limits.reset_requests, 1000),
                _header(limits.limit_tokens),
                _header(limits.remaining_tokens),
                _header(limits.reset_tokens, 1000),
            ]
        args = [
            *self._budget_args(), ticket.estimate, used, outcome, *headers,
            _header(retry_after, 1000), ticket.sent_ms, self.limits.max_concurrent,
            TOTALS_SECONDS,
        ]  # fmt: skip
        try:
            self._settle(keys=[self._state, self._gate.holders_key, *self._run_keys], args=args)
        except redis.RedisError as exc:
            log.warning("could not settle a call to endpoint %s: %s", self.limits.endpoint_key, exc)
        finally:
            self._gate.release(ticket.holder)


def _pace_connection(url: str) -> tuple:
    """(client, reserve script, settle script) on the gate's connection pool for `url`."""
    found = _scripts.get(url)
    if found is None:
        client = redis_scripts(url)[0]
        found = _scripts[url] = (
            client,
            client.register_script(RESERVE_SCRIPT),
            client.register_script(SETTLE_SCRIPT),
        )
    return found


def endpoint_pacer(*, limits: Limits, run_id: int | None) -> EndpointPacer:
    """The endpoint's pacer on the broker's Redis (callers check `requests_gated()` first)."""
    return EndpointPacer(
        limits=limits,
        url=settings.CELERY_BROKER_URL,
        run_id=run_id,
        hold_seconds=settings.SYNTHREVIEW_LLM_TIMEOUT + HOLD_MARGIN_SECONDS,
    )


@dataclass(frozen=True)
class Pacing:
    """One endpoint as the run page shows it: this run's recent traffic, the pacing now."""

    requests_last_minute: int
    tokens_last_minute: int
    requests_total: int
    rate_limited_total: int
    requests_per_minute: int  # in force: configured, else learned from headers (0: none)
    tokens_per_minute: int
    learned_requests_per_minute: int
    learned_tokens_per_minute: int
    concurrency_cap: int | None  # after 429s; None: not cut
    cooldown_seconds: float  # Retry-After still to wait
    server_remaining_requests: int | None  # as of the last headers
    server_remaining_tokens: int | None
    in_flight: int

    @property
    def provider_note(self) -> str:
        """What the provider's headers said last ("" if nothing)."""
        limits = [
            f"{value} {name}/min"
            for value, name in ((self.learned_requests_per_minute, "requests"),
                                (self.learned_tokens_per_minute, "tokens"))
            if value
        ]  # fmt: skip
        left = [
            f"{value} {name}"
            for value, name in ((self.server_remaining_requests, "requests"),
                                (self.server_remaining_tokens, "tokens"))
            if value is not None
        ]  # fmt: skip
        parts = ["limits " + ", ".join(limits)] if limits else []
        parts += [", ".join(left) + " left"] if left else []
        return "; ".join(parts)


def pacing_snapshot(*, limits: Limits, run_id: int) -> Pacing:
    """The run page's figures for one endpoint (one pipelined round trip)."""
    client = _pace_connection(settings.CELERY_BROKER_URL)[0]
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    prefix, totals = run_keys(limits.endpoint_key, run_id)
    current = now_ms // 10000
    pipe = client.pipeline(transaction=False)
    for bucket in range(current - 5, current + 1):
        pipe.hmget(f"{prefix}{bucket}", "req", "tok")
    pipe.hmget(totals, "req", "r429")
    pipe.hgetall(state_key(limits.endpoint_key))
    pipe.zcard(f"{KEY_PREFIX_GATE}:{gate_name(limits.endpoint_key)}:holders")
    *buckets, total, state, in_flight = pipe.execute()
    state = {k.decode(): v.decode() for k, v in state.items()}

    def number(value, default=0):
        return int(float(value)) if value not in (None, b"", "", "-1") else default

    learned_rpm, learned_tpm = number(state.get("lr")), number(state.get("lt"))
    has_headers = "hs" in state
    cooldown_ms = number(state.get("cool")) - now_ms
    return Pacing(
        requests_last_minute=sum(number(b[0]) for b in buckets),
        tokens_last_minute=sum(number(b[1]) for b in buckets),
        requests_total=number(total[0]),
        rate_limited_total=number(total[1]),
        requests_per_minute=limits.requests_per_minute or learned_rpm,
        tokens_per_minute=limits.tokens_per_minute or learned_tpm,
        learned_requests_per_minute=learned_rpm,
        learned_tokens_per_minute=learned_tpm,
        concurrency_cap=number(state["cap"]) if "cap" in state else None,
        cooldown_seconds=max(0.0, cooldown_ms / 1000),
        server_remaining_requests=number(state.get("hrr"), None) if has_headers else None,
        server_remaining_tokens=number(state.get("hrt"), None) if has_headers else None,
        in_flight=in_flight,
    )
