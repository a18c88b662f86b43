"""Which dialogues an export covers, and how many of them it writes or skips, and why."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from generation.models import Dialogue, GenerationRun, Scenario
from review.models import DialogueReview


class ExportError(Exception):
    """An export that cannot run as asked; the message is meant for the person who asked."""


class EmptyExportError(ExportError):
    """Nothing to write: no approved dialogue (or no usable one) matches the selection."""


@dataclass(frozen=True)
class ExportFilters:
    """Which dialogues an export covers. Empty fields do not filter.

    `since` keeps dialogues approved at or after that moment (a date means its midnight in the
    current time zone), which makes "everything approved since the last export" one flag.
    Near-duplicates (`review.duplicates`) are left out unless `include_near_duplicates`.
    """

    run_ids: tuple[int, ...] = ()
    scenario: str = ""
    since: datetime | None = None
    dialogue_ids: tuple[int, ...] = ()
    include_near_duplicates: bool = False

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.run_ids:
            data["run_ids"] = list(self.run_ids)
        if self.scenario:
            data["scenario"] = self.scenario
        if self.since is not None:
            data["since"] = self.since.isoformat()
        if self.dialogue_ids:
            data["dialogue_ids"] = list(self.dialogue_ids)
        if self.include_near_duplicates:
            data["include_near_duplicates"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportFilters:
        since = data.get("since")
        return cls(
            run_ids=tuple(int(pk) for pk in data.get("run_ids", ())),
            scenario=str(data.get("scenario", "")),
            since=datetime.fromisoformat(since) if since else None,
            dialogue_ids=tuple(int(pk) for pk in data.get("dialogue_ids", ())),
            include_near_duplicates=bool(data.get("include_near_duplicates", False)),
        )


def parse_since(value: str) -> datetime:
    """`YYYY-MM-DD` or an ISO 8601 datetime; naive values are in the current time zone."""
    try:
        parsed = (
            datetime.combine(date.fromisoformat(value), time.min)
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)
            else datetime.fromisoformat(value)
        )
    except ValueError:
        raise ExportError(
            f"Invalid date {value!r}: use YYYY-MM-DD or an ISO 8601 date-time."
        ) from None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


def filters_validate(filters: ExportFilters) -> None:
    """Raise ExportError naming any run or scenario that does not exist."""
    if filters.run_ids:
        found = set(
            GenerationRun.objects.filter(pk__in=filters.run_ids).values_list("pk", flat=True)
        )
        missing = [pk for pk in filters.run_ids if pk not in found]
        if missing:
            raise ExportError(f"Unknown run: {', '.join(map(str, missing))}.")
    if filters.scenario and not Scenario.objects.filter(slug=filters.scenario).exists():
        raise ExportError(f"Unknown scenario: {filters.scenario!r}.")


def dialogues_selected(filters: ExportFilters) -> QuerySet[Dialogue]:
    """Every dialogue the filters cover, whatever its review status."""
    dialogues = Dialogue.objects.all()
    if filters.run_ids:
        dialogues = dialogues.filter(run_id__in=filters.run_ids)
    if filters.scenario:
        dialogues = dialogues.filter(scenario__slug=filters.scenario)
    if filters.dialogue_ids:
        dialogues = dialogues.filter(pk__in=filters.dialogue_ids)
    if filters.since is not None:
        dialogues = dialogues.filter(review__decided_at__gte=filters.since)
    return dialogues


# A dialogue whose text nearly repeats one completed before it (review.duplicates).
NEAR_DUPLICATE = Q(signature__twin__isnull=False)


def dialogues_exportable(filters: ExportFilters) -> QuerySet[Dialogue]:
    """The selected dialogues an export writes: approved ones, near-duplicates left out
    unless the filters include them."""
    approved = dialogues_selected(filters).filter(review__status=DialogueReview.Status.APPROVED)
    return approved if filters.include_near_duplicates else approved.exclude(NEAR_DUPLICATE)


@dataclass(frozen=True)
class SelectionCounts:
    """The selected dialogues by what the export does with them.

    Only approved dialogues are written (`approved`), near-duplicates left out by default
    (`near_duplicate`: approved, not written). The others are told apart because they call
    for different actions: a rejected dialogue was judged, one awaiting review still needs a
    reviewer, and one that is not complete (failed, cancelled, still generating) never reached
    review at all.
    """

    approved: int = 0
    awaiting_review: int = 0
    rejected: int = 0
    not_complete: int = 0
    near_duplicate: int = 0

    @property
    def not_approved(self) -> int:
        return self.awaiting_review + self.rejected + self.not_complete

    @property
    def skipped(self) -> int:
        return self.not_approved + self.near_duplicate

    @property
    def selected(self) -> int:
        return self.approved + self.skipped

    def skipped_summary(self) -> str:
        """E.g. `4 skipped: 1 awaiting review, 1 rejected, 2 not complete (failed, cancelled or
        still generating)`, naming only the reasons that occur; `0 skipped` when none."""
        reasons = [
            f"{count} {reason}"
            for count, reason in (
                (self.awaiting_review, "awaiting review"),
                (self.rejected, "rejected"),
                (self.not_complete, "not complete (failed, cancelled or still generating)"),
                (self.near_duplicate, "near-duplicate"),
            )
            if count
        ]
        return f"{self.skipped} skipped" + (f": {', '.join(reasons)}" if reasons else "")


def selection_breakdown(filters: ExportFilters) -> SelectionCounts:
    """How many selected dialogues are written, and why the others are not, in one query."""
    status = DialogueReview.Status
    verdict = Q(review__status__in=(status.APPROVED, status.REJECTED))
    approved = Q(review__status=status.APPROVED)
    left_out = Q(pk__in=[]) if filters.include_near_duplicates else NEAR_DUPLICATE
    counts = dialogues_selected(filters).aggregate(
        approved=Count("pk", filter=approved & ~left_out),
        near_duplicate=Count("pk", filter=approved & left_out),
        rejected=Count("pk", filter=Q(review__status=status.REJECTED)),
        not_complete=Count("pk", filter=~verdict & ~Q(status=Dialogue.Status.COMPLETE)),
        awaiting_review=Count("pk", filter=~verdict & Q(status=Dialogue.Status.COMPLETE)),
    )
    return SelectionCounts(**counts)


def selection_counts(filters: ExportFilters) -> tuple[int, int]:
    """(to write, skipped) among the selected dialogues, in one query."""
    counts = selection_breakdown(filters)
    return counts.approved, counts.skipped


def empty_message(approved: int, not_approved: int, near_duplicates: int = 0) -> str:
    if near_duplicates:
        return (
            f"Nothing to export: the {near_duplicates} approved dialogues selected are "
            "near-duplicates of earlier ones (include near-duplicates to export them)."
        )
    if not_approved:
        return f"Nothing to export: none of the {not_approved} selected dialogues is approved."
    return "Nothing to export: no dialogues match the selection."
