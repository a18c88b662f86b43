"""The provider's rate-limit headers (`x-ratelimit-*`), as OpenAI and many compatible servers
send them, parsed once per response for the pacing in `generation.engine.pacing`.

    x-ratelimit-limit-requests: 1200      x-ratelimit-limit-tokens: 300000
    x-ratelimit-remaining-requests: 1199  x-ratelimit-remaining-tokens: 299400
    x-ratelimit-reset-requests: 50ms      x-ratelimit-reset-tokens: 120ms

A reset is a duration ("1s", "6m0s", "20ms", "1h2m3.5s", or plain seconds): the time until the
budget is full again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(raw: str | None) -> float | None:
    """Seconds in "6m0s", "20ms", "1.5s" or "2"; None when absent or unreadable."""
    if raw is None:
        return None
    text = raw.strip().lower()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _count(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return max(0, int(float(raw.strip())))
    except ValueError:
        return None


@dataclass(frozen=True)
class RateLimits:
    """What the server said about its budgets; None where it said nothing."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None


def parse_rate_limits(headers: Mapping[str, str] | None) -> RateLimits | None:
    """The `x-ratelimit-*` headers of a response (any case), or None when it has none."""
    if headers is None:
        return None
    found = RateLimits(
        limit_requests=_count(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=_count(headers.get("x-ratelimit-remaining-requests")),
        reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
        limit_tokens=_count(headers.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_count(headers.get("x-ratelimit-remaining-tokens")),
        reset_tokens=parse_duration(headers.get("x-ratelimit-reset-tokens")),
    )
    return None if found == RateLimits() else found
