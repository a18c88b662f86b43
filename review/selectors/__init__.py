"""Reads for the review screens, one module per screen; import the public names from here.

Each selector fetches in a fixed number of queries whatever the size of what it reads, so the
templates never query (no N+1 over turns, flags or revisions).
"""

from __future__ import annotations

from .agreement import (
    Adjudication,
    DialogueAgreement,
    RunAgreement,
    adjudication_for,
    conflicting_turns,
    latest_proposals,
    run_agreement,
)
from .dialogue import (
    Activity,
    activity_timeline,
    annotate_dialogue,
    dialogue_for_review,
    dialogue_status_only,
    review_of,
    turn_for_review,
)
from .domains import (
    Policy,
    assignees,
    domain_groups,
    domain_q,
    policy_of,
    required_reviews_expression,
)
from .facets import Facet, FacetOption, facet_counts, queue_facets
from .mine import MyReviews, my_reviews
from .queue import (
    PAGE_SIZE,
    QUEUE_FILTERS,
    QUEUE_ORDERINGS,
    QUEUE_STATUSES,
    QueueFilter,
    QueueFilters,
    QueueOrdering,
    QueuePage,
    has_warnings_subquery,
    queue_ordered,
    queue_page,
    reviewable_dialogues,
    search_q,
    status_q,
)

__all__ = [
    "Adjudication", "DialogueAgreement", "RunAgreement", "adjudication_for", "conflicting_turns",
    "latest_proposals", "run_agreement", "Facet", "FacetOption", "facet_counts", "queue_facets",
    "PAGE_SIZE", "Policy", "QUEUE_FILTERS", "QUEUE_ORDERINGS", "QUEUE_STATUSES", "Activity", "MyReviews",
    "QueueFilter", "QueueFilters", "QueueOrdering", "QueuePage", "activity_timeline",
    "annotate_dialogue", "assignees", "dialogue_for_review", "dialogue_status_only", "domain_groups",
    "domain_q", "has_warnings_subquery", "policy_of", "required_reviews_expression", "my_reviews", "queue_ordered", "queue_page",
    "review_of", "reviewable_dialogues", "search_q", "status_q", "turn_for_review",
]  # fmt: skip
