"""Reads for generation screens: querysets with their joins, and run progress figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from .models import Dialogue, GenerationRun


def run_list() -> QuerySet[GenerationRun]:
    return GenerationRun.objects.select_related("scenario", "created_by").order_by("-created_at")


def run_get(*, pk: int) -> GenerationRun:
    return GenerationRun.objects.select_related("scenario", "created_by").get(pk=pk)


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
    counts = Dialogue.objects.filter(run=run).aggregate(
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
    is_active = run.status in GenerationRun.ACTIVE_STATUSES
    end = run.finished_at if not is_active and run.finished_at else timezone.now()
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
        **counts,
    )
