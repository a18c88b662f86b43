"""Reads for the dialogue screen: a dialogue with everything its page shows.

Each selector fetches in a fixed number of queries whatever the size of the dialogue, so the
templates never query (no N+1 over turns, flags or revisions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Prefetch, Q, QuerySet, prefetch_related_objects
from django.shortcuts import get_object_or_404

from generation.models import Dialogue, Turn
from review.models import (
    DialogueReview,
    DialogueSignature,
    Flag,
    IndependentReview,
    ReviewEvent,
    Suggestion,
    SuggestionDecision,
    TurnRevision,
)
from review.selectors.domains import required_reviews_expression


def review_of(dialogue: Dialogue) -> DialogueReview:
    """The dialogue's review, or an unsaved pending one if nobody has touched it yet (with the
    number of reviews its policy requires, when the query annotated `required_reviews`)."""
    try:
        return dialogue.review
    except DialogueReview.DoesNotExist:
        required = getattr(dialogue, "required_reviews", 1)
        return DialogueReview(dialogue=dialogue, reviews_required=required)


def _live_turns(blind_for: AbstractBaseUser | None = None) -> QuerySet:
    """Live turns with their flags, revisions and judge suggestions (with the experts'
    decisions); `blind_for` keeps only that expert's own among what independent reviews added
    (the shared ones have no review)."""
    own = Q(review__isnull=True) | Q(review__reviewer=blind_for) if blind_for else Q()
    return (
        Turn.objects.filter(discarded_at__isnull=True)
        .select_related("persona")
        .prefetch_related(
            # Plain lists (to_attr): the page reads them several times per turn, and each
            # `.all()` on a prefetched manager would clone a queryset.
            Prefetch(
                "flags",
                queryset=Flag.objects.filter(own).select_related("created_by", "resolved_by"),
                to_attr="flag_list",
            ),
            Prefetch(
                "revisions",
                queryset=TurnRevision.objects.filter(own).select_related("author"),
                to_attr="revision_list",
            ),
            Prefetch(
                "suggestions",
                queryset=Suggestion.objects.prefetch_related(
                    Prefetch(
                        "decisions",
                        queryset=SuggestionDecision.objects.filter(own).select_related(
                            "decided_by"
                        ),
                        to_attr="decision_list",
                    )
                ),
                to_attr="suggestion_list",
            ),
        )
        .order_by("position")
    )


def dialogue_for_review(*, pk: int, viewer: AbstractBaseUser | None = None) -> Dialogue:
    """A dialogue with its run, scenario, personas, review, judgement, near-duplicate mark,
    live turns (with flags, revisions, judge suggestions and their decisions), discarded turns
    and recent events: a constant 10 queries, whatever its size (one more for a dialogue with
    independent reviews).

    While independent reviews are under way, `viewer` sees only their own flags, proposed
    corrections and answers to the judge among those the reviews added, with their proposals
    in place of the text."""
    dialogue = get_object_or_404(
        Dialogue.objects.select_related(
            "run",
            "scenario__judge_config",
            "review__claimed_by",
            "review__decided_by",
            "judgement",
            "signature",
        ).annotate(required_reviews=required_reviews_expression()),
        pk=pk,
    )
    review = review_of(dialogue)
    blind = review.is_independent and review.status == DialogueReview.Status.PENDING
    blind_for = viewer if blind else None
    prefetches = [
        "scenario__personas",
        Prefetch("turns", queryset=_live_turns(blind_for), to_attr="live_turns"),
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
    ]
    if review.is_independent:
        prefetches.append(
            Prefetch(
                "independent_reviews",
                queryset=IndependentReview.objects.select_related("reviewer"),
                to_attr="independent_list",
            )
        )
    prefetch_related_objects([dialogue], *prefetches)
    annotate_dialogue(dialogue, blind_for=blind_for, viewer=viewer)
    return dialogue


def annotate_dialogue(
    dialogue: Dialogue,
    *,
    blind_for: AbstractBaseUser | None = None,
    viewer: AbstractBaseUser | None = None,
) -> None:
    """Derived figures the page shows, computed from what was prefetched (no queries)."""
    dialogue.review_state = review_of(dialogue)
    dialogue.blind = blind_for is not None
    if blind_for is not None:
        for turn in dialogue.live_turns:
            proposals = [r for r in turn.revision_list if r.review_id]
            if proposals:  # shown, never saved: the turn changes only when reviews conclude
                turn.text = proposals[-1].after
    dialogue.open_flag_count = sum(
        1
        for turn in dialogue.live_turns
        for flag in turn.flag_list
        if flag.resolution == Flag.Resolution.OPEN
    )
    dialogue.warning_count = sum(1 for turn in dialogue.live_turns if turn.warnings)
    _mark_undecided(dialogue, viewer)
    dialogue.undecided_suggestion_count = sum(
        1
        for turn in dialogue.live_turns
        for suggestion in turn.suggestion_list
        if suggestion.undecided
    )
    dialogue.judgement_state = getattr(dialogue, "judgement", None)
    config = getattr(dialogue.scenario, "judge_config", None)
    dialogue.severity_max = config.severity_max if config else None
    dialogue.near_duplicate = near_duplicate_of(dialogue)
    dialogue.timeline = activity_timeline(dialogue)


def _mark_undecided(dialogue: Dialogue, viewer: AbstractBaseUser | None) -> None:
    """`suggestion.undecided`: while the dialogue is under review, the review under way (the
    viewer's own, in an independent review) has not answered it; once decided, nobody has."""
    review = dialogue.review_state
    under_review = review.status == DialogueReview.Status.PENDING
    own_review_id = None
    if review.is_independent and viewer is not None:
        mine = [r for r in dialogue.independent_list if r.reviewer_id == viewer.pk]
        own_review_id = mine[0].pk if mine else -1  # no review yet: nothing answered
    for turn in dialogue.live_turns:
        for suggestion in turn.suggestion_list:
            decisions = suggestion.decision_list
            if under_review:
                suggestion.undecided = all(d.review_id != own_review_id for d in decisions)
            else:
                suggestion.undecided = not decisions


def near_duplicate_of(dialogue: Dialogue) -> DialogueSignature | None:
    """The dialogue's signature when it marks it a near-duplicate (its twin and similarity),
    from what was selected with it."""
    try:
        signature = dialogue.signature
    except DialogueSignature.DoesNotExist:
        return None
    return signature if signature.is_near_duplicate else None


@dataclass(frozen=True)
class Activity:
    """One line of a dialogue's activity: what happened, to which turn, by whom, when."""

    at: datetime
    what: str
    actor: AbstractBaseUser | None
    note: str = ""


TIMELINE_LENGTH = 30


def activity_timeline(dialogue: Dialogue) -> list[Activity]:
    """Claims, verdicts and regenerations (events) merged with the flags, dismissals (of flags
    and of judge suggestions), corrections and reverts on the live turns, newest first. Built
    from what the page already prefetched, so the timeline costs no query."""
    items = [
        Activity(event.created_at, event.get_kind_display(), event.actor, event.note)
        for event in dialogue.recent_events
    ]
    for turn in dialogue.live_turns:
        label = f"turn {turn.position + 1}"
        for flag in turn.flag_list:
            flagged = f"Flagged {label} ({flag.get_category_display().lower()})"
            items.append(Activity(flag.created_at, flagged, flag.created_by, flag.note))
            if flag.resolution == Flag.Resolution.DISMISSED and flag.resolved_at:
                dismissed = f"Dismissed a flag on {label}"
                items.append(
                    Activity(flag.resolved_at, dismissed, flag.resolved_by, flag.dismiss_reason)
                )
        for suggestion in turn.suggestion_list:
            for decision in suggestion.decision_list:
                if decision.status == SuggestionDecision.Status.DISMISSED:
                    category = suggestion.get_category_display().lower()
                    what = f"Dismissed the judge's {category} mark on {label}"
                    items.append(Activity(decision.decided_at, what, decision.decided_by))
        for revision in turn.revision_list:
            verb = "Reverted" if revision.kind == TurnRevision.Kind.REVERT else "Corrected"
            items.append(Activity(revision.created_at, f"{verb} {label}", revision.author))
    items.sort(key=lambda item: item.at, reverse=True)
    return items[:TIMELINE_LENGTH]


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
