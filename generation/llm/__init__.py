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
from .factory import current_provider, get_client
from .retry import RetryPolicy, complete_with_retries

__all__ = [
    "ChatRequest",
    "ChatResult",
    "LLMClient",
    "LLMError",
    "PermanentLLMError",
    "RetryPolicy",
    "TransientLLMError",
    "complete_with_retries",
    "current_provider",
    "get_client",
]
