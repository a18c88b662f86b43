"""Reads for the review screens: the queue and a dialogue with everything its page shows.

Each selector fetches in a fixed number of queries whatever the size of the dialogue, so the
templates never query (no N+1 over turns, flags or revisions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from django.utils import timezone

from generation import variables
from generation.models import Dialogue, Turn
from review.models import (
    DialogueReview,
    DialogueSignature,
    Flag,
    ReviewEvent,
    Suggestion,
    TurnRevision,
)

QUEUE_STATUSES = {
    "awaiting": "Awaiting review",
    "in_review": "In review",
    "approved": "Approved",
    "rejected": "Rejected",
    "all": "All",
}


def _active_claim(now: datetime) -> Q:
    return Q(review__claimed_by__isnull=False, review__claim_expires_at__gt=now)


def _undecided() -> Q:
    return Q(review__isnull=True) | Q(review__status=DialogueReview.Status.PENDING)


def status_q(status: str, *, now: datetime) -> Q:
    """The queue's status filter as a Q on Dialogue (dialogues nobody touched have no review)."""
    if status == "awaiting":
        return _undecided() & ~_active_claim(now)
    if status == "in_review":
        return _undecided() & _active_claim(now)
    if status in ("approved", "rejected"):
        return Q(review__status=status)
    return Q()


def has_warnings_subquery() -> Exists:
    return Exists(
        Turn.objects.filter(dialogue=OuterRef("pk"), discarded_at__isnull=True).exclude(warnings=[])
    )


QUEUE_ORDERS = {"run": "Run order", "risk": "Riskiest first"}


@dataclass(frozen=True)
class QueueFilters:
    run_id: int | None = None
    scenario_id: int | None = None
    status: str = "awaiting"
    warnings: bool | None = None
    order: str = "run"
    judge_category: str = ""
    # A scenario variable's value the dialogues were written with: ("level", "beginner").
    variable: tuple[str, str] | None = None

    @property
    def variable_text(self) -> str:
        return f"{self.variable[0]}={self.variable[1]}" if self.variable else ""


def near_duplicate_exists() -> Exists:
    return Exists(DialogueSignature.objects.filter(dialogue=OuterRef("pk"), twin__isnull=False))


def judge_severity_subquery() -> Coalesce:
    """The most severe judge mark on a live turn that nobody dismissed (0: none)."""
    severest = (
        Suggestion.objects.filter(turn__dialogue=OuterRef("pk"), turn__discarded_at__isnull=True)
        .exclude(status=Suggestion.Status.DISMISSED)
        .order_by("-severity")
        .values("severity")[:1]
    )
    return Coalesce(Subquery(severest), 0)


def queue_ordered(qs: QuerySet, order: str) -> QuerySet:
    """The queue's order, which "Review next" follows too: the run's order (run, then position
    in it), or the riskiest first: the judge's most severe standing mark, then automatic
    warnings, then near-duplicates, then run order."""
    if order == "risk":
        return qs.alias(
            judge_severity=judge_severity_subquery(),
            risky_warnings=has_warnings_subquery(),
            near_duplicate=near_duplicate_exists(),
        ).order_by("-judge_severity", "-risky_warnings", "-near_duplicate", "run_id", "index")
    return qs.order_by("run_id", "index")


def reviewable_dialogues(filters: QueueFilters, *, now: datetime | None = None) -> QuerySet:
    """Complete dialogues matching the filters, without the status filter (counts use this)."""
    qs = Dialogue.objects.filter(status=Dialogue.Status.COMPLETE)
    if filters.run_id:
        qs = qs.filter(run_id=filters.run_id)
    if filters.scenario_id:
        qs = qs.filter(scenario_id=filters.scenario_id)
    if filters.warnings is not None:
        qs = qs.alias(has_warnings=has_warnings_subquery()).filter(has_warnings=filters.warnings)
    if filters.judge_category:
        marked = Suggestion.objects.filter(
            turn__dialogue=OuterRef("pk"),
            turn__discarded_at__isnull=True,
            category=filters.judge_category,
        )
        qs = qs.filter(Exists(marked))
    if filters.variable is not None:
        name, value = filters.variable
        if not variables.NAME_RE.fullmatch(name) or "__" in name:
            return qs.none()  # no variable has that name (and it must not read as a lookup)
        qs = qs.filter(**{f"variables__{name}": value})
    return qs


