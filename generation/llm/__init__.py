"""LLM clients: one interface, two implementations (OpenAI-compatible HTTP and offline demo).

`get_client()` reads settings at call time, so a test (or a run launched after a settings
change) gets the provider the settings name now, not the one seen at import.
"""

from __future__ import annotations

from .base import (
    ChatRequest,
    ChatResult,
    LLMClient,
    LLMError,
    PermanentLLMError,
    TransientLLMError,
)
from .factory import (
    Connection,
    current_provider,
    endpoint_client,
    endpoint_connection,
    get_client,
)
from .ratelimits import RateLimits, parse_rate_limits
from .retry import RetryPolicy, complete_with_retries

__all__ = [
    "ChatRequest",
    "ChatResult",
    "Connection",
    "LLMClient",
    "LLMError",
    "PermanentLLMError",
    "RateLimits",
    "RetryPolicy",
    "TransientLLMError",
    "complete_with_retries",
    "current_provider",
    "endpoint_client",
    "endpoint_connection",
    "get_client",
    "parse_rate_limits",
]
