"""Which client serves a call: the offline demo provider, or the SDK against an endpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from .base import LLMClient
from .demo import DemoClient

# The key variable the settings module reads itself (from the environment or the .env file).
SETTINGS_KEY_VARIABLE = "OPENAI_API_KEY"


class EndpointLike(Protocol):
    """What the factory reads of an endpoint (`generation.models.Endpoint`)."""

    name: str
    base_url: str
    api_key_env: str


@dataclass(frozen=True)
class Connection:
    """An endpoint resolved against this process's environment. `missing_key` names a key
    variable the endpoint needs and the environment does not set."""

    provider: str
    base_url: str
    api_key: str = ""
    missing_key: str = ""


def current_provider() -> str:
    """ "openai" when a base URL or key is configured, else the offline "demo" provider."""
    if getattr(settings, "OPENAI_BASE_URL", "") or getattr(settings, "OPENAI_API_KEY", ""):
        return "openai"
    return "demo"


def endpoint_connection(endpoint: EndpointLike) -> Connection:
    """Base URL, key and provider of an endpoint, read now (keys live only in the environment).

    An empty base URL means OPENAI_BASE_URL, and with no key either the offline demo provider
    (today's environment settings, the endpoint named "default"). A named key variable must be
    set, except OPENAI_API_KEY on an endpoint without a base URL of its own: a local server
    named by OPENAI_BASE_URL alone needs no key, as before endpoints existed.
    """
    base_url = endpoint.base_url or settings.OPENAI_BASE_URL
    variable = endpoint.api_key_env
    if variable == SETTINGS_KEY_VARIABLE:
        key = settings.OPENAI_API_KEY
    else:
        key = os.environ.get(variable, "").strip() if variable else ""
    if not base_url and not key:
        return Connection(provider="demo", base_url="")
    optional = variable == SETTINGS_KEY_VARIABLE and not endpoint.base_url
    missing = variable if variable and not key and not optional else ""
    return Connection(provider="openai", base_url=base_url, api_key=key, missing_key=missing)


def get_client(provider: str, connection: Connection | None = None) -> LLMClient:
    """The client for a provider: the demo one, or the SDK on `connection` (default: the
    environment's OPENAI_BASE_URL and OPENAI_API_KEY)."""
    if provider == "demo":
        return DemoClient()
    if provider == "openai":
        # Imported here: the SDK takes most of a second to import, which every manage.py
        # command (the admin imports this module) would pay without ever calling a model.
        from .openai_client import shared_client

        if connection is None:
            connection = Connection("openai", settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY)
        return shared_client(
            base_url=connection.base_url,
            api_key=connection.api_key,
            timeout=settings.SYNTHREVIEW_LLM_TIMEOUT,
        )
    raise ValueError(f"unknown LLM provider {provider!r}")


def endpoint_client(endpoint: EndpointLike) -> LLMClient:
    """The client that serves calls to `endpoint` in this process."""
    connection = endpoint_connection(endpoint)
    return get_client(connection.provider, connection)
