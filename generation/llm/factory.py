from __future__ import annotations

from django.conf import settings

from .base import LLMClient
from .demo import DemoClient


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
        # Imported here: the SDK takes most of a second to import, which every manage.py
        # command (the admin imports this module) would pay without ever calling a model.
        from .openai_client import shared_client

        return shared_client(
            base_url=settings.OPENAI_BASE_URL,
            api_key=settings.OPENAI_API_KEY,
            timeout=settings.SYNTHREVIEW_LLM_TIMEOUT,
        )
    raise ValueError(f"unknown LLM provider {provider!r}")
