from __future__ import annotations

from django.conf import settings

from .base import LLMClient
from .demo import DemoClient
from .openai_client import shared_client


def current_provider() -> str:
    """ "openai" when a base URL or key is configured, else the offline "demo" provider."""
    if getattr(settings, "OPENAI_BASE_URL", "") or getattr(settings, "OPENAI_API_KEY", ""):
        return "openai"
    return "demo"


def get_client(provider: str) -> LLMClient:
    """The client for a run's recorded provider (a run keeps the provider it started with)."""
    if provider == "demo":
        return DemoClient()
    if provider == "openai":
        return shared_client(
            base_url=settings.OPENAI_BASE_URL,
            api_key=settings.OPENAI_API_KEY,
            timeout=settings.SYNTHREVIEW_LLM_TIMEOUT,
        )
    raise ValueError(f"unknown LLM provider {provider!r}")
