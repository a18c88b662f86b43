"""Every write of the review screens, one transaction each: claims, turn edits, verdicts,
answers to judge suggestions; and the judge's pass over a completed dialogue.

Import the public names from here; each lives in the module named beside it.
"""

from __future__ import annotations

from .claims import (
    claim_deadline,
    review_claim_next,
    review_for,
    review_release,
    reviews_assign,
    reviews_release,
)
from .errors import (
    ClaimedByOther,
    DialogueConflict,
    InvalidInput,
    NotAllowed,
    NothingChanged,
    ReviewError,
    TurnConflict,
)
from .independent import dialogue_adjudicate
from .judging import dialogue_judge
from .suggestions import suggestion_accept, suggestion_dismiss
from .turns import dialogue_regenerate, flag_dismiss, turn_correct, turn_flag, turn_revert
from .verdicts import dialogue_approve, dialogue_reject, dialogue_reopen, reviews_reject

__all__ = [
    "ClaimedByOther",
    "DialogueConflict",
    "InvalidInput",
    "NotAllowed",
    "NothingChanged",
    "ReviewError",
    "TurnConflict",
    "claim_deadline",
    "dialogue_adjudicate",
    "dialogue_approve",
    "dialogue_judge",
    "dialogue_regenerate",
    "dialogue_reject",
    "dialogue_reopen",
    "flag_dismiss",
    "review_claim_next",
    "review_for",
    "review_release",
    "reviews_assign",
    "reviews_reject",
    "reviews_release",
    "suggestion_accept",
    "suggestion_dismiss",
    "turn_correct",
    "turn_flag",
    "turn_revert",
]
