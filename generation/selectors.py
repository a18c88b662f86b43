"""Reads for generation screens: querysets with their joins, and run progress figures."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.db.models import Count, Max, Prefetch, Q, QuerySet, Sum
from django.utils import timezone

from .engine import dispatch, pacing
from .engine.endpoints import call_target
from .llm import Connection, endpoint_connection
from .models import Dialogue, Endpoint, GenerationRun, Persona, Scenario
from .signals import EndpointCaller, endpoint_callers


def run_list() -> QuerySet[GenerationRun]:
    return GenerationRun.objects.select_related("scenario", "created_by").order_by("-created_at")


def run_get(*, pk: int) -> GenerationRun:
    return GenerationRun.objects.select_related("scenario", "created_by", "endpoint_override").get(
        pk=pk
    )


def run_dialogues(*, run: GenerationRun) -> QuerySet[Dialogue]:
    return (
        Dialogue.objects.filter(run=run)
        .annotate(live_turns=Count("turns", filter=Q(turns__discarded_at__isnull=True)))
        .order_by("index")
    )


def run_failure_reasons(*, run: GenerationRun, limit: int = 20) -> list[dict[str, object]]:
    """Distinct failure reasons with how many dialogues each, most frequent first."""
    return list(
        Dialogue.objects.filter(run=run, status=Dialogue.Status.FAILED)
        .values("failure_reason")
        .annotate(count=Count("pk"))
        .order_by("-count", "failure_reason")[:limit]
    )


@dataclass(frozen=True)
class RunProgress:
    requested: int
    done: int
    failed: int
    cancelled: int
    generating: int
    waiting: int
    is_active: bool
    elapsed: timedelta | None
    eta: timedelta | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    # Of the waiting: dispatched with a delay not yet over (a launch spreads its first
    # dialogues' starts to the endpoints' per-minute limits), and when the last one is due.
    starting: int = 0
    last_start_in: timedelta | None = None

    @property
    def finished(self) -> int:
        """Dialogues generated to an outcome. Cancelled ones are not: a cancelled run's bar
        stops where the cancellation left it."""
        return self.done + self.failed

    @property
    def unfinished(self) -> int:
        return self.generating + self.waiting

    @property
    def percent(self) -> int:
        return int(100 * self.finished / self.requested) if self.requested else 100


def run_progress(*, run: GenerationRun) -> RunProgress:
    """Counts by dialogue status and live usage (one query), and an ETA from the rate so far."""
    now = timezone.now()
    delayed = Q(status=Dialogue.Status.PENDING, dispatched_at__gt=now)
    counts = Dialogue.objects.filter(run=run).aggregate(
        starting=Count("pk", filter=delayed),
        last_start=Max("dispatched_at", filter=delayed),
        done=Count("pk", filter=Q(status=Dialogue.Status.COMPLETE)),
        failed=Count("pk", filter=Q(status=Dialogue.Status.FAILED)),
        cancelled=Count("pk", filter=Q(status=Dialogue.Status.CANCELLED)),
        generating=Count("pk", filter=Q(status=Dialogue.Status.GENERATING)),
        waiting=Count("pk", filter=Q(status=Dialogue.Status.PENDING)),
        pending_prompt=Sum("pending_prompt_tokens"),
        pending_completion=Sum("pending_completion_tokens"),
        pending_cost=Sum("pending_cost_usd"),
    )
    # Dialogues in progress have usage not yet rolled up into the run: count it live.
    prompt_tokens = run.prompt_tokens + (counts.pop("pending_prompt") or 0)
    completion_tokens = run.completion_tokens + (counts.pop("pending_completion") or 0)
    cost_usd = run.cost_usd + (counts.pop("pending_cost") or Decimal("0"))
    last_start = counts.pop("last_start")
    is_active = run.status in GenerationRun.ACTIVE_STATUSES
    end = run.finished_at if not is_active and run.finished_at else now
    elapsed = end - run.started_at if run.started_at else None
    eta = None
    finished = counts["done"] + counts["failed"]
    remaining = counts["generating"] + counts["waiting"]
    if is_active and elapsed and finished and remaining:
        eta = elapsed * remaining / finished
    return RunProgress(
        requested=run.requested_count,
        is_active=is_active,
        elapsed=elapsed,
        eta=eta,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
        last_start_in=last_start - now if last_start else None,
        **counts,
    )


@dataclass
class EndpointUse:
    """One endpoint a run calls, who calls it with which model, and how it resolves here."""

    endpoint: Endpoint
    connection: Connection
    callers: list[tuple[str, str]] = field(default_factory=list)  # (persona or judge, model)


def endpoint_uses(
    *,
    scenario: Scenario,
    endpoint_override: Endpoint | None = None,
    model_override: str = "",
    personas: list[Persona] | None = None,
    others: list[EndpointCaller] | None = None,
) -> list[EndpointUse]:
    """The endpoints a run of `scenario` calls: its personas' in persona order (`personas`:
    already loaded, with their endpoints), then other apps' callers (`others`: already asked
    for, else asked here through `signals.endpoint_callers`). The run's overrides apply to
    the personas only: another caller picked its own endpoint and model."""
    run = GenerationRun(
        scenario=scenario, endpoint_override=endpoint_override, model_override=model_override
    )
    if personas is None:
        personas = list(scenario.personas.select_related("endpoint").order_by("position"))
    if others is None:
        others = other_callers(scenarios=[scenario]).get(scenario.pk, [])
    callers = [(persona.name, *call_target(run=run, persona=persona)) for persona in personas]
    callers += [(other.name, other.endpoint, other.model) for other in others]
    uses: dict[int, EndpointUse] = {}
    for name, endpoint, model in callers:
        use = uses.get(endpoint.pk)
        if use is None:
            use = uses[endpoint.pk] = EndpointUse(endpoint, endpoint_connection(endpoint))
        use.callers.append((name, model))
    return list(uses.values())


def other_callers(*, scenarios: list[Scenario]) -> dict[int, list[EndpointCaller]]:
    """Callers other apps add to runs of these scenarios (a judge), by scenario id."""
    found: dict[int, list[EndpointCaller]] = defaultdict(list)
    for _receiver, callers in endpoint_callers.send(sender=Scenario, scenarios=scenarios):
        for caller in callers or ():
            found[caller.scenario_id].append(caller)
    return found


def launch_plans() -> list[tuple[Scenario, list[EndpointUse]]]:
    """Every scenario with the endpoints its runs call (the launch form's table; two queries,
    and one per app that adds callers)."""
    personas = Persona.objects.select_related("endpoint").order_by("position")
    scenarios = list(
        Scenario.objects.order_by("name").prefetch_related(Prefetch("personas", queryset=personas))
    )
    others = other_callers(scenarios=scenarios)
    return [
        (
            scenario,
            endpoint_uses(
                scenario=scenario,
                personas=list(scenario.personas.all()),
                others=others.get(scenario.pk, []),
            ),
        )
        for scenario in scenarios
    ]


def run_endpoint_uses(*, run: GenerationRun) -> list[EndpointUse]:
    """The endpoints a run calls, as it was launched (its overrides)."""
    return endpoint_uses(
        scenario=run.scenario,
        endpoint_override=run.endpoint_override,
        model_override=run.model_override,
    )


@dataclass(frozen=True)
class EndpointPacing:
    """A run's endpoint on the run page: who calls it, its limits, and live pacing (None
    without the Redis broker, which holds it)."""

    use: EndpointUse
    pacing: pacing.Pacing | None


def run_endpoint_pacing(*, run: GenerationRun) -> list[EndpointPacing]:
    """Each endpoint the run calls with this run's requests and tokens in the last minute,
    its 429s and the pacing in force now (one query, one Redis round trip per endpoint)."""
    live = dispatch.requests_gated() and run.provider != "demo"
    return [
        EndpointPacing(
            use=use,
            pacing=pacing.pacing_snapshot(limits=pacing.Limits.of(use.endpoint), run_id=run.pk)
            if live and use.connection.provider != "demo"
            else None,
        )
        for use in run_endpoint_uses(run=run)
    ]
