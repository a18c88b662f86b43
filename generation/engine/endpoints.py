"""Calling a model on an endpoint: the one way every LLM call is made (personas' turns here,
and any other caller, such as a review judge, with an endpoint and model it picked).

`endpoint_complete(endpoint=..., request=...)` resolves the endpoint against this process's
environment (base URL, key, or the offline demo provider), paces the call to the endpoint's
limits across all workers (`pacing`), retries transient faults (`generation.llm.retry`) and
returns the result with its priced usage. `call_target` says which endpoint and model a
persona's turns use in a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from generation.llm import ChatRequest, ChatResult, complete_with_retries, endpoint_client
from generation.llm.demo import DemoClient
from generation.llm.retry import RequestSlots
from generation.models import Endpoint, GenerationRun, Persona

from . import dispatch, pacing
from .usage import Usage


@dataclass(frozen=True)
class EndpointOutcome:
    """What a paced call returned: the result, the retries it took, its usage and cost."""

    result: ChatResult
    retries: int
    usage: Usage


def endpoint_model(endpoint: Endpoint, model: str = "") -> str:
    """The model a call names: the one asked for, else the endpoint's default, else
    SYNTHREVIEW_LLM_MODEL."""
    return model.strip() or endpoint.default_model or settings.SYNTHREVIEW_LLM_MODEL


def call_target(*, run: GenerationRun, persona: Persona) -> tuple[Endpoint, str]:
    """(endpoint, model) of a persona's turns in a run. The run's endpoint override replaces the
    persona's endpoint, and then the persona's model too (it names a model of the other
    server): the run's model override, else the endpoint's default model."""
    if run.endpoint_override_id:
        return run.endpoint_override, endpoint_model(run.endpoint_override, run.model_override)
    endpoint = persona.endpoint
    return endpoint, endpoint_model(endpoint, run.model_override or persona.model)


def endpoint_complete(
    *,
    endpoint: Endpoint,
    request: ChatRequest,
    run: GenerationRun | None = None,
    before_attempt: Callable[[], bool] = lambda: True,
    slots: RequestSlots | None = None,
) -> EndpointOutcome:
    """Call `request.model` on `endpoint`, paced to its limits, retried; with its usage.

    `run` (optional) counts the call on that run's page, and a run launched on the demo
    provider stays on it. `before_attempt` is asked before each attempt, and every second of a
    wait, whether to go on (False raises `generation.llm.retry.Aborted`); `slots` is a run's
    request gate. Raises `PermanentLLMError` (incl. retries exhausted) when no answer came.
    Pacing needs the Redis broker; without one, calls are only retried.
    """
    if run is not None and run.provider == "demo":
        client = DemoClient()
    else:
        client = endpoint_client(endpoint)
    pacer = None
    if client.provider != "demo" and dispatch.requests_gated():
        pacer = pacing.endpoint_pacer(
            limits=pacing.Limits.of(endpoint), run_id=run.pk if run is not None else None
        )
    outcome = complete_with_retries(
        client, request, before_attempt=before_attempt, slots=slots, pacer=pacer
    )
    result = outcome.result
    usage = Usage.priced(
        model=result.model,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )
    return EndpointOutcome(result=result, retries=outcome.retries, usage=usage)
