"""The refusals the review screens show: each carries a message written for the reviewer."""

from __future__ import annotations

from django.utils import timezone

from generation.models import Turn
from review.models import DialogueReview, TurnRevision


class ReviewError(Exception):
    """A refused action, with a message written for the reviewer."""

    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ReviewError):
    status = 422


class NotAllowed(ReviewError):
    status = 403


class ClaimedByOther(ReviewError):
    def __init__(self, review: DialogueReview) -> None:
        holder = review.claimed_by.get_username() if review.claimed_by else "another reviewer"
        until = timezone.localtime(review.claim_expires_at).strftime("%H:%M")
        super().__init__(
            f"{holder} is reviewing this dialogue (claim held until {until} unless they keep "
            "working). Your change was not saved."
        )
        self.holder = review.claimed_by


class NothingChanged(ReviewError):
    """A correction identical to the saved text: nothing to save, and the reviewer is told so."""

    status = 200

    def __init__(self) -> None:
        super().__init__(
            "Nothing changed: the text is the same as the saved version. Edit it and save, "
            "or Cancel."
        )


class TurnConflict(ReviewError):
    """The turn changed since the reviewer opened the edit box; `turn` is the current one."""

    def __init__(self, turn: Turn, last: TurnRevision | None) -> None:
        who = last.author.get_username() if last and last.author else "someone"
        super().__init__(
            f"This turn was changed by {who} after you opened it (now version {turn.version}). "
            "Their version is shown below; your text is still in the box. Save again to "
            "replace theirs, or Cancel to keep it."
        )
        self.turn = turn
        self.last = last


class DialogueConflict(ReviewError):
    def __init__(self, review: DialogueReview) -> None:
        state = review.get_status_display().lower()
        who = review.decided_by.get_username() if review.decided_by else None
        detail = f"it is now {state}" + (f" by {who}" if who and review.status != "pending" else "")
        super().__init__(
            f"This dialogue changed since you loaded it ({detail}). Nothing was saved: "
            "look at the current version below and try again."
        )
