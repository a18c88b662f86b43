"""How good the judge is: its marks against the expert's verdict on the same turns.

Only dialogues an expert has decided (approved or rejected) and the judge has read count, and
only their live turns. Per category, a mark is a (turn, category) pair: the judge's are its
suggestions, whatever became of them; the expert's are their flags that were not dismissed
(an accepted suggestion is such a flag). Overall, a mark is a turn: the judge marked it if it
made any suggestion on it, the expert if they left a flag standing or corrected its text.

precision = agreed / judge's marks (how often a mark was right);
recall = agreed / expert's marks (how much of what the expert found the judge had marked).

Three aggregates and a count, whatever the number of dialogues.
"""

from __future__ import annotations

from django.db.models import Count, Exists, F, OuterRef, Q

from generation.models import Turn
from review.models import DialogueReview, Flag, Judgement, Suggestion

from .figures import Figure, percent
from .scope import Scope

DECIDED = (DialogueReview.Status.APPROVED, DialogueReview.Status.REJECTED)
OVERALL = "overall"
COLUMNS = (
    ("category", "Category"),
    ("judge_marks", "Judge's marks"),
    ("expert_marks", "Expert's marks"),
    ("agreed", "Agreed"),
    ("precision", "Precision (%)"),
    ("recall", "Recall (%)"),
)


def _compared(scope: Scope, prefix: str) -> Q:
    """Decided, judged dialogues of the scope, on live turns, from a model reaching Dialogue
    through `prefix` (e.g. "turn__dialogue__")."""
    turn = prefix.removesuffix("dialogue__")
    return (
        scope.q(prefix)
        & Q(**{f"{prefix}review__status__in": DECIDED})
        & Q(**{f"{prefix}judgement__status": Judgement.Status.DONE})
        & Q(**{f"{turn}discarded_at__isnull": True})
    )


def _standing_flags(**match: object) -> Exists:
    return Exists(
        Flag.objects.filter(**match).exclude(resolution=Flag.Resolution.DISMISSED).order_by()
    )


def judge_agreement(scope: Scope) -> Figure:
    judged = (
        Suggestion.objects.filter(_compared(scope, "turn__dialogue__"))
        .alias(confirmed=_standing_flags(turn=OuterRef("turn"), category=OuterRef("category")))
        .values("category")
        .annotate(
            marks=Count("turn", distinct=True),
            agreed=Count("turn", distinct=True, filter=Q(confirmed=True)),
        )
        .order_by()
    )
    expert = (
        Flag.objects.filter(_compared(scope, "turn__dialogue__"))
        .exclude(resolution=Flag.Resolution.DISMISSED)
        .values("category")
        .annotate(marks=Count("turn", distinct=True))
        .order_by()
    )
    by_judge = {row["category"]: row for row in judged}
    by_expert = {row["category"]: row["marks"] for row in expert}
    rows = []
    for key, label in Flag.Category.choices:
        if key not in by_judge and key not in by_expert:
            continue
        judge = by_judge.get(key, {"marks": 0, "agreed": 0})
        rows.append(_row(key, str(label), judge["marks"], by_expert.get(key, 0), judge["agreed"]))
    overall, dialogues = _overall(scope)
    rows.append(overall)
    summary = (
        f"{dialogues} decided dialogue{'s' if dialogues != 1 else ''} the judge read: "
        f"precision {_pct(overall['precision'])}, recall {_pct(overall['recall'])} "
        "(turns marked by the judge vs. flagged or corrected by the expert)."
    )
    return Figure(columns=COLUMNS, rows=rows, summary=summary, totals={"dialogues": dialogues})


def _overall(scope: Scope) -> tuple[dict, int]:
    turns = Turn.objects.filter(_compared(scope, "dialogue__")).alias(
        judged=Exists(Suggestion.objects.filter(turn=OuterRef("pk")).order_by()),
        flagged=_standing_flags(turn=OuterRef("pk")),
    )
    expert = Q(flagged=True) | ~Q(text=F("original_text"))
    counts = turns.aggregate(
        judge=Count("pk", filter=Q(judged=True)),
        expert=Count("pk", filter=expert),
        agreed=Count("pk", filter=Q(judged=True) & expert),
        dialogues=Count("dialogue", distinct=True),
    )
    row = _row(OVERALL, "Overall (turns)", counts["judge"], counts["expert"], counts["agreed"])
    return row, counts["dialogues"]


def _row(key: str, label: str, judge: int, expert: int, agreed: int) -> dict:
    return {
        "key": key,
        "category": label,
        "judge_marks": judge,
        "expert_marks": expert,
        "agreed": agreed,
        "precision": percent(agreed, judge),
        "recall": percent(agreed, expert),
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value}%"
