"""The fake OpenAI server's rate limits: per-key request and token budgets, as OpenAI keeps
them, with its `x-ratelimit-*` headers (tests/tooling/fake_openai.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


def format_reset(seconds: float) -> str:
    """OpenAI's duration format: "20ms", "1.500s", "6m0.000s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3f}s" if minutes else f"{rest:.3f}s"


@dataclass
class Bucket:
    requests: float
    tokens: float
    at: float


class KeyBudgets:
    """Requests and tokens per minute for each API key: token buckets refilled continuously
    that hold `burst_seconds` of the budget (0 for a limit: none)."""

    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def charge(
        self, key: str, cost: int, *, rpm: int, tpm: int, burst_seconds: float, headers: bool
    ) -> tuple[float | None, dict[str, str]]:
        """Charge one request and `cost` tokens: (None, headers) when they fit, else (seconds
        until they would, headers); nothing is charged then."""
        now = time.monotonic()
        caps = {"requests": rpm * burst_seconds / 60, "tokens": tpm * burst_seconds / 60}
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = Bucket(caps["requests"], caps["tokens"], now)
            elapsed, bucket.at = now - bucket.at, now
            bucket.requests = min(caps["requests"], bucket.requests + elapsed * rpm / 60)
            bucket.tokens = min(caps["tokens"], bucket.tokens + elapsed * tpm / 60)
            wait = 0.0
            if rpm and bucket.requests < 1:
                wait = (1 - bucket.requests) * 60 / rpm
            if tpm and bucket.tokens < cost:
                wait = max(wait, (cost - bucket.tokens) * 60 / tpm)
            if not wait:
                bucket.requests -= 1 if rpm else 0
                bucket.tokens -= cost if tpm else 0
            sent = {}
            for name, limit, level in (
                ("requests", rpm, bucket.requests),
                ("tokens", tpm, bucket.tokens),
            ):
                if headers and limit:
                    sent[f"x-ratelimit-limit-{name}"] = str(limit)
                    sent[f"x-ratelimit-remaining-{name}"] = str(max(0, int(level)))
                    sent[f"x-ratelimit-reset-{name}"] = format_reset(
                        (caps[name] - level) * 60 / limit
                    )
        return (wait or None), sent
