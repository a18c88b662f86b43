"""The team page: each reviewer's pace, time per dialogue and corrections; the backlog and
when it clears. Reads the review audit trail (ReviewEvent) and revisions, in SQL aggregates."""

from __future__ import annotations

import math
from datetime import date, timedelta

from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Window,
)
from django.db.models.functions import RowNumber, TruncDate, TruncHour
from django.utils import timezone

from generation.models import Dialogue
from review.models import DialogueReview, ReviewEvent, TurnRevision

from .figures import Figure, ratio, rounded
from .scope import Scope

VERDICTS = (ReviewEvent.Kind.APPROVE, ReviewEvent.Kind.REJECT)
# The team's pace is its verdicts per day over this many most recent days.
PACE_DAYS = 7


def _verdicts(scope: Scope) -> QuerySet[ReviewEvent]:
    since = timezone.now() - timedelta(days=scope.days)
    return ReviewEvent.objects.filter(kind__in=VERDICTS, created_at__gte=since, actor__isnull=False)


def _median_durations(scope: Scope) -> dict[int, timedelta]:
    """Median claim-to-verdict time per reviewer, in one query on SQLite and PostgreSQL alike.

    Each verdict is paired with the same reviewer's latest claim of that dialogue before it;
    window functions number each reviewer's durations, and only the middle one or two rows
    come back (percentile_cont would be PostgreSQL only).
    """
    claim_at = (
        ReviewEvent.objects.filter(
            dialogue=OuterRef("dialogue"),
            actor=OuterRef("actor"),
            kind=ReviewEvent.Kind.CLAIM,
            created_at__lte=OuterRef("created_at"),
        )
        .order_by("-created_at", "-pk")
        .values("created_at")[:1]
    )
    durations = (
        _verdicts(scope)
        .annotate(claim_at=Subquery(claim_at))
        .filter(claim_at__isnull=False)
        .annotate(duration=ExpressionWrapper(F("created_at") - F("claim_at"), DurationField()))
    )
    middle = (
        durations.annotate(
            rank=Window(RowNumber(), partition_by=[F("actor_id")], order_by=F("duration").asc()),
            count=Window(Count("pk"), partition_by=[F("actor_id")]),
        )
        .filter(rank__gte=(F("count") + 1) / 2, rank__lte=(F("count") + 2) / 2)
        .values_list("actor_id", "duration")
    )
    halves: dict[int, list[timedelta]] = {}
    for actor_id, duration in middle:
        halves.setdefault(actor_id, []).append(duration)
    return {actor: sum(pair, timedelta()) / len(pair) for actor, pair in halves.items()}


def reviewers(scope: Scope) -> Figure:
    """Per reviewer over the last `scope.days` days. Dialogues per hour counts verdicts per
    clock hour in which the reviewer gave at least one (hours of actual reviewing)."""
    per_actor = (
        _verdicts(scope)
        .values("actor_id", "actor__username")
        .annotate(verdicts=Count("pk"), hours=Count(TruncHour("created_at"), distinct=True))
        .order_by("actor__username")
    )
    since = timezone.now() - timedelta(days=scope.days)
    corrections = dict(
        TurnRevision.objects.filter(
            kind=TurnRevision.Kind.EDIT, created_at__gte=since, author__isnull=False
        )
        .values_list("author_id")
        .annotate(count=Count("pk"))
        .order_by()
    )
    medians = _median_durations(scope)
    rows = []
    for actor in per_actor:
        median = medians.get(actor["actor_id"])
        rows.append(
            {
                "reviewer": actor["actor__username"],
                "verdicts": actor["verdicts"],
                "per_hour": rounded(ratio(actor["verdicts"], actor["hours"]), 1),
                "median_minutes": rounded(median.total_seconds() / 60, 1) if median else None,
                "corrections_per_dialogue": rounded(
                    ratio(corrections.get(actor["actor_id"], 0), actor["verdicts"])
                ),
            }
        )
    return Figure(
        columns=(
            ("reviewer", "Reviewer"),
            ("verdicts", "Verdicts"),
            ("per_hour", "Dialogues per hour"),
            ("median_minutes", "Median minutes per dialogue"),
            ("corrections_per_dialogue", "Corrections per dialogue"),
        ),
        rows=rows,
        summary=f"{len(rows)} reviewers, {sum(r['verdicts'] for r in rows)} verdicts "
        f"in the last {scope.days} days.",
    )


def backlog(scope: Scope) -> Figure:
    """Verdicts per day over the period, the backlog (complete dialogues without a verdict)
    and the date it clears at the last PACE_DAYS days' pace. Two aggregates."""
    waiting = Dialogue.objects.filter(
        Q(review__isnull=True) | Q(review__status=DialogueReview.Status.PENDING),
        status=Dialogue.Status.COMPLETE,
    ).count()
    daily = dict(
        _verdicts(scope)
        .annotate(day=TruncDate("created_at"))
        .values_list("day")
        .annotate(count=Count("pk"))
        .order_by()
    )
    today = timezone.localdate()
    days = [today - timedelta(days=back) for back in range(scope.days - 1, -1, -1)]
    rows = [{"day": day.isoformat(), "verdicts": daily.get(day, 0)} for day in days]
    pace = sum(row["verdicts"] for row in rows[-PACE_DAYS:]) / PACE_DAYS
    clears = _clear_date(today, waiting, pace)
    facts = (
        ("Backlog", f"{waiting} dialogues"),
        (f"Pace (last {PACE_DAYS} days)", f"{pace:.1f} verdicts a day"),
        ("Clears", clears.isoformat() if clears else "not at this pace (no verdicts lately)"),
    )
    return Figure(
        columns=(("day", "Day"), ("verdicts", "Verdicts")),
        rows=rows,
        summary=". ".join(f"{label}: {value}" for label, value in facts) + ".",
        facts=facts,
    )


def _clear_date(today: date, waiting: int, pace: float) -> date | None:
    if not waiting:
        return today
    if pace <= 0:
        return None
    return today + timedelta(days=math.ceil(waiting / pace))
