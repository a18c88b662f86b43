"""The provider-neutral request/result types and the error split the retry loop relies on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .ratelimits import RateLimits


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion call, as a persona sees the conversation.

    `context` carries what the offline demo provider needs to stay on script (scenario slug,
    topic, speaker position...); HTTP providers ignore it. `response_format`, when set, is sent
    as the OpenAI `response_format` field (structured output, e.g. a JSON schema).
    """

    model: str
    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int
    context: dict[str, object] = field(default_factory=dict)
    response_format: dict[str, object] | None = None


@dataclass(frozen=True)
class ChatResult:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency_ms: int = 0
    # The server's x-ratelimit-* headers, when it sent any (read by the endpoint pacing).
    rate_limits: RateLimits | None = None


class LLMError(Exception):
    """A call that produced no usable result. `reason` is written for an admin to read.

    `status` is the HTTP status when the server answered, `rate_limits` its x-ratelimit-*
    headers if it sent any: the endpoint pacing learns from both.
    """

    def __init__(
        self, reason: str, *, status: int | None = None, rate_limits: RateLimits | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.rate_limits = rate_limits


class TransientLLMError(LLMError):
    """Worth retrying: rate limits, 5xx, timeouts, dropped connections, malformed bodies."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        super().__init__(reason, status=status, rate_limits=rate_limits)
        self.retry_after = retry_after


class PermanentLLMError(LLMError):
    """Retrying cannot help (bad key, unknown model, rejected request): fail the dialogue."""


class LLMClient(Protocol):
    provider: str

    def complete(self, request: ChatRequest) -> ChatResult: ...
