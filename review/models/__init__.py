"""Review state: claims, verdicts, flags, corrections (revisions), review policies and
independent reviews, the judge's suggestions, the near-duplicate index and dataset exports.

One module per concern; import the models from here."""

from __future__ import annotations

from .duplicates import DialogueSignature, PendingDuplicateCheck, RunNgram, SignatureBand
from .exports import DatasetExport
from .judge import JudgeConfig, Judgement, Suggestion, SuggestionDecision
from .reviews import (
    REVIEWER_GROUP,
    DialogueReview,
    Flag,
    IndependentReview,
    ReviewEvent,
    ReviewPolicy,
    TurnRevision,
)

__all__ = [
    "DatasetExport",
    "DialogueReview",
    "DialogueSignature",
    "Flag",
    "IndependentReview",
    "JudgeConfig",
    "Judgement",
    "PendingDuplicateCheck",
    "REVIEWER_GROUP",
    "ReviewEvent",
    "ReviewPolicy",
    "RunNgram",
    "SignatureBand",
    "Suggestion",
    "SuggestionDecision",
    "TurnRevision",
]
