"""Small helpers shared by the review view tests."""

from __future__ import annotations

from django.urls import reverse

from generation.models import Dialogue, Turn

HX = {"HTTP_HX_REQUEST": "true"}


def turn_of(dialogue: Dialogue, position: int = 1) -> Turn:
    return dialogue.turns.get(position=position, discarded_at__isnull=True)


def url(name: str, dialogue: Dialogue, turn: Turn | None = None) -> str:
    """reverse() of a review URL for a dialogue (and one of its turns)."""
    args = [dialogue.pk] + ([turn.pk] if turn is not None else [])
    return reverse(f"review:{name}", args=args)
