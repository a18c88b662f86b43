"""Where a run's or scenario's data goes wrong and what it costs: funnel, flags by turn and
category, stop reasons, warnings, usage per approved dialogue. Each selector is one to three
SQL aggregates whatever the number of dialogues."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Q, Sum, TextField
from django.db.models.functions import Cast
from django.utils.dateparse import parse_datetime

from generation.models import Dialogue, Turn
from review.models import DatasetExport, DialogueReview, Flag

from .figures import Figure, percent, ratio, rounded
from .scope import Scope

APPROVED = Q(review__status=DialogueReview.Status.APPROVED)
REJECTED = Q(review__status=DialogueReview.Status.REJECTED)
CATEGORIES = tuple(Flag.Category.choices)
WARNINGS = tuple(Turn.Warning.choices)
# Upper bounds (ms) of the turn latency histogram's buckets; the last bucket is open-ended.
LATENCY_EDGES = (250, 500, 1000, 2000, 4000, 8000, 16000)


def _export_cover(export: DatasetExport) -> Q:
    """The approved dialogues one done export wrote: those its filters select that were
    already approved when it started reading (exports record filters, not dialogue ids)."""
    filters = export.filters or {}
    q = Q(review__decided_at__lte=export.started_at or export.created_at)
    if filters.get("run_ids"):
        q &= Q(run_id__in=[int(pk) for pk in filters["run_ids"]])
    if filters.get("scenario"):
        q &= Q(scenario__slug=str(filters["scenario"]))
    if filters.get("dialogue_ids"):
        q &= Q(pk__in=[int(pk) for pk in filters["dialogue_ids"]])
    since = parse_datetime(str(filters.get("since") or ""))
    if since is not None:
        q &= Q(review__decided_at__gte=since)
    return q


def exported_q() -> Q | None:
    """Dialogues covered by at least one done export (one query over the exports), or None.

    Of exports with the same run and scenario filters and no others, only the latest can add
    dialogues, so the earlier ones are left out of the condition.
    """
    exports = DatasetExport.objects.filter(status=DatasetExport.Status.DONE).only(
        "filters", "started_at", "created_at"
    )
    latest: dict[tuple, DatasetExport] = {}
    others: list[DatasetExport] = []
    for export in exports:
        filters = export.filters or {}
        if filters.get("since") or filters.get("dialogue_ids"):
            others.append(export)
            continue
        key = (tuple(sorted(filters.get("run_ids") or ())), filters.get("scenario") or "")
        kept = latest.get(key)
        if kept is None or _export_time(export) > _export_time(kept):
            latest[key] = export
    q: Q | None = None
    for export in [*latest.values(), *others]:
        cover = _export_cover(export)
        q = cover if q is None else q | cover
    return q


def _export_time(export: DatasetExport) -> datetime:
    return export.started_at or export.created_at


def funnel(scope: Scope) -> Figure:
    """Generated → reviewed → approved / rejected → exported, in one aggregate."""
    exported = exported_q()
    aggregates = {
        "generated": Count("pk", filter=Q(status=Dialogue.Status.COMPLETE)),
        "reviewed": Count("pk", filter=APPROVED | REJECTED),
        "approved": Count("pk", filter=APPROVED),
        "rejected": Count("pk", filter=REJECTED),
    }
    if exported is not None:
        aggregates["exported"] = Count("pk", filter=APPROVED & exported)
    counts = scope.dialogues().aggregate(**aggregates)
    counts.setdefault("exported", 0)
    labels = {
        "generated": "Generated",
        "reviewed": "Reviewed",
        "approved": "Approved",
        "rejected": "Rejected",
        "exported": "Exported",
    }
    rows = [
        {
            "stage": label,
            "dialogues": counts[key],
            "share": percent(counts[key], counts["generated"]),
        }
        for key, label in labels.items()
    ]
    return Figure(
        columns=(("stage", "Stage"), ("dialogues", "Dialogues"), ("share", "% of generated")),
        rows=rows,
        summary=", ".join(f"{row['stage']} {row['dialogues']}" for row in rows) + ".",
    )


def flags_by_position(scope: Scope) -> Figure:
    """Flags by turn position (1 = opening turn) and category: where dialogues go wrong.

    Flags on turns a regeneration later discarded count too: the model did say that turn.
    """
    cells = (
        Flag.objects.filter(scope.q("turn__dialogue__"))
        .values("turn__position", "category")
        .annotate(count=Count("pk"))
        .order_by()
    )
    grid: dict[int, dict[str, int]] = {}
    for cell in cells:
        grid.setdefault(cell["turn__position"], {})[cell["category"]] = cell["count"]
    last = max(grid, default=-1)
    rows = [
        {"turn": position + 1, **{key: grid.get(position, {}).get(key, 0) for key, _ in CATEGORIES}}
        for position in range(last + 1)
    ]
    total = sum(sum(row[key] for key, _ in CATEGORIES) for row in rows)
    worst = max(rows, key=lambda row: sum(row[key] for key, _ in CATEGORIES), default=None)
    summary = f"{total} flags." + (f" Most on turn {worst['turn']}." if worst and total else "")
    return Figure(columns=(("turn", "Turn"), *CATEGORIES), rows=rows, summary=summary)


def stop_reasons(scope: Scope, *, limit: int = 12) -> Figure:
    """Why dialogues ended, most frequent first."""
    rows = list(
        scope.dialogues()
        .exclude(stop_reason="")
        .values("stop_reason")
        .annotate(dialogues=Count("pk"))
        .order_by("-dialogues", "stop_reason")[:limit]
    )
    return Figure(
        columns=(("stop_reason", "Stop reason"), ("dialogues", "Dialogues")),
        rows=rows,
        summary=", ".join(f"{r['stop_reason']}: {r['dialogues']}" for r in rows) or "None yet.",
    )


def _warning_q(code: str) -> Q:
    # `warnings` is a JSON list of codes. A substring test on its text (codes are quoted and
    # none contains another) reads the same on SQLite and PostgreSQL; JSON containment
    # (`warnings__contains`) is not available on SQLite, and `icontains` would upper-case
    # every row's text (twice as slow on PostgreSQL).
    return Q(warnings_text__contains=f'"{code}"')


def turn_usage(scope: Scope) -> Figure:
    """Warnings by type, turn latency histogram and token totals: one aggregate over turns.

    Warnings count live turns (what reviewers see); tokens and latency count every turn the
    model wrote, discarded ones included, because they were paid for.
    """
    live = Q(discarded_at__isnull=True)
    aggregates = {f"w_{code}": Count("pk", filter=live & _warning_q(code)) for code, _ in WARNINGS}
    lower = 0
    for index, upper in enumerate(LATENCY_EDGES):
        aggregates[f"l_{index}"] = Count(
            "pk", filter=Q(latency_ms__gte=lower, latency_ms__lt=upper)
        )
        lower = upper
    aggregates["l_last"] = Count("pk", filter=Q(latency_ms__gte=lower))
    aggregates |= {
        "turns": Count("pk"),
        "prompt_tokens": Sum("prompt_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "latency_ms": Sum("latency_ms"),
    }
    turns = Turn.objects.filter(scope.q("dialogue__"))
    totals = turns.alias(warnings_text=Cast("warnings", TextField())).aggregate(**aggregates)
    warnings = [{"warning": label, "turns": totals[f"w_{code}"]} for code, label in WARNINGS]
    return Figure(
        columns=(("warning", "Warning"), ("turns", "Live turns")),
        rows=warnings,
        summary=", ".join(f"{row['warning']}: {row['turns']}" for row in warnings) + ".",
        totals={key: value or 0 for key, value in totals.items()},
    )


def latency_histogram(scope: Scope, usage: Figure) -> Figure:
    """Turns by latency bucket, from `turn_usage`'s counts (no query of its own)."""
    totals = usage.totals
    labels, lower = [], 0
    for upper in LATENCY_EDGES:
        labels.append(f"{_seconds(lower)}–{_seconds(upper)} s")
        lower = upper
    labels.append(f"≥ {_seconds(lower)} s")
    keys = [f"l_{index}" for index in range(len(LATENCY_EDGES))] + ["l_last"]
    rows = [
        {"latency": label, "turns": totals[key]} for label, key in zip(labels, keys, strict=True)
    ]
    return Figure(
        columns=(("latency", "Turn latency"), ("turns", "Turns")),
        rows=rows,
        summary=f"{totals['turns']} turns; median bucket "
        + (_median_bucket(rows, totals["turns"]) or "none")
        + ".",
    )


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}"