def queue_page(filters: QueueFilters, *, limit: int = 100) -> tuple[list[Dialogue], dict, int]:
    """(rows, counts per status, number of rows matching) for the queue screen: 3 queries."""
    now = timezone.now()
    base = reviewable_dialogues(filters, now=now)
    counts = base.aggregate(
        **{key: Count("pk", filter=status_q(key, now=now)) for key in QUEUE_STATUSES}
    )
    live_turns = (
        Turn.objects.filter(dialogue=OuterRef("pk"), discarded_at__isnull=True)
        .order_by()
        .values("dialogue")
        .annotate(n=Count("pk"))
        .values("n")
    )
    open_flags = (
        Flag.objects.filter(
            turn__dialogue=OuterRef("pk"),
            turn__discarded_at__isnull=True,
            resolution=Flag.Resolution.OPEN,
        )
        .order_by()
        .values("turn__dialogue")
        .annotate(n=Count("pk"))
        .values("n")
    )
    matching = (
        base.filter(status_q(filters.status, now=now))
        .select_related("scenario", "run", "review__claimed_by", "review__decided_by")
        .annotate(
            has_warnings=has_warnings_subquery(),
            turn_count=Coalesce(Subquery(live_turns), 0),
            open_flag_count=Coalesce(Subquery(open_flags), 0),
        )
    )
    rows = list(queue_ordered(matching, filters.order)[:limit])
    for dialogue in rows:
        dialogue.review_state = review_of(dialogue)
    return rows, counts, counts.get(filters.status, 0)


def review_of(dialogue: Dialogue) -> DialogueReview:
    """The dialogue's review, or an unsaved pending one if nobody has touched it yet."""
    try:
        return dialogue.review
    except DialogueReview.DoesNotExist:
        return DialogueReview(dialogue=dialogue)


def _live_turns() -> QuerySet:
    return (
        Turn.objects.filter(discarded_at__isnull=True)
        .select_related("persona")
        .prefetch_related(
            # Plain lists (to_attr): the page reads them several times per turn, and each
            # `.all()` on a prefetched manager would clone a queryset.
            Prefetch(
                "flags",
                queryset=Flag.objects.select_related("created_by", "resolved_by"),
                to_attr="flag_list",
            ),
            Prefetch(
                "revisions",
                queryset=TurnRevision.objects.select_related("author"),
                to_attr="revision_list",
            ),
            Prefetch(
                "suggestions",
                queryset=Suggestion.objects.select_related("decided_by"),
                to_attr="suggestion_list",
            ),
        )
        .order_by("position")
    )


def dialogue_for_review(*, pk: int) -> Dialogue:
    """A dialogue with its run, scenario, personas, review, judgement, live turns (with flags,
    revisions and judge suggestions), discarded turns and recent events: a constant 9 queries,
    whatever its size."""
    dialogue = get_object_or_404(
        Dialogue.objects.select_related(
            "run",
            "scenario__judge_config",
            "review__claimed_by",
            "review__decided_by",
            "judgement",
            "signature",
        ).prefetch_related(
            "scenario__personas",
            Prefetch("turns", queryset=_live_turns(), to_attr="live_turns"),
            Prefetch(
                "turns",
                queryset=Turn.objects.filter(discarded_at__isnull=False)
                .select_related("persona")
                .order_by("discarded_at", "position"),
                to_attr="discarded_turns",
            ),
            Prefetch(
                "review_events",
                queryset=ReviewEvent.objects.select_related("actor").order_by("-created_at", "-pk"),
                to_attr="recent_events",
            ),
        ),
        pk=pk,
    )
    annotate_dialogue(dialogue)
    return dialogue


def annotate_dialogue(dialogue: Dialogue) -> None:
    """Derived figures the page shows, computed from what was prefetched (no queries)."""
    dialogue.review_state = review_of(dialogue)
    dialogue.open_flag_count = sum(
        1
        for turn in dialogue.live_turns
        for flag in turn.flag_list
        if flag.resolution == Flag.Resolution.OPEN
    )
    dialogue.warning_count = sum(1 for turn in dialogue.live_turns if turn.warnings)
    dialogue.undecided_suggestion_count = sum(
        1
        for turn in dialogue.live_turns
        for suggestion in turn.suggestion_list
        if suggestion.status == Suggestion.Status.UNDECIDED
    )
    dialogue.judgement_state = getattr(dialogue, "judgement", None)
    config = getattr(dialogue.scenario, "judge_config", None)
    dialogue.severity_max = config.severity_max if config else None
    dialogue.near_duplicate = near_duplicate_of(dialogue)


def near_duplicate_of(dialogue: Dialogue) -> DialogueSignature | None:
    """The dialogue's signature when it marks it a near-duplicate (its twin and similarity),
    from what was selected with it."""
    try:
        signature = dialogue.signature
    except DialogueSignature.DoesNotExist:
        return None
    return signature if signature.is_near_duplicate else None


def turn_for_review(*, dialogue_pk: int, turn_pk: int) -> Turn:
    """One turn of one dialogue (a turn id from another dialogue is a 404) with what its
    partial shows."""
    return get_object_or_404(
        _live_turns().select_related("dialogue__run", "dialogue__review__claimed_by"),
        pk=turn_pk,
        dialogue_id=dialogue_pk,
    )


def dialogue_status_only(*, pk: int) -> Dialogue:
    """The dialogue for the generation-progress poll: one cheap query."""
    return get_object_or_404(
        Dialogue.objects.select_related("review__claimed_by", "run", "scenario"), pk=pk
    )
