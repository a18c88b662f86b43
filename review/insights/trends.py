"""The scenario page's comparisons: run after run over time, and persona model by model."""

from __future__ import annotations

from django.db.models import Count, F, Q
from django.utils import timezone

from generation.models import Dialogue, Turn
from review.models import Flag

from .figures import Figure, percent, ratio, rounded
from .quality import APPROVED, CATEGORIES, REJECTED
from .scope import Scope

NO_MODEL = "(unrecorded)"


def runs_over_time(scope: Scope) -> Figure:
    """Per run, oldest first: generated, reviewed, approval rate and flags per reviewed
    dialogue. Two grouped aggregates (dialogues by run, flags by run)."""
    per_run = (
        scope.dialogues()
        .values("run_id", "run__created_at")
        .annotate(
            generated=Count("pk", filter=Q(status=Dialogue.Status.COMPLETE)),
            approved=Count("pk", filter=APPROVED),
            rejected=Count("pk", filter=REJECTED),
        )
        .order_by("run__created_at", "run_id")
    )
    flags = dict(
        Flag.objects.filter(scope.q("turn__dialogue__"))
        .values_list("turn__dialogue__run_id")
        .annotate(count=Count("pk"))
        .order_by()
    )
    rows = []
    for run in per_run:
        reviewed = run["approved"] + run["rejected"]
        rows.append(
            {
                "run": f"#{run['run_id']}",
                "launched": timezone.localdate(run["run__created_at"]).isoformat(),
                "generated": run["generated"],
                "reviewed": reviewed,
                "approval_rate": percent(run["approved"], reviewed),
                "flags_per_dialogue": rounded(ratio(flags.get(run["run_id"], 0), reviewed)),
            }
        )
    return Figure(
        columns=(
            ("run", "Run"),
            ("launched", "Launched"),
            ("generated", "Generated"),
            ("reviewed", "Reviewed"),
            ("approval_rate", "Approved % of reviewed"),
            ("flags_per_dialogue", "Flags per reviewed dialogue"),
        ),
        rows=rows,
        summary=f"{len(rows)} runs. "
        + " ".join(f"{r['run']}: {r['approval_rate']}% approved." for r in rows[-5:]),
    )


def models(scope: Scope) -> Figure:
    """Per persona model (the model each turn records): turns, corrected turns and flags by
    category. Two grouped aggregates (turns by model, flags by model and category)."""
    per_model = (
        Turn.objects.filter(scope.q("dialogue__"), discarded_at__isnull=True)
        .values("model")
        .annotate(turns=Count("pk"), corrected=Count("pk", filter=~Q(text=F("original_text"))))
        .order_by("-turns", "model")
    )
    flag_cells = (
        Flag.objects.filter(scope.q("turn__dialogue__"))
        .values("turn__model", "category")
        .annotate(count=Count("pk"))
        .order_by()
    )
    flags: dict[str, dict[str, int]] = {}
    for cell in flag_cells:
        flags.setdefault(cell["turn__model"], {})[cell["category"]] = cell["count"]
    rows = []
    for entry in per_model:
        by_category = flags.get(entry["model"], {})
        row = {
            "model": entry["model"] or NO_MODEL,
            "turns": entry["turns"],
            "corrected": entry["corrected"],
            "corrected_pct": percent(entry["corrected"], entry["turns"]),
        }
        for key, _ in CATEGORIES:
            # Per 100 live turns, so models with different turn counts compare fairly.
            row[key] = rounded(100 * (ratio(by_category.get(key, 0), entry["turns"]) or 0))
        rows.append(row)
    worst = max(rows, key=lambda row: row["corrected_pct"] or 0, default=None)
    summary = f"{len(rows)} models." + (
        f" Most corrected: {worst['model']} ({worst['corrected_pct']}% of turns)." if worst else ""
    )
    columns = (
        ("model", "Model"),
        ("turns", "Live turns"),
        ("corrected", "Corrected turns"),
        ("corrected_pct", "Corrected % of turns"),
        *((key, f"{label} flags per 100 turns") for key, label in CATEGORIES),
    )
    return Figure(columns=columns, rows=rows, summary=summary)


def model_comparison(scope: Scope, by_model: Figure) -> Figure:
    """Two models side by side, flags per 100 turns in each category (from `models`)."""
    names = [row["model"] for row in by_model.rows]
    wanted = [name for name in (scope.compare or ()) if name in names]
    chosen = (wanted + [name for name in names if name not in wanted])[:2]
    found = {row["model"]: row for row in by_model.rows}
    rows = [
        {"category": label, **{f"m{i}": found[name][key] for i, name in enumerate(chosen)}}
        for key, label in (("corrected_pct", "Corrected turns (%)"), *CATEGORIES)
    ]
    columns = (("category", "Per 100 turns"),) + tuple(
        (f"m{i}", name) for i, name in enumerate(chosen)
    )
    summary = (
        " vs ".join(chosen)
        + ": "
        + "; ".join(
            f"{row['category']} " + " / ".join(str(row[f"m{i}"]) for i in range(len(chosen)))
            for row in rows
        )
        if chosen
        else "No model has turns yet."
    )
    return Figure(columns=columns, rows=rows, summary=summary + ".")
