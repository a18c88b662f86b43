"""Endpoint services: which endpoints a run will call (checked at launch), testing one."""

from __future__ import annotations

from dataclasses import dataclass

from generation.llm import LLMError, endpoint_client, endpoint_connection
from generation.models import Endpoint, Scenario
from generation.selectors import EndpointUse, endpoint_uses


class EndpointNotReady(Exception):
    """A run would call an endpoint it cannot use (its key variable is not set, or no such
    endpoint): refused at launch rather than discovered mid-run."""


def endpoints_check(
    *, scenario: Scenario, endpoint_override: Endpoint | None = None, model_override: str = ""
) -> list[EndpointUse]:
    """The endpoints a run would call (`selectors.endpoint_uses`), or EndpointNotReady naming the endpoint and the key variable missing."""
    uses = endpoint_uses(
        scenario=scenario, endpoint_override=endpoint_override, model_override=model_override
    )
    for use in uses:
        if use.connection.missing_key:
            callers = ", ".join(name for name, _ in use.callers)
            raise EndpointNotReady(
                f"Endpoint {use.endpoint.name!r} (called by {callers}) needs its API key in the "
                f"environment variable {use.connection.missing_key}, which is not set. Set it "
                "for the web process and every worker, or edit the endpoint."
            )
    return uses


def endpoint_by_name(name: str) -> Endpoint:
    """The endpoint called `name`; EndpointNotReady lists the known ones."""
    try:
        return Endpoint.objects.get(name=name)
    except Endpoint.DoesNotExist:
        known = ", ".join(Endpoint.objects.order_by("name").values_list("name", flat=True))
        raise EndpointNotReady(
            f"Unknown endpoint {name!r}. Known: {known or 'none'} (add one in the admin)."
        ) from None


@dataclass(frozen=True)
class EndpointTest:
    ok: bool
    provider: str
    models: list[str]
    error: str = ""


def endpoint_test(*, endpoint: Endpoint) -> EndpointTest:
    """List the endpoint's models (`GET /models`), or say why that failed."""
    connection = endpoint_connection(endpoint)
    if connection.missing_key:
        return EndpointTest(
            False, connection.provider, [], f"{connection.missing_key} is not set in this process."
        )
    client = endpoint_client(endpoint)
    if connection.provider == "demo":
        from generation.llm.demo import DEMO_MODEL

        return EndpointTest(True, "demo", [DEMO_MODEL])
    try:
        return EndpointTest(True, connection.provider, client.list_models())
    except LLMError as exc:
        return EndpointTest(False, connection.provider, [], exc.reason)
