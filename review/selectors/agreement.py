"""Reads for independent reviews: the competing proposals, the adjudication screen and the
agreement figures per dialogue, run and reviewer (review/agreement.py does the arithmetic)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.shortcuts import get_object_or_404

from generation.models import Dialogue, GenerationRun, Turn
from review.agreement import Agreement, agreement
from review.models import DialogueReview, Flag, IndependentReview, TurnRevision


def latest_proposals(dialogue: Dialogue) -> dict[int, dict[int, TurnRevision]]:
    """{live turn id: {independent review id: its latest proposal}} of submitted reviews,
    leaving out proposals that keep the turn as it is (a correction taken back): one query."""
    proposals: dict[int, dict[int, TurnRevision]] = defaultdict(dict)
    rows = (
        TurnRevision.objects.filter(
            review__dialogue=dialogue,
            review__submitted_at__isnull=False,
            turn__discarded_at__isnull=True,
        )
        .select_related("turn", "author")
        .order_by("created_at", "pk")
    )
    for revision in rows:
        proposals[revision.turn_id][revision.review_id] = revision
    return {
        turn_id: kept
        for turn_id, by_review in proposals.items()
        if (kept := {pk: r for pk, r in by_review.items() if r.after != r.turn.text})
    }


def conflicting_turns(proposals: dict[int, dict[int, TurnRevision]]) -> set[int]:
    """Turns for which the experts proposed different texts."""
    return {
        turn_id for turn_id, by_review in proposals.items()
        if len({r.after for r in by_review.values()}) > 1
    }  # fmt: skip


@dataclass
class DialogueAgreement:
    """A dialogue's submitted reviews: do the verdicts agree, and how well do the flags (each
    live turn flagged or not, by each reviewer) agree."""

    reviews: list[IndependentReview]
    verdicts_agree: bool
    flags: Agreement


def _dialogue_agreement(
    reviews: list[IndependentReview], turn_ids: list[int], flagged: set[tuple[int, int]]
) -> DialogueAgreement:
    ratings = [[int((r.pk, t) in flagged) for t in turn_ids] for r in reviews]
    return DialogueAgreement(
        reviews=reviews,
        verdicts_agree=len({r.verdict for r in reviews}) == 1,
        flags=agreement(ratings),
    )


@dataclass
class Adjudication:
    dialogue: Dialogue
    reviews: list[IndependentReview]
    turns: list[Turn]
    agreement: DialogueAgreement
    conflicts: set[int] = field(default_factory=set)


def adjudication_for(*, pk: int) -> Adjudication:
    """The adjudication screen: the turns, each with the reviews' proposals and flags side by
    side, and the reviews' verdicts: five queries."""
    dialogue = get_object_or_404(Dialogue.objects.select_related("review", "scenario"), pk=pk)
    reviews = list(
        IndependentReview.objects.filter(dialogue=dialogue, submitted_at__isnull=False)
        .select_related("reviewer")
        .order_by("submitted_at", "pk")
    )
    turns = list(
        Turn.objects.filter(dialogue=dialogue, discarded_at__isnull=True)
        .select_related("persona")
        .order_by("position")
    )
    flags = list(Flag.objects.filter(review__in=reviews, turn__in=turns))
    proposals = latest_proposals(dialogue)
    for turn in turns:
        by_review = proposals.get(turn.pk, {})
        turn.columns = [
            {"review": r, "proposal": by_review.get(r.pk),
             "flags": [f for f in flags if f.review_id == r.pk and f.turn_id == turn.pk]}
            for r in reviews
        ]  # fmt: skip
        turn.disputed = bool(by_review) or any(column["flags"] for column in turn.columns)
        turn.proposed = bool(by_review)
        turn.merge_default = next(iter(by_review.values())).after if by_review else turn.text
    flagged = {(f.review_id, f.turn_id) for f in flags}
    figures = _dialogue_agreement(reviews, [t.pk for t in turns], flagged)
    return Adjudication(dialogue, reviews, turns, figures, conflicting_turns(proposals))


@dataclass
class ReviewerAgreement:
    reviewer: object
    dialogues: int = 0
    agreed: int = 0  # peers' verdicts equal to this reviewer's, over all pairs
    pairs: int = 0

    @property
    def share(self) -> str:
        return f"{self.agreed / self.pairs:.0%}" if self.pairs else "n/a"


@dataclass
class RunAgreement:
    run: GenerationRun
    verdicts: Agreement
    flags: Agreement
    dialogues: list[tuple[Dialogue, DialogueAgreement]]
    reviewers: list[ReviewerAgreement]


def run_agreement(*, pk: int) -> RunAgreement:
    """Agreement over a run's dialogues whose independent reviews are all in: the verdicts
    (one item per dialogue), the flags (one item per live turn), and per reviewer the share of
    peers who gave the same verdict. Reviewers are matched by order of submission (first,
    second...), as kappa needs two fixed raters. Four queries."""
    run = get_object_or_404(GenerationRun, pk=pk)
    dialogues = list(
        Dialogue.objects.filter(run=run, review__reviews_required__gt=1)
        .exclude(review__status=DialogueReview.Status.PENDING)
        .select_related("review")
        .order_by("index")
    )
    reviews_by_dialogue: dict[int, list[IndependentReview]] = defaultdict(list)
    for review in (
        IndependentReview.objects.filter(dialogue__in=dialogues, submitted_at__isnull=False)
        .select_related("reviewer")
        .order_by("submitted_at", "pk")
    ):
        reviews_by_dialogue[review.dialogue_id].append(review)
    turns: dict[int, list[int]] = defaultdict(list)
    for turn_id, dialogue_id in (
        Turn.objects.filter(dialogue__in=dialogues, discarded_at__isnull=True)
        .order_by("dialogue_id", "position")
        .values_list("pk", "dialogue_id")
    ):
        turns[dialogue_id].append(turn_id)
    flagged = set(
        Flag.objects.filter(review__dialogue__in=dialogues).values_list("review_id", "turn_id")
    )
    return _run_figures(run, dialogues, reviews_by_dialogue, turns, flagged)


def _run_figures(run, dialogues, reviews_by_dialogue, turns, flagged) -> RunAgreement:
    slots = max((len(reviews_by_dialogue[d.pk]) for d in dialogues), default=0)
    verdicts: list[list[object | None]] = [[] for _ in range(slots)]
    flag_rows: list[list[object | None]] = [[] for _ in range(slots)]
    per_dialogue, reviewers = [], {}
    for dialogue in dialogues:
        reviews = reviews_by_dialogue[dialogue.pk]
        per_dialogue.append((dialogue, _dialogue_agreement(reviews, turns[dialogue.pk], flagged)))
        for slot in range(slots):
            review = reviews[slot] if slot < len(reviews) else None
            verdicts[slot].append(review.verdict if review else None)
            flag_rows[slot] += [
                int((review.pk, t) in flagged) if review else None for t in turns[dialogue.pk]
            ]
        for review in reviews:
            entry = reviewers.setdefault(review.reviewer_id, ReviewerAgreement(review.reviewer))
            entry.dialogues += 1
            peers = [other for other in reviews if other is not review]
            entry.pairs += len(peers)
            entry.agreed += sum(other.verdict == review.verdict for other in peers)
    ordered = sorted(reviewers.values(), key=lambda r: r.reviewer.get_username())
    return RunAgreement(run, agreement(verdicts), agreement(flag_rows), per_dialogue, ordered)
