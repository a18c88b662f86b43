"""The review screens, one module per screen: the queue, the dialogue, its turns."""

from __future__ import annotations

from .adjudication import adjudicate, run_agreement
from .dialogue import approve, approve_next, dialogue, progress, reject, release, reopen
from .health import healthz
from .insights import insights_csv, run_insights, scenario_insights, team_insights
from .queue import bulk, my_reviews, queue, queue_facets, review_next
from .turns import (
    flag_dismiss,
    suggestion_accept,
    suggestion_dismiss,
    turn,
    turn_edit,
    turn_flag,
    turn_regenerate,
    turn_revert,
)

__all__ = [
    "adjudicate", "approve", "approve_next", "bulk", "dialogue", "flag_dismiss", "healthz",
    "insights_csv", "my_reviews", "progress", "queue", "queue_facets", "reject", "release", "reopen",
    "review_next", "run_agreement", "run_insights", "scenario_insights", "suggestion_accept",
    "suggestion_dismiss", "team_insights", "turn", "turn_edit", "turn_flag", "turn_regenerate",
    "turn_revert",
]  # fmt: skip
