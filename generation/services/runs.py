"""Run services: launching a run of N dialogues, cancelling one."""

from __future__ import annotations

import random

from django.db import transaction
from django.utils import timezone

from generation import variables
from generation.engine.admission import start_spacing
from generation.engine.dispatch import run_dispatch
from generation.engine.leases import OPEN_STATUSES
from generation.models import Dialogue, Endpoint, GenerationRun, Scenario

from .endpoints import endpoints_check
from .scenarios import scenario_check_ready, scenario_pick_topics


def run_launch(
    *,
    scenario: Scenario,
    count: int,
    created_by=None,
    model_override: str = "",
    endpoint_override: Endpoint | None = None,
    temperature_override: float | None = None,
    max_in_flight: int = 64,
    seed: int | None = None,
    variable_coverage: str = GenerationRun.VariableCoverage.SAMPLED,
    oversample: dict[str, dict[str, int]] | None = None,
    background: bool = False,
) -> GenerationRun:
    """Create the run and its dialogues, each with its topic and its scenario variables'
    values; the first window's tasks are enqueued once this commits (`run_dispatch`), their
    starts spread out where the endpoints have per-minute limits (`admission`).

    Refuses (ScenarioNotReady, EndpointNotReady) a scenario without its personas, or an
    endpoint whose key variable is not set here. The run is on the demo provider when every
    endpoint it calls is, and stays on it. VariableError (a ValueError) when balanced coverage
    has too many combinations. `background`: without a broker, generate on a thread of this
    process and return at once (a launch from the browser); with a broker the workers
    generate either way.
    """
    scenario_check_ready(scenario=scenario)
    if count < 1:
        raise ValueError("count must be at least 1")
    if variable_coverage not in GenerationRun.VariableCoverage.values:
        raise ValueError(f"Unknown variable coverage {variable_coverage!r}.")
    model_override = model_override.strip()
    uses = endpoints_check(
        scenario=scenario, endpoint_override=endpoint_override, model_override=model_override
    )
    demo = all(use.connection.provider == "demo" for use in uses)
    seed = random.randrange(2**31) if seed is None else seed
    values = variables.sample(
        variables.variables_of(scenario.variables),
        count=count,
        seed=seed,
        balanced=variable_coverage == GenerationRun.VariableCoverage.BALANCED,
        oversample=oversample,
    )
    with transaction.atomic():
        run = GenerationRun.objects.create(
            scenario=scenario,
            requested_count=count,
            provider="demo" if demo else "openai",
            model_override=model_override,
            endpoint_override=endpoint_override,
            temperature_override=temperature_override,
            max_in_flight=max_in_flight,
            seed=seed,
            variable_coverage=variable_coverage,
            oversample=oversample or {},
            created_by=created_by,
        )
        topics = scenario_pick_topics(scenario=scenario, count=count, seed=seed)
        Dialogue.objects.bulk_create(
            [
                Dialogue(run=run, scenario=scenario, index=i, topic=topic[:500], variables=chosen)
                for i, (topic, chosen) in enumerate(zip(topics, values, strict=True))
            ],
            batch_size=1000,
        )
        spacing = start_spacing(run=run)
        transaction.on_commit(
            lambda: run_dispatch(run_id=run.pk, background=background, spacing=spacing)
        )
    return run


def run_cancel(*, run: GenerationRun) -> int:
    """Stop a run: its open dialogues are cancelled, finished ones stay. Returns how many.

    A worker in the middle of a dialogue notices at its next lease renewal (before every
    retry, and every second while waiting for a request slot) or at the turn's save, so work
    stops within one LLM call.
    """
    now = timezone.now()
    with transaction.atomic():
        # Dialogue rows before the run row: the same lock order as a finishing dialogue.
        cancelled = Dialogue.objects.filter(run_id=run.pk, status__in=OPEN_STATUSES).update(
            status=Dialogue.Status.CANCELLED, stop_reason="cancelled", finished_at=now
        )
        updated = GenerationRun.objects.filter(
            pk=run.pk, status__in=GenerationRun.ACTIVE_STATUSES
        ).update(status=GenerationRun.Status.CANCELLED, finished_at=now)
    if updated:
        run.status, run.finished_at = GenerationRun.Status.CANCELLED, now
    return cancelled