def _median_bucket(rows: list[dict], total: int) -> str:
    seen = 0
    for row in rows:
        seen += row["turns"]
        if total and seen * 2 >= total:
            return row["latency"]
    return ""


def cost_per_approved(scope: Scope, usage: Figure) -> Figure:
    """What one approved dialogue cost: everything generated (rejected and discarded output
    included) divided by the approved dialogues. Two aggregates besides `turn_usage`."""
    dialogues = scope.dialogues().aggregate(
        approved=Count("pk", filter=APPROVED), pending_cost=Sum("pending_cost_usd")
    )
    rolled_up = scope.runs().aggregate(cost=Sum("cost_usd"))["cost"] or 0
    cost = float(rolled_up) + float(dialogues["pending_cost"] or 0)
    totals = usage.totals
    approved = dialogues["approved"]
    rows = [
        _cost_row("Prompt tokens", totals["prompt_tokens"], approved, 0),
        _cost_row("Completion tokens", totals["completion_tokens"], approved, 0),
        _cost_row("Generation time (s)", totals["latency_ms"] / 1000, approved, 1),
        _cost_row("Cost (USD)", cost, approved, 4),
    ]
    summary = f"{approved} approved dialogues; " + "; ".join(
        f"{row['figure']} {row['per_approved']}" for row in rows if row["per_approved"] is not None
    )
    return Figure(
        columns=(
            ("figure", "Figure"),
            ("total", "Total"),
            ("per_approved", "Per approved dialogue"),
        ),
        rows=rows,
        summary=summary + ".",
    )


def _cost_row(label: str, total: float, approved: int, digits: int) -> dict:
    return {
        "figure": label,
        "total": rounded(float(total), digits),
        "per_approved": rounded(ratio(total, approved), max(digits, 1)),
    }
